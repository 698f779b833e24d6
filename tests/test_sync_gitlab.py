"""End to end: the GitLab simulator on 127.0.0.1 → sync → export / metrics, on SQLite and
PostgreSQL: hand-computed figures, a no-change re-sync, 429 storms, keyset and offset pages,
group scope."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd.config import load_config
from syncd.export import iter_items, iter_transitions
from syncd.simulator.gitlab import GitLabSimulator
from syncd.warehouse.store import Warehouse
from tests.helpers import cli, run_sync

T0 = datetime(2026, 4, 6, tzinfo=UTC)  # a Monday
TOKEN = "sim-gitlab-token-not-real-0000"
H = 3600


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def write_config(
    tmp_path: Path,
    url: str,
    warehouse_url: str,
    scope: str = 'projects = ["acme/web"]',
    extra: str = "",
) -> Path:
    path = tmp_path / "gl.toml"
    path.write_text(
        f"""
[warehouse]
url = "{warehouse_url}"
[[sources]]
name = "gl"
kind = "gitlab"
url = "{url}"
token_env = "GL_TOKEN"
{scope}
value_stream = "Payments"
{extra}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GL_TOKEN", TOKEN)


@pytest.fixture
def scenario() -> Iterator[GitLabSimulator]:
    sim = GitLabSimulator(
        projects=("acme/web",), issues=0, merge_requests=0, anchor=T0, token=TOKEN
    )
    p = "acme/web"
    one = sim.add_issue(p, created=h(0), labels=("type::bug",))
    sim.add_label(p, "issue", one, "workflow::in progress", h(24))
    sim.add_label(p, "issue", one, "workflow::blocked", h(48))  # replaces in progress
    sim.add_label(p, "issue", one, "workflow::in progress", h(72))
    sim.close(p, "issue", one, h(96))
    two = sim.add_issue(p, created=h(0), issue_type="incident")
    sim.add_label(p, "issue", two, "workflow::in progress", h(24))
    sim.remove_label(p, "issue", two, "workflow::in progress", h(48))
    sim.add_label(p, "issue", two, "workflow::in progress", h(72))
    sim.close(p, "issue", two, h(96))
    sim.reopen(p, "issue", two, h(120))
    sim.close(p, "issue", two, h(144))
    three = sim.add_issue(p, created=h(0))
    sim.add_label(p, "issue", three, "workflow::in progress", h(24))
    sim.add_label(p, "issue", three, "won't do", h(47))
    sim.close(p, "issue", three, h(48))
    mr1 = sim.add_merge_request(p, created=h(12), draft=True, labels=("type::feature",))
    sim.set_draft(p, mr1, False, h(24))
    sim.add_reviewer(p, mr1, "ana", h(36))
    sim.approve(p, mr1, "ana", h(60))
    sim.merge(p, mr1, h(84))
    mr2 = sim.add_merge_request(p, created=h(24))
    sim.add_label(p, "merge_request", mr2, "workflow::review", h(30))
    sim.close(p, "merge_request", mr2, h(40))
    assert (one, two, three, mr1, mr2) == (1, 2, 3, 1, 2)
    with sim:
        yield sim


def test_hand_computed_figures_through_export_and_metrics(
    scenario: GitLabSimulator, tmp_path: Path, warehouse_url: str
) -> None:
    config = str(write_config(tmp_path, scenario.base_url, warehouse_url))
    code, out = cli(["sync", "-c", config])
    assert code == 0, out
    code, out = cli(["export", "items", "-c", config, "--format", "jsonl"])
    items = {r["key"]: r for r in map(json.loads, out.splitlines())}
    assert {
        k: (
            r["kind"],
            r["flow_type"],
            r["stage"],
            r["state"],
            r["flow_time_s"],
            r["active_s"],
            r["wait_s"],
        )
        for k, r in items.items()
    } == {
        "acme/web#1": ("issue", "defect", "done", "closed", 72 * H, 48 * H, 24 * H),
        # back to opened 48–72 and closed 96–120 are wait
        "acme/web#2": ("issue", "defect", "done", "closed", 120 * H, 72 * H, 48 * H),
        "acme/web#3": ("issue", "unclassified", "canceled", "closed (won't do)", 24 * H, 24 * H, 0),
        # draft 12–24 and opened 24–36 active; in review 36–60 and approved 60–84 wait
        "acme/web!1": ("merge_request", "feature", "done", "merged", 72 * H, 24 * H, 48 * H),
        "acme/web!2": (
            "merge_request",
            "unclassified",
            "canceled",
            "closed unmerged",
            16 * H,
            6 * H,
            10 * H,
        ),
    }
    code, out = cli(["export", "transitions", "-c", config, "--format", "csv"])
    one = [line.split(",")[4] for line in out.splitlines() if ",acme/web#1," in line]
    assert one == [
        "opened",
        "workflow::in progress",
        "workflow::blocked",
        "workflow::in progress",
        "closed",
    ]

    code, out = cli(
        [
            "metrics",
            "-c",
            config,
            "--period",
            "week",
            "--as-of",
            h(7 * 24 + 1).isoformat(),
            "--format",
            "json",
        ]
    )
    row = next(
        r for r in json.loads(out) if r["period_start"] == "2026-04-06" and r["flow_type"] == "all"
    )
    assert row["velocity"] == 3
    assert row["flow_time"]["mean_s"] == pytest.approx((72 + 120 + 72) * H / 3)
    assert row["efficiency"] == pytest.approx((48 + 72 + 24) / (72 + 120 + 72))
    assert row["load_end"] == 0
    assert row["load_avg"] == pytest.approx((72 + 72 + 24 + 72 + 16) / 168)
    assert row["distribution"]["defect"] == pytest.approx(2 / 3)


