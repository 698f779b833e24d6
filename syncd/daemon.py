"""`syncd run`: every source on its own schedule, for months.

One APScheduler job per enabled source (interval with jitter, or a crontab line), never two
runs of one source at once (`max_instances=1`, coalesced; across processes, a per-source lock
in the warehouse, see `syncd.locks`), a first run at start-up. A source whose run fails waits
twice its interval, then four times, … up to `[daemon] backoff_max`, while the others go on.

Crash safety comes from the sync engine (every page committed with its cursor in one
transaction); this module adds the stopping side: SIGTERM/SIGINT set one event that the sync
loop asks after every committed page and the HTTP layer checks before every request and
during every wait, so the page in flight is abandoned (its cursor never moved) and the process
exits 0 within `[daemon] stop_grace`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from syncd.config import Config, SourceConfig
from syncd.http import HttpClient
from syncd.locks import METRICS_LOCK, Locks
from syncd.metrics.incremental import UpdateStats, update_metrics
from syncd.reconcile import ReconcileResult, reconcile_source
from syncd.renormalise import (
    CONFIG_KEY,
    RESYNC_KEY,
    RenormaliseResult,
    assess,
    config_record,
    renormalise_source,
)
from syncd.service import Readiness, StatusServer, Telemetry, readiness
from syncd.streams import ValueStreams, write_tables
from syncd.sync import SourceResult, sync_source
from syncd.warehouse.store import Warehouse

if TYPE_CHECKING:
    from syncd.api.server import ApiServer

log = structlog.get_logger("syncd.daemon")

Progress = Callable[[SourceResult], None]
_RECONCILED = "reconciled_at:"


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a source runs, and the interval its readiness and backoff are measured in."""

    trigger: BaseTrigger
    interval: timedelta
    describe: str


def schedule_of(source: SourceConfig, config: Config, now: datetime) -> Schedule:
    jitter = int(config.daemon.jitter.total_seconds()) or None
    if source.cron:
        cron = CronTrigger.from_crontab(source.cron, timezone=UTC)
        cron.jitter = jitter
        first = cron.get_next_fire_time(None, now)
        second = cron.get_next_fire_time(first, first + timedelta(seconds=1)) if first else None
        interval = (second - first) if first and second else config.daemon.every
        return Schedule(cron, interval, f"cron {source.cron!r}")
    every = source.every or config.daemon.every
    trigger = IntervalTrigger(seconds=every.total_seconds(), jitter=jitter, timezone=UTC)
    return Schedule(trigger, every, f"every {every}")


