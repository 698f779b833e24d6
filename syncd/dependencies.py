"""Dependencies between flow items, across sources and value streams.

Trackers state links from one end (`item_links`: a Jira issue link, a GitLab issue link, a
"blocked by" in a GitHub description, a Jira key in a pull request's branch name). This module
turns them into edges between stored items and answers the portfolio questions about them:

- `view_sql(dialect)`: the SELECT body of the `flow_dependencies` view (the BI surface).
- how many items of a value stream are blocked by another value stream at a period's end, and
  how long its items spent blocked within the period (`blocked_rows`);
- the dependency graph as JSON nodes and edges (`graph`).

The definitions and their assumptions are in docs/metrics.md, "Dependencies".
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.domain import Stage, Transition, utc
from syncd.metrics.figures import stage_steps
from syncd.metrics.periods import period_end, period_starts
from syncd.warehouse.reads import load_transitions

DIALECTS = ("sqlite", "postgresql")
#: the periods dependencies are reported in (the metrics' calendar, docs/metrics.md)
PERIOD_KINDS = ("week", "month", "quarter")

# Resolution of a link's target key to a stored (not deleted) item: the same source as the
# link first, then an item in the same value stream as the linking item, then the source name
# and the item id (alphabetically), so the choice never depends on the database's plan.
# Every relation is then emitted once, normalised:
#   - "Blocks": from the blocked item to its blocker (direction inward, blocking true), whether
#     the blocked item states it (inward) or the blocker does (outward, resolved);
#   - any other type: from its outward end ("A closes B", "A relates to B", "A references B"),
#     whichever end states it;
#   - a link whose target is not stored stays as its item states it (to_* columns NULL), except
#     "References" (a key-shaped word in a title or branch), which is dropped.
_VIEW = """
WITH candidates AS (
    SELECT
        l.source, l.item_id, f.key, l.link_type, l.direction, l.target_key,
        t.source AS t_source, t.item_id AS t_item_id,
        ROW_NUMBER() OVER (
            PARTITION BY l.source, l.item_id, l.link_type, l.direction, l.target_key
            ORDER BY
                CASE WHEN t.source = l.source THEN 0 ELSE 1 END,
                CASE WHEN t.value_stream = f.value_stream THEN 0 ELSE 1 END,
                t.source, t.item_id
        ) AS pick
    FROM item_links l
    JOIN items f ON f.source = l.source AND f.item_id = l.item_id AND f.deleted_at IS NULL
    LEFT JOIN items t ON t.key = l.target_key AND t.deleted_at IS NULL
),
resolved AS (
    SELECT
        source, item_id, key, link_type, direction, target_key, t_source, t_item_id,
        lower(link_type) = 'blocks' AS blocks
    FROM candidates
    WHERE pick = 1
),
edges AS (
    SELECT
        source AS e_from_source, item_id AS e_from_item_id, link_type, direction,
        t_source AS e_to_source, t_item_id AS e_to_item_id, target_key AS e_to_key
    FROM resolved
    WHERE (t_source IS NULL AND lower(link_type) <> 'references')
        OR (t_source IS NOT NULL AND blocks AND direction = 'inward')
        OR (t_source IS NOT NULL AND NOT blocks AND direction <> 'inward')
    UNION
    SELECT
        t_source, t_item_id, link_type,
        CASE WHEN blocks THEN 'inward' ELSE 'outward' END,
        source, item_id, key
    FROM resolved
    WHERE t_source IS NOT NULL
        AND ((blocks AND direction <> 'inward') OR (NOT blocks AND direction = 'inward'))
)
SELECT
    f.source AS from_source,
    f.item_id AS from_item_id,
    f.key AS from_key,
    f.value_stream AS from_value_stream,
    e.link_type,
    e.direction,
    e.e_to_source AS to_source,
    e.e_to_item_id AS to_item_id,
    e.e_to_key AS to_key,
    t.value_stream AS to_value_stream,
    t.stage AS to_stage,
    t.value_stream <> f.value_stream AS cross_value_stream,
    (lower(e.link_type) = 'blocks' AND e.direction = 'inward') AS blocking
