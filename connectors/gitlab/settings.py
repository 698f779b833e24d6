"""Configuration keys of a GitLab source (on top of the keys every source has)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from syncd.config import FlowTypeRule, SourceConfig
from syncd.domain import Stage

DEFAULT_LABEL_STAGES: dict[str, Stage] = {
    "workflow::in progress": Stage.ACTIVE,
    "workflow::in dev": Stage.ACTIVE,
    "workflow::in review": Stage.ACTIVE,
    "workflow::review": Stage.WAITING,
    "workflow::blocked": Stage.WAITING,
    "workflow::waiting": Stage.WAITING,
    "workflow::done": Stage.DONE,
    "doing": Stage.ACTIVE,
    "in progress": Stage.ACTIVE,
    "blocked": Stage.WAITING,
    "waiting": Stage.WAITING,
}
DEFAULT_STATUS_STAGES: dict[str, Stage] = {
    "To do": Stage.NEW,
    "In progress": Stage.ACTIVE,
    "Done": Stage.DONE,
    "Won't do": Stage.CANCELED,
    "Duplicate": Stage.CANCELED,
}
DEFAULT_CANCELED_LABELS = (
    "won't do",
    "wontfix",
    "won't fix",
    "duplicate",
    "invalid",
    "workflow::won't do",
    "workflow::duplicate",
)
DEFAULT_FLOW_TYPES = (
    FlowTypeRule(flow_type="risk", labels=["security", "type::security", "vulnerability"]),
    FlowTypeRule(
        flow_type="debt",
        labels=["tech debt", "tech-debt", "type::maintenance", "type::tech debt", "refactor"],
    ),
    FlowTypeRule(
        flow_type="defect", issue_types=["incident"], labels=["bug", "type::bug", "defect"]
    ),
    FlowTypeRule(flow_type="feature", labels=["feature", "type::feature", "enhancement"]),
)


class GitLabSourceConfig(SourceConfig):
    """Projects on gitlab.com or a self-managed GitLab."""

    kind: Literal["gitlab"]
    url: str = "https://gitlab.com"
    projects: list[str] = Field(default_factory=list)
    #: every project of these groups, subgroups included
    groups: list[str] = Field(default_factory=list)
    per_page: int = Field(default=100, ge=1, le=100)
    #: items whose events are fetched at once
    concurrency: int = Field(default=4, ge=1, le=16)
    #: labels (scoped or not, case-insensitive) → stage while the item is open
    label_stages: dict[str, Stage] = Field(default_factory=lambda: dict(DEFAULT_LABEL_STAGES))
    #: work item Status values → stage (read from system notes)
    status_stages: dict[str, Stage] = Field(default_factory=lambda: dict(DEFAULT_STATUS_STAGES))
    #: read issues' system notes for the work item Status (batched like merge requests')
    work_item_status: bool = False
    #: system notes through GraphQL (`/api/graphql`), many items a query; false reads the REST
    #: notes of each item instead (one request or more per item)
    graphql: bool = True
    #: items whose notes share one GraphQL query (a connection's page: at most 100); smaller
    #: batches are tried when the instance scores a query over its complexity limit
    graphql_batch_size: int = Field(default=100, ge=1, le=100)
    #: a closed issue with one of these labels is canceled, not done
    canceled_labels: list[str] = Field(default_factory=lambda: list(DEFAULT_CANCELED_LABELS))

    @model_validator(mode="after")
    def _scope(self) -> GitLabSourceConfig:
        if not self.projects and not self.groups:
            raise ValueError("give projects = ['group/project', …] and/or groups = ['group']")
        return self

    @property
    def api(self) -> str:
        return self.url + "/api/v4"

    @property
    def graphql_url(self) -> str:
        return self.url + "/api/graphql"

    @property
    def flow_type_rules(self) -> list[FlowTypeRule]:
        return list(self.flow_types) or list(DEFAULT_FLOW_TYPES)
