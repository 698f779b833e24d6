"""The SQL views (syncd/warehouse/views.py) against syncd's own Python results, on SQLite and
PostgreSQL.

Real data comes from the Jira simulator through a sync; the day-boundary cases of
`flow_load_daily` (transitions at exactly midnight, several changes in one day, equal
instants, a creation at midnight) come from scripted items written through
`Warehouse.commit_page`. Every check compares a view with what syncd computes in Python:
the stored metric rows and their actual vs target split (`syncd.streams.with_targets`), the
flow load of the day buckets, and every item's stage at each day's end (`stage_at`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.config import Config, load_config
from syncd.contract import Cursor, Page
from syncd.domain import FLOW_TYPES, FlowItem, Stage, Transition
from syncd.metrics.figures import item_figures, stage_at
from syncd.metrics.incremental import stored_rows, update_metrics
from syncd.metrics.periods import PERIOD_KINDS, period_end
from syncd.simulator.jira import JiraSimulator
from syncd.streams import read_targets, with_targets
from syncd.warehouse.reads import load_transitions
from syncd.warehouse.store import TARGETS, Warehouse
from tests.helpers import run_sync

ANCHOR = datetime(2026, 6, 1, tzinfo=UTC)
EMAIL, TOKEN = "bot@example.com", "sim-token-views-3c2b1a"
ONE_DAY = timedelta(days=1)

COLUMNS = {
    "flow_items": [
        "source", "item_id", "key", "kind", "title", "project", "flow_type", "value_stream",
        "stage", "state", "labels", "created_at", "updated_at", "work_start", "work_end",
        "outcome", "flow_time_s", "active_s", "wait_s", "deleted", "deleted_at",
    ],
    "flow_transitions": [
        "source", "item_id", "key", "value_stream", "flow_type", "seq", "at", "from_state",
        "to_state", "from_stage", "to_stage",
    ],
    "flow_metrics": [
        "value_stream", "flow_type", "period_kind", "period_start", "period_end", "as_of",
        "velocity", "flow_time_count", "flow_time_mean_s", "flow_time_p50_s",
        "flow_time_p85_s", "flow_time_p95_s", "flow_time_max_s", "efficiency",
        "efficiency_mean", "load_end", "load_avg", "age_count", "age_p50_s", "age_p85_s",
        "age_max_s", "distribution_share", "load_share", "target_share", "deviation",
    ],
    "flow_load_daily": [
        "value_stream", "flow_type", "day", "new", "active", "waiting", "done", "canceled",
        "in_progress",
    ],
    "flow_dependencies": [
        "from_source", "from_item_id", "from_key", "from_value_stream", "link_type",
        "direction", "to_source", "to_item_id", "to_key", "to_value_stream", "to_stage",
        "cross_value_stream", "blocking",
    ],
}  # fmt: skip


def jira_config(tmp_path: Path, url: str, warehouse_url: str) -> Config:
    path = tmp_path / "syncd.toml"
    path.write_text(
        f"""
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