FROM edges e  -- both ends are live items, or the target is unknown (NULL)
JOIN items f ON f.source = e.e_from_source AND f.item_id = e.e_from_item_id
LEFT JOIN items t ON t.source = e.e_to_source AND t.item_id = e.e_to_item_id
"""


def view_sql(dialect: str) -> str:
    """The SELECT body of the `flow_dependencies` view for `dialect` ("sqlite" or
    "postgresql"): one row per dependency between stored items, normalised so that
    `blocking` says the `from` item is blocked by the `to` item. Deleted items are left out,
    as sources and as targets (a link to a deleted item is a link to an unknown item)."""
    if dialect not in DIALECTS:
        raise ValueError(f"flow_dependencies: unsupported dialect {dialect!r}")
    return _VIEW.strip()


# -- blocking edges and the items' histories ------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemRef:
    """A stored item as a dependency names it."""

    source: str
    item_id: str
    key: str
    value_stream: str

    def to_json(self) -> dict[str, str]:
        return {
            "key": self.key,
            "source": self.source,
            "item_id": self.item_id,
            "value_stream": self.value_stream,
        }


@dataclass(frozen=True, slots=True)
class BlockingEdge:
    """`blocked` is blocked by `blocker`; both are stored items."""

    blocked: ItemRef
    blocker: ItemRef


def _view(conn: Connection) -> str:
    return f"({view_sql(conn.dialect.name)}) AS d"


def blocking_edges(conn: Connection, value_stream: str | None = None) -> list[BlockingEdge]:
    """The resolved blocking rows of `flow_dependencies` (blocked items of `value_stream`
    only, when given), in a stable order. A blocker outside the warehouse has no history to
    tell whether it is finished, so its edges are not among these."""
    query = (
        "SELECT d.from_source, d.from_item_id, d.from_key, d.from_value_stream, "
        "d.to_source, d.to_item_id, d.to_key, d.to_value_stream "
        f"FROM {_view(conn)} WHERE d.blocking AND d.to_item_id IS NOT NULL"
    )
    params: dict[str, str] = {}
    if value_stream is not None:
        query += " AND d.from_value_stream = :value_stream"
        params["value_stream"] = value_stream
    query += " ORDER BY d.from_source, d.from_item_id, d.to_source, d.to_item_id"
    return [
        BlockingEdge(
            ItemRef(r.from_source, r.from_item_id, r.from_key, r.from_value_stream),
            ItemRef(r.to_source, r.to_item_id, r.to_key, r.to_value_stream),
        )
        for r in conn.execute(sa.text(query), params)
    ]


def load_histories(
    conn: Connection, edges: Iterable[BlockingEdge]
) -> dict[tuple[str, str], list[Transition]]:
    """The transitions of the items the edges name (and of no other item), by
    (source, item id)."""
    ids: dict[str, set[str]] = {}
    for edge in edges:
        for ref in (edge.blocked, edge.blocker):
            ids.setdefault(ref.source, set()).add(ref.item_id)
    out: dict[tuple[str, str], list[Transition]] = {}
    for source, item_ids in sorted(ids.items()):
        for item_id, transitions in load_transitions(conn, source, sorted(item_ids)).items():
            out[(source, item_id)] = transitions
    return out


# -- time intervals, in integer microseconds ------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
#: the end of an interval still running at the as-of time (beyond every period end)
_OPEN = 2**62

#: [start, end) in microseconds since the epoch; intervals of one list are sorted, disjoint
Interval = tuple[int, int]


def _us(t: datetime) -> int:
    return (utc(t) - _EPOCH) // _MICROSECOND


def _instant(us: int) -> datetime:
    return _EPOCH + us * _MICROSECOND


def runs(
    transitions: Sequence[Transition], as_of: datetime, keep: Callable[[Stage], bool]
) -> list[Interval]:
    """The maximal runs of time in which the item's stage satisfies `keep`, as of `as_of`
    (later transitions ignored). An instant belongs to a run when the stage reached after
    every transition at or before it does (the stage-at-an-instant rule of docs/metrics.md),
    so a stage entered and left at the same instant holds for no time."""
    out: list[Interval] = []
    start: int | None = None
    for at, stage in stage_steps(transitions, as_of):
        t = _us(at)
        if keep(stage):
            if start is None:
                start = t
        elif start is not None:
            if t > start:
                out.append((start, t))
            start = None
    if start is not None:
        out.append((start, _OPEN))
    return out


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """The instants in both lists."""
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def union(lists: Iterable[Sequence[Interval]]) -> list[Interval]:
    """The instants in any of the lists."""
    out: list[Interval] = []
    for start, end in sorted(interval for intervals in lists for interval in intervals):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


class _Measure:
    """Many items' intervals (each item's disjoint): how many contain an instant, and how
    much item time falls in a span, each by bisection over sorted starts and ends."""

    def __init__(self, intervals: Iterable[Interval]) -> None:
        pairs = list(intervals)
        self.starts = sorted(start for start, _end in pairs)
        self.ends = sorted(end for _start, end in pairs)
        self.start_sums = [0, *accumulate(self.starts)]
        self.end_sums = [0, *accumulate(self.ends)]

    def count_at(self, t: int) -> int:
        """Intervals with start <= t < end."""
        return bisect_right(self.starts, t) - bisect_right(self.ends, t)

    def _before(self, t: int) -> int:
        """Item time before instant t: the sum over intervals of |[start, end) ∩ (-∞, t)|."""
        n_start = bisect_right(self.starts, t)
        n_end = bisect_right(self.ends, t)
        return (t * n_start - self.start_sums[n_start]) - (t * n_end - self.end_sums[n_end])

    def time(self, start: int, end: int) -> int:
        return self._before(end) - self._before(start)


# -- per value stream and period ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockedItem:
    """An item in progress at a period's end, blocked by unfinished items of other value
    streams."""

    item: ItemRef
    blockers: tuple[ItemRef, ...]

    def to_json(self) -> dict[str, Any]:
        return {**self.item.to_json(), "blockers": [b.to_json() for b in self.blockers]}


@dataclass(frozen=True, slots=True)
class BlockedRow:
    """One value stream and period: its items blocked at the period's (effective) end and
    the item time they spent blocked within it, by other value streams and within itself."""

    value_stream: str
    period: str
    period_start: datetime
    period_end: datetime  # the effective end: min(end, as-of)
    as_of: datetime
    blocked_cross: int
    blocked_cross_s: float
    blocked_same: int
    blocked_same_s: float
    blocked_cross_items: tuple[BlockedItem, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "value_stream": self.value_stream,
            "period": self.period,
            "period_start": self.period_start.date().isoformat(),
            "period_end": self.period_end.isoformat(),
            "as_of": self.as_of.isoformat(),
            "blocked_cross": self.blocked_cross,
            "blocked_cross_s": self.blocked_cross_s,
            "blocked_same": self.blocked_same,
            "blocked_same_s": self.blocked_same_s,
            "blocked_cross_items": [item.to_json() for item in self.blocked_cross_items],
        }


@dataclass(slots=True)
class _Blocked:
    """One blocked item of a value stream: per blocker, the instants it is blocked by it."""

    item: ItemRef
    by: list[tuple[ItemRef, list[Interval]]]

    def blocked(self, cross: bool) -> list[Interval]:
        return union(
            when
            for blocker, when in self.by
            if (blocker.value_stream != self.item.value_stream) == cross
        )


def compute_blocked(
    edges: Sequence[BlockingEdge],
    histories: Mapping[tuple[str, str], Sequence[Transition]],
    kind: str,
    as_of: datetime,
) -> list[BlockedRow]:
    """Rows per value stream (of the blocked items) and period of `kind`, from the first
    period in which one of its items was blocked to the period holding `as_of`. An item is
    blocked at an instant when it is in progress (active or waiting) and one of its
    blockers exists and is not finished (not done or canceled); links are taken as existing
    for as long as both items do (trackers do not say when a link was made). Pure: the
    histories are the items' transitions; those after `as_of` are ignored."""
    if kind not in PERIOD_KINDS:
        raise ValueError(f"unknown period kind {kind!r}: expected one of {PERIOD_KINDS}")
    as_of = utc(as_of)
    progress: dict[tuple[str, str], list[Interval]] = {}
    unfinished: dict[tuple[str, str], list[Interval]] = {}

    def history(ref: ItemRef) -> Sequence[Transition]:
        return histories.get((ref.source, ref.item_id), ())

    streams: dict[str, dict[tuple[str, str], _Blocked]] = {}
    for edge in edges:
        blocked_id = (edge.blocked.source, edge.blocked.item_id)
        blocker_id = (edge.blocker.source, edge.blocker.item_id)
        if blocked_id == blocker_id:
            continue  # an item blocked by itself says nothing about waiting on others
        if blocked_id not in progress:
            progress[blocked_id] = runs(history(edge.blocked), as_of, _in_progress)
        if blocker_id not in unfinished:
            unfinished[blocker_id] = runs(history(edge.blocker), as_of, _unfinished)
        when = intersect(progress[blocked_id], unfinished[blocker_id])
        entry = streams.setdefault(edge.blocked.value_stream, {}).setdefault(
            blocked_id, _Blocked(edge.blocked, [])
        )
        entry.by.append((edge.blocker, when))

    rows: list[BlockedRow] = []
    for value_stream in sorted(streams):
        rows.extend(_stream_rows(value_stream, list(streams[value_stream].values()), kind, as_of))
    return rows


