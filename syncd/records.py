"""What every connector does with a page of tracker records, written once.

- `changed`: drop records the warehouse already holds at the same `updated` time (the
  lookback window repeats some every run) and repeats of one id within the page;
- `newest`: the newest `updated` seen, for the stream's next watermark;
- `parse_all`: turn records into flow items, skipping (logged with source, stream and key,
  and counted) the ones that cannot be parsed, so one bad record never fails a page;
- `SkipHold`: what the sync engine does about skipped records — keep the stream's watermark
  from passing them, so the next run lists them again, until they parse or have failed
  `max_passes` listing passes in a row (docs/architecture.md, "Skipped records").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Any, TypeVar

import structlog

from syncd.contract import Cursor, Page, RunContext
from syncd.domain import FlowItem, parse_timestamp
from syncd.errors import SkippableRecord

log = structlog.get_logger("syncd.records")

Record = Mapping[str, Any]
T = TypeVar("T")

#: keys of the records `parse_all` skipped, collected for the `SkipHold` pulling the pages
_skipped_keys: ContextVar[list[str] | None] = ContextVar("syncd_skipped_keys", default=None)


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
            key = key_of(entry) or exc.key
            log.error(event, source=source, stream=stream, key=key, error=str(exc))
            collected = _skipped_keys.get()
            if collected is not None:
                collected.append(key or UNNAMED)
    return items, skipped


#: the cursor-state key the engine keeps a stream's hold under (connectors never use it)
HOLD_KEY = "skip_hold"
#: listing passes a record may fail in a row before it is given up: the default of
#: `[sync] skip_retry_passes`
MAX_PASSES = 3
#: skipped keys remembered per stream; more are counted under UNNAMED
MAX_KEYS = 100
UNNAMED = "(unnamed)"


class SkipHold:
    """Keeps one stream's watermark from passing records its connector skipped.

    A connector moves the watermark only on the last page of a listing pass (mid-pass pages
    carry the watermark the pass started from, plus where to resume). When a pass skips a
    record, the watermark is held where the pass started: every page committed from then
    on carries the held watermark and, in its cursor state under `HOLD_KEY`, the keys skipped
    so far, so the next run lists the same span again and re-parses the records that are not
    in the warehouse. When a pass ends, each record skipped in it gets a strike; the hold is
    released when a pass ends with nothing skipped (the watermark then moves to where the
    connector put it) or when every record still skipped has failed `max_passes` passes in
    a row. Those are given up: logged with their keys, and remembered so that while they
    stay broken (the lookback lists them again) they do not start a new hold; one that
    parses, or is no longer listed, is forgotten.

    The engine pulls a stream's pages through `pages`, which also yields, after the last
    page of a pass that ended with skips or a hold, a page without data settling the cursor.
    """

    def __init__(
        self, cursor: Cursor | None, *, source: str, stream: str, max_passes: int = MAX_PASSES
    ) -> None:
        self.source = source
        self.stream = stream
        self.max_passes = max_passes
        self._start = cursor
        raw = cursor.state.get(HOLD_KEY) if cursor is not None else None
        state: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        self._active = "watermark" in state
        held = state.get("watermark")
        self._held = datetime.fromisoformat(held) if isinstance(held, str) else None
        strikes = state.get("strikes")
        self._strikes: dict[str, int] = (
            {str(k): int(v) for k, v in strikes.items()} if isinstance(strikes, Mapping) else {}
        )
        self._current = _keys(state.get("current"))
        self._given_up = _keys(state.get("given_up"))
        self._collected: list[str] = []
        self._last: Cursor | None = None

    @property
    def active(self) -> bool:
        """Whether the watermark is being held."""
        return self._active

    def pages(self, pages: Iterator[Page]) -> Iterator[Page]:
        """`pages` with their cursors held while skipped records wait for another pass, and
        a last page without data settling the cursor when the pass had skips or a hold."""
        while True:
            token = _skipped_keys.set(self._collected)
            try:
                page = next(pages)
            except StopIteration:
                break
            finally:
                _skipped_keys.reset(token)
            yield dataclasses.replace(page, cursor=self._cursor_for(page))
        settled = self._settle()
        if settled is not None:
            yield Page(raws=[], items=[], cursor=settled)

    def _cursor_for(self, page: Page) -> Cursor:
        keys, self._collected[:] = list(self._collected), []
        if page.skipped > len(keys):
            keys.append(UNNAMED)
        self._last = _without_hold(page.cursor)
        for key in keys:
            entry = key if len(self._current) < MAX_KEYS else UNNAMED
            if entry not in self._current:
                self._current.append(entry)
            if entry not in self._given_up and not self._active:
                self._active = True
                self._held = self._start.watermark if self._start is not None else None
        return self._cursor(self._last)

    def _cursor(self, cursor: Cursor) -> Cursor:
        """`cursor` with the hold applied and recorded (unchanged when there is none)."""
        state: dict[str, Any] = {}
        watermark = cursor.watermark
        if self._active:
            if watermark is None or self._held is None or watermark > self._held:
                watermark = self._held
            state["watermark"] = self._held.isoformat() if self._held is not None else None
            state["strikes"] = dict(self._strikes)
        if self._current:
            state["current"] = list(self._current)
        if self._given_up:
            state["given_up"] = list(self._given_up)
        if not state:
            return cursor
        return dataclasses.replace(
            cursor, watermark=watermark, state={**cursor.state, HOLD_KEY: state}
        )

    def _settle(self) -> Cursor | None:
        """The cursor ending a pass (None when it had neither skips nor a hold)."""
        if not (self._active or self._current or self._given_up):
            return None
        base = self._last or _without_hold(self._start or Cursor())
        bound = log.bind(source=self.source, stream=self.stream)
        held = self._held.isoformat() if self._held is not None else None
        still_given_up = [key for key in self._current if key in self._given_up]
        strikes = {
            key: self._strikes.get(key, 0) + 1 for key in self._current if key not in self._given_up
        }
        self._current, self._given_up = [], still_given_up
        if any(n < self.max_passes for n in strikes.values()):
            self._strikes = strikes
            bound.warning(
                "sync.skipped_held",
                records=len(strikes),
                keys=sorted(strikes)[:20],
                passes=max(strikes.values()),
                watermark=held,
            )
            return self._cursor(base)
        if strikes:
            bound.error(
                "sync.skipped_given_up",
                records=len(strikes),
                keys=sorted(strikes)[:20],
                passes=self.max_passes,
                action="the watermark moves on; they are tried again when they change",
            )
            self._given_up.extend(k for k in strikes if len(self._given_up) < MAX_KEYS)
        elif self._active:
            bound.info("sync.skipped_recovered", records=len(self._strikes), watermark=held)
        self._active, self._held, self._strikes = False, None, {}
        return self._cursor(base)


def _keys(value: Any) -> list[str]:
    return [str(key) for key in value] if isinstance(value, list) else []


def _without_hold(cursor: Cursor) -> Cursor:
    if HOLD_KEY not in cursor.state:
        return cursor
    return dataclasses.replace(
        cursor, state={k: v for k, v in cursor.state.items() if k != HOLD_KEY}
    )
