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

import base64
import json
import math
import sys
import zlib
from array import array
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, chain
from operator import truediv
from typing import Any, NamedTuple, cast

from syncd.domain import ALL, FLOW_TYPES
from syncd.metrics.compute import AgeStats, FlowTimeStats, MetricRow, percentile_sorted
from syncd.metrics.facts import FinishChange, from_us, seconds

N_TYPES = len(FLOW_TYPES)
ALL_SLOT = N_TYPES
SLOTS = N_TYPES + 1
SLOT_NAMES: tuple[str, ...] = (*FLOW_TYPES, ALL)
TYPE_SLOT: dict[str, int] = {name: i for i, name in enumerate(FLOW_TYPES)}

AgeTriple = tuple[float | None, float | None, float | None]
Opening = list[list[int]]
"""The work starts of the items in progress at an instant, ascending, per flow type."""
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
        per_type: list[list[int]] = [[] for _ in range(N_TYPES)]
        for slot, work_start in in_progress:
            per_type[slot].append(work_start)
        self._starts = self._lists(per_type)

    @staticmethod
    def _lists(per_type: list[list[int]]) -> list[list[int]]:
        for starts in per_type:
            starts.sort()
        return [*per_type, sorted(chain.from_iterable(per_type))]

    @classmethod
    def resume(cls, opening: Opening) -> LoadSweep:
        """A sweep starting from an :meth:`opening` taken before."""
        sweep = cls(())
        sweep._starts = cls._lists([list(starts) for starts in opening])
        return sweep

    def opening(self, undo: Iterable[SegmentEvent] = ()) -> Opening:
        """The work starts in progress now per flow type (ascending), which a later sweep
        can resume from; `undo` takes back events already applied."""
        lists = [list(starts) for starts in self._starts[:N_TYPES]]
        for _, delta, slot, work_start in undo:
            starts = lists[slot]
            if delta > 0:
                del starts[bisect_left(starts, work_start)]
            else:
                insort(starts, work_start)
        return lists

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
            or (
                # the same items in the same order (by work end) is the common case
                (self.flow[slot] != other.flow[slot] or self.active[slot] != other.active[slot])
                and sorted(zip(self.flow[slot], self.active[slot], strict=True))
                != sorted(zip(other.flow[slot], other.active[slot], strict=True))
            )
        }

    def changed_by(self, changes: Iterable[FinishChange]) -> Finished | None:
        """A copy with finish `changes` applied (canceled ones change nothing); None when
        one takes out a done item that is not here."""
        net: Counter[tuple[int, float | None, float | None]] = Counter()
        for c in changes:
            if c.done:
                net[(TYPE_SLOT[c.flow_type], c.flow_time_s, c.active_s)] += c.sign
        out = Finished(list(self.velocity), [*map(list, self.flow)], [*map(list, self.active)])
        for (slot, flow_s, active_s), n in net.items():
            out.velocity[slot] += n
            if out.velocity[slot] < 0:
                return None
            if flow_s is None or active_s is None:
                continue  # counted in velocity only, as `of` does
            flow, active = out.flow[slot], out.active[slot]
            for _ in range(n):
                flow.append(flow_s)
                active.append(active_s)
            for _ in range(-n):
                at = _index_of_pair(flow, active, flow_s, active_s)
                if at is None:
                    return None
                del flow[at]
                del active[at]
        return out

    def absorb(self, other: Finished) -> None:
        for slot in range(N_TYPES):
            self.velocity[slot] += other.velocity[slot]
            self.flow[slot].extend(other.flow[slot])
            self.active[slot].extend(other.active[slot])


def _index_of_pair(
    flow: list[float], active: list[float], flow_s: float, active_s: float
) -> int | None:
    """Where the parallel lists hold the pair (`flow_s`, `active_s`), if anywhere."""
    at = -1
    while True:
        try:
            at = flow.index(flow_s, at + 1)
        except ValueError:
            return None
        if active[at] == active_s:
            return at


def _pack_array(typecode: str, values: Iterable[float] | Iterable[int]) -> str:
    """Numbers as text: a little-endian array of `typecode` ("d": doubles, "q": int64) in
    base64. Exact, and much cheaper to write and read than decimal forms."""
    packed = array(typecode, values)
    if sys.byteorder == "big":  # pragma: no cover - every supported platform is little-endian
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def _unpack_array(typecode: str, text: str | bytes) -> array[Any]:
    """Inverse of :func:`_pack_array` (`text` already base64-decoded when bytes)."""
    packed = array(typecode)
    packed.frombytes(base64.b64decode(text) if isinstance(text, str) else text)
    if sys.byteorder == "big":  # pragma: no cover
        packed.byteswap()
    return packed


def _pack_opening(opening: Opening) -> list[object]:
    """An opening as JSON: how many work starts each flow type has, and all of them, type by
    type, ascending, packed as int64 (`_pack_array`). A few thousand work starts take a few
    tens of kilobytes; deflating their differences (the form before) saved only a quarter
    of the size, at a cost every update paid per value stream."""
    return [[len(starts) for starts in opening], _pack_array("q", chain.from_iterable(opening))]


