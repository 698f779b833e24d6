"""What the metrics keep of each item, and which instants a change to an item dirties.

Pure computation, no I/O. Instants are integer microseconds since 1970-01-01 UTC, so load
time and ages are exact integer arithmetic in Python and in SQL alike.

**Facts.** Every aggregate reads an item only through its facts: the per-item figures (work
start, work end, outcome, flow and active seconds), its in-progress segments, and the runs
of done/canceled stages it later left. They are computed from the whole history when the
item is written; for an as-of time at or after the item's last transition they are exactly
the facts as of that time, and for the rare item with transitions after the as-of time the
update computes them from the transitions instead.

**Dirt.** A change to an item, as seen at the last update's as-of time `P` (the stored rows
reflect the histories cut at `P`), dirties instants in three scopes:

- ``flow``: from the first instant where the stage histories differ (less a microsecond:
  the period ending there reads the stage at that instant) to the later work end, or to
  the as-of time when either version is still in progress. Buckets meeting it are
  recomputed entirely.
- ``finish``: the old and new work ends when the finished-item figures changed; buckets
  containing them recompute velocity, flow time and efficiency (their load cannot have
  changed) and whether any item still touches them. Each carries its change (`FinishChange`:
  the old finish leaving its day, the new one entering), so that the update can change the
  day's stored done items instead of reading them all again.
- ``cover``: a reopened item now touches the buckets between its old work end and the
  reopen, where it was done and still is: their content is unchanged, but the ones that had
  no rows must get them.

What happened after `P` is dirtied at update time: the span from `P` to the new as-of time
(``flow``), and the runs of done/canceled that began before `P` and changed since
(``finish`` at the run's start, carrying the finish the run held as its facts keep it,
`RunMark`; after a leave, ``cover`` up to it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from syncd.domain import Stage, Transition, utc
from syncd.metrics.figures import ItemTimeline, item_timeline, stage_steps

FLOW = "flow"
FINISH = "finish"
COVER = "cover"
SCOPES = (FLOW, FINISH, COVER)

#: warehouse_meta key: the as-of time of the stored metric rows
AS_OF_KEY = "metrics_as_of"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = 1_000_000
DAY = 86_400 * _US


def day_of(t: int) -> int:
    """The start of the UTC day containing instant `t`."""
    return t - t % DAY


_ONE_US = timedelta(microseconds=1)
_TERMINAL = frozenset(stage for stage in Stage if stage.terminal)


def to_us(t: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact; a naive datetime
    cannot be subtracted from the aware epoch and raises)."""
    return (t - _EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    """Inverse of :func:`to_us`: aware UTC."""
    return _EPOCH + timedelta(microseconds=us)


def seconds(us: int) -> float:
    """Microseconds as float seconds, rounded exactly as ``timedelta.total_seconds()``."""
    return us / _US


Segment = tuple[int, int | None]


class RunMark(NamedTuple):
    """A change inside a run of done/canceled after it began (see `_run_marks`), with the
    item's finish as the run held it until then: done (or canceled), flow and active
    seconds. `done` is None when that finish is not known (facts written before it was
    kept)."""

    run_start: int
    at: int
    left: bool
    done: bool | None = None
    flow_time_s: float | None = None
    active_s: float | None = None


class FinishChange(NamedTuple):
    """An item's finish entering (`sign` 1) or leaving (-1) the done items of the day of
    its work end: what a day's stored done items need to follow the change without reading
    the day's other items."""

    sign: int
    flow_type: str
    done: bool
    flow_time_s: float | None
    active_s: float | None


@dataclass(frozen=True, slots=True)
class ItemFacts:
    """One item's facts as the aggregates read them (see the module docstring)."""

    work_start: int | None
    work_end: int | None
    outcome: Stage | None
    flow_time_s: float | None
    active_s: float | None
    segments: tuple[Segment, ...]
    #: changes to runs of done/canceled after they began
    run_marks: tuple[RunMark, ...]
    last_at: int | None


def item_facts(
    transitions: Sequence[Transition],
    as_of: datetime | None = None,
    timeline: ItemTimeline | None = None,
    *,
    finishes: bool = True,
) -> ItemFacts:
    """The facts of one item as of `as_of` (None: its whole history). `timeline`, when the
    caller has it, is ``item_timeline(transitions, as_of)``. Without `finishes`, run marks
    do not carry the finish their run held (it costs a timeline per mark): for callers that
    read the item's figures and segments only."""
    if timeline is None:
        timeline = item_timeline(transitions, as_of)
    f = timeline.figures
    return ItemFacts(
        work_start=None if f.work_start is None else to_us(f.work_start),
        work_end=None if f.work_end is None else to_us(f.work_end),
        outcome=f.outcome,
        flow_time_s=f.flow_time_s,
        active_s=f.active_s,
        segments=tuple(
            (to_us(start), None if end is None else to_us(end))
            for start, end in timeline.in_progress
        ),
        run_marks=tuple(
            RunMark(start, at, left, *_finish_before(transitions, start, at))
            if finishes
            else RunMark(start, at, left)
            for start, at, left in _run_marks(transitions, as_of)
        ),
        last_at=to_us(max(t.at for t in transitions)) if transitions else None,
    )


def _run_marks(
    transitions: Sequence[Transition], as_of: datetime | None
) -> tuple[tuple[int, int, bool], ...]:
    """Changes inside runs of done/canceled after they began: the outcome switching, or the
    item leaving the run. Made at the instant the run began, they never show in a work end."""
    terminal = {t.to_stage for t in transitions} & _TERMINAL
    if not terminal:
        return ()
    if len(terminal) == 1:  # no switch between done and canceled: only a leave can mark
        first = min(t.at for t in transitions if t.to_stage in _TERMINAL)
        if not any(t.at >= first and t.to_stage not in _TERMINAL for t in transitions):
            return ()
    marks: dict[tuple[int, int], bool] = {}
    run_start: datetime | None = None
    previous: Stage | None = None
    for at, stage in stage_steps(transitions, as_of):
        if stage.terminal:
            if run_start is None:
                run_start = at
            elif stage is not previous and at > run_start:
                marks.setdefault((to_us(run_start), to_us(at)), False)
        elif run_start is not None:
            if at > run_start:
                marks[(to_us(run_start), to_us(at))] = True
            run_start = None
        previous = stage
    return tuple((start, at, left) for (start, at), left in sorted(marks.items()))


def _finish_before(
    transitions: Sequence[Transition], run_start: int, at: int
) -> tuple[bool | None, float | None, float | None]:
    """The finish a run of done/canceled beginning at `run_start` held just before `at`:
    whether done, its flow and active seconds."""
    f = item_timeline(transitions, from_us(at - 1)).figures
    if f.work_end is None or f.outcome is None or to_us(f.work_end) != run_start:
        return None, None, None  # pragma: no cover - a run's start is the work end before
    return f.outcome is Stage.DONE, f.flow_time_s, f.active_s


@dataclass(frozen=True, slots=True)
class Dirt:
    """Instants ``[start, end]`` (microseconds, inclusive; end None: up to the as-of time) of
    a value stream whose buckets need recomputing in `scope`. A ``finish`` dirt of one
    instant may carry the `change` it makes to the done items of that instant's day."""

    value_stream: str
    scope: str
    start: int
    end: int | None
    change: FinishChange | None = None


@dataclass(frozen=True, slots=True)
class Version:
    """One version of an item as the dirt derivation compares it."""

    value_stream: str
    flow_type: str
    steps: tuple[tuple[datetime, Stage], ...]

    @classmethod
    def of(cls, value_stream: str, flow_type: str, transitions: Iterable[Transition]) -> Version:
        return cls(value_stream, flow_type, tuple((utc(t.at), t.to_stage) for t in transitions))


def _cut(version: Version, as_of: datetime) -> tuple[list[tuple[datetime, Stage]], ItemFacts]:
    transitions = [Transition(at, None, "", None, stage) for at, stage in version.steps]
    return stage_steps(transitions, as_of), item_facts(transitions, as_of, finishes=False)


def _whole(value_stream: str, f: ItemFacts) -> list[Dirt]:
    """Every instant a version contributes to."""
    marks = [t for t in (f.work_start, f.work_end) if t is not None]
    if not marks:
        return []
    return [Dirt(value_stream, FLOW, min(marks) - 1, f.work_end)]


def item_changes(old: Version | None, new: Version, as_of: datetime) -> list[Dirt]:
    """The dirt of replacing `old` by `new` when the stored rows are as of `as_of`."""
    if old == new:
        return []
    new_steps, fn = _cut(new, as_of)
    if old is None:
        return _whole(new.value_stream, fn)
    old_steps, fo = _cut(old, as_of)
    if old.value_stream != new.value_stream or old.flow_type != new.flow_type:
        return _whole(old.value_stream, fo) + _whole(new.value_stream, fn)
    vs = new.value_stream
    first_diff: int | None = None
    for index in range(max(len(old_steps), len(new_steps))):
        a = old_steps[index] if index < len(old_steps) else None
        b = new_steps[index] if index < len(new_steps) else None
        if a != b:
            first_diff = to_us(min(x[0] for x in (a, b) if x is not None))
            break
    if first_diff is None:
        return []
    d = first_diff
    out: list[Dirt] = []
    end = None
    if fo.work_end is not None and fn.work_end is not None:
        end = max(fo.work_end, fn.work_end)
    if end is None or d <= end:
        out.append(Dirt(vs, FLOW, d - 1, end))
    finished_o = (fo.work_end, fo.outcome, fo.flow_time_s, fo.active_s)
    finished_n = (fn.work_end, fn.outcome, fn.flow_time_s, fn.active_s)
    if finished_o != finished_n:
        for sign, f in ((-1, fo), (1, fn)):
            if f.work_end is None:
                continue
            change = None
            if f.outcome is not None:
                done = f.outcome is Stage.DONE
                change = FinishChange(sign, new.flow_type, done, f.flow_time_s, f.active_s)
            out.append(Dirt(vs, FINISH, f.work_end, f.work_end, change))
    # Before `d` both versions have the same stages; their touched ranges differ there only
    # when one of them ended before `d` and the other did not.
    if fo.work_start is not None:
        old_before = fo.work_end is not None and fo.work_end < d
        new_before = fn.work_end is not None and fn.work_end < d
        if old_before and not new_before and fo.work_end is not None:
            out.append(Dirt(vs, COVER, fo.work_end, d - 1))
        elif new_before and not old_before and fn.work_end is not None:
            out.append(Dirt(vs, FINISH, fn.work_end, d - 1))
    return out


def item_removed(old: Version, as_of: datetime) -> list[Dirt]:
    """The dirt of an item leaving the metrics (tombstoned: deleted in the tracker)."""
    return _whole(old.value_stream, _cut(old, as_of)[1])


def run_changes(value_stream: str, flow_type: str, mark: RunMark) -> list[Dirt]:
    """The dirt of a change to a run of done/canceled made after the last update (the last
    update saw the run as the item's end): the work end's figures changed (the finish the
    run held leaves its day; after an outcome switch it comes back with the other outcome),
    and after a leave the item also touches the time it spent in the run."""
    start = mark.run_start
    if mark.done is None:
        dirt = [Dirt(value_stream, FINISH, start, start)]
    else:
        held = FinishChange(-1, flow_type, mark.done, mark.flow_time_s, mark.active_s)
        dirt = [Dirt(value_stream, FINISH, start, start, held)]
        if not mark.left:
            switched = held._replace(sign=1, done=not mark.done)
            dirt.append(Dirt(value_stream, FINISH, start, start, switched))
    if mark.left:
        dirt.append(Dirt(value_stream, COVER, start, mark.at - 1))
    return dirt


def merge_dirt(dirt: Iterable[Dirt]) -> list[Dirt]:
    """Union of overlapping or adjacent spans per value stream and scope; dirt carrying a
    finish change stays as it is."""
    groups: dict[tuple[str, str], list[tuple[int, int | None]]] = {}
    out: list[Dirt] = []
    for d in dirt:
        if d.change is not None:
            out.append(d)
        else:
            groups.setdefault((d.value_stream, d.scope), []).append((d.start, d.end))
    for (vs, scope), spans in sorted(groups.items()):
        spans.sort(key=lambda s: s[0])
        cur_lo, cur_hi = spans[0]
        for lo, hi in spans[1:]:
            if cur_hi is None or lo <= cur_hi + 1:
                cur_hi = None if cur_hi is None or hi is None else max(cur_hi, hi)
            else:
                out.append(Dirt(vs, scope, cur_lo, cur_hi))
                cur_lo, cur_hi = lo, hi
        out.append(Dirt(vs, scope, cur_lo, cur_hi))
    return out