def _in_progress(stage: Stage) -> bool:
    return stage.in_progress


def _unfinished(stage: Stage) -> bool:
    return not stage.terminal


def _contains(intervals: Sequence[Interval], t: int) -> bool:
    index = bisect_right(intervals, t, key=lambda interval: interval[0]) - 1
    return index >= 0 and t < intervals[index][1]


def _by_key(entry: _Blocked) -> tuple[str, str]:
    return entry.item.key, entry.item.source


def _stream_rows(
    value_stream: str, items: Sequence[_Blocked], kind: str, as_of: datetime
) -> list[BlockedRow]:
    cross = {id(entry): entry.blocked(cross=True) for entry in items}
    same = {id(entry): entry.blocked(cross=False) for entry in items}
    firsts = [ivs[0][0] for ivs in (*cross.values(), *same.values()) if ivs]
    if not firsts:
        return []
    starts = period_starts(kind, _instant(min(firsts)), as_of)
    ends = [min(period_end(kind, start), as_of) for start in starts]
    end_us = [_us(end) for end in ends]

    # which items are blocked by other value streams at each period end
    at_end: list[list[_Blocked]] = [[] for _ in ends]
    for entry in items:
        for lo, hi in cross[id(entry)]:
            for index in range(bisect_left(end_us, lo), bisect_left(end_us, hi)):
                at_end[index].append(entry)

    cross_measure = _Measure(iv for ivs in cross.values() for iv in ivs)
    same_measure = _Measure(iv for ivs in same.values() for iv in ivs)
    rows: list[BlockedRow] = []
    for index, start in enumerate(starts):
        s, e = _us(start), end_us[index]
        blocked_items = tuple(
            BlockedItem(
                entry.item,
                tuple(
                    sorted(
                        {
                            blocker
                            for blocker, when in entry.by
                            if blocker.value_stream != value_stream and _contains(when, e)
                        },
                        key=lambda ref: (ref.value_stream, ref.key, ref.source),
                    )
                ),
            )
            for entry in sorted(at_end[index], key=_by_key)
        )
        rows.append(
            BlockedRow(
                value_stream=value_stream,
                period=kind,
                period_start=start,
                period_end=ends[index],
                as_of=as_of,
                blocked_cross=cross_measure.count_at(e),
                blocked_cross_s=cross_measure.time(s, e) / 1e6,
                blocked_same=same_measure.count_at(e),
                blocked_same_s=same_measure.time(s, e) / 1e6,
                blocked_cross_items=blocked_items,
            )
        )
    return rows


