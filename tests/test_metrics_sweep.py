"""The pieces the stored-metric update is built from: exact percentiles read at two ranks,
day records that round-trip, item facts, and the dirt a change records."""

from __future__ import annotations

import base64
import json
import math
import zlib
from array import array
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.domain import FLOW_TYPES, Stage, Transition
from syncd.metrics.compute import AgeStats, FlowTimeStats, percentile, percentile_sorted
from syncd.metrics.facts import (
    COVER,
    FINISH,
    FLOW,
    Dirt,
    FinishChange,
    RunMark,
    Version,
    from_us,
    item_changes,
    item_facts,
    merge_dirt,
    run_changes,
    seconds,
    to_us,
)
from syncd.metrics.figures import item_timeline
from syncd.metrics.sweep import (
    ALL_SLOT,
    N_TYPES,
    SLOTS,
    Finish,
    Finished,
    Load,
    LoadSweep,
    SegmentEvent,
    age_triple,
    bucket_rows,
    decode_day,
    decode_opening,
    encode_day,
)

T0 = datetime(2025, 6, 2, tzinfo=UTC)
floats = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)


def exact_percentile(values: list[float], q: float) -> float:
    """docs/metrics.md's definition, in rationals, rounded once."""
    ordered = sorted(values)
    rank = Fraction(len(ordered) - 1) * Fraction(q) / 100
    low = math.floor(rank)
    if rank == low:
        return ordered[low]
    a, b = Fraction(ordered[low]), Fraction(ordered[low + 1])
    return float(a + (rank - low) * (b - a))


@settings(max_examples=400)
@given(
    values=st.lists(
        st.one_of(floats, st.floats(0, 1e-3), st.integers(0, 10**12).map(seconds)),
        min_size=1,
        max_size=40,
    ),
    q=st.one_of(st.integers(0, 100), st.floats(0, 100)),
)
def test_percentile_read_at_two_ranks_is_exact(values: list[float], q: float) -> None:
    ordered = sorted(values)
    expected = exact_percentile(values, q)
    assert percentile_sorted(ordered.__getitem__, len(ordered), q) == expected
    assert percentile(values, q) == expected


@given(starts=st.lists(st.integers(0, 10**12), max_size=30), end_after=st.integers(0, 10**9))
def test_age_triple_equals_age_stats(starts: list[int], end_after: int) -> None:
    end = max(starts, default=0) + end_after
    ages = [seconds(end - s) for s in starts]
    stats = AgeStats.of(ages)
    assert age_triple(sorted(starts), end) == (stats.p50_s, stats.p85_s, stats.max_s)


