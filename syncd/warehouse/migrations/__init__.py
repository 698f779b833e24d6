"""Schema migrations of the warehouse (Alembic), run by syncd itself whenever it opens one.

The revisions live in `versions/` inside the package and are configured here in code: no
alembic.ini is read at run time. When a warehouse opens (`Warehouse.create_schema`):

- **at the newest revision**: nothing to do (one read of `alembic_version`, without importing
  Alembic: a process that only opens current warehouses never loads it, ~12 MB);
- **empty** (no syncd table): the tables are created from the models, the views from
  `syncd/warehouse/views.py`, and the warehouse is stamped with the newest revision. This is
  fast (the test suite creates hundreds of warehouses); tests prove that upgrading from
  revision 0001 gives exactly the same schema and views;
- **made by the release before migrations** (syncd tables, `warehouse_meta.schema_version` 1,
  no `alembic_version`): stamped 0001, that release's schema, then upgraded;
- **at an older revision**: upgraded to the newest.

All of it runs in one transaction under a lock, so two processes opening the same old
warehouse at once never both migrate: the second waits, then finds the work done. The lock
is a transaction-level advisory lock on PostgreSQL and the database's write lock (BEGIN
IMMEDIATE) on SQLite; DDL is transactional on both, so a failed migration leaves the
warehouse as it was.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from syncd.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from syncd.warehouse.store import Warehouse

log = structlog.get_logger("syncd.warehouse")

#: the newest revision in `versions/` (a test checks it against Alembic's head): a warehouse
#: stamped with it needs nothing, and opening it needs no Alembic
HEAD = "0003"
#: the revision that describes the release before migrations (`schema_version` 1)
BASELINE = "0001"
#: the `warehouse_meta.schema_version` that release wrote
BASELINE_SCHEMA_VERSION = "1"
#: a table every syncd warehouse has had since the first release
_MARKER_TABLE = "warehouse_meta"
_LOCK_NAME = "_migrations"

LOCATION = Path(__file__).resolve().parent


def config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for the packaged revisions; with `connection`, the revisions
    run on it, inside its transaction."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(LOCATION))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def scripts() -> ScriptDirectory:
    """The packaged revisions (read once per process)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config())


def head() -> str:
    """The newest revision."""
    revision = scripts().get_current_head()
    if revision is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError("no warehouse migrations found in " + str(LOCATION))
    return revision


def current(conn: Connection) -> str | None:
    """The revision a warehouse is stamped with, None when it has none (read as Alembic
    keeps it: one row of `alembic_version`)."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) > 1:  # pragma: no cover - syncd's revisions never branch
        raise ConfigError(
            f"the warehouse's alembic_version has {len(rows)} rows ({', '.join(rows)}); "
            "syncd's migrations have a single head",
            key="warehouse.url",
        )
    return rows[0] if rows else None


def prepare(warehouse: Warehouse) -> str:
    """Bring the warehouse's schema to the newest revision (see the module docstring).
    Returns what was done: "current", "created", "stamped" (a pre-migrations warehouse) +
    "upgraded", or "upgraded"."""
    newest = HEAD
    with warehouse.engine.connect() as conn:
        if current(conn) == newest:
            return "current"
    from alembic import command

    with warehouse.begin() as conn:
        _lock(conn)
        found = current(conn)
        if found == newest:
            return "current"
        if found is None:
            if not sa.inspect(conn).has_table(_MARKER_TABLE):
                _create(conn)
                return "created"
            _stamp_baseline(conn)
        command.upgrade(config(conn), "head")
        log.info(
            "warehouse.migrated",
            dialect=warehouse.dialect,
            from_revision=found or f"schema_version {BASELINE_SCHEMA_VERSION}",
            to_revision=newest,
        )
        return "upgraded" if found else "stamped+upgraded"


def _lock(conn: Connection) -> None:
    """Serialise migrations across processes until the transaction ends. SQLite's write
    transaction (BEGIN IMMEDIATE, `Warehouse.begin`) already excludes other writers."""
    if conn.dialect.name == "postgresql":
        from syncd.locks import advisory_key

        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_key(_LOCK_NAME)})


def _create(conn: Connection) -> None:
    """A new warehouse: the models' tables, the current views, stamped with the newest
    revision."""
    from sqlmodel import SQLModel

    import syncd.warehouse.models  # noqa: F401  (registers the tables)
    from syncd.warehouse import views

    SQLModel.metadata.create_all(conn)
    views.install(conn)
    _stamp(conn, "head")


def _stamp_baseline(conn: Connection) -> None:
    """A warehouse made before migrations is the baseline revision, if it says it is."""
    meta = sa.table("warehouse_meta", sa.column("key"), sa.column("value"))
    version = conn.execute(
        sa.select(meta.c.value).where(meta.c.key == "schema_version")
    ).scalar_one_or_none()
    if version != BASELINE_SCHEMA_VERSION:
        raise ConfigError(
            f"the warehouse has schema_version {version!r} and no migration history; this "
            f"syncd migrates warehouses of schema_version {BASELINE_SCHEMA_VERSION} "
            "(point warehouse.url at a syncd warehouse, or at an empty database)",
            key="warehouse.url",
        )
    _stamp(conn, BASELINE)


def _stamp(conn: Connection, revision: str) -> None:
    from alembic.runtime.migration import MigrationContext

    MigrationContext.configure(conn).stamp(scripts(), revision)


def replace_views(conn: Connection, bodies: Mapping[str, str]) -> None:
    """(Re)create views (name → SELECT body, in creation order) for a revision. On PostgreSQL
    the privileges granted on them (a BI tool's read-only role, say) are granted again, since
    dropping a view drops its grants."""
    grants = _view_grants(conn, list(bodies)) if conn.dialect.name == "postgresql" else []
    for name in reversed(list(bodies)):
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {name}")
    for name, body in bodies.items():
        conn.exec_driver_sql(f"CREATE VIEW {name} AS\n{body}")
    for grant in grants:
        conn.exec_driver_sql(grant)


def _view_grants(conn: Connection, names: list[str]) -> list[str]:
    """GRANT statements restoring the privileges others hold on the named views."""
    rows = conn.execute(
        sa.text(
            "SELECT p.table_name, p.grantee, p.privilege_type, p.is_grantable"
            " FROM information_schema.table_privileges p"
            " JOIN pg_views v ON v.schemaname = p.table_schema AND v.viewname = p.table_name"
            " WHERE p.table_schema = current_schema() AND p.grantee <> v.viewowner"
            " AND p.table_name IN :names"
        ).bindparams(sa.bindparam("names", expanding=True)),
        {"names": names},
    )
    grants = []
    for view, grantee, privilege, grantable in rows:
        who = "PUBLIC" if grantee == "PUBLIC" else '"' + grantee.replace('"', '""') + '"'
        option = " WITH GRANT OPTION" if grantable == "YES" else ""
        grants.append(f"GRANT {privilege} ON {view} TO {who}{option}")
    return grants


def drop_all(engine: sa.Engine) -> None:
    """Drop everything syncd created in a database: the views, the tables and the migration
    history (benchmarks and tests that reuse a database start from nothing with it)."""
    from sqlmodel import SQLModel

    import syncd.warehouse.models  # noqa: F401  (registers the tables)
    from syncd.warehouse import views

    with engine.begin() as conn:
        views.drop_views(conn)
        SQLModel.metadata.drop_all(conn)
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
