"""Per-source locks, so that several syncd processes on one warehouse never sync the same
source at once (and never update the metric rows at once).

PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) held on a dedicated
connection for the length of the run. The server releases it when that connection ends, so a
process killed with -9 leaves no stale lock behind.

SQLite: `flock` on a file next to the database (`<db>.locks/<name>.lock`). The kernel drops the
lock with the process, for the same reason. Two threads of one process opening the file
separately exclude each other too. An in-memory SQLite warehouse is private to its process:
plain thread locks do.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog

from syncd.warehouse.store import Warehouse

log = structlog.get_logger("syncd.locks")

METRICS_LOCK = "_metrics"


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for a lock name (PostgreSQL advisory locks take a bigint)."""
    digest = hashlib.blake2b(f"syncd:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Locks:
    """Named, non-reentrant locks shared by every process using one warehouse."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self._directory: Path | None = None
        self._local: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        if warehouse.dialect == "sqlite":
            database = warehouse.engine.url.database
            if database and database != ":memory:":
                self._directory = Path(f"{database}.locks")

    def __repr__(self) -> str:
        return f"Locks(dialect={self.warehouse.dialect!r})"

    @contextlib.contextmanager
    def hold(self, name: str, *, wait: bool = False) -> Iterator[bool]:
        """Hold the lock `name` for the block. Yields False (and holds nothing) when another
        holder has it and `wait` is false; with `wait` it blocks until the lock is free."""
        if self.warehouse.dialect == "postgresql":
            with self._postgres(name, wait) as held:
                yield held
        elif self._directory is not None:
            with self._flock(name, wait) as held:
                yield held
        else:
            with self._thread_lock(name, wait) as held:
                yield held

    @contextlib.contextmanager
    def _postgres(self, name: str, wait: bool) -> Iterator[bool]:
        key = advisory_key(name)
        conn: Any = self.warehouse.engine.connect()
        try:
            if wait:
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                held = True
            else:
                held = bool(
                    conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
                )
            conn.commit()  # the lock is session-level: no transaction stays open meanwhile
            try:
                yield held
            finally:
                if held:
                    with contextlib.suppress(sa.exc.DBAPIError):
                        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                        conn.commit()
        finally:
            conn.close()

    @contextlib.contextmanager
    def _flock(self, name: str, wait: bool) -> Iterator[bool]:
        assert self._directory is not None
        self._directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._directory / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
            except BlockingIOError:
                held = False
            try:
                yield held
            finally:
                if held:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _thread_lock(self, name: str, wait: bool) -> Iterator[bool]:
        with self._guard:
            lock = self._local.setdefault(name, threading.Lock())
        held = lock.acquire(blocking=wait)
        try:
            yield held
        finally:
            if held:
                lock.release()
