"""Exports: items, transitions and metric rows as JSON lines or CSV (streamed) or Parquet.

Every export reads one of the SQL views (syncd/warehouse/views.py), the surface BI tools
read, so an export and a BI tool never disagree about which rows exist or what they hold:

- `items` reads `flow_items` (tombstoned items included, with their `deleted_at`);
- `transitions` reads `flow_transitions` (live items only);
- `metrics` reads `flow_metrics`, all of its columns.

Each kind is declared once (`ExportKind`): its columns in order, the view column each comes
from and a type. That one declaration gives the CSV header, the order of the JSON keys, the
typed Parquet schema and the SELECT. Rows stream from the database in batches whatever the
format, and Parquet is written a row group at a time, so memory stays flat however many rows.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import sqlalchemy as sa

from syncd import __version__
from syncd.csvsafe import write_rows
from syncd.domain import ALL, FLOW_TYPES
from syncd.metrics.compute import MetricRow
from syncd.metrics.periods import PERIOD_KINDS
from syncd.warehouse.models import UTCDateTime
from syncd.warehouse.store import Warehouse

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = ("jsonl", "csv", "parquet")
#: rows fetched from the database, and turned into Arrow arrays, at a time
BATCH_ROWS = 2_000
#: rows per Parquet row group (the last one may hold fewer)
GROUP_ROWS = 32_000

_SQL_TYPES: dict[str, Any] = {
    "text": sa.Text(),
    "timestamp": UTCDateTime(),
    "float": sa.Float(),
    "int": sa.BigInteger(),
}


@dataclass(frozen=True, slots=True)
class Field:
    """One exported column: its name, the view column it reads (the same name unless
    given), its type (text, timestamp, float or int) and whether it may be null."""

    name: str
    type: str
    nullable: bool = True
    column: str | None = None

    def __post_init__(self) -> None:
        if self.type not in _SQL_TYPES:
            raise ValueError(f"field {self.name!r}: unknown type {self.type!r}")

    @property
    def source(self) -> str:
        return self.column or self.name


@dataclass(frozen=True, slots=True)
class ExportKind:
    """What one `syncd export <kind>` writes: the view it reads and its columns; `hidden`
    are view columns it filters or orders on without writing them."""

    name: str
    view: str
    fields: tuple[Field, ...]
    hidden: tuple[Field, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def arrow_schema(self) -> pa.Schema:
        """The Parquet schema: timestamps as timestamp[us, UTC], durations and shares as
        float64, counts as int64, text as string; non-null where the view's data is."""
        import pyarrow as pa

        arrow = {
            "text": pa.string(),
            "timestamp": pa.timestamp("us", tz="UTC"),
            "float": pa.float64(),
            "int": pa.int64(),
        }
        return pa.schema(
            [pa.field(f.name, arrow[f.type], nullable=f.nullable) for f in self.fields],
            metadata={"syncd.export": self.name, "syncd.version": __version__},
        )

    def table(self) -> sa.TableClause:
        """The view as a typed selectable, its columns named as the view names them."""
        return sa.table(
            self.view,
            *(sa.column(f.source, _SQL_TYPES[f.type]) for f in (*self.fields, *self.hidden)),
        )


def _text(name: str, nullable: bool = True, column: str | None = None) -> Field:
    return Field(name, "text", nullable, column)


def _ts(name: str, nullable: bool = True) -> Field:
    return Field(name, "timestamp", nullable)


def _float(name: str) -> Field:
    return Field(name, "float")


def _int(name: str, nullable: bool = False) -> Field:
    return Field(name, "int", nullable)


ITEMS = ExportKind(
    "items",
    "flow_items",
    (
        _text("source", False),
        _text("key", False),
        _text("id", False, column="item_id"),
        _text("kind", False),
        _text("title", False),
        _text("flow_type", False),
        _text("value_stream", False),
        _text("stage", False),
        _text("state", False),
        _ts("created_at", False),
        _ts("updated_at", False),
        _ts("work_start"),
        _ts("work_end"),
        _float("flow_time_s"),
        _float("active_s"),
        _float("wait_s"),
        # set when a reconciliation found the item gone from the tracker (or from the
        # source's scope); such items count in no metric
        _ts("deleted_at"),
    ),
)

