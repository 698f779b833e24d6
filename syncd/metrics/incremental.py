"""Keeping the stored metric rows current without recomputing everything.

The update reads item facts (`syncd/metrics/facts.py`, written with every item), never
transitions, and builds every bucket from days (`syncd/metrics/sweep.py`):

1. **Days.** The days an update must recompute come from the recorded dirt: ``flow`` days
   are swept (starting from the items in progress at the first of a run of days, then along
   segment events), ``finish`` days keep their stored load and have their done items
   changed by the finish changes the dirt carries (or, when it does not carry them all,
   re-read), and ``cover`` days that had no rows are evaluated afresh. Each touched day stores
   its load (`metric_days`: exact load time, load and age percentiles at its end) and its
   rows.
2. **Weeks, months, quarters** containing a recomputed day are assembled from the stored
   days (load time summed, end load and ages from the last day) and their finished items.

Besides the dirt recorded by the page commits, an update dirties the span from the previous
as-of time to the new one (time passing changes the open periods, loads and ages) and the
runs of done left in between. A bucket no item touches any more loses its rows, so the
stored set is exactly what a full recompute produces. The full recompute is the same sweep
over every day, reading the facts a month at a time, so its memory does not grow with
history.

An update works on every value stream at once: each kind of read or write is one statement
for all of them (a round trip each on PostgreSQL), and the day of its as-of time keeps the
items in progress at its start, so that the next update's sweep resumes there instead of
reading every item in progress.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.domain import ALL, utc
from syncd.metrics import ledger
from syncd.metrics.compute import MetricItem, MetricRow, compute_all, compute_periods
from syncd.metrics.facts import (
    AS_OF_KEY,
    COVER,
    DAY,
    FINISH,
    FLOW,
    Dirt,
    FinishChange,
    day_of,
    from_us,
    run_changes,
    to_us,
)
from syncd.metrics.periods import period_end, period_start, period_starts
from syncd.metrics.sweep import (
    ALL_SLOT,
    NO_LOAD,
    SLOT_NAMES,
    Finish,
    Finished,
    Load,
    LoadSweep,
    Opening,
    SegmentEvent,
    bucket_rows,
    decode_day,
    decode_opening,
    encode_day,
    sum_loads,
)
from syncd.warehouse.store import METRICS, StoredItem, Warehouse

__all__ = [
    "AS_OF_KEY",
    "UpdateStats",
    "compute_in_memory",
    "stored_rows",
    "update_metrics",
    "warehouse_as_of",
]

_ROW_JSON = json.JSONEncoder(sort_keys=True)  # what json.dumps(..., sort_keys=True) makes
_WINDOW_DAYS = 31  # sweeps read facts a month at a time
_LONGER_KINDS = ("week", "month", "quarter")
_METRIC_COLUMNS = (
    "value_stream",
    "period",
    "period_start",
    "flow_type",
    "as_of",
    "velocity",
    "load_end",
    "data",
)


@dataclass(slots=True)
class UpdateStats:
    """What an update did: whether it went full, how many buckets (of every period kind) it
    recomputed, how many rows it wrote and how many fact rows it read."""

    full: bool = False
    buckets: int = 0
    rows: int = 0
    items_read: int = 0


def warehouse_as_of(conn: Connection) -> datetime | None:
    """The as-of time of the stored metric rows, None before the first update."""
    return ledger.stored_as_of(conn)


def update_metrics(warehouse: Warehouse, *, as_of: datetime, full: bool = False) -> UpdateStats:
    """Bring the stored metric rows to `as_of`, incrementally unless `full` or unavoidable
    (the first update, an as-of time before the stored one, a warehouse whose item facts had
    to be built)."""
    as_of = utc(as_of)
    stats = UpdateStats()
    with _cyclic_gc_paused(), warehouse.begin() as conn:
        if warehouse.dialect == "postgresql":
            # the update's reads are small index ranges: starting parallel workers for them
            # costs more than the reads (and competes for the cores the server has)
            conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")
        previous = warehouse_as_of(conn)
        if ledger.meta(conn, ledger.FACTS_KEY) != ledger.FACTS_VERSION:
            ledger.ensure_facts(warehouse, conn)
            full = True
        dirt = ledger.take_dirt(conn)
        now = to_us(as_of)
        pending = ledger.pending(conn, now, as_of)
        update = _Update(warehouse, conn, as_of, now, pending, stats)
        if full or previous is None or as_of < previous:
            stats.full = True
            update.full()
        else:
            update.incremental(to_us(previous), dirt)
        warehouse.set_meta(conn, AS_OF_KEY, as_of.isoformat())
    return stats


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """The update allocates many short-lived rows and tuples that form no reference cycles;
    with the cycle collector running, they trigger full collections that scan every
    long-lived object of the process (tens of milliseconds each, more than a typical
    incremental update costs). Reference counting still frees everything at once."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _runs(days: Sequence[int]) -> Iterator[list[int]]:
    """Sorted days cut into runs of consecutive days."""
    run: list[int] = []
    for day in days:
        if run and day != run[-1] + DAY:
            yield run
            run = []
        run.append(day)
    if run:
        yield run


