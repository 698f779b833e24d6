"""Warehouse migrations (syncd/warehouse/migrations), on SQLite and PostgreSQL.

A warehouse of the previous release, made by revision 0001 (with or without Alembic's
version table, as that release left it), filled through plain inserts, opens with the
current `Warehouse`: every row is kept and the views answer. Upgrading an empty database
from 0001 gives exactly the schema a fresh warehouse gets from the models, and the views a
fresh warehouse installs are the ones frozen in the newest revision.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

from syncd.domain import Stage, Transition
from syncd.errors import ConfigError
from syncd.metrics.compute import MetricItem, compute_all
from syncd.metrics.figures import item_figures
from syncd.metrics.incremental import update_metrics
from syncd.warehouse import migrations, views
from syncd.warehouse.migrations import BASELINE
from syncd.warehouse.migrations.versions import r0003_finish_changes as r0003
from syncd.warehouse.store import Warehouse, create_engine

ROOT = Path(__file__).resolve().parents[1]
AS_OF = datetime(2026, 3, 9, 12, tzinfo=UTC)
VS = "Shop"
#: the previous release's tables (revision 0001), each with its primary key
OLD_TABLES = {
    "raw_pages": ("id",),
    "items": ("source", "item_id"),
    "transitions": ("source", "item_id", "seq"),
    "item_links": ("source", "item_id", "link_type", "direction", "target_key"),
    "cursors": ("source", "stream"),
    "sync_runs": ("run_id",),
    "metric_rows": ("value_stream", "period", "period_start", "flow_type"),
    "metric_items": ("source", "item_id"),
    "metric_segments": ("source", "item_id", "seg_start"),
    "metric_runs": ("source", "item_id", "run_start", "at"),
    "metric_days": ("value_stream", "day"),
    "metric_dirt": ("id",),
    "warehouse_meta": ("key",),
}


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


def moves(*steps: tuple[datetime, str, Stage]) -> list[Transition]:
    out: list[Transition] = []
    for when, state, stage in steps:
        prev = out[-1] if out else None
        out.append(
            Transition(
                when,
                prev.to_state if prev else None,
                state,
                prev.to_stage if prev else None,
                stage,
            )
        )
    return out


#: key → (flow type, history, deleted); SHOP-4 was tombstoned by the previous release
HISTORIES: dict[str, tuple[str, list[Transition], bool]] = {
    "SHOP-1": (
        "feature",
        moves(
            (at(1, 9), "To Do", Stage.NEW),
            (at(2, 10), "In Progress", Stage.ACTIVE),
            (at(4, 12), "Done", Stage.DONE),
        ),
        False,
    ),
    "SHOP-2": (
        "defect",
        moves(
            (at(1, 10), "To Do", Stage.NEW),
            (at(3), "In Progress", Stage.ACTIVE),  # exactly midnight
            (at(3, 15), "Blocked", Stage.WAITING),
        ),
        False,
    ),
    "SHOP-3": ("debt", moves((at(2, 8), "To Do", Stage.NEW)), False),
    "SHOP-4": (
        "feature",
        moves((at(1, 8), "To Do", Stage.NEW), (at(2, 8), "In Progress", Stage.ACTIVE)),
        True,
    ),
}


def upgrade(url: str, revision: str) -> None:
    """Run the packaged revisions up to `revision`, as `alembic upgrade` would."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            command.upgrade(migrations.config(conn), revision)
    finally:
        engine.dispose()


def reflected(engine: Engine, name: str) -> sa.Table:
    return sa.Table(name, sa.MetaData(), autoload_with=engine)


