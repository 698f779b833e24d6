"""Through the public CLI: a hand-made Jira scenario synced from the simulator must give exactly
the hand-computed per-item figures and weekly aggregates (pauses, backward moves, reopen,
cancel, never started, done from the backlog, non-ASCII statuses, DST-crossing timestamps)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from syncd.metrics.incremental import stored_rows, update_metrics
from syncd.simulator.jira import JiraSimulator
from syncd.warehouse.store import Warehouse
from tests.helpers import cli as run

D, H = 86400, 3600


def at(day: int, hour: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


AS_OF = "2026-04-05T00:00:00Z"


@pytest.fixture
def scenario() -> Iterator[JiraSimulator]:
    """Europe/Berlin switches to summer time on 2026-03-29 01:00 UTC: the simulator renders
    timestamps before it with +0100 and after it with +0200."""
    sim = JiraSimulator(items=0, seed=1, anchor=at(1, 0, 1), email="a@b.c", token="tok-abcdef")
    # A: a story with a pause, finished after the DST switch
    a = sim.add_issue(issue_type="Story", created=at(23, 9))
    sim.transition(a, "In Progress", at(24, 10))
    sim.transition(a, "Blocked", at(26, 10))
    sim.transition(a, "In Progress", at(30, 10))
    sim.transition(a, "Done", at(31, 10), resolution="Done")
    # B: a bug moved back to the backlog, done, then reopened and done again
    b = sim.add_issue(issue_type="Bug", created=at(23, 9))
    sim.transition(b, "In Progress", at(25))
    sim.transition(b, "To Do", at(26))
    sim.transition(b, "In Progress", at(27))
    sim.transition(b, "Done", at(28), resolution="Done")
    sim.transition(b, "In Progress", at(30))
    sim.transition(b, "Done", at(1, 12, 4), resolution="Done")
    # C: started, then canceled (done category with resolution Won't Do)
    c = sim.add_issue(issue_type="Story", created=at(23))
    sim.transition(c, "In Progress", at(24))
    sim.transition(c, "Done", at(27), resolution="Won't Do")
    # D: never started
    sim.add_issue(issue_type="Task", created=at(23))
    # E: closed straight from the backlog
    e = sim.add_issue(issue_type="Bug", created=at(23))
    sim.transition(e, "Done", at(25, 12), resolution="Done")
    # F: a vulnerability in a non-ASCII active status, still in progress
    f = sim.add_issue(issue_type="Vulnerability", created=at(20))
    sim.transition(f, "En révision", at(26, 6))
    with sim:
        yield sim


@pytest.fixture
def config(
    scenario: JiraSimulator, tmp_path: Path, warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    monkeypatch.setenv("SC_EMAIL", "a@b.c")
    monkeypatch.setenv("SC_TOKEN", "tok-abcdef")
    path = tmp_path / "syncd.toml"
    path.write_text(
        f"""
