"""The sync engine: one pass over the configured sources.

For each source it runs the connector's streams from their cursors and commits every page
(raw responses, items, transitions, cursor) in one transaction, so a crash between pages loses
nothing and duplicates nothing. One failing source does not stop the others.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from syncd.config import Config, SourceConfig
from syncd.contract import Connector, Cursor, Page, RunContext
from syncd.errors import Interrupted, SyncdError
from syncd.http import HttpClient
from syncd.records import SkipHold
from syncd.registry import connector_class
from syncd.streams import JqlMatcher, ValueStreams, reassign_source
from syncd.warehouse.store import Warehouse

log = structlog.get_logger("syncd.sync")


@dataclass(slots=True)
class SourceResult:
    """What one source's pass did, for the CLI summary and the sync_runs table."""

    source: str
    run_id: str
    ok: bool = True
    #: ok | failed | interrupted (stopped by a signal; the committed pages stand)
    status: str = "ok"
    pages: int = 0
    items: int = 0
    skipped: int = 0
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    error: str | None = None
    streams: dict[str, int] = field(default_factory=dict)


def make_connector(source: SourceConfig, http: HttpClient) -> Connector:
    """Instantiate the registered connector for a source."""
    connector: Connector = connector_class(source.kind)(source, http)
    return connector


def sync_source(
    config: Config,
    source: SourceConfig,
    warehouse: Warehouse,
    http: HttpClient,
    *,
    full: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    should_stop: Callable[[], bool] = lambda: False,
    progress: Callable[[SourceResult], None] | None = None,
    resync_since: datetime | None = None,
) -> SourceResult:
    """Sync one source. Never raises for tracker or data problems: they fail the result.

    `should_stop` is asked after every committed page; an `Interrupted` raised from inside the
    connector (the HTTP layer does when the process is stopping) abandons the page in flight.
    `progress` is called after every committed page. With `resync_since`, items written
    before that time count as unknown, so they are fetched again even if unchanged."""
    run_id = uuid.uuid4().hex[:12]
    started = clock()
    result = SourceResult(source=source.name, run_id=run_id)
    bound = log.bind(source=source.name, run_id=run_id)
    requests_before, retries_before = http.stats.requests, http.stats.retries
    t0 = time.perf_counter()
    warehouse.start_run(run_id, source.name, started)
    structlog.contextvars.bind_contextvars(source=source.name, run_id=run_id)
    bound.info("sync.start", kind=source.kind, full=full)
    try:
        connector = make_connector(source, http)
        streams = ValueStreams.from_config(config)
        matcher = connector if isinstance(connector, JqlMatcher) else None
        # items stored under an older value stream configuration move first
        reassign_source(warehouse, streams, source.name, matcher)
        for stream in connector.streams():
            slog = bound.bind(stream=stream)
            structlog.contextvars.bind_contextvars(stream=stream)
            cursor = None if full else warehouse.get_cursor(source.name, stream)
            context = RunContext(
                run_id=run_id,
                started_at=_pass_started(cursor, started),
                lookback=config.sync.lookback,
                full=full,
                known_updated=(lambda ids: {})
                if full
                else (
                    lambda ids: warehouse.known_updated(source.name, ids, synced_since=resync_since)
                ),
            )
            # skipped records hold the watermark back until a later pass parses them
            hold = SkipHold(
                cursor,
                source=source.name,
                stream=stream,
                max_passes=config.sync.skip_retry_passes,
            )
            fetched = _keep_pass_start(connector.fetch(stream, cursor, context), context)
            for page in hold.pages(fetched):
                page = streams.assign_page(source.name, page, matcher)
                written = warehouse.commit_page(
                    source=source.name, stream=stream, run_id=run_id, page=page, now=clock()
                )
                result.pages += 1
                result.items += written
                result.skipped += page.skipped
                result.streams[stream] = result.streams.get(stream, 0) + written
                slog.info(
                    "sync.page",
                    items=written,
                    skipped=page.skipped,
                    raws=len(page.raws),
                    watermark=_iso(page.cursor.watermark),
                )
                if progress is not None:
                    progress(result)
                if should_stop():
                    slog.warning("sync.stopping", reason="stop requested after a committed page")
                    result.status = "interrupted"
                    break
            if result.status == "interrupted":
                break
    except Interrupted as exc:
        result.status = "interrupted"
        result.error = http.scrub(str(exc))
    except SyncdError as exc:
        result.ok = False
        result.error = http.scrub(str(exc))
    except Exception as exc:  # a bug, not a tracker problem: keep the other sources going
        result.ok = False
        result.error = http.scrub(f"internal error: {type(exc).__name__}: {exc}")
        bound.exception("sync.internal_error")
    finally:
        structlog.contextvars.unbind_contextvars("source", "run_id", "stream")
    if not result.ok:
        result.status = "failed"
    result.seconds = time.perf_counter() - t0
    result.requests = http.stats.requests - requests_before
    result.retries = http.stats.retries - retries_before
    warehouse.finish_run(
        run_id,
        status=result.status,
        finished_at=clock(),
        counts={
            "pages": result.pages,
            "items": result.items,
            "skipped": result.skipped,
            "requests": result.requests,
            "retries": result.retries,
        },
        error=result.error,
    )
    if result.status == "interrupted":
        bound.warning("sync.interrupted", items=result.items, pages=result.pages)
    elif result.ok:
        if config.warehouse.raw_retention_days:
            warehouse.prune_raw(
                source.name, clock() - timedelta(days=config.warehouse.raw_retention_days)
            )
        bound.info(
            "sync.done",
            items=result.items,
            pages=result.pages,
            requests=result.requests,
            seconds=round(result.seconds, 3),
        )
    else:
        bound.error("sync.failed", error=result.error, items=result.items, pages=result.pages)
    return result


def sync_all(
    config: Config,
    warehouse: Warehouse,
    http: HttpClient,
    *,
    sources: Sequence[str] | None = None,
    full: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[SourceResult]:
    """One pass over the selected (default: all enabled) sources."""
    selected = [config.source(name) for name in sources] if sources else config.enabled_sources
    return [sync_source(config, s, warehouse, http, full=full, clock=clock) for s in selected]


#: cursor-state key: when the pass over the stream that this cursor resumes began
PASS_STARTED = "_pass_started"


def _pass_started(cursor: Cursor | None, now: datetime) -> datetime:
    """The start of the pass a cursor resumes (a run cut off mid-stream), else `now`. A
    resumed pass cannot see changes to the records it passed before the cut, so its final
    watermark must not move beyond the time the pass first began."""
    text = cursor.state.get(PASS_STARTED) if cursor is not None else None
    if not text:
        return now
    try:
        return min(datetime.fromisoformat(str(text)), now)
    except ValueError:
        return now


def _keep_pass_start(pages: Iterator[Page], context: RunContext) -> Iterator[Page]:
    """Mid-pass cursors remember when their pass began (see `_pass_started`)."""
    for page in pages:
        if not page.cursor.complete:
            state = {**page.cursor.state, PASS_STARTED: context.started_at.isoformat()}
            page = dataclasses.replace(page, cursor=dataclasses.replace(page.cursor, state=state))
        yield page


def _iso(value: datetime | None) -> Any:
    return value.isoformat() if value else None