def fill_previous_release(engine: Engine) -> None:
    """What the previous release stored, written with plain INSERTs into its tables."""
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in OLD_TABLES}
    for n, (key, (flow_type, history, deleted)) in enumerate(HISTORIES.items(), start=1):
        figures = item_figures(history)
        rows["items"].append(
            {
                "source": "jira",
                "item_id": str(10000 + n),
                "key": key,
                "kind": "Story",
                "title": f"item {key}",
                "project": "SHOP",
                "flow_type": flow_type,
                "value_stream": VS,
                "stage": history[-1].to_stage.value,
                "state": history[-1].to_state,
                "created_at": history[0].at,
                "updated_at": history[-1].at,
                "work_start": figures.work_start,
                "work_end": figures.work_end,
                "outcome": figures.outcome.value if figures.outcome else None,
                "flow_time_s": figures.flow_time_s,
                "active_s": figures.active_s,
                "wait_s": figures.wait_s,
                "deleted_at": at(8) if deleted else None,
                "synced_at": at(8),
            }
        )
        rows["transitions"].extend(
            {
                "source": "jira",
                "item_id": str(10000 + n),
                "seq": seq,
                "at": t.at,
                "from_state": t.from_state,
                "to_state": t.to_state,
                "from_stage": t.from_stage.value if t.from_stage else None,
                "to_stage": t.to_stage.value,
            }
            for seq, t in enumerate(history)
        )
    rows["item_links"].append(
        {
            "source": "jira",
            "item_id": "10001",
            "link_type": "Blocks",
            "direction": "outward",
            "target_key": "SHOP-2",
            "target_id": "10002",
        }
    )
    rows["cursors"].append(
        {
            "source": "jira",
            "stream": "issues",
            "watermark": at(8),
            "state": json.dumps({"page": None}),
            "run_id": "r1",
            "updated_at": at(8, 1),
        }
    )
    rows["sync_runs"].append(
        {
            "run_id": "r1",
            "source": "jira",
            "started_at": at(8),
            "finished_at": at(8, 1),
            "status": "ok",
            "pages": 1,
            "items": 4,
            "skipped": 0,
            "requests": 3,
            "retries": 0,
            "error": None,
        }
    )
    rows["raw_pages"].append(
        {
            "source": "jira",
            "stream": "issues",
            "run_id": "r1",
            "method": "GET",
            "url": "https://jira.example/rest/api/3/search/jql",
            "params": "{}",
            "body": '{"issues": []}',
            "fetched_at": at(8),
        }
    )
    for kind in ("day", "week"):
        for row in compute_all(VS, kind, live_metric_items(), AS_OF):
            rows["metric_rows"].append(
                {
                    "value_stream": VS,
                    "period": kind,
                    "period_start": row.period_start,
                    "flow_type": row.flow_type,
                    "as_of": AS_OF,
                    "velocity": row.velocity,
                    "load_end": row.load_end,
                    "data": json.dumps(row.to_json(), sort_keys=True),
                }
            )
    rows["metric_dirt"].append(
        {"value_stream": VS, "scope": "flow", "span_start": 1, "span_end": None}
    )
    rows["warehouse_meta"].extend(
        [
            {"key": "schema_version", "value": "1"},
            {"key": "metrics_as_of", "value": AS_OF.isoformat()},
        ]
    )
    with engine.begin() as conn:
        for name, table_rows in rows.items():
            if table_rows:
                conn.execute(reflected(engine, name).insert(), table_rows)


def live_metric_items() -> list[MetricItem]:
    return [
        MetricItem(key, flow_type, history)
        for key, (flow_type, history, deleted) in HISTORIES.items()
        if not deleted
    ]