[warehouse]
url = "{warehouse_url}"
[[sources]]
name = "sc"
kind = "jira"
url = "{scenario.base_url}"
email_env = "SC_EMAIL"
token_env = "SC_TOKEN"
value_stream = "Shop"
[sources.stages]
"Blocked" = "waiting"
""",
        encoding="utf-8",
    )
    code, out = run(["sync", "-c", str(path)])
    assert code == 0, out
    assert "sc: ok" in out and "6 items" in out
    return str(path)


def test_items_export_has_hand_computed_figures(config: str) -> None:
    code, out = run(["export", "items", "-c", config, "--format", "jsonl"])
    assert code == 0
    items = {r["key"]: r for r in map(json.loads, out.splitlines())}
    figures = {
        k: (
            r["flow_type"],
            r["stage"],
            r["work_start"],
            r["work_end"],
            r["flow_time_s"],
            r["active_s"],
            r["wait_s"],
        )
        for k, r in items.items()
    }
    assert figures == {
        # 7 calendar days across the DST switch: 604800 s, not 7 d − 1 h
        "DEMO-1": (
            "feature",
            "done",
            "2026-03-24T10:00:00Z",
            "2026-03-31T10:00:00Z",
            7 * D,
            3 * D,
            4 * D,
        ),
        # 1 d + 1 d + 2.5 d active; the day back in To Do and the 2 days done before the
        # reopen are wait
        "DEMO-2": (
            "defect",
            "done",
            "2026-03-25T00:00:00Z",
            "2026-04-01T12:00:00Z",
            7.5 * D,
            4.5 * D,
            3 * D,
        ),
        "DEMO-3": (
            "feature",
            "canceled",
            "2026-03-24T00:00:00Z",
            "2026-03-27T00:00:00Z",
            3 * D,
            3 * D,
            0,
        ),
        "DEMO-4": ("unclassified", "new", None, None, None, None, None),
        "DEMO-5": ("defect", "done", None, "2026-03-25T12:00:00Z", None, None, None),
        "DEMO-6": ("risk", "active", "2026-03-26T06:00:00Z", None, None, None, None),
    }
    assert items["DEMO-6"]["state"] == "En révision"
    assert set(items["DEMO-1"]) == {
        "source",
        "key",
        "id",
        "kind",
        "title",
        "flow_type",
        "value_stream",
        "stage",
        "state",
        "created_at",
        "updated_at",
        "work_start",
        "work_end",
        "flow_time_s",
        "active_s",
        "wait_s",
        "deleted_at",
    }


def test_transitions_export(config: str) -> None:
    code, out = run(["export", "transitions", "-c", config, "--format", "csv"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "source,key,at,from_state,to_state,from_stage,to_stage"
    demo1 = [line for line in lines if ",DEMO-1," in line]
    assert demo1 == [
        "sc,DEMO-1,2026-03-23T09:00:00Z,,To Do,,new",
        "sc,DEMO-1,2026-03-24T10:00:00Z,To Do,In Progress,new,active",
        "sc,DEMO-1,2026-03-26T10:00:00Z,In Progress,Blocked,active,waiting",
        "sc,DEMO-1,2026-03-30T10:00:00Z,Blocked,In Progress,waiting,active",
        "sc,DEMO-1,2026-03-31T10:00:00Z,In Progress,Done,active,done",
    ]


WEEK_1 = {  # [2026-03-23, 2026-03-30)
    "velocity": 1,  # E only: C is canceled, B's first done was reopened
    "flow_time": {
        "count": 0,
        "mean_s": None,
        "p50_s": None,
        "p85_s": None,
        "p95_s": None,
        "max_s": None,
    },
    "efficiency": None,
    "efficiency_mean": None,
    # at 03-30 00:00: A waiting, B reopened at that very instant, F active
    "load_end": 3,
    # A 134 h + B 48 h + C 72 h + F 90 h over 168 h
    "load_avg": 344 / 168,
    "distribution": {"feature": 0.0, "defect": 1.0, "risk": 0.0, "debt": 0.0, "unclassified": 0.0},
    "load_distribution": {
        "feature": 1 / 3,
        "defect": 1 / 3,
        "risk": 1 / 3,
        "debt": 0.0,
        "unclassified": 0.0,
    },
    # ages 324000, 432000, 482400: p85 = 432000 + 0.7 × 50400
    "age": {"count": 3, "p50_s": 432000.0, "p85_s": 467280.0, "max_s": 482400.0},
}
WEEK_2 = {  # [2026-03-30, as-of 2026-04-05 00:00)
    "velocity": 2,
    "flow_time": {
        "count": 2,
        "mean_s": 626400.0,
        "p50_s": 626400.0,
        "p85_s": 641520.0,
        "p95_s": 645840.0,
        "max_s": 648000.0,
    },
    "efficiency": (3 + 4.5) / (7 + 7.5),
    "efficiency_mean": (3 / 7 + 4.5 / 7.5) / 2,
    "load_end": 1,
    "load_avg": (34 + 60 + 144) / 144,
    "distribution": {"feature": 0.5, "defect": 0.5, "risk": 0.0, "debt": 0.0, "unclassified": 0.0},
    "load_distribution": {
        "feature": 0.0,
        "defect": 0.0,
        "risk": 1.0,
        "debt": 0.0,
        "unclassified": 0.0,
    },
    "age": {"count": 1, "p50_s": 842400.0, "p85_s": 842400.0, "max_s": 842400.0},
}


def _check(rows: list[dict[str, Any]]) -> None:
    by = {(r["period_start"], r["flow_type"]): r for r in rows}
    assert {r["value_stream"] for r in rows} == {"Shop"}
    assert len([r for r in rows if r["period_start"] == "2026-03-23"]) == 6
    for start, expected in (("2026-03-23", WEEK_1), ("2026-03-30", WEEK_2)):
        row = by[(start, "all")]
        assert row["period"] == "week"
        for key, value in expected.items():
            assert row[key] == pytest.approx(value), (start, key)
    feature = by[("2026-03-30", "feature")]
    assert feature["velocity"] == 1 and feature["flow_time"]["max_s"] == 7 * D
    assert feature["distribution"] is None
    risk = by[("2026-03-23", "risk")]
    assert risk["load_end"] == 1 and risk["velocity"] == 0


def test_metrics_json_as_of(config: str) -> None:
    code, out = run(
        ["metrics", "-c", config, "--period", "week", "--as-of", AS_OF, "--format", "json"]
    )
    assert code == 0
    rows = json.loads(out)
    assert rows and set(rows[0]) == {
        "value_stream",
        "flow_type",
        "period",
        "period_start",
        "velocity",
        "flow_time",
        "efficiency",
        "efficiency_mean",
        "load_end",
        "load_avg",
        "distribution",
        "load_distribution",
        "age",
        "distribution_share",
        "target_share",
        "deviation",
        "target_distribution",
        "distribution_deviation",
    }
    _check(rows)


def test_stored_incremental_rows_match(config: str, warehouse_url: str) -> None:
    warehouse = Warehouse(warehouse_url)
    update_metrics(warehouse, as_of=datetime.fromisoformat(AS_OF), full=True)
    _check([r.to_json() for r in stored_rows(warehouse, kind="week")])


def test_metrics_table_and_csv(config: str) -> None:
    code, table = run(["metrics", "-c", config, "--as-of", AS_OF])
    assert code == 0 and "Shop" in table and "2026-03-30" in table
    code, text = run(
        ["metrics", "-c", config, "--as-of", AS_OF, "--format", "csv", "--period", "month"]
    )
    assert code == 0
    header = text.splitlines()[0].split(",")
    assert "flow_time_p85_s" in header and "distribution_defect" in header
