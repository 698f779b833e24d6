"""What every connector does with a page of tracker records, written once.

- `changed`: drop records the warehouse already holds at the same `updated` time (the
  lookback window repeats some every run) and repeats of one id within the page;
- `newest`: the newest `updated` seen, for the stream's next watermark;
- `parse_all`: turn records into flow items, skipping (logged with source, stream and key,
  and counted) the ones that cannot be parsed, so one bad record never fails a page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import structlog

from syncd.contract import RunContext
from syncd.domain import FlowItem, parse_timestamp
from syncd.errors import SkippableRecord

log = structlog.get_logger("syncd.records")

Record = Mapping[str, Any]
T = TypeVar("T")


def _updated(record: Record, updated_of: Callable[[Record], Any]) -> datetime | None:
    try:
        return parse_timestamp(updated_of(record), "updated")
    except SkippableRecord:
        return None


def changed(
    records: Sequence[Record], run: RunContext, updated_of: Callable[[Record], Any]
) -> list[Record]:
    """Records not stored already with the same `updated`, each id once. A record whose
    `updated` cannot be read is kept, so the parser names the problem."""
    known = run.known_updated([str(r.get("id")) for r in records])
    out: list[Record] = []
    seen: set[str] = set()
    for record in records:
        record_id = str(record.get("id"))
        if record_id in seen:
            continue
        seen.add(record_id)
        updated = _updated(record, updated_of)
        if updated is None or known.get(record_id) != updated:
            out.append(record)
    return out


def newest(
    records: Iterable[Record], current: datetime | None, updated_of: Callable[[Record], Any]
) -> datetime | None:
    """The newest readable `updated` among `records` and `current`."""
    for record in records:
        updated = _updated(record, updated_of)
        if updated is not None and (current is None or updated > current):
            current = updated
    return current


def parse_all(
    entries: Iterable[T],
    parse: Callable[[T], FlowItem],
    *,
    event: str,
    source: str,
    stream: str,
    key_of: Callable[[T], str],
) -> tuple[list[FlowItem], int]:
    """Parse each entry; a SkippableRecord is logged as `event` and counted, not raised."""
    items: list[FlowItem] = []
    skipped = 0
    for entry in entries:
        try:
            items.append(parse(entry))
        except SkippableRecord as exc:
            skipped += 1
            log.error(
                event, source=source, stream=stream, key=key_of(entry) or exc.key, error=str(exc)
            )
    return items, skipped
