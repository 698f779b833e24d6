"""Re-normalising: a source's items rebuilt from its stored raw pages, without the tracker.

Every tracker response a sync used is kept in `raw_pages` (method, URL, query or JSON body,
decoded body). When only the way responses become items changes — stages, flow types, the
resolutions, labels or statuses that mean a stage (`syncd.config.MAPPING_KEYS`) — each stored
item is rebuilt from the newest responses that concern it (its record in a listing, and the
history fetched for it in one run), with the new mapping, and written through the normal write
path, so its transitions, links and metric facts follow. No HTTP request is made.

What a change of a source's configuration costs (`assess`, recorded in `meta` under
`scope:<source>` as its scope and a digest of its mapping):

- mapping only → re-normalise;
- scope narrowed in a way stored items can be sorted by (repositories, organisations, projects
  or groups taken out; GitLab's `work_item_status` turned off) → re-normalise what stays,
  tombstone what left (`deleted_at` set: kept, out of every metric, flagged in exports);
- scope widened or changed otherwise (a JQL edit, another URL) → resync of that source only;
- a stored item whose responses are gone (pruned by `raw_retention_days`, or stored before
  raw pages were kept) or do not describe it as stored → resync of that source only.

Each connector supplies a `Rebuilder` (`connectors/<kind>/renormalise.py`, made by the
connector class's `rebuilder(config)`): it reads the raw pages oldest first (`scan`), says
which raw pages each item needs (`plan`) and rebuilds one item from them (`build`). Here is
what is common: reading raw pages in batches, comparing with the stored items, writing,
tombstoning, and the decision between re-normalising and resyncing.

A run writes its items a batch per transaction and records the new configuration last, so a
run cut short is simply done again by the next (rebuilding is idempotent; unchanged items are
not rewritten).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from syncd.config import (
    Config,
    SourceConfig,
    legacy_fingerprint,
    mapping_fingerprint,
    scope_of,
)
from syncd.domain import FlowItem
from syncd.errors import ConfigError, SkippableRecord
from syncd.metrics import ledger as metric_ledger
from syncd.streams import ValueStreams
from syncd.warehouse.reads import chunks
from syncd.warehouse.store import ITEMS, RAW, Warehouse

log = structlog.get_logger("syncd.renormalise")

#: meta key prefix: the scope and mapping digest the source's items reflect (JSON)
CONFIG_KEY = "scope:"
#: meta key prefix: a resync in progress, and when it began
RESYNC_KEY = "resync_since:"

#: items rebuilt and written per transaction
BATCH = 500

H = TypeVar("H")
T = TypeVar("T")

#: a stored item's project → True when it has left the source's narrowed scope
ScopeFilter = Callable[[str], bool]

_UNREAD = object()


@dataclass(slots=True, eq=False)
class StoredRaw:
    """One stored tracker response. `params` and `body` are decoded on first use; `memo`
    holds what a rebuilder derives from the page (an index of its records), for as long as
    the page stays cached."""

    id: int
    run_id: str
    stream: str
    method: str
    url: str
    params_text: str
    body_text: str
    memo: dict[str, Any] = field(default_factory=dict)
    _params: Any = _UNREAD
    _body: Any = _UNREAD

    def __repr__(self) -> str:
        return f"StoredRaw(id={self.id}, {self.method} {self.url})"

    @property
    def params(self) -> Mapping[str, Any]:
        if self._params is _UNREAD:
            value = json.loads(self.params_text)
            self._params = value if isinstance(value, Mapping) else {}
        params: Mapping[str, Any] = self._params
        return params

    @property
    def body(self) -> Any:
        if self._body is _UNREAD:
            self._body = json.loads(self.body_text)
        return self._body

    def derived(self, name: str, derive: Callable[[StoredRaw], T]) -> T:
        """What `derive` makes of the page (an index of its records, say), made on first use
        and kept in `memo` under `name` for as long as the page stays cached."""
        if name not in self.memo:
            self.memo[name] = derive(self)
        value: T = self.memo[name]
        return value


def objects_of(raw: StoredRaw) -> list[Mapping[str, Any]]:
    """The JSON objects of a page whose body is an array (a REST listing or history page);
    none when it is not one."""
    body = raw.body
    return [e for e in body if isinstance(e, Mapping)] if isinstance(body, list) else []


def first_by_id(records: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Records by their `id`. Of a record listed twice in one page the first counts, as it
    did for the sync."""
    index: dict[str, Mapping[str, Any]] = {}
    for record in records:
        index.setdefault(str(record["id"]), record)
    return index


