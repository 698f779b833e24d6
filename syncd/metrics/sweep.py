"""Bucket contents from item facts, computed by sweeping time (pure, no I/O).

The update (`syncd/metrics/incremental.py`) computes days first and everything else from
days: a week, month or quarter is a run of UTC days, so its load time is the sum of its
days' (exact, integer microseconds), its load and ages at the end are those of its last day
(same end instant), and it is touched when any of its days is. Only the finished items
(velocity, flow time, efficiency) are read per bucket, because percentiles need the values.

Days are computed by a sweep: the sorted work starts of the items in progress, per flow type
and overall, are moved along segment start and end events; at each day's end the load is
their count and the age percentiles are read at two ranks of the sorted list, so a day costs
its events plus O(1), however long the work in progress has been running.

Instants are microseconds (see :mod:`syncd.metrics.facts`). Slots: one per flow type in
FLOW_TYPES order, then ALL_SLOT for all types together.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left, insort
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from syncd.domain import ALL, FLOW_TYPES
from syncd.metrics.compute import AgeStats, FlowTimeStats, MetricRow, percentile_sorted
from syncd.metrics.facts import from_us, seconds

N_TYPES = len(FLOW_TYPES)
ALL_SLOT = N_TYPES
SLOTS = N_TYPES + 1
SLOT_NAMES: tuple[str, ...] = (*FLOW_TYPES, ALL)
TYPE_SLOT: dict[str, int] = {name: i for i, name in enumerate(FLOW_TYPES)}

AgeTriple = tuple[float | None, float | None, float | None]
_NO_AGES: AgeTriple = (None, None, None)


class Finish(NamedTuple):
    """An item whose work ended: where, how, and its figures."""

    at: int
    done: bool
    slot: int
    flow_time_s: float | None
    active_s: float | None


class SegmentEvent(NamedTuple):
    """An item entering (+1) or leaving (-1) progress at `at`; `work_start` keys its age."""

    at: int
    delta: int
    slot: int
    work_start: int


@dataclass(frozen=True, slots=True)
class Load:
    """The load of a bucket, per slot: load time (µs), load at the end, age percentiles."""

    load_us: tuple[int, ...]
    load_end: tuple[int, ...]
    ages: tuple[AgeTriple, ...]

    @property
    def empty(self) -> bool:
        return self.load_end[ALL_SLOT] == 0 and self.load_us[ALL_SLOT] == 0


NO_LOAD = Load((0,) * SLOTS, (0,) * SLOTS, (_NO_AGES,) * SLOTS)


def age_triple(work_starts: Sequence[int], end: int) -> AgeTriple:
    """p50, p85 and max of ``end - work start`` in seconds over ascending `work_starts`."""
    n = len(work_starts)
    if n == 0:
        return _NO_AGES

    def age(rank: int) -> float:  # ascending ages are descending work starts
        return seconds(end - work_starts[n - 1 - rank])

    return percentile_sorted(age, n, 50), percentile_sorted(age, n, 85), age(n - 1)


class LoadSweep:
    """The items in progress, moved day by day along their segment events."""

    def __init__(self, in_progress: Iterable[tuple[int, int]]) -> None:
        """`in_progress`: (slot, work start) of the items in progress before the first day."""
        self._starts: list[list[int]] = [[] for _ in range(SLOTS)]
        for slot, work_start in in_progress:
            self._starts[slot].append(work_start)
            self._starts[ALL_SLOT].append(work_start)
        for starts in self._starts:
            starts.sort()

    def day(self, start: int, end: int, events: Sequence[SegmentEvent]) -> tuple[Load, bool]:
        """Apply `events` (sorted, all within ``(previous end, end]``) and return the load of
        ``[start, end]`` and whether anything was in progress during it (then it is touched)."""
        lists = self._starts
        overall = lists[ALL_SLOT]
        busy = bool(overall)
        load = [0] * SLOTS
        since = [start] * N_TYPES
        for at, delta, slot, work_start in events:
            starts = lists[slot]
            load[slot] += len(starts) * (at - since[slot])
            since[slot] = at
            if delta > 0:
                insort(starts, work_start)
                insort(overall, work_start)
                busy = True
            else:
                del starts[bisect_left(starts, work_start)]
                del overall[bisect_left(overall, work_start)]
        for slot in range(N_TYPES):
            load[slot] += len(lists[slot]) * (end - since[slot])
        load[ALL_SLOT] = sum(load[:N_TYPES])
        return (
            Load(
                tuple(load),
                tuple(len(s) for s in lists),
                tuple(age_triple(s, end) for s in lists),
            ),
            busy,
        )


def sum_loads(days: Sequence[Load], last: Load) -> Load:
    """A longer bucket's load from its days': load time summed, the end taken from `last`."""
    return Load(
        tuple(sum(d.load_us[slot] for d in days) for slot in range(SLOTS)),
        last.load_end,
        last.ages,
    )


@dataclass(slots=True)
class Finished:
    """The done items of a bucket, per flow type: how many, and the flow and active seconds
    (pairwise) of those with a work start. Canceled items count in none of it."""

    velocity: list[int] = field(default_factory=lambda: [0] * N_TYPES)
    flow: list[list[float]] = field(default_factory=lambda: [[] for _ in range(N_TYPES)])
    active: list[list[float]] = field(default_factory=lambda: [[] for _ in range(N_TYPES)])

    @classmethod
    def of(cls, finishes: Iterable[Finish]) -> Finished:
        out = cls()
        for f in finishes:
            if f.done:
                out.velocity[f.slot] += 1
                if f.flow_time_s is not None and f.active_s is not None:
                    out.flow[f.slot].append(f.flow_time_s)
                    out.active[f.slot].append(f.active_s)
        return out

    def changed_slots(self, other: Finished) -> set[int]:
        """The flow types (slots) whose done items differ from `other`'s."""
        return {
            slot
            for slot in range(N_TYPES)
            if self.velocity[slot] != other.velocity[slot]
            or sorted(zip(self.flow[slot], self.active[slot], strict=True))
            != sorted(zip(other.flow[slot], other.active[slot], strict=True))
        }

    def absorb(self, other: Finished) -> None:
        for slot in range(N_TYPES):
            self.velocity[slot] += other.velocity[slot]
            self.flow[slot].extend(other.flow[slot])
            self.active[slot].extend(other.active[slot])


