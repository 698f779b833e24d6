"""Helpers shared by the end-to-end tests: the CLI with its stdout captured, and a sync whose
retry waits are recorded instead of slept."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from syncd.cli import main
from syncd.config import Config, HttpConfig
from syncd.http import HttpClient
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
