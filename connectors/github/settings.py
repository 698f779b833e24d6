"""Configuration keys of a GitHub source (on top of the keys every source has)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from syncd.config import FlowTypeRule, SourceConfig
from syncd.domain import Stage

DEFAULT_ACTIVE_LABELS = (
    "in progress",
    "status: in progress",
    "in-progress",
    "doing",
    "wip",
    "in review",
    "status: in review",
)
DEFAULT_WAITING_LABELS = (
    "blocked",
    "status: blocked",
    "waiting",
    "status: waiting",
    "on hold",
    "needs info",
    "waiting for review",
)
DEFAULT_PROJECT_STATUSES: dict[str, Stage] = {
    "Backlog": Stage.NEW,
    "Todo": Stage.NEW,
    "To Do": Stage.NEW,
    "In Progress": Stage.ACTIVE,
    "In Review": Stage.ACTIVE,
    "Blocked": Stage.WAITING,
    "Waiting": Stage.WAITING,
    "Done": Stage.DONE,
}
DEFAULT_FLOW_TYPES = (
    FlowTypeRule(
        flow_type="risk",
        issue_types=["Vulnerability", "Security"],
        labels=["security", "vulnerability", "compliance"],
    ),
    FlowTypeRule(
        flow_type="debt",
        issue_types=["Tech Debt", "Chore"],
        labels=[
            "tech-debt",
            "tech debt",
            "techdebt",
            "refactor",
            "refactoring",
            "chore",
            "dependencies",
        ],
    ),
    FlowTypeRule(flow_type="defect", issue_types=["Bug"], labels=["bug", "defect", "regression"]),
    FlowTypeRule(
        flow_type="feature",
        issue_types=["Feature", "Enhancement", "Story"],
        labels=["enhancement", "feature", "feature request"],
    ),
)


class GitHubSourceConfig(SourceConfig):
    """Repositories on github.com or GitHub Enterprise Server (`url = https://host/api/v3`)."""

    kind: Literal["github"]
    url: str = "https://api.github.com"
    repos: list[str] = Field(default_factory=list)
    orgs: list[str] = Field(default_factory=list)
    include_archived: bool = False
    #: GitHub App authentication instead of a token
    app_id: int | None = None
    app_private_key_file: Path | None = None
    app_installation_id: int | None = None
    #: timelines through GraphQL (batched); False uses the REST timeline, one item at a time
    graphql: bool = True
    #: items whose timelines share one GraphQL query (GitHub allows 100)
    batch_size: int = Field(default=100, ge=1, le=100)
    per_page: int = Field(default=100, ge=1, le=100)
    #: REST timeline requests in flight at once (the GraphQL path sends one query at a time)
    concurrency: int = Field(default=4, ge=1, le=16)
    active_labels: list[str] = Field(default_factory=lambda: list(DEFAULT_ACTIVE_LABELS))
    waiting_labels: list[str] = Field(default_factory=lambda: list(DEFAULT_WAITING_LABELS))
    #: Projects v2 "Status" option → stage
    project_statuses: dict[str, Stage] = Field(
        default_factory=lambda: dict(DEFAULT_PROJECT_STATUSES)
    )

    @field_validator("repos")
    @classmethod
    def _full_names(cls, repos: list[str]) -> list[str]:
        for repo in repos:
            if repo.count("/") != 1 or not all(repo.split("/")):
                raise ValueError(f"expected 'owner/name', got {repo!r}")
        return repos

    @model_validator(mode="after")
    def _scope_and_auth(self) -> GitHubSourceConfig:
        if not self.repos and not self.orgs:
            raise ValueError("give repos = ['owner/name', …] and/or orgs = ['org']")
        app = (self.app_id, self.app_private_key_file, self.app_installation_id)
        if any(v is not None for v in app) and not all(v is not None for v in app):
            raise ValueError(
                "GitHub App auth needs app_id, app_private_key_file and "
                "app_installation_id together"
            )
        if all(v is not None for v in app) and (self.token_env or self.token_file):
            raise ValueError("give a token (token_env/token_file) or a GitHub App, not both")
        return self

    @property
    def graphql_url(self) -> str:
        """github.com: https://api.github.com/graphql; GHES: https://host/api/graphql."""
        if self.url.endswith("/api/v3"):
            return self.url[: -len("/v3")] + "/graphql"
        return self.url + "/graphql"

    @property
    def flow_type_rules(self) -> list[FlowTypeRule]:
        return list(self.flow_types) or list(DEFAULT_FLOW_TYPES)
