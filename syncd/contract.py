"""The connector contract: what every tracker connector provides to the sync engine.

A connector knows one tracker and nothing about storage. The engine asks it to check the
connection, names the streams it syncs, and pulls pages from a cursor. Each page carries the
raw responses it was built from (kept in the warehouse so a mapping change can re-normalise
without calling the tracker), the normalised items, and the cursor that resumes *after* it.
The engine writes all three in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from syncd.domain import FlowItem

if TYPE_CHECKING:
    from syncd.config import SourceConfig
    from syncd.http import HttpClient


@dataclass(frozen=True, slots=True)
class RawPage:
    """One tracker response as fetched. `params` holds the query or JSON body (never
    credentials); `body` the decoded JSON."""

    stream: str
    method: str
    url: str
    params: Mapping[str, Any]
    body: Any
    fetched_at: datetime


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a stream resumes. `watermark` is the tracker time up to which everything is
    known; `state` holds connector-specific resume data (e.g. a page token) and must be
    JSON-serialisable."""

    watermark: datetime | None = None
    state: Mapping[str, Any] = field(default_factory=dict)
    #: False while a pass over the stream is under way (the cursor says where to resume it);
    #: True when this page ended the pass. The sync engine keeps the time the pass began
    #: across resumptions, so a pass resumed after a crash is bounded by its first start.
    complete: bool = True


@dataclass(slots=True)
class Page:
    """A unit of work the engine commits atomically."""

    raws: list[RawPage]
    items: list[FlowItem]
    cursor: Cursor
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class RunContext:
    """What a connector needs to know about the run it is part of."""

    run_id: str
    started_at: datetime
    lookback: timedelta
    full: bool
    #: stored `updated_at` of items already in the warehouse, by tracker id: lets a connector
    #: skip fetching histories of items that have not changed since they were stored.
    known_updated: Callable[[Sequence[str]], Mapping[str, datetime]]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of `syncd check`: ok or a problem, in words a user can act on."""

    ok: bool
    what: str


@runtime_checkable
class Connector(Protocol):
    """A tracker connector. Instances are made by the class itself from a source config and
    the shared HTTP client: `Connector(config, http)`."""

    kind: ClassVar[str]

    def check(self) -> list[CheckResult]:
        """Verify reachability, authentication and scope; never raise for a tracker problem,
        report it as a failed CheckResult instead."""
        ...

    def streams(self) -> Sequence[str]:
        """Names of the streams this source syncs, each with its own cursor."""
        ...

    def fetch(self, stream: str, cursor: Cursor | None, run: RunContext) -> Iterator[Page]:
        """Yield pages of items changed since `cursor`, each with the cursor resuming after it.
        With `run.full`, ignore the cursor's watermark and fetch everything in scope."""
        ...


ConnectorFactory = Callable[["SourceConfig", "HttpClient"], Connector]


@runtime_checkable
class Reconcilable(Protocol):
    """A connector that can list the ids of every item in a stream's scope cheaply (ids only,
    large pages, no histories), for the reconciliation pass that tombstones deleted items."""

    def ids(self, stream: str) -> Iterator[str]:
        """Every tracker id in the stream's scope now. Raise on any failure: a partial listing
        must never be taken as complete."""
        ...
