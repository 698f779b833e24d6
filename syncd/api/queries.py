"""What the HTTP API and the dashboard read: the SQL views and the value stream tables, only.

BI tools, `syncd export` and this API all read the same views (`syncd.warehouse.views`), so
every surface shows the same numbers. Each view is declared here with its column types, so
rows come back as Python values the same way on SQLite (ISO text, 0/1) and PostgreSQL
(`timestamptz`, `boolean`): instants as aware UTC datetimes, days as dates, booleans as bool.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.warehouse import views
from syncd.warehouse.models import UTCDateTime
from syncd.warehouse.store import STREAMS, TARGETS

FLOW_TYPES = ("feature", "defect", "risk", "debt", "unclassified")
ALL = "all"
PERIOD_KINDS = ("day", "week", "month", "quarter")
STAGES = ("new", "active", "waiting", "done", "canceled")
IN_PROGRESS = ("active", "waiting")

_S, _I, _F, _B, _T = sa.String, sa.Integer, sa.Float, sa.Boolean, UTCDateTime


def _view(name: str, *columns: tuple[str, Any]) -> sa.TableClause:
    return sa.table(name, *(sa.column(column, kind()) for column, kind in columns))


FLOW_ITEMS = _view(
    "flow_items",
    *[(c, _S) for c in ("source", "item_id", "key", "kind", "title", "project", "flow_type")],
    *[(c, _S) for c in ("value_stream", "stage", "state", "labels")],
    *[(c, _T) for c in ("created_at", "updated_at", "work_start", "work_end")],
    ("outcome", _S),
    *[(c, _F) for c in ("flow_time_s", "active_s", "wait_s")],
    ("deleted", _B),
    ("deleted_at", _T),
)

FLOW_METRICS = _view(
    "flow_metrics",
    *[(c, _S) for c in ("value_stream", "flow_type", "period_kind")],
    *[(c, _T) for c in ("period_start", "period_end", "as_of")],
    ("velocity", _I),
    ("flow_time_count", _I),
    *[(f"flow_time_{s}_s", _F) for s in ("mean", "p50", "p85", "p95", "max")],
    ("efficiency", _F),
    ("efficiency_mean", _F),
    ("load_end", _I),
    ("load_avg", _F),
    ("age_count", _I),
    *[(f"age_{s}_s", _F) for s in ("p50", "p85", "max")],
    *[(c, _F) for c in ("distribution_share", "load_share", "target_share", "deviation")],
)

FLOW_LOAD_DAILY = _view(
    "flow_load_daily",
    ("value_stream", _S),
    ("flow_type", _S),
    ("day", sa.Date),
    *[(c, _I) for c in (*STAGES, "in_progress")],
)

FLOW_DEPENDENCIES = _view(
    "flow_dependencies",
    *[(c, _S) for c in ("from_source", "from_item_id", "from_key", "from_value_stream")],
    *[(c, _S) for c in ("link_type", "direction", "to_source", "to_item_id", "to_key")],
    *[(c, _S) for c in ("to_value_stream", "to_stage")],
    ("cross_value_stream", _B),
    ("blocking", _B),
)


def columns(view: sa.TableClause) -> list[str]:
    """The view's column names, in the documented order (CSV headers, OpenAPI)."""
    return [c.name for c in view.columns]


