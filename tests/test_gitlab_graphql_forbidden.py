"""GitLab answering `/api/graphql` with 403, end to end: the sync falls back to each item's
REST notes after one refused query and ends with the warehouse a REST-only sync makes, on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.config import load_config
from syncd.simulator.gitlab import GitLabSimulator
from syncd.warehouse.store import ITEMS, LINKS, TRANSITIONS, Warehouse
from tests.helpers import run_sync

T0 = datetime(2026, 4, 6, tzinfo=UTC)
TOKEN = "sim-gitlab-token-not-real-2222"
P = "acme/web"
GRAPHQL = "/api/graphql"


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GL_TOKEN", TOKEN)


def synced(sim: GitLabSimulator, tmp_path: Path, name: str, url: str, extra: str) -> Warehouse:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[warehouse]\nurl = "{url}"\n[[sources]]\nname = "gl"\nkind = "gitlab"\n'
        f'url = "{sim.base_url}"\ntoken_env = "GL_TOKEN"\nprojects = ["{P}"]\n'
        f"work_item_status = true\nper_page = 8\n{extra}\n",
        encoding="utf-8",
    )
    warehouse = Warehouse(url)
    [result] = run_sync(load_config(path), warehouse)
    assert result.ok, result.error
    return warehouse


def contents(warehouse: Warehouse) -> dict[str, list[tuple[Any, ...]]]:
    """Items (but their sync time), transitions and links, in a stable order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with warehouse.engine.connect() as conn:
        for table in (ITEMS, TRANSITIONS, LINKS):
            columns = [c for c in table.columns if c.name != "synced_at"]
            keys = [c for c in table.primary_key.columns]
            out[table.name] = [tuple(r) for r in conn.execute(sa.select(*columns).order_by(*keys))]
    return out


def test_a_403_on_graphql_falls_back_to_rest_notes(tmp_path: Path, warehouse_url: str) -> None:
    with GitLabSimulator(
        projects=(P,),
        issues=15,
        merge_requests=15,
        seed=12,
        anchor=T0,
        token=TOKEN,
        graphql_forbidden=True,
    ) as sim:
        blocker = sim.add_issue(P, created=T0 - timedelta(days=2))
        blocked = sim.add_issue(P, created=T0 - timedelta(days=1))  # open: the link counts
        sim.link_issues(P, blocker, P, blocked, "blocks", at=T0 + timedelta(hours=1))
        sim.reset_requests()
        refused = synced(sim, tmp_path, "refused", warehouse_url, "")
        requests = sim.requests
        sim.reset_requests()
        rest = synced(sim, tmp_path, "rest", f"sqlite:///{tmp_path / 'rest.db'}", "graphql = false")
        rest_requests = sim.requests
    graphql = [r for r in requests if r.path == GRAPHQL]
    assert [r.status for r in graphql] == [403]  # asked once, then never again this run
    assert not any(r.path == GRAPHQL for r in rest_requests)
    notes = sorted(r.path for r in requests if r.path.endswith("/notes"))
    assert notes == sorted(r.path for r in rest_requests if r.path.endswith("/notes"))
    assert any("/issues/" in p for p in notes) and any("/merge_requests/" in p for p in notes)
    ours, theirs = contents(refused), contents(rest)
    assert ours["items"] and ours["transitions"] and ours["item_links"]
    assert ours == theirs
