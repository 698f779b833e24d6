"""Per-item figures: work start/end, flow, active and wait time, efficiency, stage_at."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.domain import Stage, Transition
from syncd.metrics.figures import item_figures, item_timeline, stage_at

H = 3600.0


def z(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None
    return value


def history(*steps: tuple[str, Stage] | tuple[str, Stage, str]) -> list[Transition]:
    """Build transitions from (timestamp, stage[, state]); the first one is the creation."""
    out: list[Transition] = []
    prev_state: str | None = None
    prev_stage: Stage | None = None
    for step in steps:
        at, stage = step[0], step[1]
        state = step[2] if len(step) == 3 else stage.value
        out.append(Transition(z(at), prev_state, state, prev_stage, stage))
        prev_state, prev_stage = state, stage
    return out


N, A, W, D, C = Stage.NEW, Stage.ACTIVE, Stage.WAITING, Stage.DONE, Stage.CANCELED


def test_straight_flow() -> None:
    f = item_figures(
        history(
            ("2025-01-06T09:00Z", N),
            ("2025-01-06T10:00Z", A),
            ("2025-01-08T10:00Z", D),
        )
    )
    assert f.work_start == z("2025-01-06T10:00Z")
    assert f.work_end == z("2025-01-08T10:00Z")
    assert f.outcome is D
    # 10:00 Jan 6 -> 10:00 Jan 8 = 48 h, all active.
    assert f.flow_time_s == 48 * H
    assert f.active_s == 48 * H
    assert f.wait_s == 0.0
    assert f.efficiency == 1.0


def test_pause() -> None:
    f = item_figures(
        history(
            ("2025-01-06T09:00Z", N),
            ("2025-01-06T10:00Z", A),  # active 10:00-12:00 = 2 h
            ("2025-01-06T12:00Z", W),  # waiting 12:00-15:00 = 3 h
            ("2025-01-06T15:00Z", A),  # active 15:00-16:00 = 1 h
            ("2025-01-06T16:00Z", D),
        )
    )
    # flow 6 h, active 2 + 1 = 3 h, wait 3 h, efficiency 3 / 6 = 0.5
    assert (f.flow_time_s, f.active_s, f.wait_s, f.efficiency) == (6 * H, 3 * H, 3 * H, 0.5)


def test_backward_move_keeps_original_start_and_counts_new_as_wait() -> None:
    f = item_figures(
        history(
            ("2025-01-06T09:00Z", N),
            ("2025-01-06T10:00Z", A),  # active 1 h
            ("2025-01-06T11:00Z", N),  # back in the backlog 2 h: wait
            ("2025-01-06T13:00Z", A),  # active 1 h
            ("2025-01-06T14:00Z", D),
        )
    )
    assert f.work_start == z("2025-01-06T10:00Z")
    # flow 10:00 -> 14:00 = 4 h; active 2 h; wait 2 h
    assert (f.flow_time_s, f.active_s, f.wait_s, f.efficiency) == (4 * H, 2 * H, 2 * H, 0.5)


REOPENED = history(
    ("2025-01-06T09:00Z", N),
    ("2025-01-06T10:00Z", A),  # active 2 h
    ("2025-01-06T12:00Z", D),  # done for 24 h: wait once reopened
    ("2025-01-07T12:00Z", A),  # active 1 h
    ("2025-01-07T13:00Z", D),
)


def test_reopen_runs_flow_time_from_original_start() -> None:
    f = item_figures(REOPENED)
    assert f.work_start == z("2025-01-06T10:00Z")
    assert f.work_end == z("2025-01-07T13:00Z")
    # flow 10:00 Jan 6 -> 13:00 Jan 7 = 27 h; active 2 + 1 = 3 h; wait 24 h
    assert (f.flow_time_s, f.active_s, f.wait_s) == (27 * H, 3 * H, 24 * H)
    assert f.efficiency == pytest.approx(3 / 27)


def test_reopen_seen_at_earlier_as_of() -> None:
    # Before the reopen, the item was done at 12:00 with 2 h of flow time.
    before = item_figures(REOPENED, as_of=z("2025-01-07T00:00Z"))
    assert before.work_end == z("2025-01-06T12:00Z")
    assert (before.flow_time_s, before.outcome) == (2 * H, D)
    # While reopened it is not finished: no work end and no flow figures.
    during = item_figures(REOPENED, as_of=z("2025-01-07T12:30Z"))
    assert during.work_start == z("2025-01-06T10:00Z")
    assert (during.work_end, during.outcome, during.flow_time_s, during.efficiency) == (
        None,
        None,
        None,
        None,
    )


def test_cancel_has_per_item_figures_and_canceled_outcome() -> None:
    f = item_figures(
        history(
            ("2025-01-06T09:00Z", N),
            ("2025-01-06T10:00Z", W),  # waiting 5 h
            ("2025-01-06T15:00Z", C),
        )
    )
    assert f.outcome is C
    assert f.work_end == z("2025-01-06T15:00Z")
    assert (f.flow_time_s, f.active_s, f.wait_s, f.efficiency) == (5 * H, 0.0, 5 * H, 0.0)


def test_done_then_canceled_keeps_work_end_at_done() -> None:
    f = item_figures(
        history(
            ("2025-01-06T10:00Z", A),
            ("2025-01-06T11:00Z", D),
            ("2025-01-06T18:00Z", C),
        )
    )
    assert (f.work_end, f.outcome, f.flow_time_s) == (z("2025-01-06T11:00Z"), C, 1 * H)


def test_done_then_closed_keeps_work_end_at_first_done() -> None:
    f = item_figures(
        history(
            ("2025-01-06T09:00Z", N, "To Do"),
            ("2025-01-06T10:00Z", A, "In Progress"),
            ("2025-01-06T14:00Z", D, "Done"),
            ("2025-01-09T14:00Z", D, "Closed"),
        )
    )
    assert f.work_end == z("2025-01-06T14:00Z")
    assert f.flow_time_s == 4 * H


def test_never_started_never_finished() -> None:
    f = item_figures(history(("2025-01-06T09:00Z", N)))
    assert f == item_figures([])
    assert (f.work_start, f.work_end, f.outcome, f.flow_time_s) == (None, None, None, None)
    assert item_timeline(history(("2025-01-06T09:00Z", N))).in_progress == ()


def test_closed_straight_from_backlog_has_work_end_but_no_flow_time() -> None:
    f = item_figures(history(("2025-01-06T09:00Z", N), ("2025-01-07T09:00Z", D)))
    assert (f.work_start, f.work_end, f.outcome) == (None, z("2025-01-07T09:00Z"), D)
    assert (f.flow_time_s, f.active_s, f.wait_s, f.efficiency) == (None, None, None, None)


def test_dst_crossing_counts_calendar_seconds() -> None:
    # Europe/Berlin moved from +01:00 to +02:00 at 2025-03-30 02:00 local (01:00 UTC).
    f = item_figures(
        history(
            ("2025-03-29T09:00+01:00", N),
            ("2025-03-29T10:00+01:00", A),  # 09:00Z
            ("2025-03-30T10:00+02:00", W),  # 08:00Z: 23 h active (the local clock says 24 h)
            ("2025-03-31T10:00+02:00", D),  # 08:00Z: 24 h waiting
        )
    )
    assert f.work_start == datetime(2025, 3, 29, 9, tzinfo=UTC)
    assert f.work_start is not None and f.work_start.utcoffset() == timedelta(0)
    # flow 09:00Z Mar 29 -> 08:00Z Mar 31 = 47 h (48 "local" hours would be wrong)
    assert (f.flow_time_s, f.active_s, f.wait_s) == (47 * H, 23 * H, 24 * H)


def test_milliseconds_are_kept() -> None:
    f = item_figures(history(("2025-01-06T10:00:00.250Z", A), ("2025-01-06T10:00:01.000Z", D)))
    assert f.flow_time_s == 0.75


def test_zero_flow_time_has_no_efficiency() -> None:
    f = item_figures(history(("2025-01-06T10:00Z", A), ("2025-01-06T10:00Z", D)))
    assert (f.flow_time_s, f.active_s, f.wait_s, f.efficiency) == (0.0, 0.0, 0.0, None)


def test_as_of_ignores_later_transitions_and_includes_equal_ones() -> None:
    h = history(("2025-01-06T10:00Z", A), ("2025-01-06T12:00Z", D))
    assert item_figures(h, as_of=z("2025-01-06T11:59:59Z")).work_end is None
    assert item_figures(h, as_of=z("2025-01-06T12:00Z")).work_end == z("2025-01-06T12:00Z")
    assert item_figures(h, as_of=z("2025-01-06T09:00Z")).work_start is None


def test_stage_at() -> None:
    h = history(
        ("2025-01-06T09:00Z", N),
        ("2025-01-06T10:00Z", A),
        ("2025-01-06T10:00Z", W),  # same instant: applied after the previous one
        ("2025-01-06T12:00Z", D),
    )
    assert stage_at(h, z("2025-01-06T08:59:59Z")) is None
    assert stage_at(h, z("2025-01-06T09:00Z")) is N
    assert stage_at(h, z("2025-01-06T09:59:59.999Z")) is N
    assert stage_at(h, z("2025-01-06T10:00Z")) is W
    assert stage_at(h, z("2025-01-06T12:00Z")) is D
    assert stage_at(h, z("2025-01-06T12:00+01:00")) is W  # 11:00Z


def test_in_progress_segments() -> None:
    h = history(
        ("2025-01-06T09:00Z", N),
        ("2025-01-06T10:00Z", A),
        ("2025-01-06T11:00Z", W),  # active -> waiting: same in-progress run
        ("2025-01-06T12:00Z", N),
        ("2025-01-06T13:00Z", A),
    )
    assert item_timeline(h).in_progress == (
        (z("2025-01-06T10:00Z"), z("2025-01-06T12:00Z")),
        (z("2025-01-06T13:00Z"), None),
    )
    assert item_timeline(h, as_of=z("2025-01-06T11:30Z")).in_progress == (
        (z("2025-01-06T10:00Z"), None),
    )


def test_naive_timestamps_are_rejected() -> None:
    naive = [Transition(datetime(2025, 1, 6), None, "x", None, A)]
    with pytest.raises(ValueError):
        item_figures(naive)


BASE = datetime(2025, 1, 6, tzinfo=UTC)

steps_strategy = st.lists(
    st.tuples(
        st.integers(0, 10**6),  # seconds between steps
        st.integers(0, 999),  # extra milliseconds
        st.sampled_from(list(Stage)),
    ),
    min_size=0,
    max_size=12,
)


def build(steps: list[tuple[int, int, Stage]]) -> list[Transition]:
    out: list[Transition] = []
    t = BASE
    prev: Stage | None = None
    for gap_s, ms, stage in steps:
        t = t + timedelta(seconds=gap_s, milliseconds=ms)
        out.append(Transition(t, None if prev is None else prev.value, stage.value, prev, stage))
        prev = stage
    return out


@given(steps=steps_strategy, as_of_s=st.one_of(st.none(), st.integers(0, 10**7)))
def test_figures_invariants(steps: list[tuple[int, int, Stage]], as_of_s: int | None) -> None:
    transitions = build(steps)
    as_of = None if as_of_s is None else BASE + timedelta(seconds=as_of_s)
    tl = item_timeline(transitions, as_of)
    f = tl.figures
    seen = [tr for tr in transitions if as_of is None or tr.at <= as_of]
    final = seen[-1].to_stage if seen else None
    assert f.outcome == (final if final is not None and final.terminal else None)
    assert (f.work_end is None) == (f.outcome is None)
    if f.work_start is not None and f.work_end is not None:
        assert f.flow_time_s is not None and f.active_s is not None and f.wait_s is not None
        assert f.work_start <= f.work_end
        assert f.active_s + f.wait_s == f.flow_time_s  # exactly, in floats
        assert 0 <= f.active_s <= f.flow_time_s
        if f.efficiency is not None:
            assert 0.0 <= f.efficiency <= 1.0
        # No transition inside the final terminal run leaves the terminal stages.
        assert all(tr.to_stage.terminal for tr in seen if tr.at > f.work_end)
    else:
        assert (f.flow_time_s, f.active_s, f.wait_s, f.efficiency) == (None, None, None, None)
    # Segments are ordered, disjoint, start at or after the work start, and each instant
    # inside one is in progress per stage_at.
    previous_end: datetime | None = None
    for start, end in tl.in_progress:
        assert f.work_start is not None and start >= f.work_start
        if previous_end is not None:
            assert start >= previous_end
        assert stage_at(seen, start) in (Stage.ACTIVE, Stage.WAITING)
        if end is not None:
            assert end > start
            assert not stage_at(seen, end).in_progress  # type: ignore[union-attr]
            if f.work_end is not None:
                assert end <= f.work_end
        previous_end = end if end is not None else start
    # Active time, recomputed from stage_at on each interval between distinct instants.
    if f.work_start is not None and f.work_end is not None:
        instants = sorted({tr.at for tr in seen})
        active = timedelta(0)
        for a, b in itertools.pairwise(instants):
            if f.work_start <= a and b <= f.work_end and stage_at(seen, a) is Stage.ACTIVE:
                active += b - a
        # (equal up to the float step that keeps active + wait == flow exact)
        assert f.active_s == pytest.approx(active.total_seconds(), rel=1e-15, abs=1e-9)
    # Only timestamps order the history: reversed input with distinct instants gives the same.
    if len({tr.at for tr in transitions}) == len(transitions):
        assert item_timeline(transitions[::-1], as_of) == tl
