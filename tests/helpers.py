"""Helpers shared by the end-to-end tests: the CLI with its stdout captured, and a sync whose
retry waits are recorded instead of slept."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
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
