"""End to end: the Jira simulator on 127.0.0.1 → sync → warehouse, on SQLite and PostgreSQL.

Ground truth is the simulator's own history of each issue; the warehouse must hold exactly it,
after first syncs, incremental syncs, interruptions, fallbacks and rate limiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.config import Config, load_config
from syncd.export import iter_items, iter_transitions
from syncd.simulator.jira import JiraSimulator
from syncd.warehouse.store import LINKS, RAW, Warehouse
from tests.helpers import run_sync

ANCHOR = datetime(2026, 6, 1, tzinfo=UTC)
EMAIL, TOKEN = "bot@example.com", "sim-token-9f8e7d6c5b"


def make_config(tmp_path: Path, url: str, warehouse_url: str, **source: Any) -> Config:
    extra = "".join(
        f"{k} = {v!r}\n".replace("'", '"') if isinstance(v, str) else f"{k} = {v}\n"
        for k, v in source.items()
    )
    text = f"""
[warehouse]
url = "{warehouse_url}"

[[sources]]
name = "sim"
kind = "jira"
url = "{url}"
email_env = "SIM_EMAIL"
token_env = "SIM_TOKEN"
jql = "project = DEMO"
value_stream = "Demo"
{extra}
[sources.stages]
"Blocked" = "waiting"
"Ready for QA" = "waiting"
"""
    path = tmp_path / "syncd.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_EMAIL", EMAIL)
    monkeypatch.setenv("SIM_TOKEN", TOKEN)


@pytest.fixture
def sleeps() -> list[float]:
    return []


def stored_moves(warehouse: Warehouse) -> dict[str, list[tuple[datetime, str | None, str]]]:
    """Per key, the stored transitions that change the status (plus the creation)."""
    out: dict[str, list[tuple[datetime, str | None, str]]] = {}
    for t in iter_transitions(warehouse):
        if t["from_state"] is None or t["from_state"] != t["to_state"]:
            at = datetime.fromisoformat(t["at"].replace("Z", "+00:00"))
            out.setdefault(t["key"], []).append((at, t["from_state"], t["to_state"]))
    return out


def truth(sim: JiraSimulator) -> dict[str, list[tuple[datetime, str | None, str]]]:
    return {
        key: [(at, frm, to) for at, frm, to, _res in sim.issue_history(key)] for key in sim.keys
    }


@pytest.fixture
def sim() -> Iterator[JiraSimulator]:
    with JiraSimulator(items=120, seed=3, anchor=ANCHOR, email=EMAIL, token=TOKEN) as s:
        yield s


def test_first_sync_stores_complete_histories(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str, sleeps: list[float]
) -> None:
    config = make_config(tmp_path, sim.base_url, warehouse_url, batch_size=50, page_size=25)
    warehouse = Warehouse(warehouse_url)
    [result] = run_sync(config, warehouse, sleeps)
    assert result.ok, result.error
    assert result.items == 120
    assert stored_moves(warehouse) == truth(sim)
    paths = [r.path for r in sim.requests]
    assert "/rest/api/3/search" not in paths  # the 410-gone endpoint is never used on Cloud
    searches = paths.count("/rest/api/3/search/jql")
    bulk = paths.count("/rest/api/3/changelog/bulkfetch")
    assert searches == 5 and bulk >= 3  # 120 issues / 25 per page; 3 batches of ≤ 50
    assert not any("/changelog" in p and "/issue/" in p for p in paths)


def test_no_change_resync_costs_two_requests(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str, sleeps: list[float]
) -> None:
    config = make_config(tmp_path, sim.base_url, warehouse_url)
    warehouse = Warehouse(warehouse_url)
    run_sync(config, warehouse, sleeps)
    before = list(iter_items(warehouse))
    sim.reset_requests()
    [result] = run_sync(config, warehouse, sleeps)
    assert result.ok and result.items == 0
    assert len(sim.requests) <= 2, [r.path for r in sim.requests]
    assert list(iter_items(warehouse)) == before
    # the bound is the watermark minus the 5-minute lookback, in epoch milliseconds
    cursor = warehouse.get_cursor("sim", "issues")
    assert cursor is not None and cursor.watermark is not None
    bound_ms = int((cursor.watermark.timestamp() - 300) * 1000)
    [search] = [r for r in sim.requests if r.path == "/rest/api/3/search/jql"]
    assert search.body["jql"] == f"(project = DEMO) AND updated >= {bound_ms} ORDER BY created ASC"
    assert set(search.body["fields"]) >= {"status", "issuetype", "labels", "resolution", "updated"}


def test_full_resync_refetches_everything_and_changes_nothing(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str, sleeps: list[float]
) -> None:
    config = make_config(tmp_path, sim.base_url, warehouse_url)
    warehouse = Warehouse(warehouse_url)
    run_sync(config, warehouse, sleeps)
    before = list(iter_transitions(warehouse))
    sim.reset_requests()
    [result] = run_sync(config, warehouse, sleeps, full=True)
    assert result.ok and result.items == 120
    [first_search, *_] = [r for r in sim.requests if r.path == "/rest/api/3/search/jql"]
    assert "updated >= 0 " in first_search.body["jql"]
    assert list(iter_transitions(warehouse)) == before


def test_changed_issues_resync_to_exactly_the_trackers_history(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str, sleeps: list[float]
) -> None:
    config = make_config(tmp_path, sim.base_url, warehouse_url)
    warehouse = Warehouse(warehouse_url)
    run_sync(config, warehouse, sleeps)
    changed = sim.mutate(7)
    changed += sim.mutate(3)  # some issues change twice
    sim.reset_requests()
    [result] = run_sync(config, warehouse, sleeps)
    assert result.ok
    assert 1 <= result.items <= len(set(changed)) + 10  # the lookback may repeat a few
    assert stored_moves(warehouse) == truth(sim)
    assert [r.path for r in sim.requests].count("/rest/api/3/changelog/bulkfetch") == 1


def test_bulkfetch_absent_falls_back_to_per_issue_changelog(
    tmp_path: Path, warehouse_url: str, sleeps: list[float]
) -> None:
    with JiraSimulator(
        items=30, seed=4, anchor=ANCHOR, email=EMAIL, token=TOKEN, bulkfetch=False
    ) as sim:
        config = make_config(tmp_path, sim.base_url, warehouse_url)
        warehouse = Warehouse(warehouse_url)
        [result] = run_sync(config, warehouse, sleeps)
        assert result.ok, result.error
        assert stored_moves(warehouse) == truth(sim)
        per_issue = [r for r in sim.requests if r.path.endswith("/changelog")]
        assert len(per_issue) >= 30


def test_datacenter_completes_truncated_embedded_changelogs(
    tmp_path: Path, warehouse_url: str, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIM_EMAIL")
    with JiraSimulator(
        items=40,
        seed=5,
        anchor=ANCHOR,
        token=TOKEN,
        deployment="datacenter",
        embedded_changelog_limit=3,
    ) as sim:
        path = tmp_path / "dc.toml"
        path.write_text(
            f"""
