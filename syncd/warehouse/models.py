"""The warehouse tables (SQLModel). Knows tables, nothing about HTTP or trackers.

Layers, as in the design: raw pages as fetched → flow items and transitions → metric buckets.
Cursors and sync runs record where each (source, stream) stands.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Float, Index, Text, TypeDecorator
from sqlalchemy import text as sa_text
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 1


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in Python; `timestamptz` on PostgreSQL, ISO text (UTC) on SQLite.
    A naive datetime reaching the database is a bug and is refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} reached the warehouse")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class RawPageRow(SQLModel, table=True):
    """A tracker response as fetched: enough to re-normalise without calling the tracker."""

    __tablename__ = "raw_pages"
    __table_args__ = (Index("ix_raw_pages_source_stream", "source", "stream", "fetched_at"),)

    id: int | None = Field(default=None, primary_key=True)
    source: str
    stream: str
    run_id: str
    method: str
    url: str
    params: str = Field(sa_column=Column(Text, nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    fetched_at: datetime = _ts(nullable=False)


class ItemRow(SQLModel, table=True):
    """A flow item: its current facts and its per-item flow figures."""

    __tablename__ = "items"
    __table_args__ = (
        Index("ix_items_vs_start", "value_stream", "work_start"),
        Index("ix_items_vs_end", "value_stream", "work_end"),
        Index("ix_items_source_key", "source", "key"),
    )

    source: str = Field(primary_key=True)
    item_id: str = Field(primary_key=True)
    key: str
    kind: str
    title: str = Field(sa_column=Column(Text, nullable=False))
    project: str
    flow_type: str
    value_stream: str
    stage: str
    state: str
    #: the item's labels as a JSON list of strings (value streams can match on them)
    labels: str = Field(
        default="[]", sa_column=Column(Text, nullable=False, server_default=sa_text("'[]'"))
    )
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
    work_start: datetime | None = _ts()
    work_end: datetime | None = _ts()
    outcome: str | None = None
    flow_time_s: float | None = None
    active_s: float | None = None
    wait_s: float | None = None
    deleted_at: datetime | None = _ts()
    synced_at: datetime = _ts(nullable=False)


class TransitionRow(SQLModel, table=True):
    """One state change of an item, in the tracker's order. seq 0 is the creation."""

    __tablename__ = "transitions"

    source: str = Field(primary_key=True)
    item_id: str = Field(primary_key=True)
    seq: int = Field(primary_key=True)
    at: datetime = _ts(nullable=False)
    from_state: str | None = None
    to_state: str
    from_stage: str | None = None
    to_stage: str


class LinkRow(SQLModel, table=True):
    """A dependency between items as the tracker states it."""

    __tablename__ = "item_links"

    source: str = Field(primary_key=True)
    item_id: str = Field(primary_key=True)
    link_type: str = Field(primary_key=True)
    direction: str = Field(primary_key=True)
    target_key: str = Field(primary_key=True)
    target_id: str | None = None


class CursorRow(SQLModel, table=True):
    """Where a (source, stream) resumes; written in the same transaction as its page."""

    __tablename__ = "cursors"

    source: str = Field(primary_key=True)
    stream: str = Field(primary_key=True)
    watermark: datetime | None = _ts()
    state: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    run_id: str | None = None
    updated_at: datetime = _ts(nullable=False)


class SyncRunRow(SQLModel, table=True):
    """One pass over one source."""

    __tablename__ = "sync_runs"

    run_id: str = Field(primary_key=True)
    source: str = Field(index=True)
    started_at: datetime = _ts(nullable=False)
    finished_at: datetime | None = _ts()
    status: str = "running"  # running | ok | failed
    pages: int = 0
    items: int = 0
    skipped: int = 0
    requests: int = 0
    retries: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))


class MetricRowRecord(SQLModel, table=True):
    """One computed metric row: value stream × flow type × period kind × period."""

    __tablename__ = "metric_rows"

    value_stream: str = Field(primary_key=True)
    period: str = Field(primary_key=True)
    period_start: datetime = Field(sa_column=Column(UTCDateTime(), primary_key=True))
    flow_type: str = Field(primary_key=True)
    as_of: datetime = _ts(nullable=False)
    velocity: int
    load_end: int
    data: str = Field(sa_column=Column(Text, nullable=False))


def _us(nullable: bool = True, primary_key: bool = False) -> Any:
    """An instant as integer microseconds since 1970-01-01 UTC: the metric tables do exact
    time arithmetic on these, in SQL and in Python, without parsing timestamps."""
    return Field(
        default=None,
        sa_column=Column(
            BigInteger, nullable=nullable and not primary_key, primary_key=primary_key
        ),
    )