TRANSITIONS = ExportKind(
    "transitions",
    "flow_transitions",
    (
        _text("source", False),
        _text("key", False),
        _ts("at", False),
        _text("from_state"),
        _text("to_state", False),
        _text("from_stage"),
        _text("to_stage", False),
    ),
    hidden=(_int("seq"), _text("value_stream", False), _text("flow_type", False)),
)

METRICS = ExportKind(
    "metrics",
    "flow_metrics",
    (
        _text("value_stream", False),
        _text("flow_type", False),
        _text("period_kind", False),
        _ts("period_start", False),
        _ts("period_end", False),
        _ts("as_of"),
        _int("velocity"),
        _int("flow_time_count"),
        _float("flow_time_mean_s"),
        _float("flow_time_p50_s"),
        _float("flow_time_p85_s"),
        _float("flow_time_p95_s"),
        _float("flow_time_max_s"),
        _float("efficiency"),
        _float("efficiency_mean"),
        _int("load_end"),
        _float("load_avg"),
        _int("age_count"),
        _float("age_p50_s"),
        _float("age_p85_s"),
        _float("age_max_s"),
        _float("distribution_share"),
        _float("load_share"),
        _float("target_share"),
        _float("deviation"),
    ),
)

KINDS: dict[str, ExportKind] = {k.name: k for k in (ITEMS, TRANSITIONS, METRICS)}


@dataclass(frozen=True, slots=True)
class Filters:
    """Which rows an export keeps; None keeps all. The time window [since, until) applies
    to an item's last update or tombstoning, a transition's time, a metric period's start.
    `period_kind` and the `all` flow type concern metric rows only."""

    value_stream: str | None = None
    flow_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    period_kind: str | None = None

    def check(self, kind: ExportKind) -> None:
        """Refuse filters that cannot apply to `kind` (ValueError, one sentence)."""
        if self.flow_type is not None and self.flow_type not in (*FLOW_TYPES, ALL):
            raise ValueError(f"unknown flow type {self.flow_type!r}")
        if kind is not METRICS:
            if self.period_kind is not None:
                raise ValueError(f"--period applies to metrics, not to {kind.name}")
            if self.flow_type == ALL:
                raise ValueError(f"flow type 'all' exists in metrics, not in {kind.name}")
        elif self.period_kind is not None and self.period_kind not in PERIOD_KINDS:
            raise ValueError(f"unknown period kind {self.period_kind!r}")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ValueError("--until must be after --since")


def _window(column: sa.ColumnElement[Any], filters: Filters) -> list[sa.ColumnElement[bool]]:
    out = []
    if filters.since is not None:
        out.append(column >= filters.since)
    if filters.until is not None:
        out.append(column < filters.until)
    return out


def _order_of(column: sa.ColumnElement[Any], values: Sequence[str]) -> sa.Case[Any]:
    return sa.case({v: i for i, v in enumerate(values)}, value=column, else_=len(values))


def build_query(kind: ExportKind, filters: Filters = Filters()) -> sa.Select[Any]:
    """The SELECT of an export: the kind's columns, filtered and in a stable order."""
    filters.check(kind)
    view = kind.table()
    c = view.c
    query = sa.select(*(c[f.source].label(f.name) for f in kind.fields))
    if filters.value_stream is not None:
        query = query.where(c.value_stream == filters.value_stream)
    if filters.flow_type is not None:
        query = query.where(c.flow_type == filters.flow_type)
    if kind is ITEMS:
        window = _window(c.updated_at, filters)
        tombstoned = _window(c.deleted_at, filters)
        if window:
            query = query.where(sa.or_(sa.and_(*window), sa.and_(*tombstoned)))
        return query.order_by(c.source, c.key)
    if kind is TRANSITIONS:
        return query.where(*_window(c.at, filters)).order_by(c.source, c.key, c.seq)
    if filters.period_kind is not None:
        query = query.where(c.period_kind == filters.period_kind)
    return query.where(*_window(c.period_start, filters)).order_by(
        c.value_stream,
        _order_of(c.period_kind, PERIOD_KINDS),
        c.period_start,
        _order_of(c.flow_type, (ALL, *FLOW_TYPES)),
    )


