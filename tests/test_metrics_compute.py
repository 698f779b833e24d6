"""Aggregate flow metrics per value stream, flow type and period."""

from __future__ import annotations

import itertools
import json
import random
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.domain import ALL, FLOW_TYPES, Stage, Transition
from syncd.metrics import (
    PERIOD_KINDS,
    AgeStats,
    FlowTimeStats,
    MetricItem,
    MetricRow,
    compute_all,
    compute_periods,
    item_figures,
    percentile,
    period_end,
    period_start,
    period_starts,
    stage_at,
    touched_periods,
)

H = 3600.0
N, A, W, D, C = Stage.NEW, Stage.ACTIVE, Stage.WAITING, Stage.DONE, Stage.CANCELED
ROW_ORDER = (ALL, *FLOW_TYPES)


def z(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None
    return value


def item(key: str, flow_type: str, *steps: tuple[str, Stage]) -> MetricItem:
    """An item from (timestamp, stage) steps; the first one is the creation."""
    out: list[Transition] = []
    prev: Stage | None = None
    for at, stage in steps:
        from_state = None if prev is None else prev.value
        out.append(Transition(z(at), from_state, stage.value, prev, stage))
        prev = stage
    return MetricItem(key, flow_type, tuple(out))


def rows_by_type(rows: list[MetricRow], start: datetime) -> dict[str, MetricRow]:
    return {r.flow_type: r for r in rows if r.period_start == start}


# --- percentile ----------------------------------------------------------------------------


def test_percentile_linear_interpolation() -> None:
    # [1, 2, 3, 4]: rank h = (n - 1) * q / 100
    # p50: h = 1.5  -> 2 + 0.5 * (3 - 2) = 2.5
    # p85: h = 2.55 -> 3 + 0.55 * (4 - 3) = 3.55
    # p95: h = 2.85 -> 3 + 0.85 * (4 - 3) = 3.85
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([1, 2, 3, 4], 85) == 3.55
    assert percentile([1, 2, 3, 4], 95) == 3.85
    assert percentile([1, 2, 3, 4], 0) == 1
    assert percentile([1, 2, 3, 4], 100) == 4
    # [10, 20, 30] p85: h = 1.7 -> 20 + 0.7 * 10 = 27
    assert percentile([30, 10, 20], 85) == 27.0
    assert percentile([7.5], 95) == 7.5
    assert percentile([], 50) is None


def test_percentile_rejects_bad_q() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        percentile([1.0], float("nan"))


@given(
    values=st.lists(st.floats(0, 1e9, allow_nan=False), min_size=1, max_size=30),
    q=st.floats(0, 100),
)
def test_percentile_bounds_and_monotone(values: list[float], q: float) -> None:
    p = percentile(values, q)
    assert p is not None and min(values) <= p <= max(values)
    higher = percentile(values, min(100.0, q + 5))
    assert higher is not None and higher >= p
    assert percentile(list(reversed(values)), q) == p


# --- hand-computed week --------------------------------------------------------------------

WEEK1 = z("2025-01-06T00:00Z")  # Monday
WEEK2 = z("2025-01-13T00:00Z")
LATE = z("2025-02-01T00:00Z")

WEEK_ITEMS = [
    # flow 12:00 Jan 6 -> 12:00 Jan 8 = 48 h, all active
    item(
        "F1",
        "feature",
        ("2025-01-06T00:00Z", N),
        ("2025-01-06T12:00Z", A),
        ("2025-01-08T12:00Z", D),
    ),
    # flow 00:00 Jan 7 -> 12:00 Jan 8 = 36 h; active 12 h + 12 h = 24 h; waiting 12 h
    item(
        "D1",
        "defect",
        ("2025-01-06T00:00Z", N),
        ("2025-01-07T00:00Z", A),
        ("2025-01-07T12:00Z", W),
        ("2025-01-08T00:00Z", A),
        ("2025-01-08T12:00Z", D),
    ),
    # closed straight from the backlog on Jan 9: velocity and distribution only
    item("B1", "debt", ("2025-01-06T00:00Z", N), ("2025-01-09T00:00Z", D)),
    # in progress 00:00 Jan 7 -> 00:00 Jan 9 (48 h of load), then canceled
    item(
        "C1",
        "risk",
        ("2025-01-06T00:00Z", N),
        ("2025-01-07T00:00Z", A),
        ("2025-01-09T00:00Z", C),
    ),
    # active from 00:00 Jan 10, still active at the end of the week
    item("U1", "unclassified", ("2025-01-06T00:00Z", N), ("2025-01-10T00:00Z", A)),
    # never started, never finished: touches nothing
    item("X1", "feature", ("2025-01-06T00:00Z", N)),
]


def test_week_all_row_by_hand() -> None:
    rows = compute_periods("vs", "week", WEEK_ITEMS, [WEEK1, WEEK2], LATE)
    r = rows_by_type(rows, WEEK1)[ALL]
    assert (r.value_stream, r.period, r.period_start) == ("vs", "week", WEEK1)
    # F1, D1, B1 finished; C1 canceled does not count
    assert r.velocity == 3
    # flow times of started, done items: [129600 (D1), 172800 (F1)]
    # mean (172800 + 129600) / 2 = 151200
    # p85: h = 0.85 -> 129600 + 0.85 * 43200 = 166320; p95: 129600 + 0.95 * 43200 = 170640
    assert r.flow_time == FlowTimeStats(2, 151200.0, 151200.0, 166320.0, 170640.0, 172800.0)
    # efficiency = (48 h + 24 h) / (48 h + 36 h) = 72 / 84 = 6/7; per-item mean (1 + 2/3) / 2
    assert r.efficiency == pytest.approx(6 / 7)
    assert r.efficiency_mean == pytest.approx(5 / 6)
    # at 00:00 Jan 13 only U1 is in progress
    assert r.load_end == 1
    # load integral: F1 48 h + D1 36 h + C1 48 h + U1 72 h = 204 h over 168 h
    assert r.load_avg == pytest.approx(204 / 168)
    assert r.distribution == {
        "feature": pytest.approx(1 / 3),
        "defect": pytest.approx(1 / 3),
        "risk": 0.0,
        "debt": pytest.approx(1 / 3),
        "unclassified": 0.0,
    }
    assert r.load_distribution == {
        "feature": 0.0,
        "defect": 0.0,
        "risk": 0.0,
        "debt": 0.0,
        "unclassified": 1.0,
    }
    # U1's age at 00:00 Jan 13 = 72 h = 259200 s
    assert r.age == AgeStats(1, 259200.0, 259200.0, 259200.0)


def test_week_flow_type_rows_by_hand() -> None:
    by_type = rows_by_type(compute_periods("vs", "week", WEEK_ITEMS, [WEEK1], LATE), WEEK1)
    feature = by_type["feature"]
    assert (feature.velocity, feature.flow_time.count, feature.flow_time.max_s) == (1, 1, 48 * H)
    assert feature.efficiency == 1.0
    assert feature.load_avg == pytest.approx(48 / 168)
    assert (feature.distribution, feature.load_distribution) == (None, None)
    # the canceled item contributes load (48 h) but nothing else
    risk = by_type["risk"]
    assert (risk.velocity, risk.flow_time.count, risk.efficiency, risk.load_end) == (0, 0, None, 0)
    assert risk.load_avg == pytest.approx(48 / 168)
    # closed from the backlog: velocity without flow time
    debt = by_type["debt"]
    assert (debt.velocity, debt.flow_time.count, debt.flow_time.mean_s) == (1, 0, None)
    assert (debt.efficiency, debt.efficiency_mean, debt.load_avg) == (None, None, 0.0)
    unclassified = by_type["unclassified"]
    assert (unclassified.load_end, unclassified.age.count) == (1, 1)


def test_six_rows_per_period_in_order_with_zeros_where_empty() -> None:
    empty_week = z("2025-01-20T00:00Z")
    rows = compute_periods("vs", "week", WEEK_ITEMS, [empty_week, WEEK1, WEEK1], LATE)
    assert [(r.period_start, r.flow_type) for r in rows] == [
        (s, t) for s in (WEEK1, empty_week) for t in ROW_ORDER
    ]
    # In the week of Jan 20 only U1 is still in progress (all week long).
    quiet = rows_by_type(rows, empty_week)["feature"]
    assert (quiet.velocity, quiet.load_end, quiet.load_avg, quiet.efficiency) == (0, 0, 0.0, None)
    assert quiet.flow_time == FlowTimeStats(0, None, None, None, None, None)
    assert quiet.age == AgeStats(0, None, None, None)
    everything = rows_by_type(rows, empty_week)[ALL]
    assert (everything.velocity, everything.distribution) == (0, None)
    assert (everything.load_end, everything.load_avg) == (1, 1.0)
    # U1 age at 00:00 Jan 27 = 17 days
    assert everything.age.max_s == 17 * 24 * H


def test_never_started_item_touches_nothing() -> None:
    never = WEEK_ITEMS[-1]
    assert touched_periods("week", never.transitions, LATE) == set()
    assert compute_all("vs", "week", [never], LATE) == []


def test_compute_all_periods_are_the_touched_ones() -> None:
    rows = compute_all("vs", "week", WEEK_ITEMS, LATE)
    # U1 is in progress from Jan 10 to as_of (Feb 1, a Saturday): weeks Jan 6 .. Jan 27.
    expected = period_starts("week", WEEK1, LATE)
    assert sorted({r.period_start for r in rows}) == expected
    assert len(rows) == 6 * len(expected)


# --- boundaries ---------------------------------------------------------------------------


def test_item_crossing_a_week_boundary() -> None:
    # active from 12:00 Sunday Jan 12 to 12:00 Tuesday Jan 14
    it = item("K", "feature", ("2025-01-12T12:00Z", A), ("2025-01-14T12:00Z", D))
    rows = compute_periods("vs", "week", [it], [WEEK1, WEEK2], LATE)
    w1, w2 = rows_by_type(rows, WEEK1)[ALL], rows_by_type(rows, WEEK2)[ALL]
    # week 1: 12 h of load over 168 h; in progress at 00:00 Jan 13 with age 12 h
    assert w1.load_avg == pytest.approx(12 / 168)
    assert (w1.load_end, w1.age.max_s, w1.velocity) == (1, 12 * H, 0)
    # week 2: 36 h of load over 168 h; finished there with flow time 48 h
    assert w2.load_avg == pytest.approx(36 / 168)
    assert (w2.load_end, w2.velocity, w2.flow_time.max_s) == (0, 1, 48 * H)


def test_transition_at_the_boundary_instant_counts_at_the_end_of_the_earlier_period() -> None:
    # Starts exactly at 00:00 Monday Jan 13: the stage at Jan 13 00:00 (the end of week 1)
    # already applies it, so week 1 ends with it in the load, age 0.
    starts = item("S", "defect", ("2025-01-10T00:00Z", N), ("2025-01-13T00:00Z", A))
    # Done exactly at 00:00 Jan 13: not in week 1's load, counted in week 2's velocity.
    ends = item("E", "feature", ("2025-01-10T00:00Z", A), ("2025-01-13T00:00Z", D))
    rows = compute_periods("vs", "week", [starts, ends], [WEEK1, WEEK2], LATE)
    w1, w2 = rows_by_type(rows, WEEK1), rows_by_type(rows, WEEK2)
    assert (w1[ALL].load_end, w1[ALL].velocity) == (1, 0)
    assert w1[ALL].load_distribution == {
        "feature": 0.0,
        "defect": 1.0,
        "risk": 0.0,
        "debt": 0.0,
        "unclassified": 0.0,
    }
    assert w1["defect"].age == AgeStats(1, 0.0, 0.0, 0.0)
    # week 1 load: E active 72 h (Jan 10 -> Jan 13), S none
    assert w1[ALL].load_avg == pytest.approx(72 / 168)
    assert (w2[ALL].velocity, w2["feature"].flow_time.max_s) == (1, 72 * H)
    assert WEEK1 in touched_periods("week", starts.transitions, LATE)


def test_open_period_ends_at_as_of() -> None:
    as_of = z("2025-01-08T12:00Z")  # Wednesday noon: week 1 is 2.5 days = 60 h long so far
    items = [
        # active since 00:00 Jan 7: 36 h of load, age 36 h at as_of
        item("P", "feature", ("2025-01-07T00:00Z", A)),
        # done exactly at as_of: counted (at <= as_of applies)
        item("Q", "defect", ("2025-01-08T00:00Z", A), ("2025-01-08T12:00Z", D)),
        # done after as_of: ignored, still in progress (12 h of load, age 12 h)
        item("R", "risk", ("2025-01-08T00:00Z", W), ("2025-01-08T13:00Z", D)),
    ]
    rows = compute_periods("vs", "week", items, [WEEK1, WEEK2], as_of)
    assert {r.period_start for r in rows} == {WEEK1}  # week 2 starts after as_of
    r = rows_by_type(rows, WEEK1)[ALL]
    assert (r.velocity, r.flow_time.max_s) == (1, 12 * H)
    assert r.load_end == 2
    # (36 h + 12 h (Q) + 12 h (R)) / 60 h = 1.0
    assert r.load_avg == pytest.approx(1.0)
    # ages [12 h, 36 h]: p50 = 24 h; p85 = 12 h + 0.85 * 24 h = 32.4 h = 116640 s
    assert r.age == AgeStats(2, 24 * H, 116640.0, 36 * H)


def test_period_starting_exactly_at_as_of_has_no_length() -> None:
    it = item("P", "feature", ("2025-01-07T00:00Z", A))
    rows = compute_periods("vs", "week", [it], [WEEK2], WEEK2)
    r = rows_by_type(rows, WEEK2)[ALL]
    assert (r.load_end, r.load_avg, r.velocity) == (1, None, 0)


def test_canceled_item_leaves_load_at_cancel_time() -> None:
    it = item("C", "risk", ("2025-01-06T00:00Z", A), ("2025-01-07T06:00Z", C))
    days = period_starts("day", WEEK1, z("2025-01-08T00:00Z"))
    day = compute_periods("vs", "day", [it], days, LATE)
    d1 = rows_by_type(day, z("2025-01-06T00:00Z"))[ALL]
    d2 = rows_by_type(day, z("2025-01-07T00:00Z"))[ALL]
    d3 = rows_by_type(day, z("2025-01-08T00:00Z"))[ALL]
    assert (d1.load_end, d1.load_avg) == (1, 1.0)
    # 6 h of load on Jan 7, then canceled: not in the load at its end, never in velocity
    assert (d2.load_end, d2.load_avg, d2.velocity, d2.distribution) == (0, 0.25, 0, None)
    assert (d2.flow_time.count, d2.efficiency) == (0, None)
    assert (d3.load_avg, d3.load_end) == (0.0, 0)


def test_reopen_moves_velocity_to_the_final_done() -> None:
    it = item(
        "R",
        "feature",
        ("2025-01-07T00:00Z", A),  # active 24 h
        ("2025-01-08T00:00Z", D),  # done, reopened a week later
        ("2025-01-15T00:00Z", A),  # active 12 h
        ("2025-01-15T12:00Z", D),
    )
    rows = compute_periods("vs", "week", [it], [WEEK1, WEEK2], LATE)
    w1, w2 = rows_by_type(rows, WEEK1)[ALL], rows_by_type(rows, WEEK2)[ALL]
    assert (w1.velocity, w1.load_end) == (0, 0)
    assert w1.load_avg == pytest.approx(24 / 168)
    # flow from the original start: 00:00 Jan 7 -> 12:00 Jan 15 = 8.5 days = 204 h
    # active 24 + 12 = 36 h -> efficiency 36 / 204
    assert (w2.velocity, w2.flow_time.mean_s) == (1, 204 * H)
    assert w2.efficiency == pytest.approx(36 / 204)
    # Seen before the reopen, it was delivered in week 1 after 24 h.
    earlier = compute_periods("vs", "week", [it], [WEEK1], z("2025-01-10T00:00Z"))
    before = rows_by_type(earlier, WEEK1)
    assert (before[ALL].velocity, before[ALL].flow_time.mean_s) == (1, 24 * H)


def test_backward_move_to_new_leaves_load_but_flow_time_runs() -> None:
    it = item(
        "B",
        "defect",
        ("2025-01-06T00:00Z", A),  # 24 h active
        ("2025-01-07T00:00Z", N),  # back to the backlog over the week end
        ("2025-01-14T00:00Z", A),  # 24 h active
        ("2025-01-15T00:00Z", D),
    )
    rows = compute_periods("vs", "week", [it], [WEEK1, WEEK2], LATE)
    w1, w2 = rows_by_type(rows, WEEK1)[ALL], rows_by_type(rows, WEEK2)[ALL]
    assert (w1.load_end, w1.age.count) == (0, 0)
    assert w1.load_avg == pytest.approx(24 / 168)
    # flow 9 days = 216 h, active 48 h
    assert w2.flow_time.mean_s == 216 * H
    assert w2.efficiency == pytest.approx(48 / 216)


def test_dst_crossing_day_periods_use_utc_seconds() -> None:
    it = item(
        "T",
        "feature",
        ("2025-03-29T10:00+01:00", A),  # 09:00Z
        ("2025-03-31T10:00+02:00", D),  # 08:00Z
    )
    days = period_starts("day", z("2025-03-29T00:00Z"), z("2025-03-31T00:00Z"))
    rows = compute_periods("vs", "day", [it], days, z("2025-06-01T00:00Z"))
    d29, d30, d31 = (rows_by_type(rows, d)[ALL] for d in days)
    # Mar 29: 09:00Z -> 24:00Z = 15 h; Mar 30: a whole UTC day (24 h, although Berlin's
    # local day had 23 h); Mar 31: 00:00Z -> 08:00Z = 8 h
    assert (d29.load_avg, d30.load_avg, d31.load_avg) == (15 / 24, 1.0, 8 / 24)
    # flow time 15 + 24 + 8 = 47 h
    assert (d31.velocity, d31.flow_time.max_s) == (1, 47 * H)
    # age at the end of Mar 30 (00:00Z Mar 31) = 15 h + 24 h = 39 h
    assert d30.age.max_s == 39 * H


def test_distribution_shares() -> None:
    done = [("2025-01-07T00:00Z", A), ("2025-01-08T00:00Z", D)]
    busy = [("2025-01-07T00:00Z", A)]
    items = [
        item("F1", "feature", *done),
        item("F2", "feature", *done),
        item("F3", "feature", *done),
        item("D1", "defect", *done),
        item("R1", "risk", *busy),
        item("U1", "unclassified", *busy),
    ]
    r = rows_by_type(compute_periods("vs", "week", items, [WEEK1], LATE), WEEK1)[ALL]
    assert r.distribution == {
        "feature": 0.75,
        "defect": 0.25,
        "risk": 0.0,
        "debt": 0.0,
        "unclassified": 0.0,
    }
    assert r.load_distribution == {
        "feature": 0.0,
        "defect": 0.0,
        "risk": 0.5,
        "debt": 0.0,
        "unclassified": 0.5,
    }


def test_requested_starts_must_be_period_starts_and_kind_known() -> None:
    with pytest.raises(ValueError):
        compute_periods("vs", "week", [], [z("2025-01-07T00:00Z")], LATE)
    with pytest.raises(ValueError):
        compute_periods("vs", "year", [], [WEEK1], LATE)
    with pytest.raises(ValueError):
        MetricItem("K", "story", ())


# --- JSON ---------------------------------------------------------------------------------


def test_json_round_trip_with_exact_keys() -> None:
    rows = compute_periods("vs", "week", WEEK_ITEMS, [WEEK1], LATE)
    for row in rows:
        d = row.to_json()
        assert set(d) == {
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
        }
        assert set(d["flow_time"]) == {"count", "mean_s", "p50_s", "p85_s", "p95_s", "max_s"}
        assert set(d["age"]) == {"count", "p50_s", "p85_s", "max_s"}
        assert d["period_start"] == "2025-01-06"
        assert MetricRow.from_json(json.loads(json.dumps(d))) == row
    assert rows[0].to_json()["distribution"]["feature"] == pytest.approx(1 / 3)


# --- Little's law -------------------------------------------------------------------------


def test_littles_law_in_steady_state() -> None:
    rng = random.Random(20250106)
    origin = z("2024-12-30T00:00Z")  # Monday
    items: list[MetricItem] = []
    arrival = origin
    for n in range(3000):
        arrival += timedelta(hours=rng.uniform(1, 3))  # about 12 a day
        start = arrival + timedelta(hours=rng.uniform(0, 48))
        pause = start + timedelta(hours=rng.uniform(1, 60))
        resume = pause + timedelta(hours=rng.uniform(0, 48))
        finish = resume + timedelta(hours=rng.uniform(1, 60))
        steps = [(arrival, N), (start, A), (pause, W), (resume, A), (finish, D)]
        transitions = tuple(
            Transition(
                t,
                None if i == 0 else steps[i - 1][1].value,
                s.value,
                None if i == 0 else steps[i - 1][1],
                s,
            )
            for i, (t, s) in enumerate(steps)
        )
        items.append(MetricItem(f"I-{n}", FLOW_TYPES[n % len(FLOW_TYPES)], transitions))
    as_of = arrival + timedelta(days=30)
    rows = [r for r in compute_all("vs", "week", items, as_of) if r.flow_type == ALL]
    # Skip the warm-up and the drain: weeks 4 .. 30 are in steady state.
    window = [
        r
        for r in rows
        if origin + timedelta(weeks=4) <= r.period_start < origin + timedelta(weeks=30)
    ]
    assert len(window) == 26
    seconds = 26 * 7 * 24 * H
    throughput = sum(r.velocity for r in window) / seconds
    finished = sum(r.flow_time.count for r in window)
    mean_flow = sum(r.flow_time.count * (r.flow_time.mean_s or 0.0) for r in window) / finished
    mean_load = sum(r.load_avg or 0.0 for r in window) / len(window)
    # L = lambda * W
    assert mean_load == pytest.approx(throughput * mean_flow, rel=0.05)
    assert mean_load > 10  # a real load, not a degenerate case


# --- properties ---------------------------------------------------------------------------

BASE = z("2024-12-02T00:00Z")  # a Monday; histories cross month, quarter and year ends


@st.composite
def histories(draw: st.DrawFn) -> tuple[Transition, ...]:
    count = draw(st.integers(1, 6))
    t = BASE + timedelta(hours=6 * draw(st.integers(0, 40)))
    out: list[Transition] = []
    prev: Stage | None = None
    for _ in range(count):
        t += timedelta(
            hours=6 * draw(st.integers(0, 40)),
            milliseconds=draw(st.sampled_from([0, 0, 0, 1, 250])),
        )
        stage = draw(st.sampled_from(list(Stage)))
        out.append(Transition(t, None if prev is None else prev.value, stage.value, prev, stage))
        prev = stage
    return tuple(out)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, list[MetricItem], datetime]:
    kind = draw(st.sampled_from(PERIOD_KINDS))
    items = [
        MetricItem(f"K-{i}", draw(st.sampled_from(FLOW_TYPES)), draw(histories()))
        for i in range(draw(st.integers(0, 8)))
    ]
    as_of = BASE + timedelta(hours=6 * draw(st.integers(0, 300)))
    return kind, items, as_of