def dump(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of the previous release's tables, in primary key order."""
    out: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for name, key in OLD_TABLES.items():
            table = reflected(engine, name)
            query = sa.select(table).order_by(*(table.c[k] for k in key))
            out[name] = [dict(r._mapping) for r in conn.execute(query)]
    return out


def make_previous_release(url: str, *, stamped: bool) -> None:
    """A warehouse of the previous release, filled: stamped 0001, or as that release left it
    (no `alembic_version`)."""
    upgrade(url, "0001")
    engine = create_engine(url)
    if not stamped:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE alembic_version")
    fill_previous_release(engine)
    engine.dispose()


@pytest.fixture(params=["stamped-0001", "pre-alembic"])
def previous_release(request: pytest.FixtureRequest, warehouse_url: str) -> Iterator[str]:
    make_previous_release(warehouse_url, stamped=request.param == "stamped-0001")
    yield warehouse_url


def test_a_previous_release_warehouse_keeps_every_row_and_answers_through_the_views(
    previous_release: str,
) -> None:
    engine = create_engine(previous_release)
    before = dump(engine)
    assert len(before["items"]) == 4 and before["metric_rows"]

    warehouse = Warehouse(previous_release)

    after = dump(warehouse.engine)
    labels = [row.pop("labels") for row in after["items"]]
    assert labels == ["[]"] * 4
    # revision 0003: dirt and run marks kept before it carry no finish change
    for table, columns in r0003.COLUMNS.items():
        for row in after[table]:
            assert [row.pop(c) for c in columns] == [None] * len(columns)
    assert after == before
    with warehouse.engine.connect() as conn:
        assert migrations.current(conn) == migrations.head()
        assert set(views.VIEW_NAMES) <= set(sa.inspect(conn).get_view_names())
        items = conn.execute(sa.text("SELECT key, deleted FROM flow_items ORDER BY key")).all()
        assert [(k, bool(d)) for k, d in items] == [
            ("SHOP-1", False),
            ("SHOP-2", False),
            ("SHOP-3", False),
            ("SHOP-4", True),
        ]
        keys = conn.execute(sa.text("SELECT DISTINCT key FROM flow_transitions")).scalars()
        assert sorted(keys) == ["SHOP-1", "SHOP-2", "SHOP-3"]
        metrics = conn.execute(
            sa.text(
                "SELECT period_kind, flow_type, velocity, load_end, distribution_share "
                "FROM flow_metrics WHERE period_kind = 'week' AND period_start = :start"
            ),
            {"start": _param(warehouse, at(2))},
        ).all()
        by_type = {r.flow_type: r for r in metrics}
        assert by_type["all"].velocity == 1 and by_type["feature"].distribution_share == 1.0
        assert by_type["all"].load_end == 1  # SHOP-2, waiting at the week's end
        daily = dict(
            conn.execute(
                sa.text(
                    "SELECT day, SUM(in_progress) FROM flow_load_daily "
                    "WHERE value_stream = :vs GROUP BY day"
                ),
                {"vs": VS},
            ).all()
        )
        stored_days = dict(
            conn.execute(
                sa.text(
                    "SELECT period_start, load_end FROM flow_metrics "
                    "WHERE period_kind = 'day' AND flow_type = 'all'"
                )
            ).all()
        )
    assert stored_days  # the previous release's rows, read through the view
    for start, load in stored_days.items():
        assert daily[_day(start)] == load

    # the migrated warehouse works: a full metrics update rebuilds the same rows
    before_rows = _metric_rows(warehouse)
    update_metrics(warehouse, as_of=AS_OF, full=True)
    rebuilt = {k: v for k, v in _metric_rows(warehouse).items() if k[0] in ("day", "week")}
    assert rebuilt == before_rows


def _param(warehouse: Warehouse, when: datetime) -> Any:
    """A bind value for an instant compared with a view's instant column."""
    if warehouse.dialect == "sqlite":
        return when.replace(tzinfo=None).isoformat(" ", "microseconds")
    return when


def _day(start: Any) -> Any:
    if isinstance(start, str):
        return start[:10]
    return start.date()


def _metric_rows(warehouse: Warehouse) -> dict[tuple[str, str, str], Any]:
    with warehouse.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT period, period_start, flow_type, data FROM metric_rows")
        )
        return {(r.period, str(r.period_start), r.flow_type): json.loads(r.data) for r in rows}


