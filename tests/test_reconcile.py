"""Reconciliation: deleted and moved items, complete listings only, exports and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncd.config import Config, load_config
from syncd.errors import ServerError
from syncd.export import iter_items
from syncd.http import HttpClient
from syncd.metrics.incremental import compute_in_memory, stored_rows, update_metrics
from syncd.reconcile import reconcile_source
from syncd.simulator.github import GitHubSimulator
from syncd.simulator.jira import JiraSimulator
from syncd.warehouse.store import Warehouse
from tests.helpers import cli, jira_toml, run_sync

ANCHOR = datetime(2026, 5, 1, tzinfo=UTC)
EMAIL, TOKEN = "ops@example.com", "reconcile-token-77aa"


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R_EMAIL", EMAIL)
    monkeypatch.setenv("R_TOKEN", TOKEN)


def jira_config(
    tmp_path: Path, url: str, warehouse_url: str, jql: str, *, email: bool = True
) -> Config:
    path = jira_toml(
        tmp_path / "syncd.toml",
        url,
        warehouse_url,
        email_env="R_EMAIL" if email else None,
        token_env="R_TOKEN",
        jql=jql,
    )
    return load_config(path)


@pytest.fixture(params=["cloud", "datacenter"])
def sim(request: pytest.FixtureRequest) -> Iterator[JiraSimulator]:
    deployment = request.param
    with JiraSimulator(
        items=40,
        seed=12,
        anchor=ANCHOR,
        email=EMAIL if deployment == "cloud" else None,
        token=TOKEN,
        deployment=deployment,
    ) as s:
        yield s


def _by_key(warehouse: Warehouse) -> dict[str, dict[str, object]]:
    return {r["key"]: r for r in iter_items(warehouse)}


def test_deleted_issues_are_tombstoned_kept_and_left_out_of_metrics(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str
) -> None:
    cloud = sim.deployment == "cloud"
    config = jira_config(tmp_path, sim.base_url, warehouse_url, "project = DEMO", email=cloud)
    warehouse = Warehouse(warehouse_url)
    [result] = run_sync(config, warehouse)
    assert result.ok and result.items == 40
    as_of = ANCHOR + timedelta(days=1)
    update_metrics(warehouse, as_of=as_of)
    before = _by_key(warehouse)
    gone = sorted(before)[:3]
    for key in gone:
        sim.delete_issue(key)

    sim.reset_requests()
    with HttpClient(config.http) as http:
        outcome = reconcile_source(config.sources[0], warehouse, http)
    assert outcome.ok and (outcome.listed, outcome.tombstoned, outcome.revived) == (37, 3, 0)
    searches = [r for r in sim.requests if "search" in r.path]
    assert len(searches) == 1  # ids only, one large page for 40 issues
    assert all(len(r.path) and "changelog" not in r.path for r in sim.requests)

    after = _by_key(warehouse)
    assert set(after) == set(before)  # kept ...
    assert {k for k, r in after.items() if r["deleted_at"] is not None} == set(gone)  # flagged
    update_metrics(warehouse, as_of=as_of)
    stored = [r.to_json() for r in stored_rows(warehouse, kind="week")]

    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
    reference = Warehouse(reference_url)
    ref_config = jira_config(tmp_path, sim.base_url, reference_url, "project = DEMO", email=cloud)
    [again] = run_sync(ref_config, reference)
    assert again.ok and again.items == 37
    expected = [r.to_json() for r in compute_in_memory(reference, kind="week", as_of=as_of)]
    assert stored == expected  # ... and in no metric: as if never synced
    # a second pass changes nothing
    with HttpClient(config.http) as http:
        repeat = reconcile_source(config.sources[0], warehouse, http)
    assert (repeat.tombstoned, repeat.revived) == (0, 0)
    warehouse.close()
    reference.close()


def test_a_listing_cut_short_tombstones_nothing(
    tmp_path: Path, warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with JiraSimulator(items=20, seed=3, anchor=ANCHOR, email=EMAIL, token=TOKEN) as sim:
        config = jira_config(tmp_path, sim.base_url, warehouse_url, "project = DEMO")
        warehouse = Warehouse(warehouse_url)
        assert run_sync(config, warehouse)[0].ok
        from connectors.jira import JiraConnector

        def broken(self: JiraConnector, stream: str) -> Iterator[str]:
            yield "10001"
            raise ServerError("GET /search answered 503", status=503)

        monkeypatch.setattr(JiraConnector, "ids", broken)
        with HttpClient(config.http) as http:
            outcome = reconcile_source(config.sources[0], warehouse, http)
        assert not outcome.ok and "503" in (outcome.error or "")
        assert all(r["deleted_at"] is None for r in iter_items(warehouse))
        warehouse.close()


def test_a_moved_issue_keeps_its_identity_and_takes_its_new_key(
    tmp_path: Path, warehouse_url: str
) -> None:
    with JiraSimulator(items=15, seed=4, anchor=ANCHOR, email=EMAIL, token=TOKEN) as sim:
        config = jira_config(tmp_path, sim.base_url, warehouse_url, "project = DEMO")
        warehouse = Warehouse(warehouse_url)
        assert run_sync(config, warehouse)[0].ok
        before = _by_key(warehouse)
        moved = sorted(before)[0]
        sim.move_issue(moved, "DEMO-900", datetime.now(UTC))  # renumbered within scope
        left = sorted(before)[1]
        sim.move_issue(left, "OPS-1", datetime.now(UTC))  # out of the source's scope
        assert run_sync(config, warehouse)[0].ok
        after = _by_key(warehouse)
        assert moved not in after and after["DEMO-900"]["id"] == before[moved]["id"]
        assert len(after) == 15
        with HttpClient(config.http) as http:
            outcome = reconcile_source(config.sources[0], warehouse, http)
        assert outcome.tombstoned == 1
        assert _by_key(warehouse)[left]["deleted_at"] is not None
        warehouse.close()


def test_reappearing_items_are_revived(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    with JiraSimulator(items=10, seed=5, anchor=ANCHOR, email=EMAIL, token=TOKEN) as sim:
        config = jira_config(tmp_path, sim.base_url, url, "project = DEMO")
        warehouse = Warehouse(url)
        assert run_sync(config, warehouse)[0].ok
        ids = {str(r["id"]) for r in iter_items(warehouse)}
        now = datetime.now(UTC)
        assert warehouse.reconcile("jira", ids - {min(ids)}, now) == (1, 0)
        assert warehouse.reconcile("jira", ids, now) == (0, 1)
        assert all(r["deleted_at"] is None for r in iter_items(warehouse))
        warehouse.close()


def test_github_ids_cover_issues_and_pull_requests(tmp_path: Path) -> None:
    with GitHubSimulator(
        repos=("acme/web",), issues=120, pulls=40, seed=3, anchor=ANCHOR, token=TOKEN
    ) as sim:
        path = tmp_path / "gh.toml"
        path.write_text(
            f'[warehouse]\nurl = "sqlite:///{tmp_path / "g.db"}"\n[[sources]]\nname = "gh"\n'
            f'kind = "github"\nurl = "{sim.base_url}"\ntoken_env = "R_TOKEN"\n'
            'repos = ["acme/web"]\n',
            encoding="utf-8",
        )
        config = load_config(path)
        warehouse = Warehouse(config.warehouse.url)
        assert run_sync(config, warehouse)[0].ok
        sim.reset_requests()
        code, out = cli(["reconcile", "-c", str(path)])
        assert code == 0, out
        assert "gh: ok — 160 ids listed in 2 requests, 0 tombstoned, 0 revived" in out
        warehouse.close()
