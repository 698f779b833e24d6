"""Incremental metric updates equal a full recompute, bucket by bucket, on both dialects."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from syncd.contract import Cursor, Page
from syncd.domain import FLOW_TYPES, FlowItem, Stage, Transition
from syncd.metrics.compute import MetricItem, compute_all, touched_among, touched_periods
from syncd.metrics.figures import item_figures
from syncd.metrics.incremental import UpdateStats, stored_rows, update_metrics
from syncd.metrics.periods import PERIOD_KINDS, period_starts
from syncd.warehouse.store import METRICS, Warehouse

T0 = datetime(2025, 12, 20, tzinfo=UTC)
STAGES = [Stage.NEW, Stage.ACTIVE, Stage.WAITING, Stage.DONE, Stage.CANCELED]


def history(created: datetime, steps: list[tuple[int, Stage]]) -> list[Transition]:
    out = [
        Transition(at=created, from_state=None, to_state="new", from_stage=None, to_stage=Stage.NEW)
    ]
    at = created
    for hours, stage in steps:
        at = at + timedelta(hours=hours, seconds=hours * 7)
        prev = out[-1]
        if stage is prev.to_stage:
            continue
        out.append(
            Transition(
                at=at,
                from_state=prev.to_state,
                to_state=stage.value,
                from_stage=prev.to_stage,
                to_stage=stage,
            )
        )
    return out


def item(n: int, vs: str, flow_type: str, transitions: list[Transition]) -> FlowItem:
    last = transitions[-1]
    return FlowItem(
        source="src",
        id=str(n),
        key=f"K-{n}",
        kind="issue",
        title=f"item {n}",
        project="K",
        flow_type=flow_type,
        value_stream=vs,
        stage=last.to_stage,
        state=last.to_state,
        created_at=transitions[0].at,
        updated_at=last.at,
        transitions=transitions,
    )


change = st.tuples(
    st.integers(0, 5),  # which item
    st.sampled_from(["A", "B"]),  # value stream
    st.sampled_from(FLOW_TYPES),  # flow type
    st.integers(0, 24 * 40),  # created, hours before as-of
    st.lists(st.tuples(st.integers(0, 24 * 9), st.sampled_from(STAGES)), max_size=6),
    st.integers(0, 24 * 12),  # then time passes, hours
    st.booleans(),  # extend the item's stored history instead of replacing it
    # what else happens: the tracker's clock runs ahead (transitions after the as-of time
    # are stored, and seen only once time catches up), or the item is deleted in the tracker
    # (a reconcile tombstones it; writing it again brings it back)
    st.sampled_from(["", "", "", "skew", "tombstone"]),
)

TABLES = (
    "items",
    "transitions",
    "item_links",
    "metric_rows",
    "metric_dirt",
    "metric_days",
    "metric_items",
    "metric_segments",
    "metric_runs",
    "warehouse_meta",
    "cursors",
    "raw_pages",
)


def expected_rows(warehouse: Warehouse, as_of: datetime) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    with warehouse.engine.connect() as conn:
        streams = sorted(
            set(conn.execute(sa.text("select distinct value_stream from items")).scalars())
        )
        for vs in streams:
            items = [
                MetricItem(
                    key=f"{i.source}:{i.key}", flow_type=i.flow_type, transitions=i.transitions
                )
                for i in warehouse.load_items(conn, vs)
            ]
            for kind in PERIOD_KINDS:
                out[(vs, kind)] = sorted(
                    json.dumps(r.to_json(), sort_keys=True)
                    for r in compute_all(vs, kind, items, as_of)
                )
    return {k: v for k, v in out.items() if v}


def actual_rows(warehouse: Warehouse) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for kind in PERIOD_KINDS:
        for row in stored_rows(warehouse, kind=kind, fill=False):
            out.setdefault((row.value_stream, kind), []).append(
                json.dumps(row.to_json(), sort_keys=True)
            )
    return {k: sorted(v) for k, v in out.items()}


@pytest.fixture
def warehouse(warehouse_url: str) -> Warehouse:
    return Warehouse(warehouse_url)


@settings(
    max_examples=int(os.environ.get("SYNCD_HYPOTHESIS_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(changes=st.lists(change, min_size=1, max_size=8))
# found by hypothesis: a reopen moves the touched range back to the old work end
@example(
    changes=[
        (1, "A", "feature", 356, [(0, Stage.ACTIVE), (139, Stage.DONE)], 0, False, ""),
        (1, "A", "feature", 0, [(25, Stage.ACTIVE)], 0, True, ""),
    ]
)
# found by hypothesis: canceled → done keeps the work end but changes its period's velocity
@example(
    changes=[
        (0, "A", "feature", 0, [], 113, False, ""),
        (0, "A", "feature", 0, [], 8, False, ""),
        (0, "A", "debt", 0, [(3, Stage.CANCELED)], 0, True, ""),
        (0, "A", "debt", 0, [(4, Stage.DONE)], 0, True, ""),
    ]
)
# a boundary start: in progress from exactly midnight counts in the day before's load_end
@example(changes=[(2, "B", "risk", 24 * 3, [(0, Stage.ACTIVE)], 30, False, "")])
# a reopen stamped after the as-of time: the old work end keeps counting until time
# catches up with it, then its period's velocity drops
@example(
    changes=[
        (1, "A", "feature", 24 * 20, [(0, Stage.ACTIVE), (48, Stage.DONE)], 0, False, ""),
        (1, "A", "feature", 0, [(200, Stage.ACTIVE)], 0, True, "skew"),
        (2, "B", "debt", 24, [(2, Stage.ACTIVE)], 12, False, ""),
    ]
)
# a reopened item is deleted in the tracker, then written again
@example(
    changes=[
        (1, "A", "defect", 24 * 30, [(0, Stage.ACTIVE), (100, Stage.DONE)], 24, False, ""),
        (1, "A", "defect", 0, [(5, Stage.ACTIVE)], 30, True, "tombstone"),
        (1, "A", "defect", 0, [(5, Stage.DONE)], 30, True, ""),
    ]
)
def test_incremental_equals_full_recompute(warehouse: Warehouse, changes: list[tuple]) -> None:  # type: ignore[type-arg]
    apply_and_compare(warehouse, changes)


@settings(
    max_examples=int(os.environ.get("SYNCD_HYPOTHESIS_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(changes=st.lists(change, min_size=1, max_size=8))
def test_incremental_equals_full_recompute_amid_work_in_progress(
    warehouse: Warehouse,
    changes: list[tuple],  # type: ignore[type-arg]
) -> None:
    """The same, with an item in progress all along in each value stream: no day has an
    empty load, so the days where items finished are changed by the finish changes the
    dirt carries rather than read again (see `_Update._difference`)."""
    apply_and_compare(warehouse, changes, background=True)


def apply_and_compare(
    warehouse: Warehouse,
    changes: list[tuple],  # type: ignore[type-arg]
    background: bool = False,
) -> None:
    """Commit each change as a sync would, update the metrics and compare every stored row
    with a computation from the transitions; then again after time passes."""
    with warehouse.begin() as conn:
        for table in TABLES:
            conn.execute(sa.text(f"delete from {table}"))
    as_of = T0
    current: dict[int, list[Transition]] = {}
    live: set[str] = set()
    if background:
        started = history(T0 - timedelta(days=60), [(1, Stage.ACTIVE)])
        items = [item(100 + i, vs, "debt", started) for i, vs in enumerate("AB")]
        page = Page(raws=[], items=items, cursor=Cursor(watermark=as_of))
        warehouse.commit_page(source="src", stream="s", run_id="r", page=page, now=as_of)
        live |= {it.id for it in items}
    for n, vs, flow_type, created_h, steps, passing_h, extend, event in changes:
        # with a skewed clock the tracker reports transitions up to 12 hours ahead
        horizon = as_of + timedelta(hours=12 if event == "skew" else 0)
        if extend and n in current:
            # what a sync usually sees: the stored history with new transitions at its end
            transitions = list(current[n])
            for t in history(transitions[-1].at, steps)[1:]:
                prev = transitions[-1]
                if t.at <= horizon and t.to_stage is not prev.to_stage:
                    transitions.append(
                        Transition(t.at, prev.to_state, t.to_state, prev.to_stage, t.to_stage)
                    )
        else:
            created = as_of - timedelta(hours=created_h)
            transitions = [t for t in history(created, steps) if t.at <= horizon]
        current[n] = transitions
        page = Page(
            raws=[], items=[item(n, vs, flow_type, transitions)], cursor=Cursor(watermark=as_of)
        )
        warehouse.commit_page(source="src", stream="s", run_id="r", page=page, now=as_of)
        live.add(str(n))
        if event == "tombstone":
            live.discard(str(n))
            assert warehouse.reconcile("src", live, as_of) == (1, 0)
        update_metrics(warehouse, as_of=as_of)
        assert actual_rows(warehouse) == expected_rows(warehouse, as_of)
        as_of = as_of + timedelta(hours=passing_h)
    stats = update_metrics(warehouse, as_of=as_of)
    assert not stats.full
    assert actual_rows(warehouse) == expected_rows(warehouse, as_of)


def test_incremental_touches_only_dirty_buckets(warehouse: Warehouse) -> None:
    as_of = T0
    items = [
        item(
            i,
            "A",
            "feature",
            history(as_of - timedelta(days=300 - i * 10), [(24, Stage.ACTIVE), (48, Stage.DONE)]),
        )
        for i in range(20)
    ]
    warehouse.commit_page(
        source="src",
        stream="s",
        run_id="r",
        page=Page(raws=[], items=items, cursor=Cursor()),
        now=as_of,
    )
    first = update_metrics(warehouse, as_of=as_of)
    assert first.full
    changed = item(5, "A", "defect", items[5].transitions)
    warehouse.commit_page(
        source="src",
        stream="s",
        run_id="r",
        page=Page(raws=[], items=[changed], cursor=Cursor()),
        now=as_of,
    )
    second = update_metrics(warehouse, as_of=as_of)
    assert not second.full
    # one item finished within 3 days: a handful of day/week/month/quarter buckets
    assert 0 < second.buckets <= 12
    assert second.items_read < 20
    with warehouse.engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(METRICS)).scalar()
    assert total and total > second.rows


@settings(max_examples=200, deadline=None)
@given(
    created_h=st.integers(0, 24 * 200),
    steps=st.lists(st.tuples(st.integers(0, 24 * 40), st.sampled_from(STAGES)), max_size=8),
    kind=st.sampled_from(PERIOD_KINDS),
    pick=st.lists(st.integers(0, 400), max_size=30),
)
def test_touched_among_is_touched_periods_restricted(
    created_h: int, steps: list[tuple[int, Stage]], kind: str, pick: list[int]
) -> None:
    as_of = T0 + timedelta(days=30)
    transitions = [t for t in history(T0 - timedelta(hours=created_h), steps) if t.at <= as_of]
    everything = period_starts(kind, T0 - timedelta(days=400), as_of)
    starts = sorted({everything[i % len(everything)] for i in pick})
    expected = touched_periods(kind, transitions, as_of) & set(starts)
    assert touched_among(kind, item_figures(transitions, as_of), as_of, starts) == expected


finished = st.tuples(
    st.integers(24, 24 * 40),  # created, hours before the first update
    st.integers(1, 24 * 5),  # then in progress, hours (ends before the first update)
    st.sampled_from([Stage.DONE, Stage.CANCELED]),
    st.sampled_from(FLOW_TYPES),
)
finish_step = st.tuples(
    st.integers(0, 7),  # which item
    # reopen after the last update, or before it (a late arrival), or after the as-of time
    # (a tracker clock running ahead); switch done <-> canceled; close again (Done ->
    # Closed, the same stage); finish again; rewrite the history with an earlier work end
    st.sampled_from(["reopen", "late", "ahead", "switch", "close", "finish", "rewrite"]),
    st.integers(2, 24 * 3),  # hours passing before the update
)


@settings(
    max_examples=int(os.environ.get("SYNCD_HYPOTHESIS_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ends=st.lists(finished, min_size=8, max_size=8), steps=st.lists(finish_step, max_size=6))
def test_finish_changes_keep_finished_days_exact(
    warehouse: Warehouse,
    ends: list[tuple[int, int, Stage, str]],
    steps: list[tuple[int, str, int]],
) -> None:
    """Items that finished long ago change after an update: the days they finished on are
    changed by the finish changes the dirt carries (an item in progress all along keeps
    every day's load non-empty), and must equal a computation from the transitions."""
    with warehouse.begin() as conn:
        for table in TABLES:
            conn.execute(sa.text(f"delete from {table}"))
    as_of = T0
    histories: dict[int, list[Transition]] = {
        100: history(T0 - timedelta(days=60), [(1, Stage.ACTIVE)])
    }
    types = {100: "debt"}
    for n, (created_h, busy_h, outcome, flow_type) in enumerate(ends):
        busy = min(busy_h, created_h - 2)  # finished before the first update
        created = T0 - timedelta(hours=created_h)
        histories[n] = history(created, [(1, Stage.ACTIVE), (busy, outcome)])
        types[n] = flow_type

    def commit(ids: list[int], now: datetime) -> None:
        items = [item(n, "A", types[n], histories[n]) for n in ids]
        page = Page(raws=[], items=items, cursor=Cursor(watermark=now))
        warehouse.commit_page(source="src", stream="s", run_id="r", page=page, now=now)

    def moved(n: int, at: datetime, state: str, stage: Stage) -> None:
        prev = histories[n][-1]
        histories[n] = [*histories[n], Transition(at, prev.to_state, state, prev.to_stage, stage)]

    commit(sorted(histories), as_of)
    assert update_metrics(warehouse, as_of=as_of).full
    for n, action, hours in steps:
        previous, as_of = as_of, as_of + timedelta(hours=hours)
        last = histories[n][-1]
        if action == "rewrite" and last.to_stage.terminal:
            earlier = last.at - timedelta(hours=1, seconds=n)
            if earlier > histories[n][-2].at:
                histories[n] = [*histories[n][:-1], dataclasses.replace(last, at=earlier)]
        elif action in ("reopen", "late", "ahead") and last.to_stage.terminal:
            at = {
                "reopen": as_of - timedelta(minutes=30),
                "late": previous - timedelta(minutes=30),
                "ahead": as_of + timedelta(hours=2),
            }[action]
            if at > last.at:
                moved(n, at, "active", Stage.ACTIVE)
        elif action == "switch" and last.to_stage.terminal:
            other = Stage.CANCELED if last.to_stage is Stage.DONE else Stage.DONE
            moved(n, as_of - timedelta(minutes=20), other.value, other)
        elif action == "close" and last.to_stage is Stage.DONE:
            moved(n, as_of - timedelta(minutes=10), "closed", Stage.DONE)
        elif action == "finish" and last.to_stage.in_progress:
            moved(n, as_of - timedelta(minutes=5), "done", Stage.DONE)
        commit([n], as_of)
        assert not update_metrics(warehouse, as_of=as_of).full
        assert actual_rows(warehouse) == expected_rows(warehouse, as_of)


def reopen_one(warehouse: Warehouse, others: list[FlowItem], done: list[Transition]) -> UpdateStats:
    """Commit `others` and item 99 with the history `done` (ending done), recompute in full
    at T0, reopen item 99 an hour later and update: the update's stats, its rows checked."""
    page = Page(raws=[], items=[*others, item(99, "A", "feature", done)], cursor=Cursor())
    warehouse.commit_page(source="src", stream="s", run_id="r", page=page, now=T0)
    assert update_metrics(warehouse, as_of=T0).full
    later = T0 + timedelta(hours=1)
    reopened = [*done, Transition(later, "done", "active", Stage.DONE, Stage.ACTIVE)]
    page = Page(raws=[], items=[item(99, "A", "feature", reopened)], cursor=Cursor())
    warehouse.commit_page(source="src", stream="s", run_id="r", page=page, now=later)
    stats = update_metrics(warehouse, as_of=later)
    assert not stats.full
    assert actual_rows(warehouse) == expected_rows(warehouse, later)
    return stats


def test_reopening_an_old_item_rewrites_its_old_periods_only(warehouse: Warehouse) -> None:
    items = [
        item(i, "A", "defect", history(T0 - timedelta(days=200 - i), [(0, Stage.ACTIVE)]))
        for i in range(30)  # long-running work in progress, in the load of every recent day
    ]
    done = history(T0 - timedelta(days=150), [(2, Stage.ACTIVE), (30, Stage.DONE)])
    stats = reopen_one(warehouse, items, done)
    # the old work end's day, week, month and quarter, and the open ones: not the 150 days
    # in between, where the item was done then and is still done now
    assert stats.buckets <= 12
    assert stats.items_read < 100


def test_reopening_an_item_changes_its_old_day_without_reading_the_days_other_items(
    warehouse: Warehouse,
) -> None:
    busy = [
        item(i, "A", "debt", history(T0 - timedelta(days=90), [(0, Stage.ACTIVE)]))
        for i in range(5)  # in progress all along: the old day's load is not empty
    ]
    same_day = [
        item(10 + i, "A", "defect", history(T0 - timedelta(days=60, hours=i), steps))
        for i in range(20)
        for steps in ([(1, Stage.ACTIVE), (30 + i, Stage.DONE)],)
    ]
    done = history(T0 - timedelta(days=60), [(2, Stage.ACTIVE), (40, Stage.DONE)])
    stats = reopen_one(warehouse, [*busy, *same_day], done)
    # the reopen's run mark carries the finish it takes out of the old day: the 20 other
    # items done around it are not read again (the update reads today's facts only)
    assert stats.items_read < 20


def test_a_warehouse_without_facts_gets_them_and_a_full_recompute(warehouse: Warehouse) -> None:
    as_of = T0
    items = [
        item(i, "AB"[i % 2], FLOW_TYPES[i % 5], history(as_of - timedelta(days=40 - i), steps))
        for i, steps in enumerate(
            [[(1, Stage.ACTIVE), (30, Stage.DONE)], [(5, Stage.WAITING)], [(2, Stage.CANCELED)]] * 4
        )
    ]
    page = Page(raws=[], items=items, cursor=Cursor())
    warehouse.commit_page(source="src", stream="s", run_id="r", page=page, now=as_of)
    update_metrics(warehouse, as_of=as_of)
    with warehouse.begin() as conn:  # as a warehouse written before the metric tables
        for table in ("metric_items", "metric_segments", "metric_runs", "metric_days"):
            conn.execute(sa.text(f"delete from {table}"))
        conn.execute(sa.text("delete from warehouse_meta where key = 'metric_facts'"))
    later = as_of + timedelta(days=3)
    stats = update_metrics(warehouse, as_of=later)
    assert stats.full
    assert actual_rows(warehouse) == expected_rows(warehouse, later)
    with warehouse.engine.connect() as conn:
        facts = conn.execute(sa.text("select count(*) from metric_items")).scalar()
    assert facts == len(items)
    assert not update_metrics(warehouse, as_of=later + timedelta(hours=5)).full
    assert actual_rows(warehouse) == expected_rows(warehouse, later + timedelta(hours=5))


def moves(*steps: tuple[datetime, Stage]) -> list[Transition]:
    """A history of exact instants: created at the first, then each move."""
    out = [Transition(steps[0][0], None, "new", None, Stage.NEW)]
    for at, stage in steps[1:]:
        prev = out[-1]
        out.append(Transition(at, prev.to_state, stage.value, prev.to_stage, stage))
    return out


def commit(warehouse: Warehouse, items: list[FlowItem], now: datetime) -> None:
    page = Page(raws=[], items=items, cursor=Cursor())
    warehouse.commit_page(source="src", stream="s", run_id="r", page=page, now=now)


def test_an_update_resumes_from_the_items_in_progress_the_last_one_kept(
    warehouse: Warehouse,
) -> None:
    """The day of an update's as-of time keeps the items in progress at its start; the next
    update's sweep starts there instead of reading them, also when items entered or left
    progress at exactly midnight (the sweep applies those with the day before)."""
    midnight = T0 + timedelta(days=3)
    day = timedelta(days=1)
    long_running = [
        item(
            i,
            "A",
            FLOW_TYPES[i % 5],
            moves((T0 - 40 * day, Stage.NEW), (T0 - 30 * day + i * day, Stage.ACTIVE)),
        )
        for i in range(30)
    ]
    finishing = moves((T0, Stage.NEW), (midnight - 3 * day, Stage.ACTIVE))
    starting = moves((T0, Stage.NEW))
    pausing = moves((T0, Stage.NEW), (midnight - 2 * day, Stage.ACTIVE))
    commit(
        warehouse,
        [
            *long_running,
            item(40, "A", "defect", finishing),
            item(41, "A", "feature", starting),
            item(42, "A", "risk", pausing),
        ],
        midnight - day,
    )
    assert update_metrics(warehouse, as_of=midnight - timedelta(hours=12)).full
    # what a sync learns later: three moves at exactly midnight
    commit(
        warehouse,
        [
            item(40, "A", "defect", [*finishing, *moves((midnight, Stage.DONE))[1:]]),
            item(41, "A", "feature", moves((T0, Stage.NEW), (midnight, Stage.ACTIVE))),
            item(
                42,
                "A",
                "risk",
                moves(*[(t.at, t.to_stage) for t in pausing], (midnight, Stage.WAITING)),
            ),
        ],
        midnight + timedelta(hours=5),
    )
    for as_of in (
        midnight + timedelta(hours=6),  # swept from the day before: taken with midnight undone
        midnight + timedelta(hours=12),  # resumed at midnight
        midnight + day + timedelta(hours=1),  # resumed at midnight, then the next day
    ):
        stats = update_metrics(warehouse, as_of=as_of)
        assert not stats.full
        assert actual_rows(warehouse) == expected_rows(warehouse, as_of)
        assert stats.items_read < 30  # the long-running items were not read again


def test_a_change_before_the_kept_day_sweeps_from_the_facts_and_keeps_unchanged_rows(
    warehouse: Warehouse,
) -> None:
    day = timedelta(days=1)
    long_running = [
        item(
            i,
            "A",
            FLOW_TYPES[i % 5],
            moves((T0 - 60 * day, Stage.NEW), (T0 - 50 * day + i * day, Stage.ACTIVE)),
        )
        for i in range(30)
    ]
    commit(warehouse, long_running, T0)
    first = T0 + timedelta(hours=12)
    assert update_metrics(warehouse, as_of=first).full
    # item 3 paused for an hour ten days ago: it stays in progress, so the days since are
    # recomputed (swept from ten days back, reading what was in progress then) but, apart
    # from today's, their rows come out the same and are not rewritten
    paused = moves(
        (T0 - 60 * day, Stage.NEW),
        (T0 - 47 * day, Stage.ACTIVE),
        (T0 - 10 * day, Stage.WAITING),
        (T0 - 10 * day + timedelta(hours=1), Stage.ACTIVE),
    )
    commit(warehouse, [item(3, "A", FLOW_TYPES[3], paused)], first)
    later = first + timedelta(minutes=30)
    stats = update_metrics(warehouse, as_of=later)
    assert not stats.full
    assert actual_rows(warehouse) == expected_rows(warehouse, later)
    assert stats.items_read >= 30  # the items in progress ten days ago were read
    assert 0 < stats.rows < 6 * stats.buckets
    with warehouse.engine.connect() as conn:
        kept = (
            conn.execute(
                sa.select(METRICS.c.as_of).where(
                    METRICS.c.period == "day", METRICS.c.period_start == T0 - 5 * day
                )
            )
            .scalars()
            .all()
        )
        today = (
            conn.execute(
                sa.select(METRICS.c.as_of).where(
                    METRICS.c.period == "day", METRICS.c.period_start == T0
                )
            )
            .scalars()
            .all()
        )
    assert kept and all(as_of == first for as_of in kept)
    assert today and all(as_of == later for as_of in today)


def test_reopening_an_item_done_long_ago_fills_the_quiet_months_in_between(
    warehouse: Warehouse,
) -> None:
    """A value stream quiet since its only item was done, months ago: reopening that item
    puts it back in progress since its old work start, so every day in between gets rows,
    also in quarters nothing else made the update read."""
    day = timedelta(days=1)
    start = T0 - 320 * day + timedelta(hours=5)
    done = moves((T0 - 330 * day, Stage.NEW), (start, Stage.ACTIVE), (T0 - 300 * day, Stage.DONE))
    commit(warehouse, [item(1, "A", "feature", done)], T0)
    assert update_metrics(warehouse, as_of=T0).full
    reopened = moves(*[(t.at, t.to_stage) for t in done], (T0 + timedelta(hours=3), Stage.ACTIVE))
    commit(warehouse, [item(1, "A", "feature", reopened)], T0 + timedelta(hours=4))
    later = T0 + timedelta(hours=5)
    stats = update_metrics(warehouse, as_of=later)
    assert not stats.full
    assert actual_rows(warehouse) == expected_rows(warehouse, later)
    with warehouse.engine.connect() as conn:
        days = conn.execute(
            sa.select(sa.func.count())
            .select_from(METRICS)
            .where(METRICS.c.period == "day", METRICS.c.flow_type == "all")
        ).scalar()
    assert days == 321  # every day from the work start's to today's