def nested(value: Any, *keys: str) -> Any:
    """The value at `keys` in decoded JSON, None where a step is missing or not an object."""
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


class RawsMissing(Exception):
    """The stored raw pages cannot rebuild an item as it was stored (gone, or older or newer
    than the stored item): only fetching the source again can."""


@dataclass(slots=True)
class Fetch:
    """The raw pages of one item's history fetched in one run, by part (e.g. state events,
    label events, notes), each part's pages in the order they were fetched."""

    run_id: str
    parts: dict[str, list[int]] = field(default_factory=dict)


class FetchLog(Generic[H]):
    """The newest history fetch of each item (by a connector's handle for it): raw pages come
    oldest first, and a page of a newer run replaces what an older run fetched."""

    def __init__(self) -> None:
        self._fetches: dict[H, Fetch] = {}

    def add(self, handle: H, part: str, raw: StoredRaw, *, first_page: bool = True) -> None:
        """Note that `raw` holds a page of `part` of the item's history. A first page starts
        the part afresh (the same item fetched twice in one run keeps the later fetch)."""
        fetch = self._fetches.get(handle)
        if fetch is None or fetch.run_id != raw.run_id:
            fetch = self._fetches[handle] = Fetch(raw.run_id)
        pages = fetch.parts.setdefault(part, [])
        if first_page:
            pages.clear()
        pages.append(raw.id)

    def get(self, handle: H) -> Fetch | None:
        return self._fetches.get(handle)

    def pages(self, handle: H) -> list[int]:
        """The raw pages of the item's newest history fetch, part after part; none when its
        history was never fetched."""
        fetch = self._fetches.get(handle)
        return [raw_id for part in fetch.parts.values() for raw_id in part] if fetch else []


class NumberedRebuilder:
    """What the rebuilders of trackers whose items are numbered within a container (a GitHub
    repository, a GitLab project's issues or merge requests) share: the source's config and
    mapping, each item's newest record (raw page, container, number) and the raw pages of
    its newest history fetch. Subclasses scan and build."""

    #: the config class the tracker's sources have, and the tracker's name for messages
    config_type: type[SourceConfig]
    tracker: str

    def __init__(self, config: SourceConfig) -> None:
        if not isinstance(config, self.config_type):
            raise ConfigError(f"source {config.name!r} is not a {self.tracker} source")
        self.config = config
        self.mapping = self.mapping_of(config)
        #: item id → (raw page of its newest record, container, number)
        self._records: dict[str, tuple[int, str, int]] = {}
        self._histories: FetchLog[tuple[str, int]] = FetchLog()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(source={self.config.name!r})"

    def mapping_of(self, config: Any) -> Any:
        """The connector's mapping for the source (stages, flow types...)."""
        raise NotImplementedError

    def plan(self) -> dict[str, list[int]]:
        return {
            item_id: [record, *self._histories.pages((container, number))]
            for item_id, (record, container, number) in self._records.items()
        }


class Rebuilder(Protocol):
    """A connector's side of re-normalising one source, made from its current config."""

    def scan(self, raw: StoredRaw) -> None:
        """Note what one stored response holds. Called for every raw page of the source,
        oldest first."""
        ...

    def plan(self) -> Mapping[str, Sequence[int]]:
        """After the scan: per item id, the raw pages it is rebuilt from, the one holding its
        record first. Items without one cannot be re-normalised."""
        ...

    def build(self, item_id: str, raws: Mapping[int, StoredRaw]) -> FlowItem:
        """The item rebuilt with the current mapping from its planned raw pages (all in
        `raws`). Raises `RawsMissing` when they do not hold all it needs, SkippableRecord
        when the record cannot be parsed."""
        ...

    def narrowed(self, old_scope: Mapping[str, Any]) -> ScopeFilter | None:
        """When the current scope only takes away from `old_scope` in a way stored items can
        be sorted by: which projects left it. None when it widened or changed otherwise."""
        ...


def differs_only_in(
    old_scope: Mapping[str, Any], new_scope: Mapping[str, Any], keys: Set[str]
) -> bool:
    """Whether two scopes of a source agree on everything but `keys` (those a rebuilder can
    tell a narrowing by)."""
    return all(
        old_scope.get(k) == new_scope.get(k) for k in (old_scope.keys() | new_scope.keys()) - keys
    )


def rebuilder_for(source: SourceConfig) -> Rebuilder | None:
    """The source's connector's rebuilder, None when the connector has none."""
    from syncd.registry import connector_class

    factory = getattr(connector_class(source.kind), "rebuilder", None)
    if factory is None:
        return None
    rebuilder: Rebuilder = factory(source)
    return rebuilder


