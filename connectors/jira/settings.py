"""Configuration keys of a Jira source (on top of the keys every source has)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from syncd.config import FlowTypeRule, SourceConfig, read_secret

DEFAULT_CANCELED_RESOLUTIONS = (
    "Won't Do",
    "Won't Fix",
    "Duplicate",
    "Cannot Reproduce",
    "Declined",
    "Canceled",
    "Cancelled",
    "Obsolete",
    "Rejected",
    "Not a Bug",
)

DEFAULT_FLOW_TYPES = (
    FlowTypeRule(
        flow_type="risk",
        issue_types=["Vulnerability", "Security", "Compliance", "Risk"],
        labels=["security", "vulnerability", "compliance"],
    ),
    FlowTypeRule(
        flow_type="debt",
        issue_types=["Tech Debt", "Technical Debt", "Refactor", "Refactoring", "Chore"],
        labels=["tech-debt", "techdebt", "tech_debt", "refactor", "chore"],
    ),
    FlowTypeRule(
        flow_type="defect",
        issue_types=["Bug", "Incident", "Problem", "Defect"],
        labels=["bug", "defect"],
    ),
    FlowTypeRule(
        flow_type="feature",
        issue_types=["Story", "Epic", "Feature", "Requirement", "New Feature", "Improvement"],
        labels=["enhancement", "feature"],
    ),
)


class JiraSourceConfig(SourceConfig):
    """A Jira Cloud site or Jira Data Center / Server instance."""

    kind: Literal["jira"]
    #: "auto" asks serverInfo.deploymentType once and remembers it in the cursor
    deployment: Literal["auto", "cloud", "datacenter"] = "auto"
    #: Cloud: the account e-mail, literally or by environment variable
    email: str | None = None
    email_env: str | None = None
    #: the scope; syncd adds its own `updated >=` bound and ordering
    jql: str = ""
    page_size: int = Field(default=100, ge=1, le=1000)
    #: issues whose histories are fetched together (bulkfetch takes up to 1000 ids)
    batch_size: int = Field(default=1000, ge=1, le=1000)
    #: change histories per bulkfetch page (Jira allows up to 10000)
    changelog_page_size: int = Field(default=10000, ge=1, le=10000)
    #: a done-category status with one of these resolutions is `canceled`
    canceled_resolutions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CANCELED_RESOLUTIONS)
    )

    @model_validator(mode="after")
    def _email_once(self) -> JiraSourceConfig:
        if self.email and self.email_env:
            raise ValueError("give email or email_env, not both")
        if "order by" in self.jql.casefold():
            raise ValueError("jql: leave out ORDER BY; syncd orders the query itself")
        return self

    def email_value(self) -> str | None:
        if self.email_env:
            secret = read_secret(self.email_env, None, f"sources.{self.name}", env_key="email_env")
            return secret.get_secret_value() if secret else None
        return self.email

    def token_value(self) -> SecretStr | None:
        return self.token()

    @property
    def flow_type_rules(self) -> list[FlowTypeRule]:
        return list(self.flow_types) or list(DEFAULT_FLOW_TYPES)
