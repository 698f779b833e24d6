"""Helpers shared by the end-to-end tests: the CLI with its stdout captured, a sync whose
retry waits are recorded instead of slept, and three empty trackers for scripted scenarios."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from syncd.cli import main
from syncd.config import Config, HttpConfig
from syncd.http import HttpClient
from syncd.simulator.github import GitHubSimulator
from syncd.simulator.gitlab import GitLabSimulator
from syncd.simulator.jira import JiraSimulator
from syncd.sync import SourceResult, sync_all
from syncd.warehouse.store import Warehouse


def cli(args: list[str]) -> tuple[int, str]:
    """Run `syncd <args>` in-process; return the exit code and what it printed."""
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(args)
    return code, out.getvalue()


def run_sync(
    config: Config, warehouse: Warehouse, sleeps: list[float] | None = None, **kw: Any
) -> list[SourceResult]:
    """One pass over the config's sources with short backoff; waits go to `sleeps`."""
    with HttpClient(
        HttpConfig(backoff_initial=0.01, backoff_max=0.05),
        sleep=(sleeps if sleeps is not None else []).append,
    ) as http:
        return sync_all(config, warehouse, http, **kw)


def jira_toml(
    path: Path,
    url: str,
    warehouse_url: str,
    *,
    email_env: str | None,
    token_env: str,
    jql: str = "project = DEMO",
    top: str = "",
    source: str = "",
) -> Path:
    """Write a config with one Jira source named `jira`; `top` goes before the source (e.g. a
    `[daemon]` table), `source` after its keys (more keys, or further `[[sources]]`)."""
    email = f'email_env = "{email_env}"' if email_env else ""
    path.write_text(
        f'[warehouse]\nurl = "{warehouse_url}"\n{top}\n[[sources]]\nname = "jira"\n'
        f'kind = "jira"\nurl = "{url}"\n{email}\ntoken_env = "{token_env}"\njql = "{jql}"\n'
        f"{source}\n",
        encoding="utf-8",
    )
    return path


@dataclass
class Trackers:
    """One simulator per tracker, for a scenario spanning them."""

    jira: JiraSimulator
    github: GitHubSimulator
    gitlab: GitLabSimulator

    def sources_toml(self, token_env: str) -> str:
        """The config's GitHub (`gh`) and GitLab (`gl`) sources for these simulators (the
        Jira source comes from `jira_toml`)."""
        return f"""
[[sources]]
name = "gh"
kind = "github"
url = "{self.github.base_url}"
token_env = "{token_env}"
repos = ["acme/checkout-web"]

[[sources]]
name = "gl"
kind = "gitlab"
url = "{self.gitlab.base_url}"
token_env = "{token_env}"
projects = ["payments/api"]
"""


@contextmanager
def empty_trackers(anchor: datetime, email: str, token: str) -> Iterator[Trackers]:
    """Jira, GitHub (repository `acme/checkout-web`) and GitLab (project `payments/api`)
    simulators with no items yet: a test scripts its scenario into them."""
    with (
        JiraSimulator(items=0, seed=1, anchor=anchor, email=email, token=token) as jira,
        GitHubSimulator(
            repos=("acme/checkout-web",), issues=0, pulls=0, anchor=anchor, token=token
        ) as github,
        GitLabSimulator(
            projects=("payments/api",), issues=0, merge_requests=0, anchor=anchor, token=token
        ) as gitlab,
    ):
        yield Trackers(jira, github, gitlab)
