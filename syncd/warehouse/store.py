"""The warehouse: engine set-up for SQLite and PostgreSQL, and the writes the sync engine and
the metrics module need, each in one transaction.

Bulk writes use `INSERT … ON CONFLICT DO UPDATE` through SQLAlchemy Core on the SQLModel
tables: no ORM unit-of-work on the hot path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from syncd.contract import Cursor, Page
from syncd.domain import FlowItem, Link, Stage, Transition
from syncd.errors import ConfigError
from syncd.metrics import ledger as metric_ledger
from syncd.metrics.facts import Version
from syncd.metrics.figures import ItemTimeline, item_timeline
from syncd.warehouse.models import (
    SCHEMA_VERSION,
    CursorRow,
    ItemRow,
    LinkRow,
    MetaRow,
    MetricRowRecord,
    RawPageRow,
    SyncRunRow,
    TransitionRow,
    ValueStreamRow,
    ValueStreamTargetRow,
)
from syncd.warehouse.reads import chunks, load_transitions

RAW = RawPageRow.__table__  # type: ignore[attr-defined]
ITEMS = ItemRow.__table__  # type: ignore[attr-defined]
TRANSITIONS = TransitionRow.__table__  # type: ignore[attr-defined]
LINKS = LinkRow.__table__  # type: ignore[attr-defined]
CURSORS = CursorRow.__table__  # type: ignore[attr-defined]
RUNS = SyncRunRow.__table__  # type: ignore[attr-defined]
METRICS = MetricRowRecord.__table__  # type: ignore[attr-defined]
META = MetaRow.__table__  # type: ignore[attr-defined]
STREAMS = ValueStreamRow.__table__  # type: ignore[attr-defined]
TARGETS = ValueStreamTargetRow.__table__  # type: ignore[attr-defined]

_TRANSITION_COLUMNS = (
    "source",
    "item_id",
    "seq",
    "at",
    "from_state",
    "to_state",
    "from_stage",
    "to_stage",
)
_LINK_COLUMNS = ("source", "item_id", "link_type", "direction", "target_key", "target_id")


def engine_url(url: str) -> str:
    """Accept the URLs users write and pick the driver syncd ships (psycopg 3)."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # syncd opens every transaction itself (BEGIN IMMEDIATE below), so the driver must not
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    """Write transactions (`Warehouse.begin`) take the write lock when they start, so
    concurrent writers (threads of a daemon, other processes) queue on `busy_timeout` instead
    of failing with "database is locked" when a read transaction tries to become a write
    transaction. Reads begin deferred and, in WAL mode, never wait for a writer."""
    write = conn.get_execution_options().get(_WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


_WRITE_OPTION = "syncd_write"


def create_engine(url: str) -> Engine:
    """An engine for a warehouse URL: SQLite in WAL mode, or PostgreSQL via psycopg."""
    url = engine_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})
        sa.event.listen(engine, "connect", _on_sqlite_connect)
        sa.event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    if url.startswith("postgresql"):
        return sa.create_engine(url, pool_pre_ping=True)
    raise ConfigError(
        f"unsupported warehouse URL scheme in {url.split('://')[0]!r}: "
        "expected sqlite:/// or postgresql://",
        key="warehouse.url",
    )


@dataclass(frozen=True, slots=True)
class StoredItem:
    """An item as the metrics module reads it back."""

    source: str
    item_id: str
    key: str
    flow_type: str
    value_stream: str
    transitions: tuple[Transition, ...]


class Writes:
    """What the statements of a `Warehouse.pipeline` block wrote, known when it ends."""

    def __init__(self) -> None:
        self.cursors: list[tuple[str, Any]] = []

    def rows(self, table: sa.Table) -> int:
        """How many rows the block's `upsert_changed` statements wrote to `table`."""
        return sum(max(c.rowcount, 0) for name, c in self.cursors if name == table.name)


