"""Exports: items, transitions and metric rows as JSON lines or CSV, streamed."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import sqlalchemy as sa

from syncd.domain import FLOW_TYPES
from syncd.metrics.compute import MetricRow
from syncd.warehouse.store import ITEMS, TRANSITIONS, Warehouse

ITEM_COLUMNS = (
    "source",
    "key",
    "id",
    "kind",
    "title",
    "flow_type",
    "value_stream",
    "stage",
    "state",
    "created_at",
    "updated_at",
    "work_start",
    "work_end",
    "flow_time_s",
    "active_s",
    "wait_s",
    "deleted_at",
)
TRANSITION_COLUMNS = ("source", "key", "at", "from_state", "to_state", "from_stage", "to_stage")


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a trailing Z, to the millisecond when there is one."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    text = value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def iter_items(warehouse: Warehouse) -> Iterator[dict[str, Any]]:
    query = sa.select(ITEMS).order_by(ITEMS.c.source, ITEMS.c.key)
    with warehouse.engine.connect() as conn:
        for r in conn.execution_options(yield_per=2000).execute(query):
            yield {
                "source": r.source,
                "key": r.key,
                "id": r.item_id,
                "kind": r.kind,
                "title": r.title,
                "flow_type": r.flow_type,
                "value_stream": r.value_stream,
                "stage": r.stage,
                "state": r.state,
                "created_at": iso(r.created_at),
                "updated_at": iso(r.updated_at),
                "work_start": iso(r.work_start),
                "work_end": iso(r.work_end),
                "flow_time_s": r.flow_time_s,
                "active_s": r.active_s,
                "wait_s": r.wait_s,
                # set when a reconciliation found the item gone from the tracker (or from
                # the source's scope); such items count in no metric
                "deleted_at": iso(r.deleted_at),
            }


def iter_transitions(warehouse: Warehouse) -> Iterator[dict[str, Any]]:
    query = (
        sa.select(
            ITEMS.c.source,
            ITEMS.c.key,
            TRANSITIONS.c.at,
            TRANSITIONS.c.from_state,
            TRANSITIONS.c.to_state,
            TRANSITIONS.c.from_stage,
            TRANSITIONS.c.to_stage,
        )
        .join(
            TRANSITIONS,
            sa.and_(
                TRANSITIONS.c.source == ITEMS.c.source, TRANSITIONS.c.item_id == ITEMS.c.item_id
            ),
        )
        .where(ITEMS.c.deleted_at.is_(None))
        .order_by(ITEMS.c.source, ITEMS.c.key, TRANSITIONS.c.seq)
    )
    with warehouse.engine.connect() as conn:
        for r in conn.execution_options(yield_per=5000).execute(query):
            yield {
                "source": r.source,
                "key": r.key,
                "at": iso(r.at),
                "from_state": r.from_state,
                "to_state": r.to_state,
                "from_stage": r.from_stage,
                "to_stage": r.to_stage,
            }


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


def write_records(
    records: Iterator[dict[str, Any]], out: TextIO, fmt: str, columns: Sequence[str] | None = None
) -> int:
    """Write records as jsonl or csv; returns how many."""
    count = 0
    if fmt == "jsonl":
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
        return count
    writer: csv.DictWriter[str] | None = None
    for record in records:
        if writer is None:
            writer = csv.DictWriter(
                out, fieldnames=list(columns or record.keys()), lineterminator="\n"
            )
            writer.writeheader()
        writer.writerow({k: "" if v is None else v for k, v in record.items()})
        count += 1
    if writer is None and columns:
        csv.writer(out, lineterminator="\n").writerow(columns)
    return count