def _days_meeting(spans: Iterable[tuple[int, int]]) -> set[int]:
    days: set[int] = set()
    for lo, hi in spans:
        days.update(range(day_of(lo), day_of(hi) + 1, DAY))
    return days


@lru_cache(maxsize=8192)
def _bucket(kind: str, t: int) -> tuple[int, int]:
    """The ``[start, end)`` (microseconds) of the period of `kind` containing instant `t`."""
    start = period_start(kind, from_us(t))
    return to_us(start), to_us(period_end(kind, start))


DayResult = tuple[Load, Finished] | None
"""A recomputed day: its load and done items, or None when no item touches it."""

Changed = frozenset[str] | None
"""The flow types (row names, with "all") whose rows of a bucket may have changed; None:
all of them, and the bucket's very presence."""

Scope = dict[tuple[str, int], Changed]
"""The buckets (period kind, start) an update recomputes, with what may have changed."""

DaysIn = Callable[[int, int], Mapping[int, tuple[Load, Finished]]]
"""The touched days starting in ``[lo, hi)`` of one value stream."""


_UNKNOWN = "finish without change"
"""The spans of finish dirt that carries no finish change."""


@dataclass(slots=True)
class _Plan:
    """The days of one value stream an update recomputes, by how; for finish days, the
    finish changes the dirt carries, and which of them it does not say all changes of."""

    flow: set[int]
    finish: set[int]
    cover: set[int]
    unknown: set[int]
    changes: dict[int, list[FinishChange]]

    @classmethod
    def of(
        cls,
        spans: Mapping[str, Sequence[tuple[int, int]]],
        changes: dict[int, list[FinishChange]],
    ) -> _Plan:
        flow = _days_meeting(spans.get(FLOW, ()))
        finish = _days_meeting(spans.get(FINISH, ())) - flow
        cover = _days_meeting(spans.get(COVER, ())) - flow - finish
        return cls(flow, finish, cover, _days_meeting(spans.get(_UNKNOWN, ())), changes)


@dataclass(slots=True)
class _Run:
    """A run of consecutive days of one value stream being swept."""

    value_stream: str
    days: list[int]
    sweep: LoadSweep
    consumed: int  # segment events up to this instant have been applied
    last_events: Sequence[SegmentEvent] = ()  # the previous day's


@dataclass(slots=True)
class _StoredDays:
    """Stored day records of one value stream as read (decoded when first needed), and the
    day ranges the read covered."""

    texts: dict[int, str]
    ranges: list[tuple[int, int]]
    _decoded: dict[int, tuple[Load, Finished]] = field(default_factory=dict)

    def get(self, day: int) -> tuple[Load, Finished] | None:
        found = self._decoded.get(day)
        if found is None:
            text = self.texts.get(day)
            if text is None:
                return None
            found = self._decoded[day] = decode_day(text)
        return found

    def covers(self, lo: int, hi: int) -> bool:
        return any(a <= lo and hi <= b for a, b in self.ranges)


