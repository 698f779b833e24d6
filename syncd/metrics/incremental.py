"""Keeping the stored metric rows current without recomputing everything.

Every page a sync commits records the time spans its changed items' flows cover, old and
new (`metric_dirty`). An update recomputes only the period buckets those spans meet, plus
the buckets between the previous as-of time and the new one (time passing changes the open
period, the load of items in progress and their ages). A bucket that no item touches any
more loses its rows, so the stored set is exactly what a full recompute produces.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.domain import ALL
from syncd.metrics.compute import (
    MetricItem,
    MetricRow,
    compute_all,
    compute_periods,
    touched_among,
)
from syncd.metrics.figures import item_figures
from syncd.metrics.periods import PERIOD_KINDS, period_end, period_start, period_starts
from syncd.warehouse.store import METRICS, StoredItem, Warehouse

AS_OF_KEY = "metrics_as_of"


@dataclass(slots=True)
class UpdateStats:
    """What an update did: how many buckets it recomputed and whether it went full."""

    full: bool = False
    buckets: int = 0
    rows: int = 0
    items_read: int = 0


def _metric_items(items: Iterable[StoredItem]) -> list[MetricItem]:
    return [
        MetricItem(key=f"{i.source}:{i.key}", flow_type=i.flow_type, transitions=i.transitions)
        for i in items
    ]


def _row_record(row: MetricRow, as_of: datetime) -> dict[str, object]:
    import json

    return {
        "value_stream": row.value_stream,
        "period": row.period,
        "period_start": row.period_start,
        "flow_type": row.flow_type,
        "as_of": as_of,
        "velocity": row.velocity,
        "load_end": row.load_end,
        "data": json.dumps(row.to_json(), sort_keys=True),
    }


def update_metrics(
    warehouse: Warehouse,
    *,
    as_of: datetime,
    full: bool = False,
    kinds: Sequence[str] = PERIOD_KINDS,
) -> UpdateStats:
    """Bring the stored metric rows to `as_of`, incrementally unless `full` or unavoidable."""
    stats = UpdateStats()
    with warehouse.begin() as conn:
        previous = warehouse_as_of(conn)
        dirty = warehouse.take_dirty(conn)
        if full or previous is None or as_of < previous:
            stats.full = True
            _full(warehouse, conn, as_of, kinds, stats)
        else:
            spans: dict[str, list[tuple[datetime, datetime]]] = {}
            for vs, lo, hi in dirty:
                spans.setdefault(vs, []).append((lo, min(hi, as_of)))
            for vs in _value_streams(conn):
                spans.setdefault(vs, []).append((previous, as_of))
            for vs, vs_spans in spans.items():
                _recompute(warehouse, conn, vs, vs_spans, as_of, kinds, stats)
        warehouse.set_meta(conn, AS_OF_KEY, as_of.isoformat())
    return stats


def warehouse_as_of(conn: Connection) -> datetime | None:
    from syncd.warehouse.store import META

    value = conn.execute(sa.select(META.c.value).where(META.c.key == AS_OF_KEY)).scalar()
    return datetime.fromisoformat(value) if value else None


def _value_streams(conn: Connection) -> list[str]:
    from syncd.warehouse.store import ITEMS

    return list(conn.execute(sa.select(ITEMS.c.value_stream).distinct()).scalars())


def _full(
    warehouse: Warehouse,
    conn: Connection,
    as_of: datetime,
    kinds: Sequence[str],
    stats: UpdateStats,
) -> None:
    conn.execute(METRICS.delete())
    for vs in _value_streams(conn):
        items = _metric_items(warehouse.load_items(conn, vs))
        stats.items_read += len(items)
        for kind in kinds:
            rows = compute_all(vs, kind, items, as_of)
            _store(conn, rows, as_of, stats)


def _recompute(
    warehouse: Warehouse,
    conn: Connection,
    vs: str,
    spans: Sequence[tuple[datetime, datetime]],
    as_of: datetime,
    kinds: Sequence[str],
    stats: UpdateStats,
) -> None:
    lo = min(start for start, _ in spans)
    hi = max(end for _, end in spans)
    lo_bound = min(period_start(kind, lo) for kind in kinds)
    hi_bound = max(period_end(kind, period_start(kind, hi)) for kind in kinds)
    items = _metric_items(warehouse.load_items(conn, vs, start=lo_bound, end=hi_bound))
    stats.items_read += len(items)
    figures = [item_figures(item.transitions, as_of) for item in items]
    for kind in kinds:
        starts: set[datetime] = set()
        for start, end in spans:
            if start <= end:
                starts.update(period_starts(kind, start, end))
        starts = {s for s in starts if s <= as_of}
        if not starts:
            continue
        ordered = sorted(starts)
        touched: set[datetime] = set()
        for item_figs in figures:
            touched |= touched_among(kind, item_figs, as_of, ordered)
        for chunk_start in range(0, len(ordered), 500):
            chunk = ordered[chunk_start : chunk_start + 500]
            conn.execute(
                METRICS.delete().where(
                    METRICS.c.value_stream == vs,
                    METRICS.c.period == kind,
                    METRICS.c.period_start.in_(chunk),
                )
            )
        stats.buckets += len(starts)
        if touched:
            rows = compute_periods(vs, kind, items, sorted(touched), as_of)
            _store(conn, rows, as_of, stats)


def _store(
    conn: Connection, rows: Sequence[MetricRow], as_of: datetime, stats: UpdateStats
) -> None:
    if rows:
        conn.execute(METRICS.insert(), [_row_record(r, as_of) for r in rows])
        stats.rows += len(rows)


def stored_rows(
    warehouse: Warehouse, *, kind: str, value_stream: str | None = None, fill: bool = True
) -> list[MetricRow]:
    """The stored rows of a period kind, ordered; with `fill`, periods between a value
    stream's first and last stored period that no item touches appear as empty rows."""
    query = sa.select(METRICS.c.data, METRICS.c.as_of).where(METRICS.c.period == kind)
    if value_stream:
        query = query.where(METRICS.c.value_stream == value_stream)
    with warehouse.engine.connect() as conn:
        records = conn.execute(query).all()
    import json

    rows = [MetricRow.from_json(json.loads(r.data)) for r in records]
    as_of = max((r.as_of for r in records), default=None)
    if fill and rows and as_of is not None:
        by_vs: dict[str, set[datetime]] = {}
        for row in rows:
            by_vs.setdefault(row.value_stream, set()).add(row.period_start)
        for vs, present in by_vs.items():
            wanted = period_starts(kind, min(present), as_of)
            missing = [s for s in wanted if s not in present]
            if missing:
                rows.extend(compute_periods(vs, kind, [], missing, as_of))
    order = {
        ft: i for i, ft in enumerate((ALL, "feature", "defect", "risk", "debt", "unclassified"))
    }
    rows.sort(key=lambda r: (r.value_stream, r.period_start, order.get(r.flow_type, 99)))
    return rows


def compute_in_memory(
    warehouse: Warehouse, *, kind: str, as_of: datetime, value_stream: str | None = None
) -> list[MetricRow]:
    """Rows computed afresh at an arbitrary as-of time (nothing stored): `--as-of`."""
    with warehouse.engine.connect() as conn:
        streams = [value_stream] if value_stream else _value_streams(conn)
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
    order = {
        ft: i for i, ft in enumerate((ALL, "feature", "defect", "risk", "debt", "unclassified"))
    }
    rows.sort(key=lambda r: (r.value_stream, r.period_start, order.get(r.flow_type, 99)))
    return rows