def _shape(conn: Connection) -> dict[str, Any]:
    """What a database's schema looks like to SQLAlchemy's inspector: columns (type,
    nullability, default), primary keys and indexes of every table; the views' columns."""
    inspector = sa.inspect(conn)
    tables: dict[str, Any] = {}
    for name in sorted(inspector.get_table_names()):
        if name == "alembic_version":
            continue
        tables[name] = (
            sorted(
                (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                for c in inspector.get_columns(name)
            ),
            inspector.get_pk_constraint(name)["constrained_columns"],
            sorted(
                (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                for ix in inspector.get_indexes(name)
            ),
        )
    viewed = {
        name: [c["name"] for c in inspector.get_columns(name)]
        for name in sorted(inspector.get_view_names())
    }
    return {"tables": tables, "views": viewed}


def test_upgrading_from_0001_gives_the_schema_of_a_fresh_warehouse(
    warehouse_url: str, tmp_path: Path
) -> None:
    upgrade(warehouse_url, "0001")
    upgrade(warehouse_url, "head")
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        assert migrations.current(conn) == migrations.head()
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, SQLModel.metadata) == []
        upgraded = _shape(conn)
    engine.dispose()

    with _another_database(warehouse_url, tmp_path) as fresh_url:
        fresh = Warehouse(fresh_url)
        with fresh.engine.connect() as conn:
            assert migrations.current(conn) == migrations.head()
            created = _shape(conn)
        fresh.close()
    assert set(created["views"]) == set(views.VIEW_NAMES)
    assert upgraded == created


@contextmanager
def _another_database(url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database beside `url`'s, on the same server."""
    if url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    import psycopg

    base, name = url.rsplit("/", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}_fresh"')
    try:
        yield f"{base}/{name}_fresh"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}_fresh" WITH (FORCE)')


def test_the_views_a_fresh_warehouse_creates_are_frozen_in_the_newest_revision() -> None:
    """A change to views.py (or to syncd.dependencies.view_sql) needs a revision that carries
    the new SQL; the newest revision defining views must hold exactly what views.py makes."""
    script = migrations.scripts()
    frozen = None
    for revision in script.walk_revisions():  # newest first
        frozen = getattr(revision.module, "VIEWS", None)
        if frozen is not None:
            break
    assert frozen is not None
    for dialect in views.DIALECTS:
        assert frozen[dialect] == views.definitions(dialect), dialect


def test_a_warehouse_of_an_unreleased_build_is_completed(warehouse_url: str) -> None:
    """Builds between the previous release and migrations made the new tables and column
    without a revision; opening one stamps 0001 and completes the rest."""
    engine = create_engine(warehouse_url)
    SQLModel.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO warehouse_meta (key, value) VALUES ('schema_version', '1')")
        )
    engine.dispose()
    warehouse = Warehouse(warehouse_url)
    with warehouse.engine.connect() as conn:
        assert migrations.current(conn) == migrations.head()
        assert set(views.VIEW_NAMES) <= set(sa.inspect(conn).get_view_names())


def test_an_unknown_schema_without_history_is_refused(warehouse_url: str) -> None:
    engine = create_engine(warehouse_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE warehouse_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        conn.exec_driver_sql("INSERT INTO warehouse_meta VALUES ('schema_version', '7')")
    engine.dispose()
    with pytest.raises(ConfigError, match="schema_version '7'"):
        Warehouse(warehouse_url)


def test_downgrade_to_0001_and_back_keeps_the_items(warehouse_url: str) -> None:
    upgrade(warehouse_url, "0001")
    engine = create_engine(warehouse_url)
    fill_previous_release(engine)
    before = dump(engine)
    engine.dispose()
    Warehouse(warehouse_url).close()

    engine = create_engine(warehouse_url)
    with engine.connect() as conn, conn.begin():
        command.downgrade(migrations.config(conn), "0001")
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        assert migrations.current(conn) == "0001"
        assert not inspector.get_view_names()
        assert "value_streams" not in inspector.get_table_names()
        assert "labels" not in {c["name"] for c in inspector.get_columns("items")}
    assert dump(engine) == before
    engine.dispose()

    warehouse = Warehouse(warehouse_url)
    with warehouse.engine.connect() as conn:
        assert migrations.current(conn) == migrations.head()
        assert conn.execute(sa.text("SELECT COUNT(*) FROM flow_items")).scalar() == 4


_OPEN = """
import sys
from syncd.warehouse import migrations
from syncd.warehouse.store import Warehouse
print(migrations.prepare(Warehouse(sys.argv[1], create=False)))
"""


def test_two_processes_opening_an_old_warehouse_migrate_it_once(warehouse_url: str) -> None:
    """Both processes start while the migration lock is held elsewhere, so both find the
    warehouse old; once it is released, exactly one migrates and the other finds it done."""
    make_previous_release(warehouse_url, stamped=False)
    holder = create_engine(warehouse_url)
    with holder.connect() as conn:
        conn.execution_options(syncd_write=True)
        with conn.begin():
            if holder.dialect.name == "postgresql":
                from syncd.locks import advisory_key

                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:k)"),
                    {"k": advisory_key("_migrations")},
                )
            else:
                conn.exec_driver_sql("INSERT INTO warehouse_meta VALUES ('lock-holder', 'x')")
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", _OPEN, warehouse_url],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            _wait_until_both_wait(holder, procs)
            conn.exec_driver_sql("DELETE FROM warehouse_meta WHERE key = 'lock-holder'")
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outcomes.append(out.strip().splitlines()[-1])
    holder.dispose()
    assert sorted(outcomes) == ["current", "stamped+upgraded"]
    warehouse = Warehouse(warehouse_url)
    with warehouse.engine.connect() as conn:
        assert migrations.current(conn) == migrations.head()
        assert conn.execute(sa.text("SELECT COUNT(*) FROM flow_items")).scalar() == 4