def encode_day(load: Load, finished: Finished) -> str:
    """A touched day as stored in `metric_days`: its load and its done items. JSON keeps
    the integers exact and round-trips the floats."""
    return json.dumps(
        [
            load.load_us,
            load.load_end,
            load.ages,
            finished.velocity,
            finished.flow,
            finished.active,
        ],
        separators=(",", ":"),
    )


def decode_day(text: str) -> tuple[Load, Finished]:
    """Inverse of :func:`encode_day`."""
    load_us, load_end, ages, velocity, flow, active = json.loads(text)
    load = Load(tuple(load_us), tuple(load_end), tuple((a[0], a[1], a[2]) for a in ages))
    return load, Finished(velocity, flow, active)


def _flow_time_stats(ordered: list[float]) -> FlowTimeStats:
    """:meth:`FlowTimeStats.of` for values already sorted (one sort instead of three)."""
    n = len(ordered)
    if n == 0:
        return FlowTimeStats.of(ordered)
    at = ordered.__getitem__
    return FlowTimeStats(
        count=n,
        mean_s=math.fsum(ordered) / n,
        p50_s=percentile_sorted(at, n, 50),
        p85_s=percentile_sorted(at, n, 85),
        p95_s=percentile_sorted(at, n, 95),
        max_s=ordered[-1],
    )


def bucket_rows(
    value_stream: str,
    kind: str,
    start: int,
    end: int,
    finished: Finished,
    load: Load,
    only: Collection[str] | None = None,
) -> list[MetricRow]:
    """The six rows (ALL, then FLOW_TYPES) of the bucket ``[start, end]`` (end: effective end)
    from its done items and its load, as :func:`syncd.metrics.compute.compute_periods`
    defines them; with `only`, just the rows of those flow types (or "all")."""
    velocity = [*finished.velocity, sum(finished.velocity)]
    flow_times = [*finished.flow, [v for values in finished.flow for v in values]]
    active_times = [*finished.active, [v for values in finished.active for v in values]]
    length = end - start
    period_start = from_us(start)
    rows: list[MetricRow] = []
    for slot in (ALL_SLOT, *range(N_TYPES)):
        if only is not None and SLOT_NAMES[slot] not in only:
            continue
        distribution: dict[str, float] | None = None
        load_distribution: dict[str, float] | None = None
        if slot == ALL_SLOT:
            if velocity[slot]:
                distribution = {
                    name: velocity[i] / velocity[slot] for i, name in enumerate(FLOW_TYPES)
                }
            if load.load_end[slot]:
                load_distribution = {
                    name: load.load_end[i] / load.load_end[slot]
                    for i, name in enumerate(FLOW_TYPES)
                }
        total_flow = math.fsum(flow_times[slot])
        effs = [a / f for f, a in zip(flow_times[slot], active_times[slot], strict=True) if f > 0]
        p50, p85, oldest = load.ages[slot]
        rows.append(
            MetricRow(
                value_stream=value_stream,
                flow_type=SLOT_NAMES[slot],
                period=kind,
                period_start=period_start,
                velocity=velocity[slot],
                flow_time=_flow_time_stats(sorted(flow_times[slot])),
                efficiency=(math.fsum(active_times[slot]) / total_flow if total_flow > 0 else None),
                efficiency_mean=math.fsum(effs) / len(effs) if effs else None,
                load_end=load.load_end[slot],
                load_avg=load.load_us[slot] / length if length > 0 else None,
                distribution=distribution,
                load_distribution=load_distribution,
                age=AgeStats(count=load.load_end[slot], p50_s=p50, p85_s=p85, max_s=oldest),
            )
        )
    return rows