def test_seconds_round_like_timedelta() -> None:
    for us in (0, 1, 999_999, 1_000_001, 123_456_789_012_345, 2**53 + 1):
        assert seconds(us) == timedelta(microseconds=us).total_seconds()
    t = datetime(2031, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    assert from_us(to_us(t)) == t


@given(
    load_us=st.lists(st.integers(0, 10**17), min_size=SLOTS, max_size=SLOTS),
    ends=st.lists(st.integers(0, 10**5), min_size=SLOTS, max_size=SLOTS),
    ages=st.lists(st.one_of(st.none(), floats), min_size=SLOTS * 3, max_size=SLOTS * 3),
    done=st.lists(st.tuples(st.integers(0, N_TYPES - 1), floats, floats), max_size=20),
)
def test_day_records_round_trip_exactly(
    load_us: list[int],
    ends: list[int],
    ages: list[float | None],
    done: list[tuple[int, float, float]],
) -> None:
    load = Load(
        tuple(load_us),
        tuple(ends),
        tuple((ages[3 * i], ages[3 * i + 1], ages[3 * i + 2]) for i in range(SLOTS)),
    )
    finished = Finished.of(Finish(0, True, slot, flow, active) for slot, flow, active in done)
    assert decode_day(encode_day(load, finished)) == (load, finished)


def test_day_records_written_before_the_done_items_were_packed_still_read() -> None:
    load = Load((1,) * SLOTS, (2,) * SLOTS, ((3.0, 4.0, 5.5),) * SLOTS)
    finished = Finished.of(
        [Finish(0, True, 1, 3.5, 1.25), Finish(0, True, 1, 7.0, 7.0), Finish(0, True, 4, 0.1, 0.0)]
    )
    earlier = json.dumps(
        [
            load.load_us,
            load.load_end,
            load.ages,
            finished.velocity,
            finished.flow,
            finished.active,
        ]
    )
    assert decode_day(earlier) == (load, finished) == decode_day(encode_day(load, finished))


@given(
    opening=st.lists(
        st.lists(st.integers(0, 2**62), max_size=30).map(sorted), min_size=N_TYPES, max_size=N_TYPES
    )
)
def test_an_opening_rides_along_a_day_record_exactly(opening: list[list[int]]) -> None:
    load = Load((1,) * SLOTS, (2,) * SLOTS, ((None, None, None),) * SLOTS)
    finished = Finished.of([Finish(0, True, 1, 3.5, 1.25)])
    text = encode_day(load, finished, opening)
    assert decode_opening(text) == opening
    assert decode_day(text) == (load, finished)  # the day itself reads as without it
    assert decode_opening(encode_day(load, finished)) is None


def test_openings_written_in_the_earlier_deflated_form_still_read() -> None:
    opening = [[5, 9, 40], [], [7], [1, 2], [2**40]]
    values = array("q", [len(starts) for starts in opening])
    for starts in opening:  # the form before: each type's differences
        values.extend(b - a for a, b in zip((0, *starts), starts, strict=False))
    packed = base64.b64encode(zlib.compress(values.tobytes(), 1)).decode("ascii")
    load = Load((1,) * SLOTS, (2,) * SLOTS, ((None, None, None),) * SLOTS)
    record = json.loads(encode_day(load, Finished()))
    earlier = json.dumps([*record, packed])
    assert decode_opening(earlier) == opening
    assert decode_day(earlier) == (load, Finished())


def _valid_events(
    before: list[tuple[int, int]], moves: list[tuple[int, bool, int, int]]
) -> list[SegmentEvent]:
    """`moves` as sorted segment events that only take out what is in progress."""
    held = list(before)
    events: list[SegmentEvent] = []
    for at, enters, slot, work_start in sorted(moves):
        if enters:
            held.append((slot, work_start))
            events.append(SegmentEvent(at, 1, slot, work_start))
        elif (slot, work_start) in held:
            held.remove((slot, work_start))
            events.append(SegmentEvent(at, -1, slot, work_start))
    return events


@settings(max_examples=300)
@given(
    before=st.lists(st.tuples(st.integers(0, N_TYPES - 1), st.integers(-50, 50)), max_size=12),
    moves=st.lists(
        st.tuples(
            st.integers(1, 20), st.booleans(), st.integers(0, N_TYPES - 1), st.integers(-50, 50)
        ),
        max_size=24,
    ),
)
def test_an_opening_is_what_was_in_progress_just_before_the_day_and_resumes_exactly(
    before: list[tuple[int, int]], moves: list[tuple[int, bool, int, int]]
) -> None:
    # days of 10 instants; events at exactly 10 end the first day and are applied with it
    events = _valid_events(before, moves)
    first = [e for e in events if e.at <= 10]
    second = [e for e in events if e.at > 10]
    at_boundary = [e for e in first if e.at == 10]
    original = LoadSweep(before)
    original.day(0, 10, first)
    opening = original.opening(at_boundary)
    # just before the boundary: what was in progress before, and every earlier event
    expected = list(before)
    for e in first:
        if e.at < 10:
            if e.delta > 0:
                expected.append((e.slot, e.work_start))
            else:
                expected.remove((e.slot, e.work_start))
    assert opening == LoadSweep(expected).opening()
    # a sweep resumed there applies the boundary's events again, then goes on identically
    resumed = LoadSweep.resume(opening)
    assert resumed.day(10, 20, at_boundary + second)[0] == original.day(10, 20, second)[0]


def test_finished_counts_done_items_only_and_keeps_pairs() -> None:
    finished = Finished.of(
        [
            Finish(1, True, 0, 10.0, 4.0),
            Finish(2, False, 0, 99.0, 1.0),  # canceled: counted nowhere
            Finish(3, True, 1, None, None),  # closed from the backlog: velocity only
            Finish(4, True, 0, 20.0, 20.0),
        ]
    )
    assert finished.velocity == [2, 1, 0, 0, 0]
    assert finished.flow[0] == [10.0, 20.0] and finished.active[0] == [4.0, 20.0]
    rows = bucket_rows(
        "vs",
        "day",
        0,
        86_400_000_000,
        finished,
        Load((0,) * SLOTS, (0,) * SLOTS, ((None, None, None),) * SLOTS),
    )
    assert [r.flow_type for r in rows] == [
        "all",
        "feature",
        "defect",
        "risk",
        "debt",
        "unclassified",
    ]
    assert rows[0].velocity == 3 and rows[0].flow_time == FlowTimeStats.of([10.0, 20.0])
    assert rows[0].efficiency == 24.0 / 30.0
    assert rows[0].efficiency_mean == (0.4 + 1.0) / 2


def test_load_sweep_integrates_and_counts_at_the_day_end() -> None:
    hour = 3_600_000_000
    sweep = LoadSweep([(0, -5 * hour)])  # one feature in progress since before the day
    events = [
        SegmentEvent(2 * hour, 1, 1, 2 * hour),  # a defect starts at 02:00
        SegmentEvent(6 * hour, -1, 0, -5 * hour),  # the feature stops at 06:00
        SegmentEvent(24 * hour, 1, 0, 24 * hour),  # a feature starts exactly at the end
    ]
    load, busy = sweep.day(0, 24 * hour, events)
    assert busy
    assert load.load_us[0] == 6 * hour and load.load_us[1] == 22 * hour
    assert load.load_us[ALL_SLOT] == 28 * hour
    # the end instant reads the stage after every transition at it
    assert load.load_end[0] == 1 and load.load_end[1] == 1 and load.load_end[ALL_SLOT] == 2
    assert load.ages[0] == (0.0, 0.0, 0.0)
    assert load.ages[1] == (22 * 3600.0, 22 * 3600.0, 22 * 3600.0)
    quiet, busy = sweep.day(24 * hour, 48 * hour, [])
    assert busy and quiet.load_us[ALL_SLOT] == 48 * hour


def steps(*moves: tuple[float, Stage]) -> list[Transition]:
    out = [Transition(T0, None, "new", None, Stage.NEW)]
    for hours, stage in moves:
        prev = out[-1]
        out.append(
            Transition(
                T0 + timedelta(hours=hours), prev.to_state, stage.value, prev.to_stage, stage
            )
        )
    return out


def test_item_facts_match_the_timeline_and_mark_run_changes() -> None:
    history = steps(
        (1, Stage.ACTIVE),
        (5, Stage.DONE),
        (6, Stage.CANCELED),  # the outcome switches inside the run
        (9, Stage.ACTIVE),  # left: a reopen
        (12, Stage.DONE),
        (12, Stage.NEW),  # entered and left at once: never a work end
        (13, Stage.DONE),
    )
    f = item_facts(history)
    figures = item_timeline(history).figures
    assert f.work_start == to_us(T0 + timedelta(hours=1))
    assert f.work_end == to_us(T0 + timedelta(hours=13))
    assert (f.outcome, f.flow_time_s, f.active_s) == (
        figures.outcome,
        figures.flow_time_s,
        figures.active_s,
    )
    us = lambda h: to_us(T0 + timedelta(hours=h))  # noqa: E731
    assert f.segments == ((us(1), us(5)), (us(9), us(12)))
    # each mark keeps the finish the run held until then: done, then canceled, 4 h each
    held = 4 * 3600.0
    assert f.run_marks == (
        RunMark(us(5), us(6), False, True, held, held),
        RunMark(us(5), us(9), True, False, held, held),
    )
    assert f.last_at == us(13)
    # as of 7 o'clock the item is canceled since 5, and nothing later is known
    early = item_facts(history, T0 + timedelta(hours=7))
    assert early.work_end == us(5) and early.outcome is Stage.CANCELED
    assert early.run_marks == (RunMark(us(5), us(6), False, True, held, held),)


def test_a_reopen_dirties_its_old_end_and_covers_the_time_done() -> None:
    before = Version.of("vs", "defect", steps((1, Stage.ACTIVE), (5, Stage.DONE)))
    after = Version.of(
        "vs", "defect", steps((1, Stage.ACTIVE), (5, Stage.DONE), (30, Stage.ACTIVE))
    )
    us = lambda h: to_us(T0 + timedelta(hours=h))  # noqa: E731
    dirt = item_changes(before, after, T0 + timedelta(hours=40))
    assert Dirt("vs", FLOW, us(30) - 1, None) in dirt
    # the old finish leaves its day's done items, and the dirt says with which figures
    left = FinishChange(-1, "defect", True, 4 * 3600.0, 4 * 3600.0)
    assert Dirt("vs", FINISH, us(5), us(5), left) in dirt
    assert Dirt("vs", COVER, us(5), us(30) - 1) in dirt
    # seen from before the reopen happened, nothing changed
    assert item_changes(before, after, T0 + timedelta(hours=20)) == []
    assert item_changes(before, before, T0 + timedelta(hours=40)) == []


def test_a_new_flow_type_dirties_both_versions_whole() -> None:
    history = steps((1, Stage.ACTIVE), (5, Stage.DONE))
    us = lambda h: to_us(T0 + timedelta(hours=h))  # noqa: E731
    dirt = item_changes(
        Version.of("a", "defect", history),
        Version.of("b", "feature", history),
        T0 + timedelta(days=1),
    )
    assert dirt == [Dirt("a", FLOW, us(1) - 1, us(5)), Dirt("b", FLOW, us(1) - 1, us(5))]


def test_run_changes_take_out_the_finish_the_run_held() -> None:
    switch = RunMark(100, 200, False, True, 30.0, 10.0)
    assert run_changes("vs", "risk", switch) == [
        Dirt("vs", FINISH, 100, 100, FinishChange(-1, "risk", True, 30.0, 10.0)),
        Dirt("vs", FINISH, 100, 100, FinishChange(1, "risk", False, 30.0, 10.0)),
    ]
    leave = RunMark(100, 300, True, False, 30.0, 10.0)
    assert run_changes("vs", "risk", leave) == [
        Dirt("vs", FINISH, 100, 100, FinishChange(-1, "risk", False, 30.0, 10.0)),
        Dirt("vs", COVER, 100, 299),
    ]
    # a mark written before the finish was kept: the day is read again
    assert run_changes("vs", "risk", RunMark(100, 300, True)) == [
        Dirt("vs", FINISH, 100, 100),
        Dirt("vs", COVER, 100, 299),
    ]


def test_finish_changes_change_a_days_done_items_as_reading_them_again_would() -> None:
    day = [
        Finish(0, True, 1, 3.5, 1.0),
        Finish(0, True, 1, 7.0, 7.0),
        Finish(0, True, 0, None, None),
    ]
    before = Finished.of(day)
    changes = [
        FinishChange(-1, FLOW_TYPES[1], True, 7.0, 7.0),  # reopened
        FinishChange(-1, FLOW_TYPES[0], True, None, None),  # done without a work start
        FinishChange(1, FLOW_TYPES[3], True, 2.0, 0.5),  # a late finish
        FinishChange(1, FLOW_TYPES[3], False, 9.0, 9.0),  # canceled: counts in nothing
        FinishChange(1, FLOW_TYPES[2], True, 4.0, 1.0),  # added, then taken out again
        FinishChange(-1, FLOW_TYPES[2], True, 4.0, 1.0),
    ]
    after = before.changed_by(changes)
    assert after == Finished.of([day[0], Finish(0, True, 3, 2.0, 0.5)])
    assert before == Finished.of(day)  # a copy: the stored record is not changed
    # an item that is not among the day's done items: the day must be read again
    assert before.changed_by([FinishChange(-1, FLOW_TYPES[1], True, 3.5, 2.0)]) is None
    assert before.changed_by([FinishChange(-1, FLOW_TYPES[4], True, None, None)]) is None


def test_merge_dirt_joins_overlapping_and_open_spans() -> None:
    change = FinishChange(-1, "feature", True, 1.0, 0.5)
    merged = merge_dirt(
        [
            Dirt("a", FLOW, 10, 20),
            Dirt("a", FLOW, 21, 30),
            Dirt("a", FLOW, 40, None),
            Dirt("a", FLOW, 50, 60),
            Dirt("a", FINISH, 5, 5),
            Dirt("b", FLOW, 0, 1),
            Dirt("a", FINISH, 7, 7, change),
            Dirt("a", FINISH, 7, 7, change),  # two items with the same figures
        ]
    )
    assert merged == [
        Dirt("a", FINISH, 7, 7, change),
        Dirt("a", FINISH, 7, 7, change),
        Dirt("a", FINISH, 5, 5),
        Dirt("a", FLOW, 10, 30),
        Dirt("a", FLOW, 40, None),
        Dirt("b", FLOW, 0, 1),
    ]
    assert math.isclose(seconds(1_500_000), 1.5)