[sources.stages]
"Blocked" = "waiting"
"Ready for QA" = "waiting"
""",
        encoding="utf-8",
    )
    return load_config(path)


@pytest.fixture
def synced(
    tmp_path: Path, warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Warehouse, str]]:
    """A warehouse synced from the Jira simulator, one item tombstoned, targets set, metrics
    updated as of the anchor. Yields it with the tombstoned item's id."""
    monkeypatch.setenv("SIM_EMAIL", EMAIL)
    monkeypatch.setenv("SIM_TOKEN", TOKEN)
    with JiraSimulator(items=80, seed=5, anchor=ANCHOR, email=EMAIL, token=TOKEN) as sim:
        config = jira_config(tmp_path, sim.base_url, warehouse_url)
        warehouse = Warehouse(warehouse_url)
        [result] = run_sync(config, warehouse)
        assert result.ok, result.error
    ids = sorted(h[0] for h in warehouse.item_heads("sim"))
    gone = ids[len(ids) // 2]
    assert warehouse.reconcile("sim", set(ids) - {gone}, ANCHOR) == (1, 0)
    set_targets(warehouse, "Demo", {"feature": 0.5, "defect": 0.3, "risk": 0.1, "debt": 0.1})
    update_metrics(warehouse, as_of=ANCHOR)
    yield warehouse, gone
    warehouse.close()


def set_targets(warehouse: Warehouse, value_stream: str, shares: dict[str, float]) -> None:
    with warehouse.begin() as conn:
        rows = [
            {"value_stream": value_stream, "flow_type": f, "share": s} for f, s in shares.items()
        ]
        warehouse.upsert(conn, TARGETS, rows, ["value_stream", "flow_type"])


def query(warehouse: Warehouse, sql: str, **params: Any) -> tuple[list[str], list[dict[str, Any]]]:
    with warehouse.engine.connect() as conn:
        result = conn.execute(sa.text(sql), params)
        return list(result.keys()), [dict(r._mapping) for r in result]


def instant(warehouse: Warehouse, value: Any) -> datetime | None:
    """A view's instant as aware UTC: timestamptz on PostgreSQL, ISO text on SQLite."""
    if value is None:
        return None
    if warehouse.dialect == "sqlite":
        assert isinstance(value, str)
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    assert isinstance(value, datetime) and value.utcoffset() == timedelta(0)
    return value.astimezone(UTC)


def day_of(warehouse: Warehouse, value: Any) -> date:
    if warehouse.dialect == "sqlite":
        assert isinstance(value, str) and len(value) == 10
        return date.fromisoformat(value)
    assert isinstance(value, date) and not isinstance(value, datetime)
    return value


def test_every_view_has_the_contract_columns(synced: tuple[Warehouse, str]) -> None:
    warehouse, _ = synced
    for name, columns in COLUMNS.items():
        keys, rows = query(warehouse, f"SELECT * FROM {name}")
        assert keys == columns, name
        if name != "flow_dependencies":
            assert rows, name


def test_flow_items_and_transitions_are_the_stored_items(synced: tuple[Warehouse, str]) -> None:
    warehouse, gone = synced
    _, items = query(warehouse, "SELECT * FROM flow_items ORDER BY item_id")
    with warehouse.engine.connect() as conn:
        live_ids = [i for i, *_ in warehouse.item_heads("sim") if i != gone]
        live = {it.id: it for it in warehouse.load_flow_items(conn, "sim", live_ids)}
        histories = load_transitions(conn, "sim", [*live_ids, gone])
    assert len(items) == len(live) + 1
    for row in items:
        if row["item_id"] == gone:
            assert row["deleted"] in (True, 1) and instant(warehouse, row["deleted_at"]) == ANCHOR
            continue
        item = live[row["item_id"]]
        assert row["deleted"] in (False, 0) and row["deleted_at"] is None
        assert (row["source"], row["key"], row["flow_type"], row["value_stream"]) == (
            "sim",
            item.key,
            item.flow_type,
            "Demo",
        )
        assert (row["stage"], row["state"]) == (item.stage.value, item.state)
        assert json.loads(row["labels"]) == item.labels
        assert instant(warehouse, row["created_at"]) == item.created_at
        figures = item_figures(item.transitions)
        assert instant(warehouse, row["work_start"]) == figures.work_start
        assert instant(warehouse, row["work_end"]) == figures.work_end
        assert row["outcome"] == (figures.outcome.value if figures.outcome else None)
        assert (row["flow_time_s"], row["active_s"], row["wait_s"]) == (
            figures.flow_time_s,
            figures.active_s,
            figures.wait_s,
        )

    _, transitions = query(warehouse, "SELECT * FROM flow_transitions ORDER BY item_id, seq")
    expected = [
        (item_id, seq, t.at, t.from_state, t.to_state, t.to_stage.value)
        for item_id in sorted(live)
        for seq, t in enumerate(histories[item_id])
    ]
    assert [
        (r["item_id"], r["seq"], instant(warehouse, r["at"]), r["from_state"], r["to_state"],
         r["to_stage"])
        for r in transitions
    ] == expected  # fmt: skip
    assert all(r["key"] == live[r["item_id"]].key for r in transitions)
    assert gone in histories and gone not in {r["item_id"] for r in transitions}


def test_flow_metrics_are_the_stored_rows_with_their_shares_and_targets(
    synced: tuple[Warehouse, str],
) -> None:
    warehouse, _ = synced
    with warehouse.engine.connect() as conn:
        targets = read_targets(conn)
    seen = 0
    for kind in PERIOD_KINDS:
        rows = stored_rows(warehouse, kind=kind, fill=False)
        records = with_targets(rows, targets)
        load_shares = {
            (r.period_start, ft): share
            for r in rows
            if r.flow_type == "all" and r.load_distribution
            for ft, share in r.load_distribution.items()
        }
        _, view = query(warehouse, "SELECT * FROM flow_metrics WHERE period_kind = :k", k=kind)
        by_key = {(instant(warehouse, v["period_start"]), v["flow_type"]): v for v in view}
        assert len(by_key) == len(view) == len(rows)
        for row, record in zip(rows, records, strict=True):
            v = by_key[(row.period_start, row.flow_type)]
            assert v["value_stream"] == "Demo"
            assert instant(warehouse, v["period_end"]) == period_end(kind, row.period_start)
            assert instant(warehouse, v["as_of"]) == ANCHOR
            assert (v["velocity"], v["load_end"]) == (row.velocity, row.load_end)
            ft, age = row.flow_time, row.age
            assert (
                v["flow_time_count"], v["flow_time_mean_s"], v["flow_time_p50_s"],
                v["flow_time_p85_s"], v["flow_time_p95_s"], v["flow_time_max_s"],
            ) == (ft.count, ft.mean_s, ft.p50_s, ft.p85_s, ft.p95_s, ft.max_s)  # fmt: skip
            assert (v["efficiency"], v["efficiency_mean"], v["load_avg"]) == (
                row.efficiency,
                row.efficiency_mean,
                row.load_avg,
            )
            assert (v["age_count"], v["age_p50_s"], v["age_p85_s"], v["age_max_s"]) == (
                age.count,
                age.p50_s,
                age.p85_s,
                age.max_s,
            )
            assert v["distribution_share"] == record["distribution_share"]
            assert v["target_share"] == record["target_share"]
            assert v["deviation"] == record["deviation"]
            if row.flow_type == "all":
                assert v["load_share"] == (1.0 if row.load_end else None)
            else:
                assert v["load_share"] == load_shares.get((row.period_start, row.flow_type))
            seen += 1
    assert seen > 100
    _, with_deviation = query(
        warehouse,
        "SELECT COUNT(*) AS n FROM flow_metrics WHERE deviation IS NOT NULL "
        "AND flow_type = 'feature' AND period_kind = 'month'",
    )
    assert with_deviation[0]["n"] > 0


def stage_counts(
    histories: dict[str, tuple[str, list[Transition]]], day: date
) -> dict[str, Counter[str]]:
    """Per flow type, how many items are in each stage at the end of `day`."""
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + ONE_DAY
    out: dict[str, Counter[str]] = {}
    for flow_type, transitions in histories.values():
        stage = stage_at(transitions, end)
        if stage is not None:
            out.setdefault(flow_type, Counter())[stage.value] += 1
    return out


def check_load_daily(
    warehouse: Warehouse,
    value_stream: str,
    histories: dict[str, tuple[str, list[Transition]]],
    as_of: datetime,
) -> int:
    """flow_load_daily against every live item's stage at each day's end, and its
    in_progress against the flow load of the stored day buckets; up to the day before
    `as_of`. Returns how many (flow type, day) rows were compared."""
    _, view = query(
        warehouse,
        "SELECT * FROM flow_load_daily WHERE value_stream = :vs ORDER BY flow_type, day",
        vs=value_stream,
    )
    rows = {(r["flow_type"], day_of(warehouse, r["day"])): r for r in view}
    loads = {
        (r.flow_type, r.period_start.date()): r.load_end
        for r in stored_rows(warehouse, kind="day", value_stream=value_stream)
    }
    first = min(t.at for _, ts in histories.values() for t in ts).date() - ONE_DAY
    last = as_of.date() - ONE_DAY
    compared = 0
    day = first
    while day <= last:
        expected = stage_counts(histories, day)
        for flow_type in FLOW_TYPES:
            counts = expected.get(flow_type, Counter())
            row = rows.get((flow_type, day))
            if row is None:
                assert not counts, (flow_type, day)
                continue
            stages = {s.value: row[s.value] for s in Stage}
            assert stages == {s.value: counts[s.value] for s in Stage}, (flow_type, day)
            assert row["in_progress"] == row["active"] + row["waiting"]
            assert row["in_progress"] == loads.get((flow_type, day), 0), (flow_type, day)
            compared += 1
        day += ONE_DAY
    # every day up to today has its row, for every flow type that has items
    today = datetime.now(UTC).date()
    for flow_type in {ft for ft, _ in histories.values()}:
        assert (flow_type, today) in rows
    return compared


def test_flow_load_daily_counts_stages_at_each_days_end_as_the_metrics_do(
    synced: tuple[Warehouse, str],
) -> None:
    warehouse, gone = synced
    with warehouse.engine.connect() as conn:
        live_ids = [i for i, *_ in warehouse.item_heads("sim") if i != gone]
        items = warehouse.load_flow_items(conn, "sim", live_ids)
    histories = {it.id: (it.flow_type, it.transitions) for it in items}
    assert check_load_daily(warehouse, "Demo", histories, ANCHOR) > 300


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def scripted(key: str, flow_type: str, *steps: tuple[datetime, Stage]) -> FlowItem:
    transitions: list[Transition] = []
    for when, stage in steps:
        prev = transitions[-1] if transitions else None
        transitions.append(
            Transition(
                when,
                prev.to_state if prev else None,
                f"{stage.value} state",
                prev.to_stage if prev else None,
                stage,
            )
        )
    return FlowItem(
        source="web",
        id=key.split("-")[1],
        key=key,
        kind="issue",
        title=key,
        project="WEB",
        flow_type=flow_type,
        value_stream="Web",
        stage=transitions[-1].to_stage,
        state=transitions[-1].to_state,
        created_at=transitions[0].at,
        updated_at=transitions[-1].at,
        transitions=transitions,
    )


SCRIPTED = [
    # in progress from exactly midnight to exactly midnight: in the load at the end of Mar 2
    # (the instant Mar 3 00:00), not at the end of Mar 4 (done at that instant)
    scripted("WEB-1", "feature", (at(1, 9), Stage.NEW), (at(3), Stage.ACTIVE), (at(5), Stage.DONE)),
    # four changes on Mar 2, one reopen after done
    scripted(
        "WEB-2",
        "defect",
        (at(2, 10), Stage.NEW),
        (at(2, 11), Stage.ACTIVE),
        (at(2, 15), Stage.WAITING),
        (at(2, 18), Stage.ACTIVE),
        (at(10, 12), Stage.DONE),
        (at(11, 9), Stage.ACTIVE),
    ),
    # started and canceled at the same instant: the order of the history decides
    scripted(
        "WEB-3",
        "risk",
        (at(2, 8), Stage.NEW),
        (at(4, 10), Stage.ACTIVE),
        (at(4, 10), Stage.CANCELED),
    ),
    # tombstoned below: in no view but flow_items
    scripted("WEB-4", "debt", (at(3, 12), Stage.NEW), (at(3, 13), Stage.ACTIVE)),
    # created at exactly midnight: counted at the end of the day before
    scripted("WEB-5", "unclassified", (at(1), Stage.NEW), (at(6, 23, 59), Stage.WAITING)),
    scripted("WEB-6", "feature", (at(5, 7), Stage.NEW), (at(6), Stage.ACTIVE)),
]


def test_day_boundaries_and_time_zones(warehouse_url: str) -> None:
    warehouse = Warehouse(warehouse_url)
    page = Page(raws=[], items=list(SCRIPTED), cursor=Cursor(watermark=at(12)))
    warehouse.commit_page(source="web", stream="issues", run_id="r", page=page, now=at(12))
    present = {it.id for it in SCRIPTED if it.key != "WEB-4"}
    assert warehouse.reconcile("web", present, at(12)) == (1, 0)
    as_of = at(12, 12)
    update_metrics(warehouse, as_of=as_of)
    histories = {it.id: (it.flow_type, it.transitions) for it in SCRIPTED if it.key != "WEB-4"}
    assert check_load_daily(warehouse, "Web", histories, as_of) >= 40

    _, rows = query(
        warehouse,
        "SELECT flow_type, day, in_progress, canceled FROM flow_load_daily "
        "WHERE value_stream = 'Web' AND flow_type IN ('feature', 'risk', 'unclassified')",
    )
    got = {(r["flow_type"], day_of(warehouse, r["day"])): r for r in rows}
    assert got[("feature", date(2026, 3, 2))]["in_progress"] == 1
    assert got[("feature", date(2026, 3, 4))]["in_progress"] == 0
    assert got[("risk", date(2026, 3, 4))]["canceled"] == 1
    assert ("unclassified", date(2026, 2, 28)) in got
    _, debt = query(warehouse, "SELECT COUNT(*) AS n FROM flow_load_daily WHERE flow_type = 'debt'")
    assert debt[0]["n"] == 0

    if warehouse.dialect == "postgresql":
        # the session's time zone changes neither the days nor the period ends
        plain = _answers(warehouse, None)
        assert _answers(warehouse, "America/New_York") == plain
        assert _answers(warehouse, "Pacific/Chatham") == plain
        month = next(r for r in plain[1] if r[0] == "month")
        assert month[2] == datetime(2026, 4, 1, tzinfo=UTC)
    warehouse.close()


def _answers(warehouse: Warehouse, zone: str | None) -> tuple[list[Any], list[Any]]:
    with warehouse.engine.connect() as conn:
        if zone:
            conn.execute(sa.text(f"SET TIME ZONE '{zone}'"))
        daily = conn.execute(
            sa.text("SELECT * FROM flow_load_daily ORDER BY value_stream, flow_type, day")
        ).all()
        metrics = conn.execute(
            sa.text(
                "SELECT period_kind, period_start, period_end, as_of FROM flow_metrics "
                "ORDER BY period_kind, period_start, flow_type"
            )
        ).all()
        conn.rollback()
    normal = [
        (r[0], r[1].astimezone(UTC), r[2].astimezone(UTC), r[3].astimezone(UTC)) for r in metrics
    ]
    return [tuple(r) for r in daily], normal


def test_one_value_streams_load_daily_as_the_api_asks_equals_the_view_filtered(
    synced: tuple[Warehouse, str],
) -> None:
    from syncd.api import queries

    warehouse, _ = synced
    with warehouse.engine.connect() as conn:
        streams = [vs for (vs,) in conn.execute(sa.text("SELECT DISTINCT value_stream FROM items"))]
        everything = queries.load_daily(conn)
        assert streams and everything
        for vs in streams:
            asked = queries.load_daily(conn, value_stream=vs)
            assert asked == [r for r in everything if r["value_stream"] == vs], vs
            assert asked  # the stream has days: the comparison compared something
        some = queries.load_daily(conn, value_stream=streams[0], flow_type="defect")
        assert some and {r["flow_type"] for r in some} == {"defect"}
        assert queries.load_daily(conn, value_stream="no such stream") == []