class _Update:
    """One update's work, inside its transaction."""

    def __init__(
        self,
        warehouse: Warehouse,
        conn: Connection,
        as_of: datetime,
        now: int,
        pending: dict[str, list[ledger.Pending]],
        stats: UpdateStats,
    ) -> None:
        self.warehouse = warehouse
        self.conn = conn
        self.as_of = as_of
        self.now = now
        self.today = day_of(now)
        self.pending = pending
        self.stats = stats
        self.reader = ledger.FactsReader(conn, now, pending)
        #: per value stream, the items in progress at the start of `today` (see `_sweep`)
        self.openings: dict[str, Opening] = {}
        #: per value stream, the finished items of the days `_refinish` recomputes
        self.finished_on: dict[str, list[Finish]] = {}

    # -- full ----------------------------------------------------------------------------

    def full(self) -> None:
        """Every day of every value stream, written a month at a time; then every longer
        bucket, assembled a quarter at a time from the stored days."""
        self.conn.execute(METRICS.delete())
        self.conn.execute(ledger.DAYS.delete())
        for vs in sorted(set(ledger.value_streams(self.conn)) | set(self.pending)):
            first = self.reader.first_day(vs)
            if first is None or first > self.now:
                continue
            days = list(range(first, self.today + DAY, DAY))
            for results in self._sweep([_Run(vs, days, LoadSweep(()), first - 1)]):
                for _, window in results:
                    self._store_days({vs: window})
                    self._write_rows(None, self._day_rows(vs, window))
                    self.stats.buckets += len(window)
            first_day = from_us(first)
            starts = {
                kind: [to_us(s) for s in period_starts(kind, first_day, self.as_of)]
                for kind in _LONGER_KINDS
            }
            for buckets, rows in self._assemble(vs, starts, self._read_days(vs)):
                self._write_rows(None, rows)
                self.stats.buckets += len(buckets)
        self.stats.items_read += self.reader.rows_read

    def _read_days(self, value_stream: str) -> DaysIn:
        def days_in(lo: int, hi: int) -> dict[int, tuple[Load, Finished]]:
            texts = ledger.read_days(self.conn, [(value_stream, lo, hi)])[0][value_stream]
            return {day: decode_day(text) for day, text in texts.items()}

        return days_in

    # -- incremental ---------------------------------------------------------------------

    def incremental(self, previous: int, recorded: Sequence[Dirt]) -> None:
        """The days the dirt meets, and the longer buckets containing them."""
        dirt = list(recorded)
        dirt.extend(Dirt(vs, FLOW, previous, self.now) for vs in ledger.value_streams(self.conn))
        for vs, flow_type, mark in ledger.run_marks(self.conn, previous, self.now):
            dirt.extend(run_changes(vs, flow_type, mark))
        spans: dict[str, dict[str, list[tuple[int, int]]]] = {}
        changes: dict[str, dict[int, list[FinishChange]]] = {}
        for d in dirt:
            hi = self.now if d.end is None else min(d.end, self.now)
            if d.start <= hi:
                vs_spans = spans.setdefault(d.value_stream, {})
                vs_spans.setdefault(d.scope, []).append((d.start, hi))
                if d.scope != FINISH:
                    continue
                if d.change is None:
                    vs_spans.setdefault(_UNKNOWN, []).append((d.start, hi))
                else:
                    vs_changes = changes.setdefault(d.value_stream, {})
                    vs_changes.setdefault(day_of(d.start), []).append(d.change)
        plans = {vs: _Plan.of(spans[vs], changes.get(vs, {})) for vs in sorted(spans)}

        stored = self._read_stored(plans)

        fresh: dict[str, dict[int, DayResult]] = {vs: {} for vs in plans}
        changed: dict[str, dict[int, Changed]] = {vs: {} for vs in plans}
        self._difference(plans, stored, fresh, changed)
        runs = [
            self._start_run(vs, days, previous, stored[vs])
            for vs, plan in plans.items()
            for days in _runs(sorted(plan.flow))
        ]
        finish_days = {vs: sorted(p.finish) for vs, p in plans.items() if p.finish}
        for results in self._sweep(runs, finish_days):
            for run, window in results:
                fresh[run.value_stream].update(window)
                changed[run.value_stream].update(dict.fromkeys(window))
        if not runs and finish_days:  # nothing to sweep: their finished items are still due
            self.finished_on = self.reader.finishes([], finish_days)[1]
        self._refinish(finish_days, stored, fresh, changed)

        with self.warehouse.pipeline(self.conn) as writes:
            self._store_days(fresh, stored)
            for vs in plans:
                scope = _scope(fresh[vs], changed[vs])
                days = {day: r for day, r in fresh[vs].items() if ("day", day) in scope}
                rows = self._day_rows(vs, days, scope)
                starts: dict[str, list[int]] = {kind: [] for kind in _LONGER_KINDS}
                for kind, start in scope:
                    if kind != "day":
                        starts[kind].append(start)
                days_in = self._fresh_over_stored(fresh[vs], stored[vs])
                for _, assembled in self._assemble(vs, starts, days_in, scope):
                    rows.extend(assembled)
                self.stats.buckets += len(scope)
                self._write_rows({vs: scope}, rows)
        self.stats.rows += writes.rows(METRICS)
        self.stats.items_read += self.reader.rows_read

    def _read_stored(self, plans: Mapping[str, _Plan]) -> dict[str, _StoredDays]:
        """The stored days every recomputed bucket is assembled from: for each recomputed
        day, those of its week, month and quarter (up to today). The same statement tells
        which cover days have rows: those that have none become finish days (`plans` is
        updated), and only if their weeks, months or quarters were not read yet does it take
        a second statement."""
        ranges = {vs: self._spans(plan.flow | plan.finish) for vs, plan in plans.items()}
        covers = [(vs, min(p.cover), max(p.cover) + DAY) for vs, p in plans.items() if p.cover]
        texts, present = ledger.read_days(
            self.conn, [(vs, lo, hi) for vs, spans in ranges.items() for lo, hi in spans], covers
        )
        stored = {vs: _StoredDays(texts.get(vs, {}), ranges[vs]) for vs in plans}
        missing: list[tuple[str, int, int]] = []
        for vs, _, _ in covers:
            bare = plans[vs].cover - present[vs]  # cover days that had no rows get them
            plans[vs].finish |= bare
            for lo, hi in self._spans(bare):
                if not stored[vs].covers(lo, hi):
                    missing.append((vs, lo, hi))
        if missing:
            more, _ = ledger.read_days(self.conn, missing)
            for vs, lo, hi in missing:
                stored[vs].texts.update(more.get(vs, {}))
                stored[vs].ranges.append((lo, hi))
        return stored

    def _spans(self, days: Iterable[int]) -> list[tuple[int, int]]:
        """The day ranges, merged, of the weeks and quarters (which hold the months) of
        `days`, up to today."""
        spans = []
        for day in sorted(days):
            week, quarter = _bucket("week", day), _bucket("quarter", day)
            hi = max(week[1], quarter[1])
            spans.append((min(week[0], quarter[0]), min(hi, self.today + DAY)))
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        return merged

    def _start_run(
        self, value_stream: str, days: list[int], previous: int, stored: _StoredDays
    ) -> _Run:
        """A sweep of `days` from the items in progress before the first: kept by the last
        update when the run starts on the day of its as-of time (nothing changed before the
        run, or it would start earlier), read from the facts otherwise."""
        opening: Opening | None = None
        text = stored.texts.get(days[0]) if days[0] == day_of(previous) else None
        if text is not None:
            opening = decode_opening(text)
        if opening is not None:
            sweep = LoadSweep.resume(opening)
        else:
            sweep = LoadSweep(self.reader.in_progress_before(value_stream, days[0]))
        return _Run(value_stream, days, sweep, days[0] - 1)

    def _fresh_over_stored(self, fresh: Mapping[int, DayResult], stored: _StoredDays) -> DaysIn:
        def days_in(lo: int, hi: int) -> dict[int, tuple[Load, Finished]]:
            if not stored.covers(lo, hi):  # pragma: no cover - _read_stored reads them all
                raise RuntimeError(f"days [{lo}, {hi}) were not read for the update")
            out: dict[int, tuple[Load, Finished]] = {}
            for day in range(lo, hi, DAY):
                found = fresh[day] if day in fresh else stored.get(day)
                if found is not None:
                    out[day] = found
            return out

        return days_in

    # -- days ----------------------------------------------------------------------------

    def _sweep(
        self,
        runs: Sequence[_Run],
        finish_days: Mapping[str, Sequence[int]] | None = None,
    ) -> Iterator[list[tuple[_Run, dict[int, DayResult]]]]:
        """Recompute runs of consecutive days, a month of each run at a time: the next month
        of every run is read in one statement for the segment events and one for the
        finished items (the first one also reads the finished items of `finish_days`, per
        value stream, into `self.finished_on`). Yields each month's days per run."""
        first = 0
        self.finished_on = {}
        while True:
            active = [run for run in runs if first < len(run.days)]
            if not active:
                return
            windows = [run.days[first : first + _WINDOW_DAYS] for run in active]
            ends = [min(window[-1] + DAY, self.now) for window in windows]
            events = self.reader.segment_events(
                [
                    (run.value_stream, run.consumed + 1, end)
                    for run, end in zip(active, ends, strict=True)
                ]
            )
            finishes, finished_on = self.reader.finishes(
                [
                    (run.value_stream, window[0], window[-1] + DAY)
                    for run, window in zip(active, windows, strict=True)
                ],
                finish_days if first == 0 else None,
            )
            if first == 0:
                self.finished_on = finished_on
            out = []
            for run, window, end, run_events, run_finishes in zip(
                active, windows, ends, events, finishes, strict=True
            ):
                out.append((run, self._sweep_window(run, window, run_events, run_finishes)))
                run.consumed = end
            yield out
            first += _WINDOW_DAYS

    def _sweep_window(
        self,
        run: _Run,
        window: Sequence[int],
        events: Sequence[SegmentEvent],
        finishes: Sequence[Finish],
    ) -> dict[int, DayResult]:
        e_at = f_at = 0
        out: dict[int, DayResult] = {}
        for day in window:
            end = day + DAY
            limit = min(end, self.now)
            e_to = e_at
            while e_to < len(events) and events[e_to].at <= limit:
                e_to += 1
            if day == self.today:
                # the items in progress just before today, for the next update: the sweep
                # has applied the previous day's events up to its end, today's start
                undo = [e for e in run.last_events if e.at == day] if day != run.days[0] else []
                self.openings[run.value_stream] = run.sweep.opening(undo)
            day_events = events[e_at:e_to]
            load, busy = run.sweep.day(day, limit, day_events)
            run.last_events = day_events
            e_at = e_to
            f_to = f_at
            while f_to < len(finishes) and finishes[f_to].at < end:
                f_to += 1
            day_finishes = finishes[f_at:f_to]
            f_at = f_to
            touched = busy or day_finishes or self.reader.covered(run.value_stream, day, end)
            out[day] = (load, Finished.of(day_finishes)) if touched else None
        return out

    def _difference(
        self,
        plans: Mapping[str, _Plan],
        stored: Mapping[str, _StoredDays],
        fresh: dict[str, dict[int, DayResult]],
        changed: dict[str, dict[int, Changed]],
    ) -> None:
        """Finish days whose every change the dirt carries: their stored done items changed
        by those finish changes, without reading the day's other finished items (its load
        cannot have changed). A day is left to `_refinish` (it stays in its plan's finish
        days) when it has no stored record, when the dirt does not carry all its changes,
        when its load is empty (whether anything still touches it then depends on canceled
        items and coverage, which a record does not keep), or when its record lacks an item
        to take out."""
        for vs, plan in plans.items():
            for day in sorted(plan.finish - plan.unknown):
                old = stored[vs].get(day)
                if old is None or old[0].empty:
                    continue
                finished = old[1].changed_by(plan.changes.get(day, ()))
                if finished is None:
                    continue
                plan.finish.discard(day)
                fresh[vs][day] = (old[0], finished)
                changed[vs][day] = _names(finished.changed_slots(old[1]))

    def _refinish(
        self,
        days: Mapping[str, Sequence[int]],
        stored: Mapping[str, _StoredDays],
        fresh: dict[str, dict[int, DayResult]],
        changed: dict[str, dict[int, Changed]],
    ) -> None:
        """Days whose load is unchanged: their finished items (read with the sweep's, in
        `self.finished_on`) and whether anything still touches them, noting which flow
        types' rows each day changes."""
        finishes = self.finished_on
        for vs, vs_days in days.items():
            by_day: dict[int, list[Finish]] = {}
            for f in finishes[vs]:
                by_day.setdefault(day_of(f.at), []).append(f)
            for day in vs_days:
                day_finishes = by_day.get(day, [])
                old = stored[vs].get(day)
                load = NO_LOAD if old is None else old[0]
                touched = day_finishes or not load.empty or self.reader.covered(vs, day, day + DAY)
                finished = Finished.of(day_finishes)
                fresh[vs][day] = (load, finished) if touched else None
                if old is None or not touched:
                    changed[vs][day] = None
                else:
                    changed[vs][day] = _names(finished.changed_slots(old[1]))

    def _day_rows(
        self,
        value_stream: str,
        days: Mapping[int, DayResult],
        scope: Scope | None = None,
    ) -> list[MetricRow]:
        return [
            row
            for day, result in days.items()
            if result is not None
            for row in bucket_rows(
                value_stream,
                "day",
                day,
                min(day + DAY, self.now),
                result[1],
                result[0],
                None if scope is None else scope[("day", day)],
            )
        ]

    def _store_days(
        self,
        days: Mapping[str, Mapping[int, DayResult]],
        stored: Mapping[str, _StoredDays] | None = None,
    ) -> None:
        """Store the touched days among `days` (per value stream); today's carries the items
        in progress at its start. With `stored` (what the days' records were), a record is
        rewritten only when it changed and days no item touches any more lose theirs;
        without, none of the days has a record yet (a full recompute)."""
        records = [
            (
                vs,
                day,
                encode_day(
                    result[0], result[1], self.openings.get(vs) if day == self.today else None
                ),
            )
            for vs, results in days.items()
            for day, result in results.items()
            if result is not None
        ]
        if stored is None:
            ledger.write_days(self.warehouse, self.conn, records)
            return
        gone = [
            (vs, day)
            for vs, results in days.items()
            for day, result in results.items()
            if result is None and day in stored[vs].texts
        ]
        ledger.delete_days(self.warehouse, self.conn, gone)
        ledger.replace_days(self.warehouse, self.conn, records)

    # -- weeks, months, quarters ---------------------------------------------------------

    def _assemble(
        self,
        value_stream: str,
        starts: Mapping[str, Sequence[int]],
        days_in: DaysIn,
        scope: Scope | None = None,
    ) -> Iterator[tuple[list[tuple[str, int]], list[MetricRow]]]:
        """The rows of the buckets of each longer kind, from their touched days
        (`days_in`), a quarter at a time: the days of a quarter are taken once for it and
        its months and weeks. Yields (buckets, their rows)."""
        vs = value_stream
        by_quarter: dict[int, list[tuple[str, int, int]]] = {}
        for kind, kind_starts in starts.items():
            for start in kind_starts:
                end = _bucket(kind, start)[1]
                quarter = _bucket("quarter", start)[0]
                by_quarter.setdefault(quarter, []).append((kind, start, end))
        for quarter in sorted(by_quarter):
            buckets = by_quarter[quarter]
            lo = min(start for _, start, _ in buckets)
            hi = min(max(end for _, _, end in buckets), self.today + DAY)
            stored = days_in(lo, hi)
            rows: list[MetricRow] = []
            for kind, start, end in buckets:
                days = [r for d in range(start, min(end, hi), DAY) if (r := stored.get(d))]
                if not days:
                    continue  # no day of it is touched: neither is the bucket
                last = stored.get(day_of(min(end - 1, self.now)))
                load = sum_loads([d[0] for d in days], NO_LOAD if last is None else last[0])
                finished = Finished()
                for _, day_finished in days:
                    finished.absorb(day_finished)
                only = None if scope is None else scope[(kind, start)]
                rows.extend(bucket_rows(vs, kind, start, min(end, self.now), finished, load, only))
            yield [(kind, start) for kind, start, _ in buckets], rows

    # -- rows ----------------------------------------------------------------------------

    def _write_rows(self, scopes: Mapping[str, Scope] | None, rows: Sequence[MetricRow]) -> None:
        """Store `rows`. With `scopes` (per value stream, the buckets recomputed and the flow
        types each may have changed), only the rows they name: a stored row is rewritten only
        when its content changed, and a bucket no item touches any more loses its rows. One
        statement for every value stream (two when buckets went away). Without, the rows are
        new: a full recompute."""
        if scopes is None:
            records = [_row_record(r, self.as_of) for r in rows]
            self.warehouse.insert_many(self.conn, METRICS, _METRIC_COLUMNS, records)
            self.stats.rows += len(records)
            return
        rows = [r for r in rows if _in_scope(scopes[r.value_stream], r)]
        present = {(r.value_stream, r.period, to_us(r.period_start)) for r in rows}
        gone = [
            (vs, kind, from_us(start))
            for vs, scope in scopes.items()
            for (kind, start), names in scope.items()
            if names is None and (vs, kind, start) not in present
        ]
        self.warehouse.delete_many(self.conn, METRICS, _METRIC_COLUMNS[:3], gone)
        self.stats.rows += self.warehouse.upsert_changed(
            self.conn,
            METRICS,
            _METRIC_COLUMNS,
            [_row_record(r, self.as_of) for r in rows],
            _METRIC_COLUMNS[:4],
            "data",
        )