def test_unchanged_project_costs_one_listing_per_stream(tmp_path: Path, warehouse_url: str) -> None:
    with GitLabSimulator(
        projects=("acme/web", "acme/platform/api"),
        issues=20,
        merge_requests=20,
        seed=3,
        anchor=T0,
        token=TOKEN,
    ) as sim:
        config = load_config(
            write_config(
                tmp_path,
                sim.base_url,
                warehouse_url,
                'projects = ["acme/web", "acme/platform/api"]',
            )
        )
        warehouse = Warehouse(warehouse_url)
        assert all(r.ok for r in run_sync(config, warehouse))
        assert len(list(iter_items(warehouse))) == 80
        sim.reset_requests()
        [result] = run_sync(config, warehouse)
        assert result.ok and result.items == 0
        assert len(sim.requests) == 4  # issues + merge requests listing, per project


def test_rate_limit_storm_loses_nothing(tmp_path: Path, warehouse_url: str) -> None:
    def synced(every: int, url: str) -> tuple[Any, Any]:
        with GitLabSimulator(
            issues=15, merge_requests=15, seed=4, anchor=T0, token=TOKEN, rate_limit_every=every
        ) as sim:
            warehouse = Warehouse(url)
            sleeps: list[float] = []
            [result] = run_sync(
                load_config(write_config(tmp_path, sim.base_url, url, extra="per_page = 10")),
                warehouse,
                sleeps,
            )
            assert result.ok, result.error
            if every:
                assert result.retries > 3 and all(s >= 1 for s in sleeps)
            return list(iter_items(warehouse)), list(iter_transitions(warehouse))

    stormy = synced(3, warehouse_url)
    calm = synced(0, f"sqlite:///{tmp_path / 'calm.db'}")
    strip = ("updated_at",)
    assert [{k: v for k, v in i.items() if k not in strip} for i in stormy[0]] == [
        {k: v for k, v in i.items() if k not in strip} for i in calm[0]
    ]
    assert stormy[1] == calm[1]


@pytest.mark.parametrize("keyset", [True, False])
def test_keyset_and_offset_listings(tmp_path: Path, warehouse_url: str, keyset: bool) -> None:
    with GitLabSimulator(
        issues=35,
        merge_requests=5,
        seed=5,
        anchor=T0,
        token=TOKEN,
        keyset=keyset,
        offset_page_cap=2,
    ) as sim:
        config = load_config(
            write_config(tmp_path, sim.base_url, warehouse_url, extra="per_page = 10")
        )
        warehouse = Warehouse(warehouse_url)
        [result] = run_sync(config, warehouse)
        assert result.ok, result.error
        assert result.items == 40
        listings = [r for r in sim.requests if r.path.endswith("/issues")]
        pages = [r.query.get("page", ["1"])[0] for r in listings]
        if keyset:  # cursor links: the offset cap (page 2 here) is never hit
            assert len(listings) == 4 and not any(r.status == 400 for r in sim.requests)
        else:  # no keyset on this instance: offset pages, and no cap either
            assert pages == ["1", "2", "3", "4"]


def test_group_scope_includes_subgroups(tmp_path: Path, warehouse_url: str) -> None:
    with GitLabSimulator(
        projects=("acme/web", "acme/platform/api", "other/x"),
        issues=3,
        merge_requests=2,
        seed=6,
        anchor=T0,
        token=TOKEN,
    ) as sim:
        config = load_config(
            write_config(tmp_path, sim.base_url, warehouse_url, 'groups = ["acme"]')
        )
        warehouse = Warehouse(warehouse_url)
        [result] = run_sync(config, warehouse)
        assert result.ok, result.error
        projects = {i["key"].split("#")[0].split("!")[0] for i in iter_items(warehouse)}
        assert projects == {"acme/web", "acme/platform/api"}


def test_deleted_issues_and_merge_requests_are_tombstoned(
    tmp_path: Path, warehouse_url: str
) -> None:
    from syncd.http import HttpClient
    from syncd.reconcile import reconcile_source

    with GitLabSimulator(
        projects=("acme/web",), issues=12, merge_requests=9, seed=5, anchor=T0, token=TOKEN
    ) as sim:
        path = write_config(tmp_path, sim.base_url, warehouse_url, 'projects = ["acme/web"]')
        config = load_config(path)
        warehouse = Warehouse(warehouse_url)
        assert all(r.ok for r in run_sync(config, warehouse))
        sim.delete("acme/web", "issue", 3)
        sim.delete("acme/web", "merge_request", 2)
        sim.reset_requests()
        with HttpClient(config.http) as http:
            outcome = reconcile_source(config.sources[0], warehouse, http)
        assert outcome.ok and (outcome.listed, outcome.tombstoned) == (19, 2)
        assert len(sim.requests) == 2  # one listing page per stream, ids only
        gone = {r["key"] for r in iter_items(warehouse) if r["deleted_at"] is not None}
        assert gone == {"acme/web#3", "acme/web!2"}
        warehouse.close()