def blocked_rows(
    conn: Connection, kind: str, as_of: datetime, value_stream: str | None = None
) -> list[BlockedRow]:
    """`compute_blocked` over the warehouse: reads the blocking edges of `flow_dependencies`
    and the transitions of the items they name, nothing else."""
    edges = blocking_edges(conn, value_stream)
    return compute_blocked(edges, load_histories(conn, edges), kind, as_of)


# -- the graph ------------------------------------------------------------------------------


def _node_id(source: str, item_id: str) -> str:
    return f"{source}:{item_id}"


def graph(conn: Connection, value_stream: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """The dependency graph as JSON-ready nodes and edges: every row of `flow_dependencies`
    (only those touching `value_stream`, when given) is an edge; its items are the nodes.
    A node's `id` is `<source>:<item id>`; a target outside the warehouse is a node with id
    `unresolved:<key>` and no source, value stream, flow type or stage."""
    query = (
        "SELECT d.from_source, d.from_item_id, d.from_key, d.from_value_stream, d.link_type, "
        "d.direction, d.to_source, d.to_item_id, d.to_key, d.to_value_stream, d.to_stage, "
        "d.cross_value_stream, d.blocking, fi.flow_type AS from_flow_type, "
        "fi.stage AS from_stage, ti.flow_type AS to_flow_type "
        f"FROM {_view(conn)} "
        "JOIN items fi ON fi.source = d.from_source AND fi.item_id = d.from_item_id "
        "LEFT JOIN items ti ON ti.source = d.to_source AND ti.item_id = d.to_item_id"
    )
    params: dict[str, str] = {}
    if value_stream is not None:
        query += " WHERE d.from_value_stream = :vs OR d.to_value_stream = :vs"
        params["vs"] = value_stream
    query += " ORDER BY d.from_source, d.from_item_id, d.link_type, d.direction, d.to_key"
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, Any]] = []
    for r in conn.execute(sa.text(query), params):
        source_id = _node_id(r.from_source, r.from_item_id)
        nodes.setdefault(
            source_id,
            {
                "id": source_id,
                "key": r.from_key,
                "source": r.from_source,
                "value_stream": r.from_value_stream,
                "flow_type": r.from_flow_type,
                "stage": r.from_stage,
            },
        )
        if r.to_item_id is None:
            target_id = f"unresolved:{r.to_key}"
            nodes.setdefault(
                target_id,
                {
                    "id": target_id,
                    "key": r.to_key,
                    "source": None,
                    "value_stream": None,
                    "flow_type": None,
                    "stage": None,
                },
            )
        else:
            target_id = _node_id(r.to_source, r.to_item_id)
            nodes.setdefault(
                target_id,
                {
                    "id": target_id,
                    "key": r.to_key,
                    "source": r.to_source,
                    "value_stream": r.to_value_stream,
                    "flow_type": r.to_flow_type,
                    "stage": r.to_stage,
                },
            )
        edges.append(
            {
                "from": source_id,
                "to": target_id,
                "from_key": r.from_key,
                "to_key": r.to_key,
                "link_type": r.link_type,
                "direction": r.direction,
                "blocking": bool(r.blocking),
                "cross_value_stream": (
                    None if r.cross_value_stream is None else bool(r.cross_value_stream)
                ),
            }
        )
    return {"nodes": sorted(nodes.values(), key=lambda n: n["id"]), "edges": edges}


