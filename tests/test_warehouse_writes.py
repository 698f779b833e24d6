"""The warehouse's bulk writes: changed-only upserts, deletes by key, and the pipeline block
an update sends them in (PostgreSQL's pipeline mode; one by one on SQLite)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from syncd.metrics import ledger
from syncd.warehouse.store import METRICS, Warehouse

COLUMNS = ("value_stream", "day", "data")


@pytest.fixture
def warehouse(warehouse_url: str) -> Iterator[Warehouse]:
    w = Warehouse(warehouse_url)
    yield w
    w.close()


def stored(w: Warehouse) -> dict[tuple[str, int], str]:
    with w.begin() as conn:
        rows = conn.execute(
            sa.select(ledger.DAYS.c.value_stream, ledger.DAYS.c.day, ledger.DAYS.c.data)
        )
        return {(vs, day): data for vs, day, data in rows}


def test_upsert_changed_counts_only_rows_it_wrote(warehouse: Warehouse) -> None:
    w = warehouse
    with w.begin() as conn:
        assert (
            w.upsert_changed(
                conn, ledger.DAYS, COLUMNS, [("a", 1, "x"), ("a", 2, "y")], COLUMNS[:2], "data"
            )
            == 2
        )
    with w.begin() as conn:
        written = w.upsert_changed(
            conn,
            ledger.DAYS,
            COLUMNS,
            [("a", 1, "x"), ("a", 2, "z"), ("b", 1, "w")],
            COLUMNS[:2],
            "data",
        )
    assert written == 2  # ("a", 1) is unchanged: not rewritten
    assert stored(w) == {("a", 1): "x", ("a", 2): "z", ("b", 1): "w"}


def test_pipelined_writes_land_and_are_counted_per_table(warehouse: Warehouse) -> None:
    w = warehouse
    with w.begin() as conn:
        w.upsert_changed(
            conn, ledger.DAYS, COLUMNS, [("a", 1, "x"), ("a", 2, "y")], COLUMNS[:2], "data"
        )
    returned = 0
    with w.begin() as conn:
        with w.pipeline(conn) as writes:
            w.delete_many(conn, ledger.DAYS, COLUMNS[:2], [("a", 2)])
            returned += w.upsert_changed(
                conn,
                ledger.DAYS,
                COLUMNS,
                [("a", 1, "x"), ("a", 3, "v"), ("b", 1, "w")],
                COLUMNS[:2],
                "data",
            )
            returned += w.upsert_changed(
                conn, ledger.DAYS, COLUMNS, [("a", 1, "u")], COLUMNS[:2], "data"
            )
        # the block's statements are done when it ends; the transaction goes on
        after = conn.execute(sa.select(sa.func.count()).select_from(ledger.DAYS)).scalar()
    # on PostgreSQL the counts come with the block's end, on SQLite from each call
    written = returned + writes.rows(ledger.DAYS)
    # two new rows and one changed; ("a", 1, "x") was not rewritten
    assert written == 2 + 1
    assert after == 3
    assert stored(w) == {("a", 1): "u", ("a", 3): "v", ("b", 1): "w"}
    assert writes.rows(METRICS) == 0


def test_a_failing_pipelined_write_rolls_the_transaction_back(warehouse: Warehouse) -> None:
    w = warehouse
    with w.begin() as conn:
        w.upsert_changed(conn, ledger.DAYS, COLUMNS, [("a", 1, "x")], COLUMNS[:2], "data")
    with pytest.raises(sa.exc.IntegrityError) as failure, w.begin() as conn, w.pipeline(conn):
        w.upsert_changed(conn, ledger.DAYS, COLUMNS, [("a", 1, "changed")], COLUMNS[:2], "data")
        w.upsert_changed(conn, ledger.DAYS, COLUMNS, [("a", 2, None)], COLUMNS[:2], "data")
    assert "null" in str(failure.value).lower()  # names what went wrong: the NOT NULL column
    assert stored(w) == {("a", 1): "x"}  # nothing of the block landed
    with w.begin() as conn:  # and the warehouse takes the next transaction
        w.upsert_changed(conn, ledger.DAYS, COLUMNS, [("a", 2, "y")], COLUMNS[:2], "data")
    assert stored(w) == {("a", 1): "x", ("a", 2): "y"}