# -- what a change of configuration costs ------------------------------------------------


#: what the connectors' parsers keep of a record; raised when they keep more, so that items
#: written by an older syncd are rebuilt from their raw pages (2: labels; 3: links written as
#: URLs, GitLab merge requests' closing references, no link from a negated "blocked by";
#: 4: no link from an indented code block)
PARSER_VERSION = 4


def config_record(source: SourceConfig) -> str:
    """What `meta` keeps of a source's config: its scope, a digest of its mapping, and the
    parser version its items were written with."""
    return json.dumps(
        {
            "scope": scope_of(source),
            "mapping": mapping_fingerprint(source),
            "parser": PARSER_VERSION,
        },
        sort_keys=True,
    )


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """What to do about a source's configuration: nothing, re-normalise, or resync."""

    #: none | renormalise | resync | upgrade (re-normalise where the raw pages allow: items
    #: an older syncd wrote lack what today's parsers keep; without raw pages they stay)
    action: str
    reason: str
    #: with a narrowed scope: which stored items left it
    left: ScopeFilter | None = None


_UPGRADE = "the items were written by an older syncd, whose parsers kept less (labels)"


def assess(stored: str | None, source: SourceConfig) -> ConfigChange:
    """Compare the configuration recorded with the source's items (`stored`) with `source`."""
    if stored is None:
        return ConfigChange("none", "first sight of the source")
    if stored == config_record(source):
        return ConfigChange("none", "unchanged")
    try:
        old = json.loads(stored)
    except ValueError:
        old = None
    if not isinstance(old, dict) or not isinstance(old.get("scope"), dict):
        # a digest of scope and mapping together, from before they were told apart
        if stored == legacy_fingerprint(source):
            return ConfigChange("upgrade", _UPGRADE)
        return ConfigChange(
            "resync", "the configuration changed since it was recorded in an older form"
        )
    old_scope: dict[str, Any] = old["scope"]
    new_scope = scope_of(source)
    mapping_changed = old.get("mapping") != mapping_fingerprint(source)
    if old_scope == new_scope:
        if mapping_changed:
            return ConfigChange("renormalise", "the mapping changed")
        if old.get("parser", 1) != PARSER_VERSION:
            return ConfigChange("upgrade", _UPGRADE)
        return ConfigChange("none", "unchanged")
    keys = sorted(
        k for k in old_scope.keys() | new_scope.keys() if old_scope.get(k) != new_scope.get(k)
    )
    rebuilder = rebuilder_for(source)
    left = rebuilder.narrowed(old_scope) if rebuilder is not None else None
    if left is None:
        return ConfigChange("resync", f"the scope widened or changed ({', '.join(keys)})")
    also = " and the mapping changed" if mapping_changed else ""
    return ConfigChange("renormalise", f"the scope narrowed ({', '.join(keys)}){also}", left)


# -- re-normalising ----------------------------------------------------------------------


@dataclass(slots=True)
class RenormaliseResult:
    """What re-normalising one source did."""

    source: str
    #: ok | resync (the raw pages cannot serve: the source must be fetched again) | failed
    status: str = "ok"
    items: int = 0  # rebuilt items that differed from the stored ones, rewritten
    unchanged: int = 0
    tombstoned: int = 0  # items that left a narrowed scope
    skipped: int = 0  # records that no longer parse: left as stored
    raws: int = 0  # raw pages read
    seconds: float = 0.0
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class _Head:
    item_id: str
    key: str
    project: str
    value_stream: str
    updated_at: datetime
    deleted_at: datetime | None
    synced_at: datetime


def renormalise_source(
    config: Config,
    source: SourceConfig,
    warehouse: Warehouse,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    left: ScopeFilter | None = None,
    record: str | None = None,
) -> RenormaliseResult:
    """Rebuild every stored item of `source` from its raw pages with the current mapping;
    with `left`, tombstone the live items whose project left the scope instead. `record`
    (the new `config_record`) is stored with the last write. Never raises: a status other
    than ok says why the source must be fetched again instead. Run it under the source's
    lock: it rewrites items a sync of the source could be writing."""
    result = RenormaliseResult(source=source.name)
    t0 = time.perf_counter()
    bound = log.bind(source=source.name)
    try:
        _renormalise(config, source, warehouse, clock, left, record, result)
    except RawsMissing as exc:
        result.status, result.reason = "resync", str(exc)
    except Exception as exc:  # a response the rebuilder did not expect: fetch again instead
        result.status = "failed"
        result.reason = f"cannot re-normalise: {type(exc).__name__}: {exc}"
        bound.exception("renormalise.internal_error")
    result.seconds = time.perf_counter() - t0
    if result.status == "ok":
        bound.info(
            "renormalise.done",
            items=result.items,
            unchanged=result.unchanged,
            tombstoned=result.tombstoned,
            skipped=result.skipped,
            raws=result.raws,
            seconds=round(result.seconds, 3),
        )
    else:
        bound.warning("renormalise.impossible", reason=result.reason, raws=result.raws)
    return result