def iter_rows(
    warehouse: Warehouse, kind: ExportKind, filters: Filters = Filters()
) -> Iterator[tuple[Any, ...]]:
    """The export's rows as tuples in column order: aware UTC datetimes, floats, ints,
    strings, None. Fetched `BATCH_ROWS` at a time (a server-side cursor on PostgreSQL)."""
    query = build_query(kind, filters)
    numeric = [
        (i, float if f.type == "float" else int)
        for i, f in enumerate(kind.fields)
        if f.type in ("float", "int")
    ]
    with warehouse.engine.connect() as conn:
        result = conn.execution_options(yield_per=BATCH_ROWS).execute(query)
        for row in result:
            if not numeric:
                yield tuple(row)
                continue
            # SQLite hands back whatever a JSON number parsed to: make the types exact
            values = list(row)
            for i, cast in numeric:
                if values[i] is not None:
                    values[i] = cast(values[i])
            yield tuple(values)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a trailing Z, with as many fractional digits as it needs: none,
    milliseconds (what trackers give) or microseconds."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    if not value.microsecond:
        timespec = "seconds"
    elif value.microsecond % 1000:
        timespec = "microseconds"
    else:
        timespec = "milliseconds"
    text = value.isoformat(timespec=timespec)
    return text.replace("+00:00", "Z")