def _wait_until_both_wait(engine: Engine, procs: list[subprocess.Popen[str]]) -> None:
    """Until both processes are queued on the lock (PostgreSQL shows them in pg_locks;
    SQLite does not, so there the processes are given time to reach their BEGIN)."""
    deadline = time.monotonic() + 60
    if engine.dialect.name != "postgresql":
        time.sleep(3)
        return
    with engine.connect() as watcher:
        while time.monotonic() < deadline:
            for proc in procs:
                assert proc.poll() is None, proc.communicate()
            waiting = watcher.execute(
                sa.text("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            ).scalar()
            watcher.rollback()
            if waiting == 2:
                return
            time.sleep(0.05)
    raise AssertionError("the two processes never queued on the migration lock")


def test_fresh_warehouses_are_stamped_at_the_newest_revision(tmp_path: Path) -> None:
    for url in ("sqlite://", f"sqlite:///{tmp_path / 'w.db'}"):
        warehouse = Warehouse(url)
        with warehouse.engine.connect() as conn:
            assert migrations.current(conn) == migrations.head()
            assert set(sa.inspect(conn).get_view_names()) == set(views.VIEW_NAMES)
        assert migrations.prepare(warehouse) == "current"
        warehouse.close()


def test_a_read_only_role_reads_the_views_only_and_keeps_its_grants(warehouse_url: str) -> None:
    """docs/warehouse.md's PostgreSQL role: SELECT on the views, nothing on the tables; a
    revision that recreates the views grants again what was granted on them."""
    if not warehouse_url.startswith("postgresql"):
        pytest.skip("roles and grants are PostgreSQL's")
    role = f"bi_reader_{uuid.uuid4().hex[:8]}"
    warehouse = Warehouse(warehouse_url)
    try:
        with warehouse.begin() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} NOLOGIN")
            conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {role}")
            conn.exec_driver_sql(f"GRANT SELECT ON {', '.join(views.VIEW_NAMES)} TO {role}")
            # as if the views were older: 0002 runs again and recreates them
            MigrationContext.configure(conn).stamp(migrations.scripts(), BASELINE)
        assert migrations.prepare(warehouse) == "upgraded"
        with warehouse.engine.connect() as conn:
            conn.exec_driver_sql(f"SET ROLE {role}")
            for name in views.VIEW_NAMES:
                conn.execute(sa.text(f"SELECT * FROM {name} LIMIT 1")).all()
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text("SELECT * FROM items LIMIT 1")).all()
            conn.rollback()
    finally:
        with warehouse.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
        warehouse.close()


def test_drop_all_leaves_a_database_a_new_warehouse_can_be_made_in(warehouse_url: str) -> None:
    Warehouse(warehouse_url).close()
    engine = create_engine(warehouse_url)
    migrations.drop_all(engine)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        assert inspector.get_table_names() == [] and inspector.get_view_names() == []
    engine.dispose()
    warehouse = Warehouse(warehouse_url)
    with warehouse.engine.connect() as conn:
        assert migrations.current(conn) == migrations.head()
        assert conn.execute(sa.text("SELECT COUNT(*) FROM flow_items")).scalar() == 0
    warehouse.close()


def test_the_head_constant_is_alembics_head() -> None:
    # a new revision must move HEAD, or opening a warehouse would take it for current
    assert migrations.head() == migrations.HEAD


def test_opening_a_current_warehouse_loads_no_alembic(warehouse_url: str) -> None:
    Warehouse(warehouse_url).close()  # created and stamped (this process loads Alembic)
    probe = (
        "import sys\n"
        "from syncd.warehouse.store import Warehouse\n"
        "from syncd.warehouse import migrations\n"
        f"w = Warehouse({warehouse_url!r})\n"
        "with w.engine.connect() as conn:\n"
        "    assert migrations.current(conn) == migrations.HEAD\n"
        "w.close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
