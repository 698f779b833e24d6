"""The reconciliation pass: find items deleted in the tracker (or gone from the source's scope)
and tombstone them.

Listing every id in scope is cheap (ids only, large pages) but not free, so it runs on its own
schedule (`[daemon] reconcile_every`, default daily) or by `syncd reconcile`. Items are
tombstoned only after every stream of the source was listed to the end: a listing cut short by
an error, a rate limit or a stop changes nothing. A tombstoned item keeps its row and history
(`deleted_at` set), counts in no metric, and is revived if it shows up again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from syncd.config import SourceConfig
from syncd.contract import Reconcilable
from syncd.errors import Interrupted, SyncdError
from syncd.http import HttpClient
from syncd.sync import make_connector
from syncd.warehouse.store import Warehouse

log = structlog.get_logger("syncd.reconcile")


@dataclass(slots=True)
class ReconcileResult:
    source: str
    ok: bool = True
    listed: int = 0
    tombstoned: int = 0
    revived: int = 0
    requests: int = 0
    seconds: float = 0.0
    error: str | None = None


def reconcile_source(
    source: SourceConfig,
    warehouse: Warehouse,
    http: HttpClient,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ReconcileResult:
    """List every id in the source's scope; tombstone what is gone, revive what is back."""
    result = ReconcileResult(source=source.name)
    requests_before = http.stats.requests
    t0 = time.perf_counter()
    bound = log.bind(source=source.name)
    try:
        connector = make_connector(source, http)
        if not isinstance(connector, Reconcilable):
            raise SyncdError(f"the {source.kind} connector cannot list ids: no reconciliation")
        present: set[str] = set()
        for stream in connector.streams():
            present.update(connector.ids(stream))
        result.listed = len(present)
        result.tombstoned, result.revived = warehouse.reconcile(source.name, present, clock())
    except Interrupted as exc:
        result.ok, result.error = False, str(exc)
    except SyncdError as exc:
        result.ok, result.error = False, http.scrub(str(exc))
    except Exception as exc:  # a bug: keep the daemon and the other sources going
        result.ok = False
        result.error = http.scrub(f"internal error: {type(exc).__name__}: {exc}")
        bound.exception("reconcile.internal_error")
    result.seconds = time.perf_counter() - t0
    result.requests = http.stats.requests - requests_before
    if result.ok:
        bound.info(
            "reconcile.done",
            listed=result.listed,
            tombstoned=result.tombstoned,
            revived=result.revived,
            requests=result.requests,
        )
    else:
        bound.error("reconcile.failed", error=result.error, nothing_changed=True)
    return result