def all_starts(kind: str, as_of: datetime) -> list[datetime]:
    """Every period an item of `scenarios` can touch, including the one ending at BASE
    (an item starting work at BASE is in that period's load at its end instant)."""
    return period_starts(kind, BASE - timedelta(days=1), as_of)


def oracle(
    kind: str, items: list[MetricItem], start: datetime, as_of: datetime
) -> dict[str, object]:
    """The ALL row's velocity, load and ages, recomputed naively from stage_at and figures."""
    end = min(period_end(kind, start), as_of)
    velocity = 0
    load_end = 0
    ages: list[float] = []
    load_time = timedelta(0)
    for it in items:
        seen = [tr for tr in it.transitions if tr.at <= as_of]
        f = item_figures(seen)
        if f.outcome is Stage.DONE and f.work_end is not None:
            velocity += start <= f.work_end < period_end(kind, start)
        stage = stage_at(seen, end)
        if stage is not None and stage.in_progress:
            load_end += 1
            assert f.work_start is not None
            ages.append((end - f.work_start).total_seconds())
        cuts = sorted({start, end, *(tr.at for tr in seen if start < tr.at < end)})
        for a, b in itertools.pairwise(cuts):
            current = stage_at(seen, a)
            if current is not None and current.in_progress:
                load_time += b - a
    length = end - start
    return {
        "velocity": velocity,
        "load_end": load_end,
        "ages": sorted(ages),
        "load_avg": load_time / length if length else None,
    }


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_rows_match_naive_oracle_and_are_consistent(
    scenario: tuple[str, list[MetricItem], datetime], data: st.DataObject
) -> None:
    kind, items, as_of = scenario
    starts = all_starts(kind, as_of)
    rows = compute_periods("vs", kind, items, starts, as_of)
    assert len(rows) == 6 * len(starts)
    for start in starts:
        by_type = rows_by_type(rows, start)
        assert list(by_type) == list(ROW_ORDER)
        total = by_type[ALL]
        expected = oracle(kind, items, start, as_of)
        assert total.velocity == expected["velocity"]
        assert total.load_end == expected["load_end"] == total.age.count
        assert total.load_avg == expected["load_avg"]
        ages = expected["ages"]
        assert isinstance(ages, list)
        assert total.age.max_s == (max(ages) if ages else None)
        assert total.velocity == sum(by_type[t].velocity for t in FLOW_TYPES)
        assert total.load_end == sum(by_type[t].load_end for t in FLOW_TYPES)
        if total.distribution is not None:
            assert sum(total.distribution.values()) == pytest.approx(1.0)
        if total.efficiency is not None:
            assert 0.0 <= total.efficiency <= 1.0


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_any_subset_of_periods_equals_the_full_computation(
    scenario: tuple[str, list[MetricItem], datetime], data: st.DataObject
) -> None:
    kind, items, as_of = scenario
    starts = all_starts(kind, as_of)
    full = compute_periods("vs", kind, items, starts, as_of)
    subset = data.draw(st.lists(st.sampled_from(starts), unique=True)) if starts else []
    part = compute_periods("vs", kind, items, subset, as_of)
    assert part == [r for r in full if r.period_start in set(subset)]
    # compute_all gives exactly the touched periods, with the same rows.
    everything = compute_all("vs", kind, items, as_of)
    touched = set().union(*(touched_periods(kind, it.transitions, as_of) for it in items))
    assert {r.period_start for r in everything} == touched
    assert everything == [r for r in full if r.period_start in touched]


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_an_item_changes_rows_only_in_its_touched_periods(
    scenario: tuple[str, list[MetricItem], datetime], data: st.DataObject
) -> None:
    kind, items, as_of = scenario
    starts = all_starts(kind, as_of)
    extra = MetricItem("NEW", data.draw(st.sampled_from(FLOW_TYPES)), data.draw(histories()))
    without = compute_periods("vs", kind, items, starts, as_of)
    with_it = compute_periods("vs", kind, [*items, extra], starts, as_of)
    touched = touched_periods(kind, extra.transitions, as_of)
    changed = {a.period_start for a, b in zip(without, with_it, strict=True) if a != b}
    assert changed <= touched
    # A change to an item's history (here: it gains its later transitions) dirties only
    # the union of the old and new touched periods.
    cut = data.draw(st.integers(1, len(extra.transitions)))
    old = MetricItem("NEW", extra.flow_type, extra.transitions[:cut])
    before = compute_periods("vs", kind, [*items, old], starts, as_of)
    dirty = touched | touched_periods(kind, old.transitions, as_of)
    changed = {a.period_start for a, b in zip(before, with_it, strict=True) if a != b}
    assert changed <= dirty


def test_as_of_on_a_month_start_touches_that_empty_month() -> None:
    rows = compute_all("vs", "month", WEEK_ITEMS, LATE)
    february = z("2025-02-01T00:00Z")
    # U1 is still active at as_of = Feb 1 00:00, so February (zero length so far) has it
    # in its load at its effective end, and no time-averaged load.
    assert {r.period_start for r in rows} == {period_start("month", WEEK1), february}
    feb = rows_by_type(rows, february)[ALL]
    assert (feb.load_end, feb.load_avg, feb.velocity) == (1, None, 0)