def _unpack_opening(packed: object) -> Opening:
    """Inverse of :func:`_pack_opening`; also reads the form written before: one text, the
    counts and then each type's differences as int64, deflated, in base64."""
    counts: Sequence[int]
    if isinstance(packed, str):
        values = _unpack_array("q", zlib.decompress(base64.b64decode(packed)))
        counts, at, cumulative = values[:N_TYPES], N_TYPES, True
    else:
        counts, text = cast(tuple[list[int], str], packed)
        values, at, cumulative = _unpack_array("q", text), 0, False
    opening: Opening = []
    for count in counts:
        part = values[at : at + count]
        opening.append(list(accumulate(part)) if cumulative else part.tolist())
        at += count
    return opening


def encode_day(load: Load, finished: Finished, opening: Opening | None = None) -> str:
    """A touched day as stored in `metric_days`: its load and its done items, and, when
    given, the items in progress at its start (`opening`: the update keeps it on the day of
    its as-of time, where the next update's sweep resumes; see `_pack_opening`). JSON keeps
    the integers exact; the done items' flow and active seconds go as how many each flow type
    has and one packed list of all of them (`_pack_array`)."""
    values = [v for per_type in finished.flow for v in per_type]
    values.extend(v for per_type in finished.active for v in per_type)
    record: list[object] = [
        load.load_us,
        load.load_end,
        load.ages,
        finished.velocity,
        [len(per_type) for per_type in finished.flow],
        _pack_array("d", values),
    ]
    if opening is not None:
        record.append(_pack_opening(opening))
    return json.dumps(record, separators=(",", ":"))


def decode_day(text: str) -> tuple[Load, Finished]:
    """Inverse of :func:`encode_day` (without the opening). Records written before the done
    items were packed (their flow and active seconds as lists) read as well."""
    load_us, load_end, ages, velocity, counts, packed = json.loads(text)[:6]
    load = Load(tuple(load_us), tuple(load_end), tuple(map(tuple, ages)))
    if not isinstance(packed, str):  # the earlier form: per flow type, flow then active
        return load, Finished(velocity, counts, packed)
    values = _unpack_array("d", packed).tolist()
    half = len(values) // 2
    flow: list[list[float]] = []
    active: list[list[float]] = []
    at = 0
    for count in counts:
        flow.append(values[at : at + count])
        active.append(values[half + at : half + at + count])
        at += count
    return load, Finished(velocity, flow, active)


def decode_opening(text: str) -> Opening | None:
    """The opening an encoded day carries, if any."""
    record = json.loads(text)
    return _unpack_opening(record[6]) if len(record) > 6 else None


def _flow_time_stats(ordered: list[float], total: float) -> FlowTimeStats:
    """:meth:`FlowTimeStats.of` for values already sorted, whose exact sum is `total`."""
    n = len(ordered)
    if n == 0:
        return FlowTimeStats.of(ordered)
    at = ordered.__getitem__
    return FlowTimeStats(
        count=n,
        mean_s=total / n,
        p50_s=percentile_sorted(at, n, 50),
        p85_s=percentile_sorted(at, n, 85),
        p95_s=percentile_sorted(at, n, 95),
        max_s=ordered[-1],
    )


def _efficiencies(flow: Sequence[float], active: Sequence[float]) -> list[float]:
    """Per-item efficiencies; an item with zero flow time has none."""
    if 0.0 in flow:
        return [a / f for f, a in zip(flow, active, strict=True) if f > 0]
    return list(map(truediv, active, flow))


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
    length = end - start
    period_start = from_us(start)
    # each flow type's flow times sorted and efficiencies, once: "all" merges them
    wanted = [s for s in (ALL_SLOT, *range(N_TYPES)) if only is None or SLOT_NAMES[s] in only]
    types = range(N_TYPES) if ALL_SLOT in wanted else [s for s in wanted if s != ALL_SLOT]
    ordered: dict[int, list[float]] = {s: sorted(finished.flow[s]) for s in types}
    effs: dict[int, list[float]] = {
        s: _efficiencies(finished.flow[s], finished.active[s]) for s in types
    }
    rows: list[MetricRow] = []
    for slot in wanted:
        distribution: dict[str, float] | None = None
        load_distribution: dict[str, float] | None = None
        if slot == ALL_SLOT:
            flow = sorted(chain.from_iterable(ordered.values()))  # merges sorted runs
            active_s = math.fsum(chain.from_iterable(finished.active))
            slot_effs = list(chain.from_iterable(effs.values()))
            if velocity[slot]:
                distribution = {ft: velocity[i] / velocity[slot] for i, ft in enumerate(FLOW_TYPES)}
            if load.load_end[slot]:
                load_distribution = {
                    ft: load.load_end[i] / load.load_end[slot] for i, ft in enumerate(FLOW_TYPES)
                }
        else:
            flow, slot_effs = ordered[slot], effs[slot]
            active_s = math.fsum(finished.active[slot])
        total_flow = math.fsum(flow)
        p50, p85, oldest = load.ages[slot]
        rows.append(
            MetricRow(
                value_stream=value_stream,
                flow_type=SLOT_NAMES[slot],
                period=kind,
                period_start=period_start,
                velocity=velocity[slot],
                flow_time=_flow_time_stats(flow, total_flow),
                efficiency=active_s / total_flow if total_flow > 0 else None,
                efficiency_mean=math.fsum(slot_effs) / len(slot_effs) if slot_effs else None,
                load_end=load.load_end[slot],
                load_avg=load.load_us[slot] / length if length > 0 else None,
                distribution=distribution,
                load_distribution=load_distribution,
                age=AgeStats(count=load.load_end[slot], p50_s=p50, p85_s=p85, max_s=oldest),
            )
        )
    return rows