class Warehouse:
    """Everything syncd keeps, behind a few transactional operations."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.dialect = self.engine.dialect.name
        self._pipelines: dict[int, Writes] = {}
        if create:
            self.create_schema()

    def __repr__(self) -> str:
        return f"Warehouse(dialect={self.dialect!r})"

    def create_schema(self) -> None:
        from syncd.metrics import ledger
        from syncd.warehouse import migrations

        migrations.prepare(self)  # tables, views and Alembic revision (see migrations/)
        with self.begin() as conn:
            self.upsert(
                conn, META, [{"key": "schema_version", "value": str(SCHEMA_VERSION)}], ["key"]
            )
            # a warehouse without items has nothing to backfill: every item it will hold gets
            # its metric facts in the transaction that writes it
            empty = conn.execute(sa.select(ITEMS.c.item_id).limit(1)).first() is None
            if empty and ledger.meta(conn, ledger.FACTS_KEY) is None:
                self.set_meta(conn, ledger.FACTS_KEY, ledger.FACTS_VERSION)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back on any error."""
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                yield conn

    @contextmanager
    def pipeline(self, conn: Connection) -> Iterator[Writes]:
        """A block whose `upsert_changed` and `delete_many` statements go out without waiting
        for each other's results: on PostgreSQL (its pipeline mode) the server executes them
        while the caller computes the next ones. How many rows they wrote is known when the
        block ends (`Writes.rows`); an error in one surfaces at the latest there, and the
        transaction rolls back as usual. Elsewhere the statements run one by one."""
        writes = Writes()
        if self.dialect != "postgresql":
            yield writes
            return
        import psycopg

        driver: Any = conn.connection.driver_connection  # psycopg's connection
        self._pipelines[id(conn)] = writes
        try:
            with driver.pipeline():
                yield writes
        except psycopg.Error as exc:  # as SQLAlchemy raises the driver's errors elsewhere
            raise sa.exc.DBAPIError.instance(None, None, exc, psycopg.Error) from exc
        finally:
            del self._pipelines[id(conn)]

    def _execute_driver(
        self, conn: Connection, sql: str, params: Sequence[Any], counted: sa.Table | None = None
    ) -> int:
        """Run a PostgreSQL statement and return its row count. In a `pipeline` block it
        returns at once, -1; when it writes to a `counted` table, its count goes to the
        block's `Writes`."""
        writes = self._pipelines.get(id(conn))
        if writes is None:
            return int(conn.exec_driver_sql(sql, tuple(params)).rowcount)
        driver: Any = conn.connection.driver_connection
        cursor = driver.cursor()
        cursor.execute(sql, params)
        if counted is not None:
            writes.cursors.append((counted.name, cursor))
        return -1

    def upsert(
        self,
        conn: Connection,
        table: sa.Table,
        rows: Sequence[Mapping[str, Any]],
        keys: Sequence[str],
    ) -> None:
        """INSERT … ON CONFLICT (keys) DO UPDATE for both dialects. On SQLite it goes straight
        to the driver's executemany, as `insert_many` does."""
        if not rows:
            return
        if self.dialect == "sqlite":
            names = list(rows[0])
            q = conn.dialect.identifier_preparer.quote
            updates = [f"{q(n)} = excluded.{q(n)}" for n in names if n not in keys]
            sql = (
                f"INSERT INTO {q(table.name)} ({', '.join(map(q, names))}) "
                f"VALUES ({', '.join('?' * len(names))}) "
                f"ON CONFLICT ({', '.join(map(q, keys))}) DO "
                + (f"UPDATE SET {', '.join(updates)}" if updates else "NOTHING")
            )
            values = [tuple(row[n] for n in names) for row in rows]
            conn.exec_driver_sql(sql, _sqlite_rows(table, names, values))
            return
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        stmt = insert(table)
        update = {
            c.name: stmt.excluded[c.name]
            for c in table.columns
            if c.name not in keys and c.name in rows[0]
        }
        stmt = (
            stmt.on_conflict_do_update(index_elements=list(keys), set_=update)
            if update
            else stmt.on_conflict_do_nothing(index_elements=list(keys))
        )
        conn.execute(stmt, list(rows))

    def insert_many(
        self,
        conn: Connection,
        table: sa.Table,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """Plain bulk INSERT of value tuples. On SQLite it goes straight to the driver's
        executemany: SQLAlchemy's per-row type processing costs more than SQLite's insert.
        Only the datetime columns need rendering there; the other values pass as they are."""
        if not rows:
            return
        q = conn.dialect.identifier_preparer.quote
        if self.dialect == "postgresql":
            # COPY: one stream of rows instead of one INSERT per row
            names = ", ".join(map(q, columns))
            driver: Any = conn.connection.driver_connection  # psycopg's connection
            with (
                driver.cursor() as cursor,
                cursor.copy(f"COPY {q(table.name)} ({names}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)
            return
        if self.dialect != "sqlite":
            conn.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in rows])
            return
        sql = (
            f"INSERT INTO {q(table.name)} ({', '.join(map(q, columns))}) "
            f"VALUES ({', '.join('?' * len(columns))})"
        )
        conn.exec_driver_sql(sql, _sqlite_rows(table, columns, rows))

    def upsert_changed(
        self,
        conn: Connection,
        table: sa.Table,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        keys: Sequence[str],
        compared: str,
    ) -> int:
        """Bulk INSERT … ON CONFLICT (keys) DO UPDATE of value tuples, updating a stored row
        only when its `compared` column differs: unchanged rows are not rewritten. Returns
        how many rows were inserted or updated. One statement on PostgreSQL (the rows as
        arrays), the driver's executemany on SQLite."""
        if not rows:
            return 0
        q = conn.dialect.identifier_preparer.quote
        names = ", ".join(map(q, columns))
        updates = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in columns if c not in keys)
        conflict = (
            f"ON CONFLICT ({', '.join(map(q, keys))}) DO UPDATE SET {updates} "
            f"WHERE {q(table.name)}.{q(compared)} <> excluded.{q(compared)}"
        )
        if self.dialect == "postgresql":
            types = [table.c[name].type.compile(dialect=conn.dialect) for name in columns]
            arrays = ", ".join(f"%b::{t}[]" for t in types)  # binary: no text escaping
            sql = f"INSERT INTO {q(table.name)} ({names}) SELECT * FROM unnest({arrays}) {conflict}"
            params = tuple(list(values) for values in zip(*rows, strict=True))
            return max(self._execute_driver(conn, sql, params, counted=table), 0)
        if self.dialect != "sqlite":  # pragma: no cover - create_engine accepts no other
            raise NotImplementedError(f"upsert_changed on {self.dialect}")
        values = ", ".join("?" * len(columns))
        sql = f"INSERT INTO {q(table.name)} ({names}) VALUES ({values}) {conflict}"
        return int(conn.exec_driver_sql(sql, _sqlite_rows(table, columns, rows)).rowcount)

    def delete_many(
        self,
        conn: Connection,
        table: sa.Table,
        columns: Sequence[str],
        keys: Sequence[Sequence[Any]],
    ) -> None:
        """Bulk DELETE of the rows whose `columns` equal one of `keys` (value tuples), each
        found through the table's index: on PostgreSQL one statement joining the keys as
        arrays, on SQLite the driver's executemany (a list of row values is a table scan
        there)."""
        if not keys:
            return
        q = conn.dialect.identifier_preparer.quote
        if self.dialect == "postgresql":
            types = [table.c[name].type.compile(dialect=conn.dialect) for name in columns]
            arrays = ", ".join(f"%b::{t}[]" for t in types)  # binary: no text escaping
            names = [f"k{i}" for i in range(len(columns))]
            match = " AND ".join(f"t.{q(c)} = k.{n}" for c, n in zip(columns, names, strict=True))
            sql = (
                f"DELETE FROM {q(table.name)} t USING unnest({arrays}) "
                f"AS k({', '.join(names)}) WHERE {match}"
            )
            self._execute_driver(conn, sql, [list(values) for values in zip(*keys, strict=True)])
            return
        if self.dialect == "sqlite":
            match = " AND ".join(f"{q(c)} = ?" for c in columns)
            sql = f"DELETE FROM {q(table.name)} WHERE {match}"
            conn.exec_driver_sql(sql, _sqlite_rows(table, columns, keys))
            return
        where = [table.c[c] == sa.bindparam(f"k{i}") for i, c in enumerate(columns)]
        params = [{f"k{i}": v for i, v in enumerate(key)} for key in keys]
        conn.execute(table.delete().where(*where), params)

    # -- meta ----------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(META.c.value).where(META.c.key == key)).scalar()

    def set_meta(self, conn: Connection, key: str, value: str) -> None:
        self.upsert(conn, META, [{"key": key, "value": value}], ["key"])

    # -- runs and cursors ----------------------------------------------------------------

    def start_run(self, run_id: str, source: str, started_at: datetime) -> None:
        """Record a run's start. Runs of the source still marked running were cut off (a kill,
        a crash): they are marked interrupted — their committed pages stand."""
        with self.begin() as conn:
            conn.execute(
                RUNS.update()
                .where(RUNS.c.source == source, RUNS.c.status == "running")
                .values(status="interrupted", finished_at=started_at)
            )
            conn.execute(
                RUNS.insert().values(
                    run_id=run_id, source=source, started_at=started_at, status="running"
                )
            )

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        finished_at: datetime,
        counts: Mapping[str, int],
        error: str | None = None,
    ) -> None:
        with self.begin() as conn:
            conn.execute(
                RUNS.update()
                .where(RUNS.c.run_id == run_id)
                .values(status=status, finished_at=finished_at, error=error, **counts)
            )

    def runs(self, source: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(RUNS).order_by(RUNS.c.started_at)
        if source:
            query = query.where(RUNS.c.source == source)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def get_cursor(self, source: str, stream: str) -> Cursor | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(CURSORS.c.watermark, CURSORS.c.state).where(
                    CURSORS.c.source == source, CURSORS.c.stream == stream
                )
            ).first()
        if row is None:
            return None
        return Cursor(watermark=row.watermark, state=json.loads(row.state))

    def known_updated(
        self, source: str, ids: Sequence[str], *, synced_since: datetime | None = None
    ) -> dict[str, datetime]:
        """Stored `updated_at` by item id, for the ids that are in the warehouse (and, with
        `synced_since`, were written at or after it: a resync refetches the others)."""
        out: dict[str, datetime] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(list(ids)):
                query = sa.select(ITEMS.c.item_id, ITEMS.c.updated_at).where(
                    ITEMS.c.source == source, ITEMS.c.item_id.in_(chunk)
                )
                if synced_since is not None:
                    query = query.where(ITEMS.c.synced_at >= synced_since)
                for row in conn.execute(query):
                    out[row.item_id] = row.updated_at
        return out

    # -- the page commit -----------------------------------------------------------------

    def commit_page(
        self, *, source: str, stream: str, run_id: str, page: Page, now: datetime
    ) -> int:
        """Write a page's raw responses, items, transitions, links, the metric spans they
        dirty, and the stream's new cursor, all in one transaction. Returns items written."""
        items = _dedupe_latest(page.items)
        with self.begin() as conn:
            if page.raws:
                conn.execute(
                    RAW.insert(),
                    [
                        {
                            "source": source,
                            "stream": raw.stream,
                            "run_id": run_id,
                            "method": raw.method,
                            "url": raw.url,
                            "params": json.dumps(raw.params, sort_keys=True, default=str),
                            "body": json.dumps(raw.body, separators=(",", ":"), ensure_ascii=False),
                            "fetched_at": raw.fetched_at,
                        }
                        for raw in page.raws
                    ],
                )
            if items:
                self._write_items(conn, source, items, now)
            self.upsert(
                conn,
                CURSORS,
                [
                    {
                        "source": source,
                        "stream": stream,
                        "watermark": page.cursor.watermark,
                        "state": json.dumps(dict(page.cursor.state), sort_keys=True, default=str),
                        "run_id": run_id,
                        "updated_at": now,
                    }
                ],
                ["source", "stream"],
            )
        return len(items)

    def _write_items(
        self,
        conn: Connection,
        source: str,
        items: Sequence[FlowItem],
        now: datetime,
        synced_at: Mapping[str, datetime] | None = None,
    ) -> None:
        """Write items with their transitions, links and metric facts. `synced_at` keeps the
        sync time of items rewritten from the warehouse itself (not fetched now)."""
        ids = [item.id for item in items]
        before: dict[str, Version] = {}
        for chunk in chunks(ids):
            before.update(metric_ledger.read_versions(conn, source, chunk))
            conn.execute(
                TRANSITIONS.delete().where(
                    TRANSITIONS.c.source == source, TRANSITIONS.c.item_id.in_(chunk)
                )
            )
            conn.execute(LINKS.delete().where(LINKS.c.source == source, LINKS.c.item_id.in_(chunk)))

        item_rows: list[dict[str, Any]] = []
        transition_rows: list[tuple[Any, ...]] = []
        link_rows: list[tuple[Any, ...]] = []
        timelines: list[tuple[FlowItem, ItemTimeline]] = []
        for item in items:
            timeline = item_timeline(item.transitions)
            timelines.append((item, timeline))
            figures = timeline.figures
            item_rows.append(
                {
                    "source": source,
                    "item_id": item.id,
                    "key": item.key,
                    "kind": item.kind,
                    "title": item.title,
                    "project": item.project,
                    "flow_type": item.flow_type,
                    "value_stream": item.value_stream,
                    "stage": item.stage.value,
                    "state": item.state,
                    "labels": json.dumps(item.labels, ensure_ascii=False),
                    "created_at": item.created_at,
                    "updated_at": item.updated_at,
                    "work_start": figures.work_start,
                    "work_end": figures.work_end,
                    "outcome": figures.outcome.value if figures.outcome else None,
                    "flow_time_s": figures.flow_time_s,
                    "active_s": figures.active_s,
                    "wait_s": figures.wait_s,
                    "deleted_at": None,
                    "synced_at": synced_at.get(item.id, now) if synced_at else now,
                }
            )
            transition_rows.extend(
                (
                    source,
                    item.id,
                    seq,
                    t.at,
                    t.from_state,
                    t.to_state,
                    t.from_stage.value if t.from_stage else None,
                    t.to_stage.value,
                )
                for seq, t in enumerate(item.transitions)
            )
            link_rows.extend(
                (source, item.id, link.link_type, link.direction, link.target_key, link.target_id)
                for link in {
                    (lk.link_type, lk.direction, lk.target_key): lk for lk in item.links
                }.values()
            )
        self.upsert(conn, ITEMS, item_rows, ["source", "item_id"])
        self.insert_many(conn, TRANSITIONS, _TRANSITION_COLUMNS, transition_rows)
        self.insert_many(conn, LINKS, _LINK_COLUMNS, link_rows)
        metric_ledger.record_items(self, conn, source, timelines, before)

    def start_resync(self, source: str, meta: Mapping[str, str]) -> None:
        """Forget the source's cursors and record `meta`, in one transaction: the next runs
        list the whole scope again (resumably) and refetch items not yet written since."""
        with self.begin() as conn:
            conn.execute(CURSORS.delete().where(CURSORS.c.source == source))
            for key, value in meta.items():
                self.set_meta(conn, key, value)

    def delete_meta(self, key: str) -> None:
        with self.begin() as conn:
            conn.execute(META.delete().where(META.c.key == key))

    def reconcile(self, source: str, present: set[str], now: datetime) -> tuple[int, int]:
        """After a complete listing: tombstone the source's items that are not in `present`
        (kept, with `deleted_at`) and revive tombstoned ones that are back. The metric spans of
        both are marked dirty. Returns (tombstoned, revived)."""
        with self.begin() as conn:
            rows = conn.execute(
                sa.select(
                    ITEMS.c.item_id,
                    ITEMS.c.deleted_at,
                    ITEMS.c.value_stream,
                    ITEMS.c.work_start,
                    ITEMS.c.work_end,
                ).where(ITEMS.c.source == source)
            ).all()
            gone = [r for r in rows if r.deleted_at is None and r.item_id not in present]
            back = [r for r in rows if r.deleted_at is not None and r.item_id in present]
            for group, value in ((gone, now), (back, None)):
                for chunk in chunks([r.item_id for r in group]):
                    conn.execute(
                        ITEMS.update()
                        .where(ITEMS.c.source == source, ITEMS.c.item_id.in_(chunk))
                        .values(deleted_at=value)
                    )
            metric_ledger.record_presence(
                self, conn, source, [r.item_id for r in gone], [r.item_id for r in back]
            )
        return len(gone), len(back)

    def value_streams(self, conn: Connection | None = None) -> list[str]:
        """The value streams items carry (tombstoned items included)."""
        query = sa.select(ITEMS.c.value_stream).distinct().order_by(ITEMS.c.value_stream)
        if conn is not None:
            return list(conn.execute(query).scalars())
        with self.engine.connect() as own:
            return list(own.execute(query).scalars())

    def sources(self) -> list[str]:
        """The sources that have items in the warehouse."""
        with self.engine.connect() as conn:
            query = sa.select(ITEMS.c.source).distinct().order_by(ITEMS.c.source)
            return list(conn.execute(query).scalars())

    def item_heads(self, source: str) -> Iterator[tuple[str, str, list[str], str]]:
        """(item id, project, labels, value stream) of every stored item of a source."""
        with self.engine.connect() as conn:
            query = sa.select(
                ITEMS.c.item_id, ITEMS.c.project, ITEMS.c.labels, ITEMS.c.value_stream
            ).where(ITEMS.c.source == source)
            for r in conn.execute(query.order_by(ITEMS.c.item_id)):
                yield r.item_id, r.project, labels_of(r.labels), r.value_stream

    def move_items(self, source: str, moves: Mapping[str, str], batch: int = 1000) -> None:
        """Put stored items into other value streams (item id → stream). Live items are
        rewritten through the normal write path, so their metric facts follow them, a batch
        per transaction; they keep their sync time. Tombstoned items only change the column."""
        ids = sorted(moves)
        for chunk in chunks(ids, batch):
            with self.begin() as conn:
                live, tombstoned, synced = self._load_flow_items(conn, source, chunk)
                for item in live:
                    item.value_stream = moves[item.id]
                if live:
                    self._write_items(conn, source, live, utcnow(), synced_at=synced)
                for item_id in tombstoned:
                    conn.execute(
                        ITEMS.update()
                        .where(ITEMS.c.source == source, ITEMS.c.item_id == item_id)
                        .values(value_stream=moves[item_id])
                    )

    def load_flow_items(self, conn: Connection, source: str, ids: Sequence[str]) -> list[FlowItem]:
        """Stored live items of a source as flow items, with transitions, links and labels."""
        return self._load_flow_items(conn, source, ids)[0]

    def _load_flow_items(
        self, conn: Connection, source: str, ids: Sequence[str]
    ) -> tuple[list[FlowItem], list[str], dict[str, datetime]]:
        items: list[FlowItem] = []
        tombstoned: list[str] = []
        synced: dict[str, datetime] = {}
        links: dict[str, list[Link]] = {}
        for chunk in chunks(ids):
            for r in conn.execute(
                sa.select(LINKS).where(LINKS.c.source == source, LINKS.c.item_id.in_(chunk))
            ):
                links.setdefault(r.item_id, []).append(
                    Link(r.link_type, r.direction, r.target_key, r.target_id)
                )
        histories = load_transitions(conn, source, ids)
        for chunk in chunks(ids):
            rows = conn.execute(
                sa.select(ITEMS)
                .where(ITEMS.c.source == source, ITEMS.c.item_id.in_(chunk))
                .order_by(ITEMS.c.item_id)
            )
            for r in rows:
                if r.deleted_at is not None:
                    tombstoned.append(r.item_id)
                    continue
                synced[r.item_id] = r.synced_at
                items.append(
                    FlowItem(
                        source=source,
                        id=r.item_id,
                        key=r.key,
                        kind=r.kind,
                        title=r.title,
                        project=r.project,
                        flow_type=r.flow_type,
                        value_stream=r.value_stream,
                        stage=Stage(r.stage),
                        state=r.state,
                        created_at=r.created_at,
                        updated_at=r.updated_at,
                        transitions=histories.get(r.item_id, []),
                        links=links.get(r.item_id, []),
                        labels=labels_of(r.labels),
                    )
                )
        return items, tombstoned, synced

    def load_items(self, conn: Connection, value_stream: str) -> list[StoredItem]:
        """The live (not tombstoned) items of a value stream, with transitions. All of them:
        the stored work start and end describe the whole history, while a computation as of
        an earlier time can find an item finished that is not any more."""
        query = sa.select(
            ITEMS.c.source, ITEMS.c.item_id, ITEMS.c.key, ITEMS.c.flow_type, ITEMS.c.value_stream
        ).where(ITEMS.c.value_stream == value_stream, ITEMS.c.deleted_at.is_(None))
        heads = conn.execute(query.order_by(ITEMS.c.source, ITEMS.c.item_id)).all()
        transitions: dict[tuple[str, str], list[Transition]] = {}
        by_source: dict[str, list[str]] = {}
        for head in heads:
            by_source.setdefault(head.source, []).append(head.item_id)
        for source, ids in by_source.items():
            for item_id, history in load_transitions(conn, source, ids).items():
                transitions[(source, item_id)] = history
        return [
            StoredItem(
                source=h.source,
                item_id=h.item_id,
                key=h.key,
                flow_type=h.flow_type,
                value_stream=h.value_stream,
                transitions=tuple(transitions.get((h.source, h.item_id), ())),
            )
            for h in heads
        ]

    def prune_raw(self, source: str, older_than: datetime) -> int:
        """Drop raw pages of a source fetched before `older_than` (retention)."""
        with self.begin() as conn:
            result = conn.execute(
                RAW.delete().where(RAW.c.source == source, RAW.c.fetched_at < older_than)
            )
            return int(result.rowcount or 0)


