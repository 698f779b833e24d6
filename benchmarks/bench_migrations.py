"""Upgrading a previous release's warehouse to the newest schema: time, rows kept.

For each size: the warehouse of `benchmarks/bench_metrics.py` (its `generate` and `full`
phases, each in a fresh process: N items over two years, ~10 transitions each, written page
by page through the sync's write path, then the metrics' full recompute), brought back to
the previous release's schema by the project's own migrations (`alembic downgrade 0001`),
and left as that release left warehouses: no `alembic_version` table, `warehouse_meta`
`schema_version` 1. Its tables and columns are checked against those revision 0001 creates
in an empty database. Then timed: `migrations.prepare`, what opening the warehouse with this
syncd runs (stamp 0001, upgrade to the newest revision), each run on a copy of the same old
warehouse and in a fresh process, as a newly installed syncd first opens it (`--repeat`,
default 3; median reported). After each run: the revision is the newest, and items,
transitions, links, metric facts and metric rows are all still there.

    .venv/bin/python benchmarks/bench_migrations.py --sizes 10000,100000
    .venv/bin/python benchmarks/bench_migrations.py --sizes 10000,100000 --postgres
    .venv/bin/python benchmarks/bench_migrations.py --items 10000 --url postgresql://u@h/db

`--postgres` starts a throwaway PostgreSQL server on 127.0.0.1 (as the test suite does);
`--url` uses a database you give (everything syncd made in it is dropped first; one run, as
there is nothing to copy the old warehouse to). One JSON line per size. Exits 1 when a row
went missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_metrics  # noqa: E402
from common import Warehouses, add_warehouse_options, run_phase_of, sizes_of  # noqa: E402

#: the tables whose rows must all survive the upgrade
COUNTED = ("items", "transitions", "item_links", "metric_items", "metric_rows", "metric_days")


def columns(url: str) -> dict[str, set[str]]:
    """The database's tables and their columns (views left out)."""
    import sqlalchemy as sa

    from syncd.warehouse.store import create_engine

    engine = create_engine(url)
    try:
        inspector = sa.inspect(engine)
        return {
            t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()
        }
    finally:
        engine.dispose()


def previous_release_shape(tmp: Path) -> dict[str, set[str]]:
    """The tables and columns revision 0001 creates in an empty database."""
    from alembic import command

    from syncd.warehouse import migrations
    from syncd.warehouse.store import create_engine

    url = f"sqlite:///{tmp / 'r0001.db'}"
    engine = create_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            command.upgrade(migrations.config(conn), migrations.BASELINE)
    finally:
        engine.dispose()
    shape = columns(url)
    shape.pop("alembic_version", None)
    return shape


def to_previous_release(url: str) -> str:
    """Turn today's warehouse at `url` into the previous release's: the revisions undone
    down to 0001, then no migration history and `schema_version` 1, as that release wrote
    it. Returns the revision it was at."""
    from alembic import command

    from syncd.warehouse import migrations
    from syncd.warehouse.store import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            newest = migrations.current(conn)
            command.downgrade(migrations.config(conn), migrations.BASELINE)
            conn.exec_driver_sql("DROP TABLE alembic_version")
            conn.exec_driver_sql(
                "UPDATE warehouse_meta SET value = '1' WHERE key = 'schema_version'"
            )
    finally:
        engine.dispose()
    return str(newest)


def counts(url: str) -> dict[str, int]:
    from syncd.warehouse.store import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t: int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {t}").scalar_one())
                for t in COUNTED
            }
    finally:
        engine.dispose()


def upgrade(url: str) -> dict[str, Any]:
    """`migrations.prepare` on the old warehouse, timed, in this (fresh) process as when a
    newly installed syncd first opens it; then what it holds."""
    import sqlalchemy as sa

    from syncd.warehouse import migrations
    from syncd.warehouse.store import Warehouse

    warehouse = Warehouse(url, create=False)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        action = migrations.prepare(warehouse)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        with warehouse.engine.connect() as conn:
            revision = migrations.current(conn)
            viewed = conn.execute(sa.text("SELECT COUNT(*) FROM flow_items")).scalar_one()
    finally:
        warehouse.close()
    return {
        "action": action,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "revision": revision,
        "flow_items_rows": int(viewed),
    }


def run_upgrade(url: str) -> dict[str, Any]:
    return run_phase_of(__file__, "upgrade", "--url", url)


def one_size(
    url: str, count: int, seed: int, repeat: int, snapshots: Any, shape: dict[str, set[str]]
) -> dict[str, Any]:
    generated = bench_metrics.run_phase("generate", url, count, seed, 0.0)
    full = bench_metrics.run_phase("full", url, count, seed, 0.0)
    if url.startswith("postgresql"):
        bench_metrics.vacuum(url)
    head = to_previous_release(url)
    found = columns(url)
    if found != shape:
        raise RuntimeError(
            "the downgraded warehouse is not the previous release's: tables "
            f"{sorted(found.keys() ^ shape.keys())} or columns differ"
        )
    before = counts(url)
    runs = []
    for attempt in range(repeat):
        if attempt == 0:
            snapshots.save("previous")
        else:
            snapshots.restore("previous")
        run = run_upgrade(url)
        after = counts(url)
        run["rows_kept"] = after == before and run["flow_items_rows"] == before["items"]
        if not run["rows_kept"]:
            run["rows_after"] = after
        runs.append(run)
    return {
        "dialect": url.split(":", 1)[0].split("+", 1)[0],
        "items": count,
        "transitions": generated["transitions"],
        "metric_rows_computed": full["rows"],
        "from": "schema_version 1, no alembic_version (the previous release)",
        "to": head,
        "action": runs[-1]["action"],
        "revision_after": runs[-1]["revision"],
        "runs": repeat,
        "upgrade_s": round(median(r["seconds"] for r in runs), 4),
        "upgrade_runs_s": [round(r["seconds"], 4) for r in runs],
        "upgrade_cpu_s": round(median(r["cpu_seconds"] for r in runs), 4),
        "rows_before": before,
        "rows_kept": all(r["rows_kept"] for r in runs),
        **({"rows_after": runs[-1]["rows_after"]} if not runs[-1]["rows_kept"] else {}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_warehouse_options(parser, items=10_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="upgrades timed, each on a copy of the same old warehouse (default 3; 1 with --url)",
    )
    parser.add_argument("--phase", choices=["upgrade"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    from syncd.logs import configure

    configure("warning")
    if args.phase:
        print(json.dumps(upgrade(args.url)))
        return 0
    failed = False
    with Warehouses(args, "bench_migrations") as warehouses:
        shape = previous_release_shape(warehouses.tmp)
        for count in sizes_of(args):
            url = warehouses.new(count)
            snapshots = bench_metrics.Snapshots(url, warehouses.server)
            repeat = args.repeat if snapshots.available else 1
            load = os.getloadavg()
            result = one_size(url, count, args.seed, repeat, snapshots, shape)
            result["load_average"] = [round(v, 2) for v in (*load, *os.getloadavg())]
            print(json.dumps(result), flush=True)
            failed = failed or not result["rows_kept"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
