"""What `syncd run` tells operators: Prometheus metrics and a small HTTP endpoint.

- `/healthz`: the process is alive and its scheduler thread runs (200, else 503).
- `/readyz`: every enabled source has a successful run that finished within three of its
  intervals (200), else 503 with the sources that are behind. Read from the warehouse's
  `sync_runs`, so it holds across restarts and across several daemons on one warehouse.
- `/metrics`: the Prometheus text format (prometheus-client), one registry per daemon.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import sqlalchemy as sa
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from syncd.http import HttpStats
from syncd.sync import SourceResult
from syncd.warehouse.store import RUNS, Warehouse

log = structlog.get_logger("syncd.service")

READY_INTERVALS = 3


class Telemetry:
    """The daemon's Prometheus metrics. Label `source` everywhere; HTTP statuses by code."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter(
            "syncd_sync_runs", "Source runs by outcome", ["source", "outcome"], registry=r
        )
        self.duration = Histogram(
            "syncd_sync_run_duration_seconds",
            "Duration of source runs",
            ["source"],
            buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200),
            registry=r,
        )
        self.items = Counter("syncd_items_synced", "Flow items written", ["source"], registry=r)
        self.skipped = Counter(
            "syncd_records_skipped",
            "Tracker records skipped as unparseable",
            ["source"],
            registry=r,
        )
        self.requests = Counter(
            "syncd_http_requests",
            "HTTP requests to trackers by response status (0: no response)",
            ["source", "status"],
            registry=r,
        )
        self.retries = Counter("syncd_http_retries", "HTTP retries", ["source"], registry=r)
        self.waits = Counter(
            "syncd_http_wait_seconds",
            "Seconds spent waiting before retries and for rate-limit resets",
            ["source"],
            registry=r,
        )
        self.last_success = Gauge(
            "syncd_last_success_timestamp_seconds",
            "When the source's last successful run finished (Unix time)",
            ["source"],
            registry=r,
        )
        self.failures = Gauge(
            "syncd_source_consecutive_failures",
            "Failed runs of the source since its last success",
            ["source"],
            registry=r,
        )
        self.reconciled = Counter(
            "syncd_reconcile_items",
            "Items tombstoned (gone from the tracker) or revived by reconciliation",
            ["source", "change"],
            registry=r,
        )
        self.metric_updates = Histogram(
            "syncd_metric_update_duration_seconds",
            "Duration of flow-metric updates after runs",
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300),
            registry=r,
        )

    def __repr__(self) -> str:
        return "Telemetry()"

    def record_run(
        self, result: SourceResult, http_before: Mapping[str, Any], http_after: HttpStats
    ) -> None:
        """Count one finished run. `http_before` is the client's stats snapshot from before."""
        source = result.source
        self.runs.labels(source, result.status).inc()
        self.duration.labels(source).observe(result.seconds)
        self.items.labels(source).inc(result.items)
        self.skipped.labels(source).inc(result.skipped)
        before_status: Mapping[int, int] = http_before.get("by_status", {})
        for status, count in http_after.by_status.items():
            delta = count - before_status.get(status, 0)
            if delta:
                self.requests.labels(source, str(status)).inc(delta)
        no_response = (http_after.requests - sum(http_after.by_status.values())) - (
            int(http_before.get("requests", 0)) - sum(before_status.values())
        )
        if no_response > 0:
            self.requests.labels(source, "0").inc(no_response)
        self.retries.labels(source).inc(http_after.retries - int(http_before.get("retries", 0)))
        self.waits.labels(source).inc(
            max(http_after.wait_seconds - float(http_before.get("wait_seconds", 0.0)), 0.0)
        )
        if result.status == "ok":
            self.last_success.labels(source).set(datetime.now(UTC).timestamp())

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    sources: dict[str, dict[str, Any]]


def readiness(
    warehouse: Warehouse,
    intervals: Mapping[str, timedelta],
    now: datetime,
) -> Readiness:
    """Is every source's last successful run recent: within READY_INTERVALS intervals?"""
    with warehouse.engine.connect() as conn:
        rows = conn.execute(
            sa.select(RUNS.c.source, sa.func.max(RUNS.c.finished_at))
            .where(RUNS.c.status == "ok", RUNS.c.source.in_(list(intervals)))
            .group_by(RUNS.c.source)
        ).all()
    last_ok = {source: finished for source, finished in rows}
    report: dict[str, dict[str, Any]] = {}
    ready = True
    for source, interval in intervals.items():
        finished = last_ok.get(source)
        if finished is not None and finished.tzinfo is None:
            finished = finished.replace(tzinfo=UTC)
        fresh = finished is not None and now - finished <= interval * READY_INTERVALS
        ready = ready and fresh
        report[source] = {
            "ready": fresh,
            "last_success": finished.isoformat() if finished else None,
            "interval_s": interval.total_seconds(),
        }
    return Readiness(ready=ready, sources=report)


class StatusServer:
    """The operator endpoint on its own thread: `/healthz`, `/readyz`, `/metrics`."""

    def __init__(
        self,
        address: str,
        *,
        telemetry: Telemetry,
        alive: Callable[[], bool],
        ready: Callable[[], Readiness],
    ) -> None:
        host, _, port = address.rpartition(":")
        self.telemetry = telemetry
        self.alive = alive
        self.ready = ready
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._dispatch(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one log event per run, never per scrape

        self._httpd = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="syncd-status", daemon=True
        )

    def __repr__(self) -> str:
        return f"StatusServer({self.address!r})"

    @property
    def address(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()
        log.info("service.listening", address=self.address)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        if path == "/healthz":
            alive = self.alive()
            self._send(handler, 200 if alive else 503, b"ok\n" if alive else b"stopped\n")
        elif path == "/readyz":
            try:
                state = self.ready()
            except Exception as exc:  # the warehouse is down: not ready, say why
                body = {"ready": False, "error": f"{type(exc).__name__}: warehouse unreadable"}
                self._send(handler, 503, json.dumps(body).encode(), "application/json")
                return
            body = {"ready": state.ready, "sources": state.sources}
            self._send(
                handler, 200 if state.ready else 503, json.dumps(body).encode(), "application/json"
            )
        elif path == "/metrics":
            self._send(handler, 200, self.telemetry.render(), CONTENT_TYPE_LATEST)
        else:
            self._send(handler, 404, b"not found: try /healthz, /readyz or /metrics\n")

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
