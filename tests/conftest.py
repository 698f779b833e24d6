"""Shared fixtures: warehouses on SQLite and on a real PostgreSQL server, the simulator.

`SYNCD_TEST_PG=required` (set by the README's test command and CI) makes a missing or
broken PostgreSQL a failure; otherwise PostgreSQL cases skip with the reason.
`SYNCD_TEST_PG_URL` points the suite at an existing server instead of starting one.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg import PostgresServer

SHARED = Path(__file__).resolve().parents[2] / "shared"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer | None]:
    if os.environ.get("SYNCD_TEST_PG_URL"):
        yield None
        return
    try:
        server = PostgresServer()
        server.start()
    except Exception as exc:
        if os.environ.get("SYNCD_TEST_PG") == "required":
            pytest.fail(f"PostgreSQL is required (SYNCD_TEST_PG=required) but did not start: {exc}")
        pytest.skip(f"PostgreSQL not available: {exc}")
    yield server
    server.stop()


def _pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    server: PostgresServer | None = request.getfixturevalue("pg_server")
    name = f"syncd_test_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    if server is None:
        import psycopg

        base = os.environ["SYNCD_TEST_PG_URL"]
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        yield base.rsplit("/", 1)[0] + "/" + name
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    yield server.create_database(name)
    server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty warehouse URL, once per dialect: the same test runs on both."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
    else:
        yield from _pg_url(request)


@pytest.fixture
def shared_fixtures() -> Path:
    """../shared/fixtures, or a skip naming why."""
    path = SHARED / "fixtures"
    if not path.is_dir():
        pytest.skip(f"shared fixtures not found at {path} (they live beside the repository)")
    return path