def _scope(days: Mapping[int, DayResult], changed: Mapping[int, Changed]) -> Scope:
    """The buckets recomputed days belong to, with the flow types whose rows may have
    changed; buckets where nothing can have changed are left out."""
    scope: Scope = {("day", day): changed[day] for day in days}
    for kind in _LONGER_KINDS:
        for day in days:
            key = (kind, _bucket(kind, day)[0])
            scope[key] = _union(scope.get(key, frozenset()), changed[day])
    return {key: names for key, names in scope.items() if names is None or names}


def _names(slots: Collection[int]) -> frozenset[str]:
    """The rows that changed flow types (slots) change: theirs and "all" (none if none)."""
    return frozenset(SLOT_NAMES[s] for s in (*slots, ALL_SLOT) if slots)


def _union(a: Changed, b: Changed) -> Changed:
    return None if a is None or b is None else a | b


def _in_scope(scope: Mapping[tuple[str, int], Changed], row: MetricRow) -> bool:
    names = scope.get((row.period, to_us(row.period_start)), frozenset())
    return names is None or row.flow_type in names


def _row_record(row: MetricRow, as_of: datetime) -> tuple[object, ...]:
    return (
        row.value_stream,
        row.period,
        row.period_start,
        row.flow_type,
        as_of,
        row.velocity,
        row.load_end,
        _ROW_JSON.encode(row.to_json()),
    )