def _records(kind: ExportKind, rows: Iterable[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
    """Rows as JSON-ready dicts: timestamps as `iso` text."""
    names = kind.columns
    stamps = [i for i, f in enumerate(kind.fields) if f.type == "timestamp"]
    for row in rows:
        values = list(row)
        for i in stamps:
            values[i] = iso(values[i])
        yield dict(zip(names, values, strict=True))


def iter_records(
    warehouse: Warehouse, kind: ExportKind, filters: Filters = Filters()
) -> Iterator[dict[str, Any]]:
    """The export's rows as the JSON lines format writes them."""
    return _records(kind, iter_rows(warehouse, kind, filters))


def iter_items(warehouse: Warehouse) -> Iterator[dict[str, Any]]:
    """Every item, tombstoned ones included (`deleted_at` set), as JSON-ready dicts."""
    return iter_records(warehouse, ITEMS)


def iter_transitions(warehouse: Warehouse) -> Iterator[dict[str, Any]]:
    """Every transition of the live items, in each item's order, as JSON-ready dicts."""
    return iter_records(warehouse, TRANSITIONS)


def write_jsonl(kind: ExportKind, rows: Iterable[tuple[Any, ...]], out: TextIO) -> int:
    """One JSON object per line; returns how many rows."""
    count = 0
    for record in _records(kind, rows):
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
    return count


def write_csv(kind: ExportKind, rows: Iterable[tuple[Any, ...]], out: TextIO) -> int:
    """A header, then one line per row, nulls as empty fields and text that a spreadsheet
    would run as a formula quoted (`syncd.csvsafe`); returns how many rows."""
    records = (record.values() for record in _records(kind, rows))
    return write_rows(out, kind.columns, records, lineterminator="\n")


def write_parquet(
    kind: ExportKind,
    rows: Iterable[tuple[Any, ...]],
    sink: str | Path,
    *,
    group_rows: int = GROUP_ROWS,
) -> int:
    """The rows as a Parquet file with the kind's typed schema, in row groups of
    `group_rows`; no rows give a valid file with the schema. Returns how many rows.

    Rows become Arrow arrays `BATCH_ROWS` at a time, and a row group is written once it is
    full, so memory holds one row group in Arrow's compact form and one batch of Python
    rows, whatever the number of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if group_rows < 1:
        raise ValueError(f"group_rows must be positive, not {group_rows}")
    schema = kind.arrow_schema()
    count = 0
    with pq.ParquetWriter(str(sink), schema) as writer:
        group: list[pa.RecordBatch] = []
        grouped = 0
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == min(BATCH_ROWS, group_rows - grouped):
                group.append(_record_batch(schema, batch))
                grouped += len(batch)
                batch = []
                if grouped == group_rows:
                    writer.write_table(pa.Table.from_batches(group), row_group_size=grouped)
                    count += grouped
                    group, grouped = [], 0
        if batch:
            group.append(_record_batch(schema, batch))
            grouped += len(batch)
        if group:
            writer.write_table(pa.Table.from_batches(group), row_group_size=grouped)
            count += grouped
    return count


def _record_batch(schema: pa.Schema, rows: Sequence[tuple[Any, ...]]) -> pa.RecordBatch:
    import pyarrow as pa

    columns = zip(*rows, strict=True)
    arrays = [
        pa.array(values, type=field.type) for values, field in zip(columns, schema, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class OutputError(ValueError):
    """An export cannot go where it was asked to (e.g. Parquet to a terminal)."""


def is_terminal(path: str | Path) -> bool:
    """Whether `path` names a terminal device (e.g. /dev/tty, /dev/stdout on a console)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    if not stat.S_ISCHR(mode):
        return False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.isatty(fd)
    finally:
        os.close(fd)


def check_output(fmt: str, path: str | Path | None) -> None:
    """Refuse an output an export cannot write (OutputError, one sentence): an unknown
    format, a directory, or Parquet (binary, and written with seeks) anywhere but a file."""
    if fmt not in FORMATS:
        raise OutputError(f"unknown export format {fmt!r}, expected one of {FORMATS}")
    if path is not None and Path(path).is_dir():
        raise OutputError(f"{path} is a directory: give a file name")
    if fmt != "parquet":
        return
    if path is None or str(path) in ("", "-"):
        raise OutputError("--format parquet writes a binary file, not stdout: give --output FILE")
    if is_terminal(path):
        raise OutputError(f"--format parquet writes a binary file, and {path} is a terminal")
    if Path(path).exists() and not Path(path).is_file():
        raise OutputError(f"--format parquet writes a regular file, and {path} is not one")


def export(
    warehouse: Warehouse,
    kind: ExportKind,
    fmt: str,
    *,
    out: TextIO | None = None,
    path: str | Path | None = None,
    filters: Filters = Filters(),
) -> int:
    """Write one export to the text stream `out` (jsonl, csv) or to the file `path` (any
    format); returns how many rows. A Parquet file is written beside `path` under a
    temporary name and moved over it when complete, so a failed export leaves no partial
    file behind."""
    check_output(fmt, path)
    filters.check(kind)
    rows = iter_rows(warehouse, kind, filters)
    if fmt != "parquet":
        write = write_jsonl if fmt == "jsonl" else write_csv
        if path is None:
            if out is None:
                raise OutputError("an export needs an output stream or a file")
            return write(kind, rows, out)
        with open(path, "w", encoding="utf-8", newline="") as handle:
            return write(kind, rows, handle)
    assert path is not None  # check_output refused the rest
    target = Path(path)
    # created as open() would create the file (mode 0666 less the umask), under a name no
    # other export uses
    partial = target.with_name(f".{target.name}.{secrets.token_hex(6)}.partial")
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        count = write_parquet(kind, rows, partial)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count


def metric_record_flat(row: MetricRow | dict[str, Any]) -> dict[str, Any]:
    """A metric row (or its JSON record) flattened for CSV: nested stats become prefixed
    columns."""
    data = row if isinstance(row, dict) else row.to_json()
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("flow_time", "age"):
            for sub, sub_value in value.items():
                flat[f"{key}_{sub}"] = sub_value
        elif key in (
            "distribution",
            "load_distribution",
            "target_distribution",
            "distribution_deviation",
        ):
            for flow_type in FLOW_TYPES:
                flat[f"{key}_{flow_type}"] = (value or {}).get(flow_type) if value else None
        else:
            flat[key] = value
    return flat