def _sqlite_value(value: Any) -> Any:
    """A bind value as SQLAlchemy's SQLite DateTime stores it: naive UTC text."""
    if isinstance(value, datetime):
        if value.tzinfo is not UTC:
            if value.tzinfo is None:
                raise ValueError(f"naive datetime {value!r} reached the warehouse")
            value = value.astimezone(UTC)
        return value.isoformat(" ", "microseconds")[:-6]  # without its "+00:00"
    return value


def _sqlite_rows(
    table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> list[tuple[Any, ...]]:
    """Driver parameters for `rows`: the values of the table's datetime columns rendered as
    SQLAlchemy stores them on SQLite, every other value as it is."""
    dated = [
        i
        for i, name in enumerate(columns)
        if isinstance(getattr(table.c[name].type, "impl", table.c[name].type), sa.DateTime)
    ]
    if not dated:
        return [row if type(row) is tuple else tuple(row) for row in rows]
    if len(dated) == 1:
        i = dated[0]
        return [(*row[:i], _sqlite_value(row[i]), *row[i + 1 :]) for row in rows]
    out: list[tuple[Any, ...]] = []
    for row in rows:
        values = list(row)
        for i in dated:
            values[i] = _sqlite_value(values[i])
        out.append(tuple(values))
    return out


def labels_of(text: str | None) -> list[str]:
    """An item's `labels` column (a JSON list of strings) as a list; [] when unreadable."""
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _dedupe_latest(items: Sequence[FlowItem]) -> list[FlowItem]:
    """One item per id, the most recently updated (a page may repeat an item that changed
    while it was being paged)."""
    latest: dict[str, FlowItem] = {}
    for item in items:
        seen = latest.get(item.id)
        if seen is None or item.updated_at >= seen.updated_at:
            latest[item.id] = item
    return list(latest.values())


def utcnow() -> datetime:
    return datetime.now(UTC)
