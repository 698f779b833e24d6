"""Query times of the BI views on the `bench_metrics.py` warehouse.

Builds the warehouse of `benchmarks/bench_metrics.py` (N items over two years, four value
streams, ~10 transitions each, seed 11; its generator and its page-by-page commit, the
sync's write path) and, so that `flow_dependencies` has edges to resolve, gives a share of
the items one link each (`--links`, default 10 %: half "Blocks" and a third "Relates" to
another generated item, the rest "Blocks" from an item outside the warehouse). Then the
metrics' full recompute at the end of the two years (`flow_metrics` has rows), and on
PostgreSQL a VACUUM ANALYZE after the generation and after the recompute, as autovacuum has
long done on a warehouse a BI tool reads.

Timed, each the median of `--repeat` runs (default 3) on one connection, every row fetched:

  load_daily_one_stream   SELECT * FROM flow_load_daily WHERE value_stream = 'payments'
  load_daily_all          SELECT * FROM flow_load_daily
  metrics_one_stream_weeks SELECT * FROM flow_metrics WHERE value_stream = 'payments'
                          AND period_kind = 'week'
  items_count             SELECT COUNT(*) FROM flow_items
  transitions_count       SELECT COUNT(*) FROM flow_transitions
  dependencies_count      SELECT COUNT(*) FROM flow_dependencies

    .venv/bin/python benchmarks/bench_views.py --items 100000
    .venv/bin/python benchmarks/bench_views.py --items 100000 --postgres
    .venv/bin/python benchmarks/bench_views.py --items 100000 --url postgresql://u@127.0.0.1/db

`--postgres` starts a throwaway PostgreSQL server on 127.0.0.1 (as the test suite does);
`--url` uses a database you give (everything syncd made in it is dropped first). One JSON
line per size.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_metrics  # noqa: E402
from common import Warehouses, add_warehouse_options, sizes_of  # noqa: E402

from syncd.domain import FlowItem, Link  # noqa: E402

VALUE_STREAM = "payments"
QUERIES: dict[str, str] = {
    "load_daily_one_stream": "SELECT * FROM flow_load_daily WHERE value_stream = :vs",
    "load_daily_all": "SELECT * FROM flow_load_daily",
    "metrics_one_stream_weeks": (
        "SELECT * FROM flow_metrics WHERE value_stream = :vs AND period_kind = 'week'"
    ),
    "items_count": "SELECT COUNT(*) FROM flow_items",
    "transitions_count": "SELECT COUNT(*) FROM flow_transitions",
    "dependencies_count": "SELECT COUNT(*) FROM flow_dependencies",
}


def add_links(items: list[FlowItem], share: float, seed: int) -> int:
    """Give `share` of the items one link each, as trackers state them; returns how many."""
    rng = random.Random(seed + 101)
    count = 0
    for n, item in enumerate(items):
        if rng.random() >= share:
            continue
        count += 1
        kind = rng.random()
        if kind < 0.85:
            pick = rng.randrange(len(items))
            target = items[pick if pick != n else (n + 1) % len(items)]
            link_type = "Blocks" if kind < 0.5 else "Relates"
            item.links.append(Link(link_type, "outward", target.key, target.id))
        else:  # blocked by an item of a tracker the warehouse does not sync
            item.links.append(Link("Blocks", "inward", f"EXT-{rng.randrange(100_000)}"))
    return count


def build(url: str, count: int, seed: int, links: float) -> dict[str, Any]:
    """The bench_metrics warehouse with links, its metric rows recomputed."""
    items = bench_metrics.items_of(count, seed)
    linked = add_links(items, links, seed)
    transitions = sum(len(it.transitions) for it in items)
    commit_s = bench_metrics.commit(url, items, bench_metrics.END)
    del items
    gc.collect()
    if url.startswith("postgresql"):
        bench_metrics.vacuum(url)
    full = bench_metrics.phase("full", url, count, seed, 0.0)
    if url.startswith("postgresql"):
        bench_metrics.vacuum(url)
    return {
        "items": count,
        "transitions": transitions,
        "linked_items": linked,
        "commit_s": round(commit_s, 2),
        "full_recompute_s": full["seconds"],
        "metric_rows": full["rows"],
    }


def time_queries(url: str, repeat: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from syncd.warehouse.store import Warehouse

    warehouse = Warehouse(url)
    out: dict[str, Any] = {}
    try:
        with warehouse.engine.connect() as conn:
            if warehouse.dialect == "sqlite":
                version = conn.exec_driver_sql("SELECT sqlite_version()").scalar_one()
            else:
                version = conn.exec_driver_sql("SHOW server_version").scalar_one()
            out["database"] = f"{warehouse.dialect} {version}"
            from syncd.warehouse import views

            # as the API and the dashboard ask for one value stream's diagram
            one_stream = views.load_daily_of_one_value_stream(warehouse.dialect).replace(
                ":value_stream", ":vs"
            )
            for name, sql in {
                **QUERIES,
                "load_daily_one_stream_as_the_api_asks": one_stream,
            }.items():
                runs = []
                rows: Sequence[Any] = ()
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    rows = conn.execute(sa.text(sql), {"vs": VALUE_STREAM}).all()
                    runs.append(time.perf_counter() - t0)
                out[name] = {
                    "median_s": round(median(runs), 4),
                    "runs_s": [round(r, 4) for r in runs],
                    # a count's value, or the number of rows fetched
                    "rows": rows[0][0] if name.endswith("_count") else len(rows),
                }
    finally:
        warehouse.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_warehouse_options(parser)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--links", type=float, default=0.1, help="share of the items with a link (default 0.1)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per query (default 3)")
    args = parser.parse_args()

    from syncd.logs import configure

    configure("warning")
    with Warehouses(args, "bench_views") as warehouses:
        for count in sizes_of(args):
            url = warehouses.new(count)
            load = os.getloadavg()
            result = build(url, count, args.seed, args.links)
            result.update(time_queries(url, args.repeat))
            result["load_average"] = [round(v, 2) for v in (*load, *os.getloadavg())]
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