[warehouse]
url = "{warehouse_url}"
[[sources]]
name = "dc"
kind = "jira"
url = "{sim.base_url}"
token_env = "SIM_TOKEN"
jql = "project = DEMO"
page_size = 15
[sources.stages]
"Blocked" = "waiting"
""",
            encoding="utf-8",
        )
        config = load_config(path)
        warehouse = Warehouse(warehouse_url)
        [result] = run_sync(config, warehouse, sleeps)
        assert result.ok, result.error
        assert stored_moves(warehouse) == truth(sim)
        paths = [r.path for r in sim.requests]
        assert paths.count("/rest/api/2/search") == 3  # 40 issues, 15 a page
        assert any(p.endswith("/changelog") for p in paths)  # truncated ones were completed
        sim.reset_requests()
        [again] = run_sync(config, warehouse, sleeps)
        assert again.ok and again.items == 0 and len(sim.requests) <= 2


def test_rate_limit_storm_is_survived(
    tmp_path: Path, warehouse_url: str, sleeps: list[float]
) -> None:
    with JiraSimulator(
        items=60, seed=6, anchor=ANCHOR, email=EMAIL, token=TOKEN, rate_limit_every=2, retry_after=1
    ) as sim:
        config = make_config(tmp_path, sim.base_url, warehouse_url, page_size=20)
        warehouse = Warehouse(warehouse_url)
        [result] = run_sync(config, warehouse, sleeps)
        assert result.ok, result.error
        assert result.retries >= 3 and sum(1 for s in sleeps if s >= 1.0) == result.retries
        assert stored_moves(warehouse) == truth(sim)


def test_interrupted_sync_resumes_without_loss_or_duplicates(
    sim: JiraSimulator,
    tmp_path: Path,
    warehouse_url: str,
    sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = make_config(tmp_path, sim.base_url, warehouse_url, batch_size=20, page_size=20)
    warehouse = Warehouse(warehouse_url)
    original = Warehouse.commit_page
    calls = {"n": 0}

    def crashing(self: Warehouse, **kw: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # like a kill between pages: nothing of page 3 commits
        return original(self, **kw)

    monkeypatch.setattr(Warehouse, "commit_page", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_sync(config, warehouse, sleeps)
    monkeypatch.setattr(Warehouse, "commit_page", original)
    assert len(list(iter_items(warehouse))) == 40
    cursor = warehouse.get_cursor("sim", "issues")
    assert cursor is not None and cursor.state.get("token") and cursor.watermark is None
    sim.reset_requests()
    [result] = run_sync(config, warehouse, sleeps)
    assert result.ok and result.items == 80  # resumed after page 2, not from the start
    assert stored_moves(warehouse) == truth(sim)
    transitions = list(iter_transitions(warehouse))
    assert len(transitions) == len(
        {(t["key"], t["at"], t["to_state"], t["to_stage"]) for t in transitions}
    )

    fresh_url = warehouse_url
    del fresh_url  # the uninterrupted run for comparison uses its own SQLite file
    other = Warehouse(f"sqlite:///{tmp_path / 'uninterrupted.db'}")
    run_sync(config, other, sleeps)
    strip = ("updated_at",)
    assert [{k: v for k, v in i.items() if k not in strip} for i in iter_items(warehouse)] == [
        {k: v for k, v in i.items() if k not in strip} for i in iter_items(other)
    ]


def test_bad_token_fails_clearly_and_keeps_the_cursor(
    sim: JiraSimulator,
    tmp_path: Path,
    warehouse_url: str,
    sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = make_config(tmp_path, sim.base_url, warehouse_url)
    warehouse = Warehouse(warehouse_url)
    run_sync(config, warehouse, sleeps)
    cursor = warehouse.get_cursor("sim", "issues")
    monkeypatch.setenv("SIM_TOKEN", "wrong-token-123456")
    [result] = run_sync(config, warehouse, sleeps)
    assert not result.ok and result.error is not None
    assert "401" in result.error and "authentication" in result.error
    assert "wrong-token-123456" not in result.error and TOKEN not in result.error
    assert warehouse.get_cursor("sim", "issues") == cursor
    assert sleeps == []  # a 401 is never retried
    runs = warehouse.runs("sim")
    assert runs[-1]["status"] == "failed" and runs[-1]["error"] == result.error


def test_watermark_is_capped_at_the_runs_start_and_links_are_stored(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str, sleeps: list[float]
) -> None:
    config = make_config(tmp_path, sim.base_url, warehouse_url)
    warehouse = Warehouse(warehouse_url)
    future = datetime.now(UTC) + timedelta(hours=2)  # a tracker clock running ahead
    assert len(sim.mutate(1, at=future)) == 1
    started = datetime.now(UTC)
    [result] = run_sync(config, warehouse, sleeps)
    assert result.ok
    cursor = warehouse.get_cursor("sim", "issues")
    assert cursor is not None and cursor.watermark is not None
    assert started <= cursor.watermark <= datetime.now(UTC) < future
    sim.reset_requests()
    [again] = run_sync(config, warehouse, sleeps)  # the ahead-of-time issue is seen again...
    assert again.ok and again.items == 0  # ...but recognised as unchanged, not refetched
    with warehouse.engine.connect() as conn:
        links = conn.execute(sa.select(LINKS.c.item_id, LINKS.c.target_key)).all()
    assert links, "the simulator's issue links must reach item_links"


def test_raw_pages_are_kept_then_pruned_by_retention(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str, sleeps: list[float]
) -> None:
    config = make_config(tmp_path, sim.base_url, warehouse_url)
    warehouse = Warehouse(warehouse_url)
    run_sync(config, warehouse, sleeps)
    with warehouse.engine.connect() as conn:
        raws = conn.execute(sa.select(RAW.c.url, RAW.c.params, RAW.c.body)).all()
    urls = [r.url for r in raws]
    assert any(u.endswith("/rest/api/3/status") for u in urls)
    assert any(u.endswith("/search/jql") for u in urls)
    assert any(u.endswith("/changelog/bulkfetch") for u in urls)
    assert all(TOKEN not in r.params + r.body and EMAIL not in r.params for r in raws)
    assert warehouse.prune_raw("sim", datetime.now(UTC) - timedelta(days=1)) == 0
    assert warehouse.prune_raw("sim", datetime.now(UTC) + timedelta(seconds=1)) == len(raws)
