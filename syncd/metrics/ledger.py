"""The metric tables of the warehouse: item facts written with each item, the dirt of each
change, the day loads, and the reads the update makes of them.

`record_items` runs inside the page commit (called by `Warehouse._write_items`), so facts
and dirt are written in the same transaction as the items they describe. Everything else
runs inside `update_metrics`' transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.domain import FlowItem, Stage
from syncd.metrics.facts import (
    AS_OF_KEY,
    DAY,
    Dirt,
    FinishChange,
    ItemFacts,
    RunMark,
    Version,
    day_of,
    item_changes,
    item_facts,
    item_removed,
    merge_dirt,
)
from syncd.metrics.figures import ItemTimeline
from syncd.metrics.sweep import (
    TYPE_SLOT,
    Finish,
    SegmentEvent,
)
from syncd.warehouse.models import (
    ItemRow,
    MetaRow,
    MetricDayRow,
    MetricDirtRow,
    MetricItemRow,
    MetricRunRow,
    MetricSegmentRow,
    TransitionRow,
)
from syncd.warehouse.reads import CHUNK, chunks, load_transitions

if TYPE_CHECKING:
    from syncd.warehouse.store import Warehouse

FACTS = MetricItemRow.__table__  # type: ignore[attr-defined]
SEGMENTS = MetricSegmentRow.__table__  # type: ignore[attr-defined]
RUNS = MetricRunRow.__table__  # type: ignore[attr-defined]
DAYS = MetricDayRow.__table__  # type: ignore[attr-defined]
DIRT = MetricDirtRow.__table__  # type: ignore[attr-defined]
_ITEMS = ItemRow.__table__  # type: ignore[attr-defined]
_TRANSITIONS = TransitionRow.__table__  # type: ignore[attr-defined]
_META = MetaRow.__table__  # type: ignore[attr-defined]

#: warehouse_meta key recording that every item has its facts (set once they were built)
FACTS_KEY = "metric_facts"
FACTS_VERSION = "1"

_CHUNK = CHUNK
#: the metric_dirt columns of a finish change (`FinishChange`; all NULL without one)
_CHANGE_COLUMNS = FinishChange._fields
_FACT_COLUMNS = (
    "source",
    "item_id",
    "value_stream",
    "flow_type",
    "work_start",
    "work_end",
    "end_day",
    "outcome",
    "flow_time_s",
    "active_s",
    "last_at",
)
_SEGMENT_COLUMNS = (
    "source",
    "item_id",
    "seg_start",
    "seg_end",
    "value_stream",
    "flow_type",
    "work_start",
    "last_at",
)
_RUN_COLUMNS = (
    "source",
    "item_id",
    "run_start",
    "at",
    "left",
    "value_stream",
    "flow_type",
    "done",
    "flow_time_s",
    "active_s",
)


def meta(conn: Connection, key: str) -> str | None:
    value = conn.execute(sa.select(_META.c.value).where(_META.c.key == key)).scalar()
    return None if value is None else str(value)


def stored_as_of(conn: Connection) -> datetime | None:
    """The as-of time of the stored metric rows, None before the first update."""
    value = meta(conn, AS_OF_KEY)
    return datetime.fromisoformat(value) if value else None


# -- written with the items ------------------------------------------------------------


def read_versions(
    conn: Connection, source: str, ids: Sequence[str], *, tombstoned: bool = False
) -> dict[str, Version]:
    """The stored versions of these items (value stream, flow type, stage history), read
    before a page replaces them. Tombstoned items are not in the metrics, so they are left
    out unless `tombstoned`."""
    query = sa.select(_ITEMS.c.item_id, _ITEMS.c.value_stream, _ITEMS.c.flow_type).where(
        _ITEMS.c.source == source, _ITEMS.c.item_id.in_(ids)
    )
    if not tombstoned:
        query = query.where(_ITEMS.c.deleted_at.is_(None))
    heads = {r.item_id: r for r in conn.execute(query)}
    if not heads:
        return {}
    steps: dict[str, list[tuple[datetime, Stage]]] = {}
    for r in conn.execute(
        sa.select(_TRANSITIONS.c.item_id, _TRANSITIONS.c.at, _TRANSITIONS.c.to_stage)
        .where(_TRANSITIONS.c.source == source, _TRANSITIONS.c.item_id.in_(list(heads)))
        .order_by(_TRANSITIONS.c.item_id, _TRANSITIONS.c.seq)
    ):
        steps.setdefault(r.item_id, []).append((r.at, Stage(r.to_stage)))
    return {
        item_id: Version(head.value_stream, head.flow_type, tuple(steps.get(item_id, ())))
        for item_id, head in heads.items()
    }


def _fact_rows(
    source: str, item_id: str, value_stream: str, flow_type: str, f: ItemFacts
) -> tuple[tuple[Any, ...], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    fact = (
        source,
        item_id,
        value_stream,
        flow_type,
        f.work_start,
        f.work_end,
        None if f.work_end is None else day_of(f.work_end),
        None if f.outcome is None else f.outcome.value,
        f.flow_time_s,
        f.active_s,
        f.last_at,
    )
    segments = [
        (source, item_id, start, end, value_stream, flow_type, f.work_start, f.last_at)
        for start, end in f.segments
    ]
    runs = [
        (source, item_id, *mark[:3], value_stream, flow_type, *mark[3:]) for mark in f.run_marks
    ]
    return fact, segments, runs


def _replace_facts(
    warehouse: Warehouse,
    conn: Connection,
    source: str,
    ids: Sequence[str],
    rows: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]],
) -> None:
    for chunk in chunks(ids):
        for table in (FACTS, SEGMENTS, RUNS):
            conn.execute(table.delete().where(table.c.source == source, table.c.item_id.in_(chunk)))
    facts, segments, runs = rows
    warehouse.insert_many(conn, FACTS, _FACT_COLUMNS, facts)
    warehouse.insert_many(conn, SEGMENTS, _SEGMENT_COLUMNS, segments)
    warehouse.insert_many(conn, RUNS, _RUN_COLUMNS, runs)


def record_items(
    warehouse: Warehouse,
    conn: Connection,
    source: str,
    written: Sequence[tuple[FlowItem, ItemTimeline]],
    before: Mapping[str, Version],
) -> None:
    """Write the facts of the items a page changed and the metric dirt of the change.

    `written` pairs each item with ``item_timeline(item.transitions)``; `before` holds the
    stored versions of the items that existed. Items whose stage history, value stream and
    flow type are unchanged keep their facts and dirty nothing.
    """
    as_of = stored_as_of(conn)
    changed: list[str] = []  # those that existed: their old facts go
    facts: list[tuple[Any, ...]] = []
    segments: list[tuple[Any, ...]] = []
    runs: list[tuple[Any, ...]] = []
    dirt: list[Dirt] = []
    for item, timeline in written:
        old = before.get(item.id)
        new: Version | None = None
        if old is not None or as_of is not None:
            new = Version.of(item.value_stream, item.flow_type, item.transitions)
            if old == new:
                continue
        if old is not None:
            changed.append(item.id)
        f = item_facts(item.transitions, timeline=timeline)
        fact, item_segments, item_runs = _fact_rows(
            source, item.id, item.value_stream, item.flow_type, f
        )
        facts.append(fact)
        segments.extend(item_segments)
        runs.extend(item_runs)
        if as_of is not None and new is not None:
            dirt.extend(item_changes(old, new, as_of))
    # only live items have facts (tombstoning drops them), so a new or revived item has none
    _replace_facts(warehouse, conn, source, changed, (facts, segments, runs))
    _insert_dirt(conn, dirt)


def _insert_dirt(conn: Connection, dirt: Sequence[Dirt]) -> None:
    if dirt:
        conn.execute(
            DIRT.insert(),
            [
                {
                    "value_stream": d.value_stream,
                    "scope": d.scope,
                    "span_start": d.start,
                    "span_end": d.end,
                    **dict.fromkeys(_CHANGE_COLUMNS),
                    **({} if d.change is None else d.change._asdict()),
                }
                for d in merge_dirt(dirt)
            ],
        )


def record_presence(
    warehouse: Warehouse,
    conn: Connection,
    source: str,
    tombstoned: Sequence[str],
    revived: Sequence[str],
) -> None:
    """Items just tombstoned leave the metrics (their facts go), revived ones come back
    (facts rebuilt from their stored transitions); both dirty what they touch."""
    as_of = stored_as_of(conn)
    dirt: list[Dirt] = []
    for chunk in chunks(list(tombstoned)):
        if as_of is not None:
            for version in read_versions(conn, source, chunk, tombstoned=True).values():
                dirt.extend(item_removed(version, as_of))
        _replace_facts(warehouse, conn, source, chunk, ([], [], []))
    for chunk in chunks(list(revived)):
        versions = read_versions(conn, source, chunk)
        histories = load_transitions(conn, source, list(versions))
        rows: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]
        rows = ([], [], [])
        for item_id, version in versions.items():
            f = item_facts(histories.get(item_id, []))
            fact, segs, rns = _fact_rows(
                source, item_id, version.value_stream, version.flow_type, f
            )
            rows[0].append(fact)
            rows[1].extend(segs)
            rows[2].extend(rns)
            if as_of is not None:
                dirt.extend(item_changes(None, version, as_of))
        _replace_facts(warehouse, conn, source, list(versions), rows)
    _insert_dirt(conn, dirt)


def ensure_facts(warehouse: Warehouse, conn: Connection) -> int:
    """Build the facts of items that have none (a warehouse written before the metric
    tables existed), streaming in chunks; returns how many were built."""
    if meta(conn, FACTS_KEY) == FACTS_VERSION:
        return 0
    built = 0
    after: tuple[str, str] | None = None
    has_facts = (
        sa.select(FACTS.c.item_id)
        .where(FACTS.c.source == _ITEMS.c.source, FACTS.c.item_id == _ITEMS.c.item_id)
        .exists()
    )
    while True:
        query = sa.select(
            _ITEMS.c.source, _ITEMS.c.item_id, _ITEMS.c.value_stream, _ITEMS.c.flow_type
        ).where(_ITEMS.c.deleted_at.is_(None), ~has_facts)
        if after is not None:
            query = query.where(sa.tuple_(_ITEMS.c.source, _ITEMS.c.item_id) > sa.tuple_(*after))
        heads = conn.execute(query.order_by(_ITEMS.c.source, _ITEMS.c.item_id).limit(_CHUNK)).all()
        if not heads:
            break
        after = (heads[-1].source, heads[-1].item_id)
        for source in sorted({h.source for h in heads}):
            ids = [h.item_id for h in heads if h.source == source]
            histories = load_transitions(conn, source, ids)
            rows: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]
            rows = ([], [], [])
            for h in heads:
                if h.source != source:
                    continue
                f = item_facts(histories.get(h.item_id, []))
                fact, segs, rns = _fact_rows(source, h.item_id, h.value_stream, h.flow_type, f)
                rows[0].append(fact)
                rows[1].extend(segs)
                rows[2].extend(rns)
            _replace_facts(warehouse, conn, source, ids, rows)
            built += len(ids)
    warehouse.set_meta(conn, FACTS_KEY, FACTS_VERSION)
    return built


# -- read by the update ----------------------------------------------------------------
#
# The update reads for every value stream at once: one statement per kind of read, whose
# parts (one per value stream, run of days or range) are tagged so the rows go back to
# the part that asked for them. On PostgreSQL each statement is a round trip.

Range = tuple[str, int, int]
"""A value stream and two instants (or day starts) bounding what a read covers."""


def take_dirt(conn: Connection) -> list[Dirt]:
    """Read and clear the recorded dirt (inside the update's transaction), in one statement:
    dirt a concurrent page commit adds meanwhile stays for the next update."""
    rows = conn.execute(
        DIRT.delete().returning(
            DIRT.c.value_stream,
            DIRT.c.scope,
            DIRT.c.span_start,
            DIRT.c.span_end,
            *(DIRT.c[name] for name in _CHANGE_COLUMNS),
        )
    ).all()
    return [
        Dirt(
            vs,
            scope,
            start,
            end,
            None if sign is None else FinishChange(sign, flow_type, bool(done), flow, active),
        )
        for vs, scope, start, end, sign, flow_type, done, flow, active in rows
    ]


def clear_dirt(conn: Connection) -> None:
    conn.execute(DIRT.delete())


def run_marks(conn: Connection, after: int, until: int) -> list[tuple[str, str, RunMark]]:
    """(value stream, flow type, mark) of the changes made in ``(after, until]`` to runs of
    done/canceled that began by `after`."""
    columns = [RUNS.c[name] for name in _RUN_COLUMNS[2:]]
    rows = conn.execute(
        sa.select(*columns).where(RUNS.c.at > after, RUNS.c.at <= until, RUNS.c.run_start <= after)
    ).all()
    return [
        (vs, flow_type, RunMark(start, at, bool(left), None if done is None else bool(done), *rest))
        for start, at, left, vs, flow_type, done, *rest in rows
    ]


def value_streams(conn: Connection) -> list[str]:
    """Every value stream with items, in order, in one statement that skips along the facts'
    index (a recursive query: one index seek per value stream, however many items each has)."""
    streams = sa.select(sa.func.min(FACTS.c.value_stream).label("name")).cte(
        "streams", recursive=True
    )
    following = (
        sa.select(sa.func.min(FACTS.c.value_stream))
        .where(FACTS.c.value_stream > streams.c.name)
        .scalar_subquery()
    )
    streams = streams.union_all(sa.select(following).where(streams.c.name.is_not(None)))
    found = conn.execute(sa.select(streams.c.name).where(streams.c.name.is_not(None))).scalars()
    return [str(name) for name in found]


@dataclass(slots=True)
class Pending:
    """An item with transitions after the as-of time: its facts as of that time."""

    slot: int
    facts: ItemFacts


def pending(conn: Connection, as_of: int, as_of_time: datetime) -> dict[str, list[Pending]]:
    """Items with transitions after the as-of time, per value stream, with their facts as
    of it (their stored facts describe a later state)."""
    heads = conn.execute(
        sa.select(FACTS.c.source, FACTS.c.item_id, FACTS.c.value_stream, FACTS.c.flow_type).where(
            FACTS.c.last_at > as_of
        )  # no ORDER BY: it would trade the index for a scan
    ).all()
    out: dict[str, list[Pending]] = {}
    for source in sorted({h.source for h in heads}):
        mine = [h for h in heads if h.source == source]
        histories = load_transitions(conn, source, [h.item_id for h in mine])
        for h in mine:
            f = item_facts(histories.get(h.item_id, []), as_of_time, finishes=False)
            out.setdefault(h.value_stream, []).append(Pending(TYPE_SLOT[h.flow_type], f))
    return out


def _finish_at(f: Finish) -> int:
    return f.at


def _union_all(
    conn: Connection,
    template: str | Sequence[str],
    parts: Sequence[Mapping[str, Any]],
    shared: Mapping[str, Any] | None = None,
) -> Sequence[Any]:
    """Run one UNION ALL of `template` (or of each part's own) per parameter set in `parts`:
    a SELECT whose ``{i}`` becomes the part's index (parameters ``:name{i}``, a list for
    ``IN :name{i}``; the index itself as a tag column). Text SQL on purpose: the SQL
    compiler's cost grows with the parts, and a process pays it once for every number of
    parts it meets, which costs an update more than its reads."""
    templates = [template] * len(parts) if isinstance(template, str) else list(template)
    sql = " UNION ALL ".join(t.format(i=i) for i, t in enumerate(templates))
    params = {f"{name}{i}": value for i, part in enumerate(parts) for name, value in part.items()}
    params.update(shared or {})
    query = sa.text(sql)
    lists = [name for name, value in params.items() if isinstance(value, list)]
    if lists:
        query = query.bindparams(*(sa.bindparam(name, expanding=True) for name in lists))
    return conn.execute(query, params).all()


@dataclass(slots=True)
class FactsReader:
    """The facts of every value stream as of the update's as-of time. Items with transitions
    after it (`pending`, per value stream) are left out of every query and taken from there
    instead."""

    conn: Connection
    as_of: int
    pending: Mapping[str, list[Pending]]
    rows_read: int = 0

    def _current(self, table: sa.Table, value_stream: str) -> list[sa.ColumnElement[bool]]:
        where = [table.c.value_stream == value_stream]
        if self.pending:
            where.append(sa.or_(table.c.last_at.is_(None), table.c.last_at <= self.as_of))
        return where

    def _current_sql(self) -> str:
        """`_current` in the text of `_union_all`'s templates (value stream `:vs{i}`)."""
        pending = " AND (last_at IS NULL OR last_at <= :as_of)" if self.pending else ""
        return "value_stream = :vs{i}" + pending

    def first_day(self, value_stream: str) -> int | None:
        """The first day any item of a value stream touches: that of the earliest work start
        (less a microsecond) or work end."""
        row = self.conn.execute(
            sa.select(sa.func.min(FACTS.c.work_start), sa.func.min(FACTS.c.end_day)).where(
                *self._current(FACTS, value_stream)
            )
        ).one()
        marks = [None if row[0] is None else row[0] - 1, row[1]]
        for p in self.pending.get(value_stream, ()):
            if p.facts.work_start is not None:
                marks.append(p.facts.work_start - 1)
            marks.append(p.facts.work_end)
        found = [m for m in marks if m is not None]
        return day_of(min(found)) if found else None

    def in_progress_before(self, value_stream: str, t: int) -> list[tuple[int, int]]:
        """(slot, work start) of a value stream's items in progress just before `t`."""
        where = self._current(SEGMENTS, value_stream)
        columns = (SEGMENTS.c.flow_type, SEGMENTS.c.work_start)
        open_now = sa.select(*columns).where(
            *where, SEGMENTS.c.seg_end.is_(None), SEGMENTS.c.seg_start < t
        )
        ending_later = sa.select(*columns).where(
            *where, SEGMENTS.c.seg_end >= t, SEGMENTS.c.seg_start < t
        )
        slot = TYPE_SLOT
        out = [
            (slot[flow_type], work_start)
            for flow_type, work_start in self.conn.execute(
                sa.union_all(open_now, ending_later)  # two index ranges, one round trip
            ).all()
        ]
        self.rows_read += len(out)
        for p in self.pending.get(value_stream, ()):
            ws = p.facts.work_start
            for start, end in p.facts.segments:
                if start < t and (end is None or end >= t) and ws is not None:
                    out.append((p.slot, ws))
        return out

    def segment_events(self, ranges: Sequence[Range]) -> list[list[SegmentEvent]]:
        """For each (value stream, lo, hi): the segment starts and ends within ``[lo, hi]``,
        sorted (at a tie, leaving before entering)."""
        if not ranges:
            return []
        where = self._current_sql()
        template = (
            f"SELECT {{i}}, seg_start, 1, flow_type, work_start FROM {SEGMENTS.name} "
            f"WHERE {where} AND seg_start >= :lo{{i}} AND seg_start <= :hi{{i}} UNION ALL "
            f"SELECT {{i}}, seg_end, -1, flow_type, work_start FROM {SEGMENTS.name} "
            f"WHERE {where} AND seg_end >= :lo{{i}} AND seg_end <= :hi{{i}}"
        )
        rows = _union_all(
            self.conn,
            template,
            [{"vs": vs, "lo": lo, "hi": hi} for vs, lo, hi in ranges],
            {"as_of": self.as_of},
        )
        slot = TYPE_SLOT
        out: list[list[SegmentEvent]] = [[] for _ in ranges]
        self.rows_read += len(rows)
        for index, at, delta, ft, ws in rows:
            out[index].append(SegmentEvent(at, delta, slot[ft], ws))
        for (vs, lo, hi), events in zip(ranges, out, strict=True):
            for p in self.pending.get(vs, ()):
                work_start = p.facts.work_start
                if work_start is None:
                    continue
                for start, end in p.facts.segments:
                    if lo <= start <= hi:
                        events.append(SegmentEvent(start, 1, p.slot, work_start))
                    if end is not None and lo <= end <= hi:
                        events.append(SegmentEvent(end, -1, p.slot, work_start))
            events.sort()  # by instant; at a tie, leaving before entering
        return out

    _FINISH_SQL = "work_end, outcome, flow_type, flow_time_s, active_s"

    def finishes(
        self, ranges: Sequence[Range], days: Mapping[str, Sequence[int]] | None = None
    ) -> tuple[list[list[Finish]], dict[str, list[Finish]]]:
        """The items whose work ended (done or canceled), sorted by work end: for each
        (value stream, lo, hi) of day starts, on the days ``[lo, hi)``; and per value stream,
        on any of its `days` (day starts). One statement for both."""
        wanted = days or {}
        on_days = [
            (vs, chunk) for vs, vs_days in wanted.items() for chunk in chunks(sorted(vs_days))
        ]
        select = f"SELECT {{i}}, {self._FINISH_SQL} FROM {FACTS.name} WHERE {self._current_sql()}"
        templates = [f"{select} AND end_day >= :lo{{i}} AND end_day < :hi{{i}}"] * len(ranges)
        templates += [f"{select} AND end_day IN :days{{i}}"] * len(on_days)
        parts: list[dict[str, Any]] = [{"vs": vs, "lo": lo, "hi": hi} for vs, lo, hi in ranges]
        parts += [{"vs": vs, "days": list(chunk)} for vs, chunk in on_days]
        in_ranges: list[list[Any]] = [[] for _ in ranges]
        per_stream: dict[str, list[Any]] = {vs: [] for vs in wanted}
        if parts:
            for row in _union_all(self.conn, templates, parts, {"as_of": self.as_of}):
                index = row[0]
                if index < len(ranges):
                    in_ranges[index].append(row[1:])
                else:
                    per_stream[on_days[index - len(ranges)][0]].append(row[1:])
        return (
            [
                self._finishes(vs, rows, range(lo, hi, DAY).__contains__)
                for (vs, lo, hi), rows in zip(ranges, in_ranges, strict=True)
            ],
            {
                vs: self._finishes(vs, rows, set(wanted[vs]).__contains__)
                for vs, rows in per_stream.items()
            },
        )

    def _finishes(
        self, value_stream: str, rows: Sequence[Any], on_day: Callable[[int], bool]
    ) -> list[Finish]:
        slot, done = TYPE_SLOT, Stage.DONE.value
        out = [
            Finish(at, outcome == done, slot[ft], flow, active)
            for at, outcome, ft, flow, active in rows
        ]
        self.rows_read += len(out)
        for p in self.pending.get(value_stream, ()):
            f = p.facts
            if f.work_end is not None and f.outcome is not None and on_day(day_of(f.work_end)):
                finished = f.outcome is Stage.DONE
                out.append(Finish(f.work_end, finished, p.slot, f.flow_time_s, f.active_s))
        out.sort(key=_finish_at)
        return out

    def covered(self, value_stream: str, start: int, end: int) -> bool:
        """Whether any item's flow, from its work start to its work end (or the as-of time),
        meets the instants ``[start, end]``: such an item touches the bucket."""
        hit = self.conn.execute(
            sa.select(FACTS.c.work_start)
            .where(
                *self._current(FACTS, value_stream),
                FACTS.c.work_start.is_not(None),
                FACTS.c.work_start <= end,
                sa.or_(FACTS.c.work_end.is_(None), FACTS.c.work_end >= start),
            )
            .order_by(FACTS.c.work_start.desc())
            .limit(1)
        ).first()
        if hit is not None:
            return True
        for p in self.pending.get(value_stream, ()):
            f = p.facts
            reaches = f.work_end is None or f.work_end >= start
            if f.work_start is not None and f.work_start <= end and reaches:
                return True
        return False


# -- days ------------------------------------------------------------------------------


_DAYS_IN = (
    f"SELECT {{i}}, day, data FROM {DAYS.name} "
    "WHERE value_stream = :vs{i} AND day >= :lo{i} AND day < :hi{i}"
)
_DAYS_PRESENT = (
    f"SELECT {{i}}, day, NULL FROM {DAYS.name} "
    "WHERE value_stream = :vs{i} AND day >= :lo{i} AND day < :hi{i}"
)


def read_days(
    conn: Connection, ranges: Sequence[Range], present: Sequence[Range] = ()
) -> tuple[dict[str, dict[int, str]], dict[str, set[int]]]:
    """The stored day records (undecoded: see `syncd.metrics.sweep.decode_day`) starting in
    each ``[lo, hi)`` of a value stream in `ranges`, and which days are stored (touched) in
    those of `present`: one statement."""
    texts: dict[str, dict[int, str]] = {vs: {} for vs, _, _ in (*ranges, *present)}
    stored: dict[str, set[int]] = {vs: set() for vs, _, _ in (*ranges, *present)}
    asked = [*ranges, *present]
    if asked:
        templates = [_DAYS_IN] * len(ranges) + [_DAYS_PRESENT] * len(present)
        parts = [{"vs": vs, "lo": lo, "hi": hi} for vs, lo, hi in asked]
        for index, day, data in _union_all(conn, templates, parts):
            vs = asked[index][0]
            if index < len(ranges):
                texts[vs][day] = data
            else:
                stored[vs].add(day)
    return texts, stored


def delete_days(warehouse: Warehouse, conn: Connection, days: Sequence[tuple[str, int]]) -> None:
    """Drop the stored records of these (value stream, day)s."""
    warehouse.delete_many(conn, DAYS, ("value_stream", "day"), days)


_DAY_COLUMNS = ("value_stream", "day", "data")


def write_days(
    warehouse: Warehouse, conn: Connection, days: Sequence[tuple[str, int, str]]
) -> None:
    """Store day records: (value stream, day, encoded record); none of them may be stored."""
    warehouse.insert_many(conn, DAYS, _DAY_COLUMNS, days)


def replace_days(
    warehouse: Warehouse, conn: Connection, days: Sequence[tuple[str, int, str]]
) -> None:
    """Store day records in place of the stored ones, leaving those that did not change."""
    warehouse.upsert_changed(conn, DAYS, _DAY_COLUMNS, days, _DAY_COLUMNS[:2], "data")
