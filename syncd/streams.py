"""Value streams: which value stream each flow item belongs to, across sources and trackers.

A value stream is defined once in the config (`[[value_streams]]`) by the scopes that feed it:
a whole source, some of its projects (Jira project keys, GitHub `owner/repo`, GitLab project
paths), items carrying some labels, or a Jira JQL filter. An item belongs to exactly one value
stream: the **first** stream in config order with a scope that matches it. An item no stream
claims falls back to its source's `value_stream` key, or the source's name.

Assignment happens in one place, here, for every path that writes items (sync, re-normalise,
re-assignment after a config change), so a value stream means the same thing everywhere.
JQL scopes are the one part that needs the tracker: Jira evaluates them (`JqlMatcher`), one
ids-only request per page of changed issues, and one listing per scope when the value stream
configuration changes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import sqlalchemy as sa
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.engine import Connection

from syncd.domain import FLOW_TYPES, FlowItem
from syncd.errors import ConfigError

if TYPE_CHECKING:
    from syncd.config import Config
    from syncd.contract import Page
    from syncd.warehouse.store import Warehouse

log = structlog.get_logger("syncd.streams")

#: a target share may miss 1.0 by this much in total (0.6 + 0.2 + 0.1 + 0.1 in floating point)
_SUM_TOLERANCE = 1e-6


class ScopeConfig(BaseModel):
    """One scope of a value stream. Every key given must match (AND); a list matches when any
    of its entries does (OR). Projects and labels compare case-insensitively."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1)
    projects: list[str] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)
    #: Jira sources only: the issues this JQL selects (Jira evaluates it)
    jql: str | None = None

    @field_validator("jql")
    @classmethod
    def _jql_text(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("expected a JQL query, got an empty string")
        if value is not None and "order by" in value.casefold():
            raise ValueError("a value stream's JQL selects issues; ORDER BY has no meaning here")
        return value.strip() if value is not None else None


class ValueStreamConfig(BaseModel):
    """`[[value_streams]]`: a name, the scopes that feed it, an optional target split."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    scopes: list[ScopeConfig] = Field(min_length=1)
    #: target investment share per flow type, each 0..1, summing to at most 1
    target_distribution: dict[str, float] = Field(default_factory=dict)

    @field_validator("target_distribution")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        for flow_type, share in value.items():
            if flow_type not in FLOW_TYPES:
                raise ValueError(
                    f"unknown flow type {flow_type!r}: expected one of {', '.join(FLOW_TYPES)}"
                )
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"share of {flow_type!r} is {share}: expected 0..1")
        total = sum(value.values())
        if total > 1.0 + _SUM_TOLERANCE:
            raise ValueError(f"shares sum to {total:.4g}: expected at most 1")
        return value

    @model_validator(mode="after")
    def _distinct_scopes(self) -> ValueStreamConfig:
        dumped = [json.dumps(s.model_dump(), sort_keys=True) for s in self.scopes]
        if len(set(dumped)) != len(dumped):
            raise ValueError("the same scope is listed twice")
        return self


@runtime_checkable
class JqlMatcher(Protocol):
    """A connector that can tell which issues a JQL query selects (Jira)."""

    def matching(self, jql: str, ids: Sequence[str] | None) -> set[str]:
        """The ids among `ids` (all issues of the source's scope when None) that `jql`
        selects. Raise on any failure: a partial answer must not move items."""
        ...


@dataclass(frozen=True, slots=True)
class _Scope:
    stream: str
    source: str
    projects: frozenset[str]
    labels: frozenset[str]
    jql: str | None

    def matches(self, source: str, project: str, labels: Iterable[str], jql_hit: bool) -> bool:
        if source != self.source:
            return False
        if self.projects and project.casefold() not in self.projects:
            return False
        if self.labels and not any(label.casefold() in self.labels for label in labels):
            return False
        return self.jql is None or jql_hit


class ValueStreams:
    """The configured value streams, ready to assign items."""

    def __init__(
        self,
        streams: Sequence[ValueStreamConfig],
        fallbacks: Mapping[str, str],
    ) -> None:
        self.streams = list(streams)
        #: source name → the value stream of items no configured stream claims
        self.fallbacks = dict(fallbacks)
        self._scopes = [
            _Scope(
                stream=vs.name,
                source=scope.source,
                projects=frozenset(p.casefold() for p in scope.projects),
                labels=frozenset(lb.casefold() for lb in scope.labels),
                jql=scope.jql,
            )
            for vs in streams
            for scope in vs.scopes
        ]

    @classmethod
    def from_config(cls, config: Config) -> ValueStreams:
        return cls(config.value_streams, {s.name: s.stream_value for s in config.sources})

    def fingerprint(self) -> str:
        """A digest of everything that decides assignments: when it changes, stored items are
        assigned again (`reassign`)."""
        data = {
            "streams": [
                vs.model_dump(mode="json", exclude={"target_distribution"}) for vs in self.streams
            ],
            "fallbacks": sorted(self.fallbacks.items()),
        }
        text = json.dumps(data, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def jql_scopes(self, source: str) -> list[str]:
        """The distinct JQL queries of the scopes on `source`, in config order."""
        return list(dict.fromkeys(s.jql for s in self._scopes if s.source == source and s.jql))

    def stream_of(
        self, source: str, project: str, labels: Iterable[str], jql_hits: Iterable[str] = ()
    ) -> str:
        """The value stream of an item: the first configured stream with a matching scope,
        else the source's fallback. `jql_hits`: the JQL queries that select the item."""
        labels = list(labels)
        hits = set(jql_hits)
        for scope in self._scopes:
            if scope.matches(source, project, labels, scope.jql in hits):
                return scope.stream
        return self.fallbacks.get(source, source)

    def assign(
        self, source: str, items: Sequence[FlowItem], matcher: JqlMatcher | None
    ) -> list[FlowItem]:
        """`items` with their value stream set. JQL scopes are asked of `matcher` for these
        items' ids (one ids-only request per query); without a matcher an item matches no
        JQL scope."""
        hits = self._jql_hits(source, [item.id for item in items], matcher)
        out = []
        for item in items:
            stream = self.stream_of(
                source, item.project, item.labels, (q for q, ids in hits.items() if item.id in ids)
            )
            out.append(item if stream == item.value_stream else replace(item, value_stream=stream))
        return out

    def assign_page(self, source: str, page: Page, matcher: JqlMatcher | None) -> Page:
        if not page.items:
            return page
        return replace(page, items=self.assign(source, page.items, matcher))

    def _jql_hits(
        self, source: str, ids: Sequence[str] | None, matcher: JqlMatcher | None
    ) -> dict[str, set[str]]:
        queries = self.jql_scopes(source)
        if not queries or matcher is None or (ids is not None and not ids):
            return {}
        return {query: matcher.matching(query, ids) for query in queries}

    # -- the warehouse's side ---------------------------------------------------------------

    def write_tables(self, conn: Connection, names_in_use: Iterable[str]) -> None:
        """Rewrite `value_streams` and `value_stream_targets` from the config: configured
        streams in config order, then the other names items carry, alphabetically."""
        from syncd.warehouse.store import STREAMS, TARGETS

        rows = [
            {"name": vs.name, "position": i, "configured": True}
            for i, vs in enumerate(self.streams)
        ]
        configured = {vs.name for vs in self.streams}
        extra = sorted(set(names_in_use) - configured)
        rows += [
            {"name": name, "position": len(rows) + i, "configured": False}
            for i, name in enumerate(extra)
        ]
        targets = [
            {"value_stream": vs.name, "flow_type": ft, "share": share}
            for vs in self.streams
            for ft, share in vs.target_distribution.items()
        ]
        conn.execute(TARGETS.delete())
        conn.execute(STREAMS.delete())
        if rows:
            conn.execute(STREAMS.insert(), rows)
        if targets:
            conn.execute(TARGETS.insert(), targets)


#: warehouse_meta key prefix: the fingerprint of the assignments a source's items carry
FINGERPRINT_KEY = "value_streams:"


def reassign_source(
    warehouse: Warehouse,
    streams: ValueStreams,
    source: str,
    matcher: JqlMatcher | None,
    *,
    force: bool = False,
) -> int | None:
    """Bring a source's stored items in line with the value stream configuration when it
    changed since they were assigned (or with `force`). Each item whose stream differs is
    rewritten with its new stream through the normal write path, so its metric facts move
    with it. No tracker call, except one ids-only listing per JQL scope of the source. The
    fingerprint is recorded last, so a failure (raised) is retried on the next call.

    Run it under the source's lock: it rewrites items a sync of the source could be writing.
    Returns the number of items moved, or None when nothing had changed."""
    key = FINGERPRINT_KEY + source
    fingerprint = streams.fingerprint()
    if not force and warehouse.get_meta(key) == fingerprint:
        return None
    heads = list(warehouse.item_heads(source))
    if heads and streams.jql_scopes(source) and matcher is None:
        raise ConfigError(
            f"value streams with JQL scopes on {source!r} need its Jira connector to list ids"
        )
    # nothing stored yet: nothing to list, every item will be assigned as it is written
    hits = streams._jql_hits(source, None, matcher) if heads else {}
    moves: dict[str, str] = {}
    for item_id, project, labels, stream in heads:
        new = streams.stream_of(
            source, project, labels, (q for q, ids in hits.items() if item_id in ids)
        )
        if new != stream:
            moves[item_id] = new
    warehouse.move_items(source, moves)
    with warehouse.begin() as conn:
        warehouse.set_meta(conn, key, fingerprint)
    if moves:
        log.info("streams.reassigned", source=source, items=len(moves))
    return len(moves)


def write_tables(warehouse: Warehouse, streams: ValueStreams) -> None:
    """Rewrite the `value_streams` and `value_stream_targets` tables from the config."""
    with warehouse.begin() as conn:
        streams.write_tables(conn, warehouse.value_streams(conn))


def read_targets(conn: Connection) -> dict[str, dict[str, float]]:
    """value stream → flow type → target share, as the warehouse holds them."""
    from syncd.warehouse.store import TARGETS

    out: dict[str, dict[str, float]] = {}
    for row in conn.execute(
        sa.select(TARGETS.c.value_stream, TARGETS.c.flow_type, TARGETS.c.share)
    ):
        out.setdefault(row.value_stream, {})[row.flow_type] = float(row.share)
    return out


def target_fields(
    value_stream: str,
    flow_type: str,
    distribution: Mapping[str, float] | None,
    velocity: int,
    all_velocity: int,
    targets: Mapping[str, Mapping[str, float]],
) -> dict[str, object]:
    """Actual vs target investment of a metric row, as every output shows it.

    A flow type's actual share is its part of the items finished in the period (its velocity
    over the value stream's); it has no share in a period where nothing finished. Deviation is
    actual − target, in share points (0.05 = five points over target). Flow types without a
    target have none. ALL rows carry the whole split: `target_distribution` and
    `distribution_deviation`, by flow type; every record has all five keys."""
    target = targets.get(value_stream) or {}
    if flow_type == "all":
        deviation = (
            {ft: (distribution or {}).get(ft, 0.0) - share for ft, share in target.items()}
            if target and distribution is not None
            else None
        )
        return {
            "distribution_share": 1.0 if velocity else None,
            "target_share": None,
            "deviation": None,
            "target_distribution": dict(target) or None,
            "distribution_deviation": deviation,
        }
    share = velocity / all_velocity if all_velocity else None
    wanted = target.get(flow_type)
    return {
        "distribution_share": share,
        "target_share": wanted,
        "deviation": share - wanted if share is not None and wanted is not None else None,
        "target_distribution": None,
        "distribution_deviation": None,
    }


def with_targets(
    rows: Sequence[Any], targets: Mapping[str, Mapping[str, float]]
) -> list[dict[str, Any]]:
    """Metric rows (`MetricRow`) as JSON records with their actual vs target fields."""
    totals = {
        (r.value_stream, r.period, r.period_start): r.velocity for r in rows if r.flow_type == "all"
    }
    out = []
    for r in rows:
        record = r.to_json()
        record.update(
            target_fields(
                r.value_stream,
                r.flow_type,
                r.distribution,
                r.velocity,
                totals.get((r.value_stream, r.period, r.period_start), 0),
                targets,
            )
        )
        out.append(record)
    return out