class Daemon:
    """Runs sources: once each (`run_once`), or on their schedules until stopped (`serve`)."""

    def __init__(
        self,
        config: Config,
        warehouse: Warehouse,
        *,
        telemetry: Telemetry | None = None,
        progress: Progress | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.warehouse = warehouse
        self.telemetry = telemetry or Telemetry()
        self.progress = progress
        self.clock = clock
        self.locks = Locks(warehouse)
        self.stopping = threading.Event()
        self.failures: dict[str, int] = {}
        self._clients: dict[str, HttpClient] = {}
        self._active: set[str] = set()
        self._idle = threading.Condition()
        self._scheduler: BackgroundScheduler | None = None
        self._schedules: dict[str, Schedule] = {}

    def __repr__(self) -> str:
        return f"Daemon(sources={[s.name for s in self.config.enabled_sources]})"

    # -- one run of one source ----------------------------------------------------------

    def _client(self, source: SourceConfig) -> HttpClient:
        """One HTTP client per source: its own pool, stats and secrets."""
        client = self._clients.get(source.name)
        if client is None:
            client = HttpClient(self.config.http, interrupt=self.stopping)
            self._clients[source.name] = client
        return client

    def run_source(
        self, source: SourceConfig, *, full: bool = False, metrics: bool = True
    ) -> SourceResult | None:
        """Sync one source under its lock, then (with `metrics`) bring the metric rows up to
        date. None when another process holds the source's lock or the daemon is stopping."""
        if self.stopping.is_set():
            return None
        with self._idle:
            self._active.add(source.name)
        try:
            with self.locks.hold(source.name) as held:
                if not held:
                    log.info("sync.locked", source=source.name, reason="another syncd runs it")
                    self.telemetry.runs.labels(source.name, "locked").inc()
                    return None
                http = self._client(source)
                resync_since = None if full else self._resync_since(source)
                before = http.stats.snapshot()
                result = sync_source(
                    self.config,
                    source,
                    self.warehouse,
                    http,
                    full=full,
                    clock=self.clock,
                    should_stop=self.stopping.is_set,
                    progress=self.progress,
                    resync_since=resync_since,
                )
                self.telemetry.record_run(result, before, http.stats)
                if result.status == "ok" and resync_since is not None:
                    self._finish_resync(source, http)
            self._count_outcome(result)
            if metrics and not self.stopping.is_set():
                self.update_metrics()
            return result
        finally:
            with self._idle:
                self._active.discard(source.name)
                self._idle.notify_all()

    def _resync_since(self, source: SourceConfig) -> datetime | None:
        """Bring the stored items in line with a changed scope or mapping (re-normalised from
        the raw pages where they can be, else a resync starts: cursors forgotten, every item
        refetched, resumable across runs) and return when the pending resync began; None
        when there is none. Called under the source's lock."""
        pending, _, _ = self._follow_config(source)
        return datetime.fromisoformat(pending) if pending else None

    def _follow_config(
        self, source: SourceConfig, *, force: bool = False
    ) -> tuple[str | None, RenormaliseResult | None, str | None]:
        """Act on the difference between the configuration the source's items reflect and
        `source`: nothing, re-normalising (also when `force`), or starting a resync. Returns
        the pending resync's start (ISO), what re-normalising did (if it ran) and why a
        resync started (if one did)."""
        key = CONFIG_KEY + source.name
        stored = self.warehouse.get_meta(key)
        pending = self.warehouse.get_meta(RESYNC_KEY + source.name)
        record = config_record(source)
        change = assess(stored, source)
        outcome: RenormaliseResult | None = None
        reason: str | None = None
        if change.action == "resync":
            reason = change.reason
        elif change.action in ("renormalise", "upgrade") or force:
            if change.action != "none":
                log.info(
                    "sync.config_changed",
                    source=source.name,
                    action="re-normalise from the raw pages",
                    reason=change.reason,
                )
            outcome = renormalise_source(
                self.config,
                source,
                self.warehouse,
                clock=self.clock,
                left=change.left,
                record=record,
            )
            if outcome.status != "ok" and change.action == "upgrade":
                # not worth a resync: the items stay as they are until they next change
                log.warning(
                    "sync.upgrade_skipped",
                    source=source.name,
                    reason=f"{change.reason}, and re-normalising is impossible: {outcome.reason}",
                )
                with self.warehouse.begin() as conn:
                    self.warehouse.set_meta(conn, key, record)
            elif outcome.status != "ok":
                reason = f"{change.reason}, and re-normalising is impossible: {outcome.reason}"
        elif stored != record:  # first sight, or recorded in an older form
            with self.warehouse.begin() as conn:
                self.warehouse.set_meta(conn, key, record)
        if reason is not None:
            pending = self.clock().isoformat()
            log.warning(
                "sync.config_changed",
                source=source.name,
                action="resync: every item in scope is fetched again, then reconciled",
                reason=reason,
            )
            self.warehouse.start_resync(
                source.name, {key: record, RESYNC_KEY + source.name: pending}
            )
        return pending, outcome, reason

    def _finish_resync(self, source: SourceConfig, http: HttpClient) -> None:
        """After a complete resync: tombstone what the new scope no longer holds."""
        outcome = reconcile_source(source, self.warehouse, http, clock=self.clock)
        self.warehouse.delete_meta(RESYNC_KEY + source.name)  # the items are current either way
        if outcome.ok:
            self.telemetry.reconciled.labels(source.name, "tombstoned").inc(outcome.tombstoned)
            self.telemetry.reconciled.labels(source.name, "revived").inc(outcome.revived)

    def reconcile(self, source: SourceConfig) -> ReconcileResult | None:
        """List the source's ids and tombstone what is gone, under the source's lock (None
        when another process holds it or the daemon is stopping)."""
        if self.stopping.is_set():
            return None
        with self._idle:
            self._active.add(f"reconcile:{source.name}")
        try:
            with self.locks.hold(source.name) as held:
                if not held:
                    log.info("reconcile.locked", source=source.name)
                    return None
                result = reconcile_source(
                    source, self.warehouse, self._client(source), clock=self.clock
                )
                if result.ok:
                    with self.warehouse.begin() as conn:
                        self.warehouse.set_meta(
                            conn, _RECONCILED + source.name, self.clock().isoformat()
                        )
            self.telemetry.reconciled.labels(source.name, "tombstoned").inc(result.tombstoned)
            self.telemetry.reconciled.labels(source.name, "revived").inc(result.revived)
            if (result.tombstoned or result.revived) and not self.stopping.is_set():
                self.update_metrics()
            return result
        finally:
            with self._idle:
                self._active.discard(f"reconcile:{source.name}")
                self._idle.notify_all()

    def renormalise(self, source: SourceConfig) -> RenormaliseResult | None:
        """Rebuild the source's items from its raw pages with its current configuration,
        under the source's lock (None when another process holds it or the daemon is
        stopping). Where the configuration changed in a way raw pages cannot serve, or they
        are missing, a resync is started instead (the next run fetches the source) and the
        result's status is `resync`, with the reason."""
        if self.stopping.is_set():
            return None
        with self._idle:
            self._active.add(f"renormalise:{source.name}")
        try:
            with self.locks.hold(source.name) as held:
                if not held:
                    log.info("renormalise.locked", source=source.name)
                    return None
                _, outcome, reason = self._follow_config(source, force=True)
            if reason is not None:
                outcome = outcome or RenormaliseResult(source=source.name)
                outcome.status, outcome.reason = "resync", reason
            assert outcome is not None
            return outcome
        finally:
            with self._idle:
                self._active.discard(f"renormalise:{source.name}")
                self._idle.notify_all()

    def _first_reconcile(self, name: str, now: datetime) -> datetime:
        """A daily pass survives restarts: due `reconcile_every` after the last one."""
        last = self.warehouse.get_meta(_RECONCILED + name)
        if last is None:
            return now + self.config.daemon.reconcile_every
        return max(now, datetime.fromisoformat(last) + self.config.daemon.reconcile_every)

    def update_metrics(self) -> UpdateStats:
        """Incremental metric update; one process at a time (the others wait their turn)."""
        with self.locks.hold(METRICS_LOCK, wait=True), self.telemetry.metric_updates.time():
            write_tables(self.warehouse, ValueStreams.from_config(self.config))
            stats = update_metrics(self.warehouse, as_of=self.clock())
        log.info("metrics.updated", full=stats.full, buckets=stats.buckets, rows=stats.rows)
        return stats

    def _count_outcome(self, result: SourceResult) -> None:
        name = result.source
        if result.status == "failed":
            self.failures[name] = self.failures.get(name, 0) + 1
        elif result.status == "ok":
            self.failures[name] = 0
        self.telemetry.failures.labels(name).set(self.failures.get(name, 0))

    def run_once(
        self, sources: Sequence[str] | None = None, *, full: bool = False
    ) -> list[SourceResult | None]:
        """Each selected (default: enabled) source once, one after the other; the metric rows
        are updated once at the end (by the caller: `update_metrics`)."""
        selected = (
            [self.config.source(name) for name in sources]
            if sources
            else self.config.enabled_sources
        )
        return [self.run_source(source, full=full, metrics=False) for source in selected]

    # -- on a schedule ------------------------------------------------------------------

    def backoff(self, name: str) -> timedelta:
        """How long a source waits after its latest run: its interval, doubled per
        consecutive failure, capped at `backoff_max` (but never below the interval)."""
        interval = self._schedules[name].interval
        failures = self.failures.get(name, 0)
        if failures == 0:
            return interval
        cap = max(self.config.daemon.backoff_max, interval)
        longer: timedelta = interval * (2 ** min(failures, 30))
        return min(longer, cap)

    def _job(self, name: str) -> None:
        source = self.config.source(name)
        result = self.run_source(source)
        if result is None or result.status != "failed" or self._scheduler is None:
            return
        delay = self.backoff(name)
        log.warning(
            "schedule.backoff",
            source=name,
            failures=self.failures[name],
            next_in_s=delay.total_seconds(),
            error=result.error,
        )
        if not self.stopping.is_set():
            self._scheduler.modify_job(name, next_run_time=self.clock() + delay)

    def start(self, *, paused: bool = False) -> None:
        """Schedule every enabled source, first runs now; return at once. `paused` schedules
        without running anything (for tests and inspection)."""
        now = self.clock()
        sources = self.config.enabled_sources
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max(1, self.config.daemon.workers))},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        for source in sources:
            schedule = schedule_of(source, self.config, now)
            self._schedules[source.name] = schedule
            scheduler.add_job(
                self._job,
                schedule.trigger,
                args=(source.name,),
                id=source.name,
                name=f"sync {source.name}",
                next_run_time=now,
            )
            log.info("schedule.added", source=source.name, schedule=schedule.describe)
            every = self.config.daemon.reconcile_every
            if every.total_seconds() > 0:
                jitter = int(self.config.daemon.jitter.total_seconds()) or None
                scheduler.add_job(
                    self.reconcile,
                    IntervalTrigger(seconds=every.total_seconds(), jitter=jitter, timezone=UTC),
                    args=(source,),
                    id=f"reconcile:{source.name}",
                    name=f"reconcile {source.name}",
                    next_run_time=self._first_reconcile(source.name, now),
                )
        self._scheduler = scheduler
        scheduler.start(paused=paused)

    @property
    def scheduler(self) -> BackgroundScheduler | None:
        return self._scheduler

    @property
    def alive(self) -> bool:
        return (
            self._scheduler is not None and self._scheduler.running and not self.stopping.is_set()
        )

    def readiness(self) -> Readiness:
        intervals = {name: s.interval for name, s in self._schedules.items()}
        return readiness(self.warehouse, intervals, self.clock())

    def stop(self) -> bool:
        """Stop taking runs, let the pages in flight end (abandoned at the next request or
        wait), up to `stop_grace`. True when every run ended in time."""
        self.stopping.set()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        deadline = self.config.daemon.stop_grace.total_seconds()
        with self._idle:
            ended = self._idle.wait_for(lambda: not self._active, timeout=deadline)
        for client in self._clients.values():
            if ended:
                client.close()
        if not ended:
            log.warning("daemon.stop_grace_exceeded", running=sorted(self._active))
        return bool(ended)

    def install_signals(self) -> dict[signal.Signals, Any]:
        """SIGTERM/SIGINT set `stopping` (from the main thread only); returns the handlers
        they replaced, for `restore_signals`."""

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.warning("daemon.stopping", signal=signal.Signals(signum).name)
            self.stopping.set()

        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        return previous

    @staticmethod
    def restore_signals(previous: dict[signal.Signals, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def serve(self, *, install_signals: bool = True) -> bool:
        """Run until SIGTERM/SIGINT (or `stop()` from another thread), with the status
        endpoint when configured. Returns what `stop()` returned."""
        previous = self.install_signals() if install_signals else {}
        server: StatusServer | None = None
        api: ApiServer | None = None
        try:
            if self.config.daemon.listen:
                server = StatusServer(
                    self.config.daemon.listen,
                    telemetry=self.telemetry,
                    alive=lambda: self.alive,
                    ready=self.readiness,
                )
                server.start()
            if self.config.api.enabled:  # the read-only API and dashboard, beside the syncs
                from syncd.api import build_server

                api = build_server(self.config, self.warehouse)
                api.start()
            self.start()
            log.info("daemon.started", sources=len(self._schedules))
            while not self.stopping.wait(1.0):
                pass
            return self.stop()
        finally:
            if api is not None:
                api.stop()
            if server is not None:
                server.stop()
            self.restore_signals(previous)