# -- the table ------------------------------------------------------------------------------


def _days(seconds: float) -> str:
    return f"{seconds / 86400:.1f}"


def print_blocked(rows: Sequence[BlockedRow], out: TextIO, *, last: int = 0) -> None:
    """A readable table: per value stream and period, its items blocked at the period's end
    and the item-days they spent blocked, by other value streams and within the stream; then,
    per value stream, the items blocked by others at the end of its last period shown, with
    what they wait on."""
    per_stream: dict[str, list[BlockedRow]] = {}
    for row in rows:
        per_stream.setdefault(row.value_stream, []).append(row)
    if last:
        per_stream = {vs: stream_rows[-last:] for vs, stream_rows in per_stream.items()}
    if not per_stream:
        print("no blocking dependencies between stored items", file=out)
        return
    header = (
        f"{'value stream':<16} {'period':<11} {'blocked by others':>17} {'item-days':>9} "
        f"{'blocked within':>14} {'item-days':>9}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for value_stream, stream_rows in per_stream.items():
        for row in stream_rows:
            print(
                f"{value_stream[:16]:<16} {row.period_start.date().isoformat():<11} "
                f"{row.blocked_cross:>17} {_days(row.blocked_cross_s):>9} "
                f"{row.blocked_same:>14} {_days(row.blocked_same_s):>9}",
                file=out,
            )
    for value_stream, stream_rows in per_stream.items():
        end = stream_rows[-1]
        if not end.blocked_cross_items:
            continue
        print(
            f"\n{value_stream}: blocked by other value streams at {end.period_end.isoformat()}",
            file=out,
        )
        for blocked in end.blocked_cross_items:
            waits = ", ".join(f"{b.key} ({b.value_stream}, {b.source})" for b in blocked.blockers)
            print(f"  {blocked.item.key} ({blocked.item.source}) waits on {waits}", file=out)