# -- reading the stored rows -------------------------------------------------------------


def _metric_items(items: Iterable[StoredItem]) -> list[MetricItem]:
    return [
        MetricItem(key=f"{i.source}:{i.key}", flow_type=i.flow_type, transitions=i.transitions)
        for i in items
    ]


_ROW_ORDER = {
    ft: i for i, ft in enumerate((ALL, "feature", "defect", "risk", "debt", "unclassified"))
}


def stored_rows(
    warehouse: Warehouse, *, kind: str, value_stream: str | None = None, fill: bool = True
) -> list[MetricRow]:
    """The stored rows of a period kind, ordered; with `fill`, periods between a value
    stream's first and last stored period that no item touches appear as empty rows."""
    query = sa.select(METRICS.c.data).where(METRICS.c.period == kind)
    if value_stream:
        query = query.where(METRICS.c.value_stream == value_stream)
    with warehouse.engine.connect() as conn:
        records = conn.execute(query).scalars().all()
        as_of = warehouse_as_of(conn)  # a row's own as_of is when it was last rewritten
    rows = [MetricRow.from_json(json.loads(data)) for data in records]
    if fill and rows and as_of is not None:
        by_vs: dict[str, set[datetime]] = {}
        for row in rows:
            by_vs.setdefault(row.value_stream, set()).add(row.period_start)
        for vs, present in by_vs.items():
            wanted = period_starts(kind, min(present), as_of)
            missing = [s for s in wanted if s not in present]
            if missing:
                rows.extend(compute_periods(vs, kind, [], missing, as_of))
    rows.sort(key=lambda r: (r.value_stream, r.period_start, _ROW_ORDER.get(r.flow_type, 99)))
    return rows


def compute_in_memory(
    warehouse: Warehouse, *, kind: str, as_of: datetime, value_stream: str | None = None
) -> list[MetricRow]:
    """Rows computed afresh at an arbitrary as-of time (nothing stored): `--as-of`."""
    with warehouse.engine.connect() as conn:
        streams = [value_stream] if value_stream else warehouse.value_streams()
        rows: list[MetricRow] = []
        for vs in sorted(streams):
            items = _metric_items(warehouse.load_items(conn, vs))
            vs_rows = compute_all(vs, kind, items, as_of)
            if vs_rows:
                present = sorted({r.period_start for r in vs_rows})
                wanted = period_starts(kind, present[0], as_of)
                missing = [s for s in wanted if s not in set(present)]
                vs_rows = vs_rows + compute_periods(vs, kind, [], missing, as_of)
            rows.extend(vs_rows)
    rows.sort(key=lambda r: (r.value_stream, r.period_start, _ROW_ORDER.get(r.flow_type, 99)))
    return rows