def _renormalise(
    config: Config,
    source: SourceConfig,
    warehouse: Warehouse,
    clock: Callable[[], datetime],
    left: ScopeFilter | None,
    record: str | None,
    result: RenormaliseResult,
) -> None:
    rebuilder = rebuilder_for(source)
    if rebuilder is None:
        raise RawsMissing(f"the {source.kind} connector cannot rebuild items from raw pages")
    for raw in _iter_raws(warehouse, source.name):
        rebuilder.scan(raw)
        result.raws += 1
    plan = rebuilder.plan()
    heads = _heads(warehouse, source.name)
    gone = [h.item_id for h in heads if h.deleted_at is None and left and left(h.project)]
    keep = [h for h in heads if not (left and left(h.project))]
    lacking = [h for h in keep if not plan.get(h.item_id)]
    if lacking:
        raise RawsMissing(
            f"{len(lacking)} of {len(keep)} stored items have no raw pages "
            f"(e.g. {', '.join(h.key for h in lacking[:3])}): pruned by raw_retention_days, "
            "or stored before raw pages were kept"
        )
    streams = ValueStreams.from_config(config)
    assign = not streams.jql_scopes(source.name)  # JQL scopes need the tracker: kept as stored
    order = sorted(keep, key=lambda h: (plan[h.item_id][0], h.item_id))
    batches = list(chunks(order, BATCH))
    cache = _RawCache(warehouse, source.name, [[plan[h.item_id] for h in b] for b in batches])
    skipped: list[str] = []
    for number, batch in enumerate(batches):
        by_id = {h.item_id: h for h in batch}
        cache.load(number)
        built: list[FlowItem] = []
        for head in batch:
            try:
                item = rebuilder.build(head.item_id, cache.pages)
            except SkippableRecord:
                skipped.append(head.key)
                continue
            if item.updated_at != head.updated_at:
                # the newest responses are of another version than the one stored: one the
                # sync could not parse (its history was not fetched), or raws older than it
                raise RawsMissing(
                    f"the raw pages of {head.key} describe it as updated at "
                    f"{item.updated_at.isoformat()}, the warehouse holds "
                    f"{head.updated_at.isoformat()}"
                )
            built.append(item)
        if assign:
            built = streams.assign(source.name, built, None)
        else:
            for item in built:
                item.value_stream = by_id[item.id].value_stream
        _write(warehouse, source.name, built, by_id, clock(), result)
    if skipped:
        result.skipped = len(skipped)
        log.error(
            "renormalise.records_skipped",
            source=source.name,
            records=len(skipped),
            keys=skipped[:20],
            action="left as stored",
        )
    with warehouse.begin() as conn:
        result.tombstoned = _tombstone(warehouse, conn, source.name, gone, clock())
        if record is not None:
            warehouse.set_meta(conn, CONFIG_KEY + source.name, record)


def _write(
    warehouse: Warehouse,
    source: str,
    built: Sequence[FlowItem],
    heads: Mapping[str, _Head],
    now: datetime,
    result: RenormaliseResult,
) -> None:
    """Rewrite the rebuilt items that differ from the stored ones, in one transaction. They
    keep their sync time (a pending resync still refetches them) and tombstoned ones stay
    tombstoned (their metric facts leave again)."""
    if not built:
        return
    with warehouse.begin() as conn:
        stored = {i.id: i for i in warehouse.load_flow_items(conn, source, [i.id for i in built])}
        changed = [
            item
            for item in built
            if heads[item.id].deleted_at is not None
            or item.id not in stored
            or not _same(item, stored[item.id])
        ]
        result.unchanged += len(built) - len(changed)
        result.items += len(changed)
        if not changed:
            return
        synced = {item.id: heads[item.id].synced_at for item in changed}
        warehouse._write_items(conn, source, changed, now, synced_at=synced)
        tombstoned = [i.id for i in changed if heads[i.id].deleted_at is not None]
        for item_id in tombstoned:
            conn.execute(
                ITEMS.update()
                .where(ITEMS.c.source == source, ITEMS.c.item_id == item_id)
                .values(deleted_at=heads[item_id].deleted_at)
            )
        if tombstoned:
            metric_ledger.record_presence(warehouse, conn, source, tombstoned, [])


