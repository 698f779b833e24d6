"""Keeping the stored metric rows current without recomputing everything.

The update reads item facts (`syncd/metrics/facts.py`, written with every item), never
transitions, and builds every bucket from days (`syncd/metrics/sweep.py`):

1. **Days.** The days an update must recompute come from the recorded dirt: ``flow`` days
   are swept (starting from the items in progress at the first of a run of days, then along
   segment events), ``finish`` days keep their stored load and re-read their finished
   items, and ``cover`` days that had no rows are evaluated afresh. Each touched day stores
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
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

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
    bucket_rows,
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

_T = TypeVar("_T")
_ROW_JSON = json.JSONEncoder(sort_keys=True)  # what json.dumps(..., sort_keys=True) makes
_WINDOW_DAYS = 31  # the full sweep reads facts a month at a time
_LONGER_KINDS = ("week", "month", "quarter")
_CHUNK = 500
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


DayResult = tuple[Load, Finished] | None
"""A recomputed day: its load and done items, or None when no item touches it."""

Changed = frozenset[str] | None
"""The flow types (row names, with "all") whose rows of a bucket may have changed; None:
all of them, and the bucket's very presence."""


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
        self.pending = pending
        self.stats = stats

    def _reader(self, value_stream: str) -> ledger.FactsReader:
        return ledger.FactsReader(
            self.conn,
            value_stream,
            self.now,
            self.pending.get(value_stream, []),
            exclude_pending=bool(self.pending),
        )

    # -- full ----------------------------------------------------------------------------

    def full(self) -> None:
        """Every day of every value stream, written a month at a time; then every longer
        bucket, assembled a quarter at a time from the stored days."""
        self.conn.execute(METRICS.delete())
        self.conn.execute(ledger.DAYS.delete())
        for vs in sorted(set(ledger.value_streams(self.conn)) | set(self.pending)):
            reader = self._reader(vs)
            first = reader.first_day()
            if first is None or first > self.now:
                continue
            days = list(range(first, day_of(self.now) + 1, DAY))
            for window in self._sweep(reader, days, []):
                self._store_days(vs, window, replace=False)
            first_day = from_us(first)
            starts = {
                kind: [to_us(s) for s in period_starts(kind, first_day, self.as_of)]
                for kind in _LONGER_KINDS
            }
            for buckets, rows in self._assemble(reader, starts, {}):
                self._write_rows(vs, None, rows)
                self.stats.buckets += len(buckets)
            self.stats.items_read += reader.rows_read

    # -- incremental ---------------------------------------------------------------------

    def incremental(self, previous: int, recorded: Sequence[Dirt]) -> None:
        """The days the dirt meets, and the longer buckets containing them."""
        dirt = list(recorded)
        dirt.extend(Dirt(vs, FLOW, previous, self.now) for vs in ledger.value_streams(self.conn))
        for vs, start, at, left in ledger.run_marks(self.conn, previous, self.now):
            dirt.extend(run_changes(vs, start, at, left))
        spans: dict[str, dict[str, list[tuple[int, int]]]] = {}
        for d in dirt:
            hi = self.now if d.end is None else min(d.end, self.now)
            if d.start <= hi:
                spans.setdefault(d.value_stream, {}).setdefault(d.scope, []).append((d.start, hi))
        for vs in sorted(spans):
            self._value_stream(vs, spans[vs])

    def _value_stream(self, vs: str, spans: dict[str, list[tuple[int, int]]]) -> None:
        reader = self._reader(vs)
        flow_days = _days_meeting(spans.get(FLOW, []))
        finish_days = _days_meeting(spans.get(FINISH, [])) - flow_days
        cover = _days_meeting(spans.get(COVER, [])) - flow_days - finish_days
        if cover:
            present = ledger.touched_days(self.conn, vs, min(cover), max(cover) + DAY)
            finish_days |= cover - present
        days: dict[int, DayResult] = {}
        changed: dict[int, Changed] = {}
        for run in _runs(sorted(flow_days)):
            for window in self._sweep(reader, run, reader.in_progress_before(run[0])):
                days.update(window)
                changed.update(dict.fromkeys(window))
        refinished, refinished_changes = self._refinish(reader, sorted(finish_days))
        days.update(refinished)
        changed.update(refinished_changes)
        scope: dict[tuple[str, int], Changed] = {("day", day): changed[day] for day in days}
        for kind in _LONGER_KINDS:
            for day in days:
                key = (kind, to_us(period_start(kind, from_us(day))))
                scope[key] = _union(scope.get(key, frozenset()), changed[day])
        scope = {key: names for key, names in scope.items() if names is None or names}
        starts: dict[str, list[int]] = {kind: [] for kind in _LONGER_KINDS}
        for kind, start in scope:
            if kind != "day":
                starts[kind].append(start)
        rows = self._day_rows(vs, {d: r for d, r in days.items() if ("day", d) in scope}, scope)
        for _, assembled_rows in self._assemble(reader, starts, days, scope):
            rows.extend(assembled_rows)
        self._store_days(vs, days, replace=True)
        self._write_rows(vs, scope, rows)
        self.stats.buckets += len(scope)
        self.stats.items_read += reader.rows_read

    # -- days ----------------------------------------------------------------------------

    def _sweep(
        self,
        reader: ledger.FactsReader,
        days: Sequence[int],
        in_progress: Iterable[tuple[int, int]],
    ) -> Iterator[dict[int, DayResult]]:
        """Recompute a run of consecutive days, starting from the items in progress just
        before the first one; yields the days a month at a time."""
        sweep = LoadSweep(in_progress)
        consumed = days[0] - 1  # events up to this instant have been applied
        for first in range(0, len(days), _WINDOW_DAYS):
            window = days[first : first + _WINDOW_DAYS]
            last_end = min(window[-1] + DAY, self.now)
            events = reader.segment_events(consumed + 1, last_end)
            finishes = reader.finishes(window[0], window[-1] + DAY)
            e_at = f_at = 0
            out: dict[int, DayResult] = {}
            for day in window:
                end = day + DAY
                e_to = e_at
                while e_to < len(events) and events[e_to].at <= min(end, self.now):
                    e_to += 1
                load, busy = sweep.day(day, min(end, self.now), events[e_at:e_to])
                e_at = e_to
                f_to = f_at
                while f_to < len(finishes) and finishes[f_to].at < end:
                    f_to += 1
                day_finishes = finishes[f_at:f_to]
                f_at = f_to
                touched = busy or day_finishes or reader.covered(day, end)
                out[day] = (load, Finished.of(day_finishes)) if touched else None
            consumed = last_end
            yield out

    def _refinish(
        self, reader: ledger.FactsReader, days: Sequence[int]
    ) -> tuple[dict[int, DayResult], dict[int, Changed]]:
        """Days whose load is unchanged: re-read their finished items and whether anything
        still touches them. Also returns which flow types' rows each day changes."""
        if not days:
            return {}, {}
        stored = ledger.read_days_at(self.conn, reader.value_stream, days)
        by_day: dict[int, list[Finish]] = {}
        for f in reader.finishes_on(days):
            by_day.setdefault(day_of(f.at), []).append(f)
        out: dict[int, DayResult] = {}
        changed: dict[int, Changed] = {}
        for day in days:
            day_finishes = by_day.get(day, [])
            old = stored.get(day)
            load = NO_LOAD if old is None else old[0]
            touched = day_finishes or not load.empty or reader.covered(day, day + DAY)
            finished = Finished.of(day_finishes)
            out[day] = (load, finished) if touched else None
            if old is None or not touched:
                changed[day] = None
            else:
                slots = finished.changed_slots(old[1])
                changed[day] = frozenset(SLOT_NAMES[s] for s in (*slots, ALL_SLOT) if slots)
        return out, changed

    def _day_rows(
        self,
        value_stream: str,
        days: Mapping[int, DayResult],
        scope: Mapping[tuple[str, int], Changed] | None = None,
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

    def _store_days(self, value_stream: str, days: dict[int, DayResult], *, replace: bool) -> None:
        """Store the touched days among `days` with their rows (replacing: in place of what
        was stored for all of `days`)."""
        if replace:
            ledger.delete_days(self.conn, value_stream, list(days))
        touched = [(day, r[0], r[1]) for day, r in days.items() if r is not None]
        ledger.write_days(self.warehouse, self.conn, value_stream, touched)
        if not replace:
            self._write_rows(value_stream, None, self._day_rows(value_stream, days))
            self.stats.buckets += len(days)

    # -- weeks, months, quarters ---------------------------------------------------------

    def _assemble(
        self,
        reader: ledger.FactsReader,
        starts: Mapping[str, Sequence[int]],
        fresh: Mapping[int, DayResult],
        scope: Mapping[tuple[str, int], Changed] | None = None,
    ) -> Iterator[tuple[list[tuple[str, int]], list[MetricRow]]]:
        """The rows of the buckets of each longer kind, from their days (`fresh` ones, just
        recomputed, over the stored ones), a quarter at a time: the days of a quarter are
        read once for it and its months and weeks. Yields (buckets, their rows)."""
        vs = reader.value_stream
        by_quarter: dict[int, list[tuple[str, int, int]]] = {}
        for kind, kind_starts in starts.items():
            for start in kind_starts:
                end = to_us(period_end(kind, from_us(start)))
                quarter = to_us(period_start("quarter", from_us(start)))
                by_quarter.setdefault(quarter, []).append((kind, start, end))
        last_day = day_of(self.now)
        for quarter in sorted(by_quarter):
            buckets = by_quarter[quarter]
            lo = min(start for _, start, _ in buckets)
            hi = min(max(end for _, _, end in buckets), last_day + DAY)
            stored: dict[int, DayResult] = dict(ledger.read_days(self.conn, vs, lo, hi))
            stored.update((day, r) for day, r in fresh.items() if lo <= day < hi)
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

    def _write_rows(
        self,
        value_stream: str,
        scope: Mapping[tuple[str, int], Changed] | None,
        rows: Sequence[MetricRow],
    ) -> None:
        """Store `rows`: the new rows, among those `scope` names per bucket (None: buckets
        that have no rows yet). Stored rows that are unchanged stay as they are; the other
        stored rows in scope are replaced or dropped."""
        if scope is not None:
            rows = [r for r in rows if _in_scope(scope, r)]
        records = {
            (r.period, r.period_start, r.flow_type): _row_record(r, self.as_of) for r in rows
        }
        if scope:
            stale: list[dict[str, object]] = []
            wanted = {(kind, from_us(start)): names for (kind, start), names in scope.items()}
            kinds = sorted({kind for kind, _ in wanted})
            # one read for all kinds: the starts of every kind, filtered here
            for chunk in _chunked(sorted({start for _, start in wanted})):
                for period, start, flow_type, data in self.conn.execute(
                    sa.select(
                        METRICS.c.period,
                        METRICS.c.period_start,
                        METRICS.c.flow_type,
                        METRICS.c.data,
                    ).where(
                        METRICS.c.value_stream == value_stream,
                        METRICS.c.period.in_(kinds),
                        METRICS.c.period_start.in_(chunk),
                    )
                ).all():
                    if (period, start) not in wanted:
                        continue
                    names = wanted[(period, start)]
                    if names is not None and flow_type not in names:
                        continue  # a flow type this change cannot have touched
                    key = (period, start, flow_type)
                    record = records.get(key)
                    if record is not None and record[-1] == data:
                        del records[key]  # unchanged
                    else:
                        stale.append({"p": period, "s": start, "f": flow_type})
            if stale:
                self.conn.execute(
                    METRICS.delete().where(
                        METRICS.c.value_stream == value_stream,
                        METRICS.c.period == sa.bindparam("p"),
                        METRICS.c.period_start == sa.bindparam("s"),
                        METRICS.c.flow_type == sa.bindparam("f"),
                    ),
                    stale,
                )
        if records:
            self.warehouse.insert_many(self.conn, METRICS, _METRIC_COLUMNS, list(records.values()))
            self.stats.rows += len(records)


def _union(a: Changed, b: Changed) -> Changed:
    return None if a is None or b is None else a | b


def _in_scope(scope: Mapping[tuple[str, int], Changed], row: MetricRow) -> bool:
    names = scope.get((row.period, to_us(row.period_start)), frozenset())
    return names is None or row.flow_type in names


def _chunked(values: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


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