class BadFilter(ValueError):
    """A filter value the API refuses; `parameter` names the query parameter."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


def _records(conn: Connection, query: sa.Select[Any]) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in conn.execute(query)]


# -- value streams ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamInfo:
    name: str
    position: int
    configured: bool


def value_streams(conn: Connection) -> list[StreamInfo]:
    """The value streams: the configured ones in config order, then the names items carry
    (alphabetically) that the `value_streams` table does not list yet."""
    listed = [
        StreamInfo(row.name, int(row.position), bool(row.configured))
        for row in conn.execute(
            sa.select(STREAMS.c.name, STREAMS.c.position, STREAMS.c.configured).order_by(
                STREAMS.c.position, STREAMS.c.name
            )
        )
    ]
    known = {s.name for s in listed}
    carried = conn.execute(
        sa.select(FLOW_ITEMS.c.value_stream).distinct().order_by(FLOW_ITEMS.c.value_stream)
    ).scalars()
    extra = [name for name in carried if name not in known]
    start = max((s.position for s in listed), default=-1) + 1
    return listed + [StreamInfo(name, start + i, False) for i, name in enumerate(extra)]


class UnknownValueStream(BadFilter):
    """A page asked for a value stream the warehouse does not know."""


def check_value_stream(conn: Connection, name: str) -> None:
    """Refuse a value stream that is not one (the dashboard's page of a value stream; the
    API's filters simply match nothing)."""
    names = [s.name for s in value_streams(conn)]
    if name not in names:
        known = ", ".join(repr(n) for n in names[:20]) or "none yet"
        raise UnknownValueStream("value_stream", f"no value stream named {name!r} (known: {known})")


def targets(conn: Connection) -> dict[str, dict[str, float]]:
    """value stream → flow type → target share."""
    out: dict[str, dict[str, float]] = {}
    for row in conn.execute(
        sa.select(TARGETS.c.value_stream, TARGETS.c.flow_type, TARGETS.c.share).order_by(
            TARGETS.c.value_stream, TARGETS.c.flow_type
        )
    ):
        out.setdefault(row.value_stream, {})[row.flow_type] = float(row.share)
    return out


def stream_summaries(conn: Connection, period_kind: str) -> list[dict[str, Any]]:
    """Each value stream with its targets and the actual distribution of its latest period
    of `period_kind` (the one holding the metrics' as-of time), as `flow_metrics` has them."""
    goals = targets(conn)
    m = FLOW_METRICS
    latest = (
        sa.select(m.c.value_stream, sa.func.max(m.c.period_start).label("start"))
        .where(m.c.period_kind == period_kind)
        .group_by(m.c.value_stream)
        .subquery()
    )
    rows = conn.execute(
        sa.select(m)
        .join(
            latest,
            sa.and_(latest.c.value_stream == m.c.value_stream, latest.c.start == m.c.period_start),
        )
        .where(m.c.period_kind == period_kind)
    ).all()
    by_stream: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_stream.setdefault(row.value_stream, []).append(dict(row._mapping))
    out = []
    for stream in value_streams(conn):
        period = by_stream.get(stream.name, [])
        latest_record: dict[str, Any] | None = None
        if period:
            first = period[0]
            by_type = {r["flow_type"]: r for r in period}
            total = by_type.get(ALL)
            latest_record = {
                "period_kind": period_kind,
                "period_start": first["period_start"],
                "period_end": first["period_end"],
                "as_of": first["as_of"],
                "velocity": total["velocity"] if total is not None else None,
                "distribution": {
                    ft: by_type[ft]["distribution_share"] for ft in FLOW_TYPES if ft in by_type
                },
                "deviation": {
                    ft: by_type[ft]["deviation"]
                    for ft in FLOW_TYPES
                    if ft in by_type and by_type[ft]["target_share"] is not None
                },
            }
        out.append(
            {
                "name": stream.name,
                "position": stream.position,
                "configured": stream.configured,
                "targets": goals.get(stream.name, {}),
                "latest": latest_record,
            }
        )
    return out


# -- metrics ------------------------------------------------------------------------------


def metrics(
    conn: Connection,
    *,
    value_stream: str | None = None,
    flow_type: str | None = None,
    period_kind: str = "week",
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[dict[str, Any]]:
    """`flow_metrics` rows of one period kind; with `start`/`end`, the periods that overlap
    [start, end). Ordered by value stream, period, then `all` before the flow types."""
    m = FLOW_METRICS
    query = sa.select(m).where(m.c.period_kind == period_kind)
    if value_stream is not None:
        query = query.where(m.c.value_stream == value_stream)
    if flow_type is not None:
        query = query.where(m.c.flow_type == flow_type)
    if start is not None:
        query = query.where(m.c.period_end > start)
    if end is not None:
        query = query.where(m.c.period_start < end)
    order = sa.case(
        *[(m.c.flow_type == ft, i) for i, ft in enumerate((ALL, *FLOW_TYPES))], else_=99
    )
    return _records(conn, query.order_by(m.c.value_stream, m.c.period_start, order))


def metrics_as_of(conn: Connection) -> datetime | None:
    """When the stored metrics were last brought up to date (None before the first update):
    the view's `as_of`, which is the same on every row."""
    value = conn.execute(sa.select(FLOW_METRICS.c.as_of).limit(1)).scalar()
    return None if value is None else _utc(value)


def _utc(value: datetime | str) -> datetime:
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# -- items --------------------------------------------------------------------------------


def encode_cursor(source: str, item_id: str) -> str:
    """An opaque position after the item (source, item_id) in the items' order."""
    raw = json.dumps([source, item_id], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        value = None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise BadFilter("cursor", "not a cursor this API gave out (use next_cursor as is)")
    return value[0], value[1]


@dataclass(frozen=True, slots=True)
class ItemsPage:
    items: list[dict[str, Any]]
    next_cursor: str | None


def items(
    conn: Connection,
    *,
    value_stream: str | None = None,
    flow_type: str | None = None,
    stage: str | None = None,
    source: str | None = None,
    include_deleted: bool = False,
    limit: int = 100,
    cursor: str | None = None,
) -> ItemsPage:
    """A page of `flow_items` in (source, item_id) order, after `cursor`: keyset paging, so
    pages neither skip nor repeat an item while the warehouse changes between requests."""
    v = FLOW_ITEMS
    query = sa.select(v)
    if value_stream is not None:
        query = query.where(v.c.value_stream == value_stream)
    if flow_type is not None:
        query = query.where(v.c.flow_type == flow_type)
    if stage is not None:
        query = query.where(v.c.stage == stage)
    if source is not None:
        query = query.where(v.c.source == source)
    if not include_deleted:
        query = query.where(sa.not_(v.c.deleted))
    if cursor is not None:
        after = decode_cursor(cursor)
        query = query.where(sa.tuple_(v.c.source, v.c.item_id) > sa.tuple_(*after))
    rows = _records(conn, query.order_by(v.c.source, v.c.item_id).limit(limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]["source"], rows[-1]["item_id"]) if more else None
    return ItemsPage(rows, next_cursor)


def in_progress(conn: Connection, value_stream: str) -> list[dict[str, Any]]:
    """The value stream's items in progress (active or waiting) with when their work began."""
    v = FLOW_ITEMS
    query = (
        sa.select(
            v.c.source,
            v.c.key,
            v.c.title,
            v.c.flow_type,
            v.c.stage,
            v.c.state,
            v.c.work_start,
            v.c.created_at,
        )
        .where(
            v.c.value_stream == value_stream,
            v.c.stage.in_(IN_PROGRESS),
            sa.not_(v.c.deleted),
        )
        .order_by(v.c.source, v.c.item_id)
    )
    return _records(conn, query)


# -- load and dependencies ----------------------------------------------------------------


def load_daily(
    conn: Connection,
    *,
    value_stream: str | None = None,
    flow_type: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> list[dict[str, Any]]:
    """`flow_load_daily` rows, days in [start, end], ordered by value stream, flow type, day.
    For one value stream the view's SELECT is run with the value stream bound inside it
    (`views.load_daily_of_one_value_stream`: SQLite would otherwise walk every history)."""
    d: Any = FLOW_LOAD_DAILY
    if value_stream is not None:
        d = (
            sa.text(views.load_daily_of_one_value_stream(conn.dialect.name))
            .bindparams(value_stream=value_stream)
            .columns(*(sa.column(c.name, c.type) for c in FLOW_LOAD_DAILY.columns))
            .subquery("flow_load_daily")
        )
    query = sa.select(d)
    if flow_type is not None:
        query = query.where(d.c.flow_type == flow_type)
    if start is not None:
        query = query.where(d.c.day >= start)
    if end is not None:
        query = query.where(d.c.day <= end)
    return _records(conn, query.order_by(d.c.value_stream, d.c.flow_type, d.c.day))


def dependency_rows(conn: Connection, value_stream: str | None = None) -> list[dict[str, Any]]:
    """`flow_dependencies` rows with an end in `value_stream` (all rows without it)."""
    d = FLOW_DEPENDENCIES
    query = sa.select(d)
    if value_stream is not None:
        query = query.where(
            sa.or_(d.c.from_value_stream == value_stream, d.c.to_value_stream == value_stream)
        )
    order = (d.c.from_source, d.c.from_item_id, d.c.link_type, d.c.direction, d.c.to_key)
    return _records(conn, query.order_by(*order))


def sum_by_day(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Daily rows of several flow types added up per day (the value stream's whole flow)."""
    days: dict[date, dict[str, Any]] = {}
    for row in rows:
        total = days.setdefault(row["day"], {"day": row["day"], **{k: 0 for k in STAGES}})
        for stage in STAGES:
            total[stage] += row[stage] or 0
    return [days[d] for d in sorted(days)]