def _same(a: FlowItem, b: FlowItem) -> bool:
    """Whether two versions of an item would be stored alike."""
    return (
        a.key == b.key
        and a.kind == b.kind
        and a.title == b.title
        and a.project == b.project
        and a.flow_type == b.flow_type
        and a.value_stream == b.value_stream
        and a.stage == b.stage
        and a.state == b.state
        and a.created_at == b.created_at
        and a.updated_at == b.updated_at
        and a.labels == b.labels
        and a.transitions == b.transitions
        and _links(a) == _links(b)
    )


def _links(item: FlowItem) -> dict[tuple[str, str, str], str | None]:
    # stored as the write path stores them: one per (type, direction, target), the last wins
    return {(lk.link_type, lk.direction, lk.target_key): lk.target_id for lk in item.links}


def _tombstone(
    warehouse: Warehouse, conn: Connection, source: str, ids: Sequence[str], now: datetime
) -> int:
    """Tombstone live items that left the source's scope; their metric facts go."""
    for chunk in chunks(list(ids)):
        conn.execute(
            ITEMS.update()
            .where(
                ITEMS.c.source == source, ITEMS.c.item_id.in_(chunk), ITEMS.c.deleted_at.is_(None)
            )
            .values(deleted_at=now)
        )
    if ids:
        metric_ledger.record_presence(warehouse, conn, source, ids, [])
    return len(ids)


def _heads(warehouse: Warehouse, source: str) -> list[_Head]:
    query = sa.select(
        ITEMS.c.item_id,
        ITEMS.c.key,
        ITEMS.c.project,
        ITEMS.c.value_stream,
        ITEMS.c.updated_at,
        ITEMS.c.deleted_at,
        ITEMS.c.synced_at,
    ).where(ITEMS.c.source == source)
    with warehouse.engine.connect() as conn:
        return [
            _Head(
                r.item_id,
                r.key,
                r.project,
                r.value_stream,
                r.updated_at,
                r.deleted_at,
                r.synced_at,
            )
            for r in conn.execute(query.order_by(ITEMS.c.item_id))
        ]


_RAW_COLUMNS = (RAW.c.id, RAW.c.run_id, RAW.c.stream, RAW.c.method, RAW.c.url, RAW.c.params)


def _stored(row: Any) -> StoredRaw:
    return StoredRaw(row.id, row.run_id, row.stream, row.method, row.url, row.params, row.body)


def _iter_raws(warehouse: Warehouse, source: str) -> Iterator[StoredRaw]:
    """Every raw page of the source, oldest first, streamed."""
    query = sa.select(*_RAW_COLUMNS, RAW.c.body).where(RAW.c.source == source).order_by(RAW.c.id)
    with warehouse.engine.connect() as conn:
        for row in conn.execution_options(yield_per=200).execute(query):
            yield _stored(row)


class _RawCache:
    """The raw pages of the batch being rebuilt, decoded once: a page stays until the last
    batch that needs it is done (batches follow the raw pages' order, so a listing page or a
    page of histories serves a run of consecutive batches, then goes)."""

    def __init__(
        self, warehouse: Warehouse, source: str, needs: Sequence[Sequence[Sequence[int]]]
    ) -> None:
        self.warehouse = warehouse
        self.source = source
        self.pages: dict[int, StoredRaw] = {}
        #: per batch, the raw pages its items need
        self._needs = [{raw_id for item in batch for raw_id in item} for batch in needs]
        self._last: dict[int, int] = {}
        for number, wanted in enumerate(self._needs):
            for raw_id in wanted:
                self._last[raw_id] = number

    def load(self, number: int) -> None:
        """Make the pages of batch `number` available, dropping those no later batch needs."""
        for raw_id in [r for r in self.pages if self._last[r] < number]:
            del self.pages[raw_id]
        unread = sorted(self._needs[number] - self.pages.keys())
        with self.warehouse.engine.connect() as conn:
            for chunk in chunks(unread):
                query = sa.select(*_RAW_COLUMNS, RAW.c.body).where(
                    RAW.c.source == self.source, RAW.c.id.in_(chunk)
                )
                for row in conn.execute(query):
                    self.pages[row.id] = _stored(row)
