"""Per-item flow figures derived from one item's transition history.

Everything here reads only the ordered transitions of a single item: when work started,
when (and how) it ended, how much of that span was active, and the runs of time during
which the item was in progress. The aggregates in :mod:`syncd.metrics.compute` are built
from these facts, so their definitions live in one place (see docs/metrics.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from syncd.domain import Stage, Transition, utc


@dataclass(frozen=True, slots=True)
class ItemFigures:
    """What one item's history says about its flow, as of some instant.

    Durations are calendar seconds as floats. ``flow_time_s``, ``active_s``, ``wait_s`` and
    ``efficiency`` exist only when the item has both a work start and a work end (a canceled
    item included: they are facts about the item, even though aggregates leave it out).
    """

    work_start: datetime | None
    work_end: datetime | None
    outcome: Stage | None
    flow_time_s: float | None
    active_s: float | None
    wait_s: float | None
    efficiency: float | None


Segment = tuple[datetime, datetime | None]
"""A maximal run of time in ``active``/``waiting``: ``[start, end)``; end None means the item
is still in progress at the end of the (as-of filtered) history, including that instant."""


@dataclass(frozen=True, slots=True)
class ItemTimeline:
    """An item's figures together with its in-progress segments, computed in one pass so
    that the aggregation reads each history once."""

    figures: ItemFigures
    in_progress: tuple[Segment, ...]


_NO_FIGURES = ItemFigures(None, None, None, None, None, None, None)
_IN_PROGRESS = frozenset(stage for stage in Stage if stage.in_progress)
_TERMINAL = frozenset(stage for stage in Stage if stage.terminal)


def stage_steps(
    transitions: Sequence[Transition], as_of: datetime | None = None
) -> list[tuple[datetime, Stage]]:
    """Return ``(at, to_stage)`` in time order (stable for equal instants), in UTC, without
    the transitions after `as_of`."""
    steps = [
        (at if at.tzinfo is UTC else utc(at), tr.to_stage) for tr in transitions for at in (tr.at,)
    ]
    steps.sort(key=_instant)
    if as_of is not None:
        limit = utc(as_of)
        steps = [step for step in steps if step[0] <= limit]
    return steps


def _instant(step: tuple[datetime, Stage]) -> datetime:
    return step[0]


def stage_at(transitions: Sequence[Transition], t: datetime) -> Stage | None:
    """Return the item's stage at instant `t`: the stage reached after applying every
    transition with ``at <= t`` (a transition at exactly `t` has already happened).

    None means the item did not exist yet at `t`.
    """
    steps = stage_steps(transitions, t)
    return steps[-1][1] if steps else None


def _split_seconds(flow_s: float, active_s: float) -> tuple[float, float]:
    """Return ``(active_s, wait_s)`` whose float sum is exactly `flow_s`.

    ``flow_s - active_s`` is usually the wait; when rounding makes the sum miss, the wait
    (and, if that cannot work, the active time) moves to a neighbouring float: a change of
    picoseconds at most, far below the milliseconds trackers record, so that reports can
    promise active + wait == flow without tolerance.
    """
    for active in (active_s, math.nextafter(active_s, math.inf), math.nextafter(active_s, 0.0)):
        if not 0.0 <= active <= flow_s:
            continue
        wait_s = flow_s - active
        for _ in range(3):
            total = active + wait_s
            if total == flow_s:
                return active, wait_s
            wait_s = math.nextafter(wait_s, math.inf if total < flow_s else -math.inf)
    return active_s, flow_s - active_s


def item_timeline(transitions: Sequence[Transition], as_of: datetime | None = None) -> ItemTimeline:
    """Return the figures and in-progress segments of one item as of `as_of`.

    Transitions after `as_of` are ignored, as if they had not happened yet; with `as_of`
    None the whole history is used. See :func:`item_figures` for the definitions.
    """
    steps = stage_steps(transitions, as_of)
    if not steps:
        return ItemTimeline(_NO_FIGURES, ())

    work_start = next((at for at, stage in steps if stage in _IN_PROGRESS), None)

    # Work ends where the final uninterrupted run of terminal stages begins: done -> closed
    # or done -> canceled stay terminal, so they do not move the end.
    final = steps[-1][1]
    work_end: datetime | None = None
    outcome: Stage | None = None
    end_index = len(steps)
    if final in _TERMINAL:
        end_index = len(steps) - 1
        while end_index > 0 and steps[end_index - 1][1] in _TERMINAL:
            end_index -= 1
        work_end = steps[end_index][0]
        outcome = final

    segments: list[Segment] = []
    run_start: datetime | None = None
    active = timedelta(0)
    counts_active = work_end is not None
    for index, (at, stage) in enumerate(steps):
        if stage is Stage.ACTIVE and counts_active and index < end_index:
            active += steps[index + 1][0] - at
        if stage in _IN_PROGRESS:
            if run_start is None:
                run_start = at
        elif run_start is not None:
            if at > run_start:
                segments.append((run_start, at))
            run_start = None
    if run_start is not None:
        segments.append((run_start, None))

    flow_time_s: float | None = None
    active_s: float | None = None
    wait_s: float | None = None
    efficiency: float | None = None
    if work_start is not None and work_end is not None:
        flow_time_s = (work_end - work_start).total_seconds()
        active_s, wait_s = _split_seconds(flow_time_s, active.total_seconds())
        efficiency = active_s / flow_time_s if flow_time_s > 0 else None

    figures = ItemFigures(
        work_start=work_start,
        work_end=work_end,
        outcome=outcome,
        flow_time_s=flow_time_s,
        active_s=active_s,
        wait_s=wait_s,
        efficiency=efficiency,
    )
    return ItemTimeline(figures, tuple(segments))


def item_figures(transitions: Sequence[Transition], as_of: datetime | None = None) -> ItemFigures:
    """Return one item's flow figures as of `as_of` (transitions with ``at > as_of`` ignored).

    - work start: the first time the item enters ``active`` or ``waiting``;
    - work end: when the item's final stage is ``done`` or ``canceled``, the start of its final
      uninterrupted run of terminal stages (so a reopen moves it, done -> closed does not);
      the outcome is that final stage. Otherwise None: the item is not finished;
    - flow time: work end - work start, in calendar seconds;
    - active time: seconds in ``active`` between work start and work end; wait time is every
      other second of that span, so ``active_s + wait_s == flow_time_s``;
    - efficiency: active / flow time, None when flow time is None or 0.
    """
    return item_timeline(transitions, as_of).figures