class MetricItemRow(SQLModel, table=True):
    """What the metrics know of one item, from its whole history (syncd/metrics/facts.py).
    Written with the item; instants are microseconds (see `_us`)."""

    __tablename__ = "metric_items"
    __table_args__ = (
        Index("ix_metric_items_vs_start", "value_stream", "work_start", "work_end"),
        # covers the reads of finished items, by UTC day of the work end
        Index(
            "ix_metric_items_vs_end",
            "value_stream",
            "end_day",
            "work_end",
            "outcome",
            "flow_type",
            "flow_time_s",
            "active_s",
        ),
        Index("ix_metric_items_last_at", "last_at"),
    )

    source: str = Field(primary_key=True)
    item_id: str = Field(primary_key=True)
    value_stream: str
    flow_type: str
    work_start: int | None = _us()
    work_end: int | None = _us()
    end_day: int | None = _us()  # the UTC day of work_end
    outcome: str | None = None
    flow_time_s: float | None = None
    active_s: float | None = None
    last_at: int | None = _us()


class MetricSegmentRow(SQLModel, table=True):
    """A run of time an item spent in progress; `seg_end` NULL: still in progress."""

    __tablename__ = "metric_segments"
    __table_args__ = (
        # both cover the sweep's reads: no table lookups
        Index(
            "ix_metric_segments_vs_start", "value_stream", "seg_start", "flow_type", "work_start"
        ),
        Index(
            "ix_metric_segments_vs_end",
            "value_stream",
            "seg_end",
            "seg_start",
            "flow_type",
            "work_start",
        ),
    )

    source: str = Field(primary_key=True)
    item_id: str = Field(primary_key=True)
    seg_start: int = _us(primary_key=True)
    seg_end: int | None = _us()
    value_stream: str
    flow_type: str
    work_start: int = _us(nullable=False)
    last_at: int | None = _us()


class MetricRunRow(SQLModel, table=True):
    """A change, at `at`, to a run of done/canceled stages that began at `run_start`: the
    item leaving it (`left`: a reopen) or its outcome switching between done and canceled."""

    __tablename__ = "metric_runs"
    __table_args__ = (Index("ix_metric_runs_at", "at"),)

    source: str = Field(primary_key=True)
    item_id: str = Field(primary_key=True)
    run_start: int = _us(primary_key=True)
    at: int = _us(primary_key=True)
    left: bool
    value_stream: str
    # the finish the run held until `at` (syncd.metrics.facts.RunMark); NULL: not known
    flow_type: str | None = None
    done: bool | None = None
    flow_time_s: float | None = None
    active_s: float | None = None


class MetricDayRow(SQLModel, table=True):
    """One UTC day of a value stream that some item touches: its exact load time, its load
    and ages at the day's end, and its finished items (JSON, `syncd/metrics/sweep.py`).
    Weeks, months and quarters are assembled from these without reading items."""

    __tablename__ = "metric_days"

    value_stream: str = Field(primary_key=True)
    day: int = _us(primary_key=True)
    data: str = Field(sa_column=Column(Text, nullable=False))


class MetricDirtRow(SQLModel, table=True):
    """Instants of a value stream whose metric buckets must be recomputed (`scope`: flow,
    finish or cover, see syncd/metrics/facts.py); `span_end` NULL: up to the as-of time."""

    __tablename__ = "metric_dirt"

    id: int | None = Field(default=None, primary_key=True)
    value_stream: str
    scope: str
    span_start: int = _us(nullable=False)
    span_end: int | None = _us()
    # a finish dirt's change to its day's done items (syncd.metrics.facts.FinishChange);
    # NULL: not known, the day's done items are read again
    sign: int | None = None
    flow_type: str | None = None
    done: bool | None = None
    flow_time_s: float | None = None
    active_s: float | None = None


class ValueStreamRow(SQLModel, table=True):
    """A value stream as the config defines it (`[[value_streams]]`), in config order, or one
    that only exists because a source names it (`configured` false). Rewritten from the config
    whenever it changes (syncd/streams.py)."""

    __tablename__ = "value_streams"

    name: str = Field(primary_key=True)
    position: int
    configured: bool


class ValueStreamTargetRow(SQLModel, table=True):
    """A value stream's target investment share of one flow type (0..1)."""

    __tablename__ = "value_stream_targets"

    value_stream: str = Field(primary_key=True)
    flow_type: str = Field(primary_key=True)
    share: float = Field(sa_column=Column(Float, nullable=False))


class MetaRow(SQLModel, table=True):
    """Small facts about the warehouse itself (schema version, last metric as-of)."""

    __tablename__ = "warehouse_meta"

    key: str = Field(primary_key=True)
    value: str
