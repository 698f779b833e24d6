"""Metrics at scale: full recompute vs incremental update on a generated flow warehouse.

Generates N flow items (four value streams, every flow type, ~10 transitions each over two
years, with long-running work in progress, canceled items, items closed from the backlog and
reopened items) and writes them into a warehouse page by page through
`Warehouse.commit_page`, the path a sync takes. Then, each phase in a fresh process so peak
RSS compares across phases and sizes:

  full         `update_metrics(full=True)` at the end of the two years: time, peak RSS, rows;
  change       1 % of the items change over the next day, committed as a sync would: new
               transitions of work in progress (55 %, 40 % of them finish), backlog items
               started (20 %), items done in the last 60 days reopened (15 %; with
               --old-reopens, that share of them done any time in the two years instead),
               done items closed (10 %), and 5 % of all these stamped up to 6 hours before
               the last update (late arrivals a sync's lookback picks up);
  incremental  `update_metrics` one day later: time, peak RSS, rows rewritten, % of full;
               then, in the same process (as the daemon runs), the next day's 1 % and
               update, timed again (SQLAlchemy's statement cache is warm then).

The full recompute, the change and the incremental update run `--repeat` times (default
3) in turn, every run in a fresh process on the same data (each full recompute on a copy of
the generated warehouse: a copy of the SQLite file, or a template database on the throwaway
PostgreSQL; the change and the update on its result). Medians are reported, by the wall
clock and by the process's CPU time, and the median of each attempt's own ratio
(`paired_pct_of_full`): the machine the figures come from is shared, so single runs vary by
±20 % and its speed drifts over minutes, which an attempt's two sides, run one after the
other, share. On PostgreSQL the warehouse is vacuumed and analysed after the generation and
after each full recompute, as autovacuum has long done before a warehouse's daily update
(the change and its update follow each other, as a sync and the daemon's update do).

    .venv/bin/python benchmarks/bench_metrics.py --sizes 25000,100000
    .venv/bin/python benchmarks/bench_metrics.py --items 100000 --postgres
    .venv/bin/python benchmarks/bench_metrics.py --items 100000 --url postgresql://u@127.0.0.1/db

`--postgres` starts a throwaway PostgreSQL server on 127.0.0.1 (as the test suite does);
`--url` uses a database you give (its tables are dropped and recreated first).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import (  # noqa: E402
    Warehouses,
    add_warehouse_options,
    peak_rss_mb,
    run_phase_of,
    sizes_of,
)

from syncd.domain import FlowItem, Stage, Transition  # noqa: E402

#: the last instant of the generated two years: the as-of time of the full recompute
END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
START = END - timedelta(days=730)
#: the incremental update runs one day later
NEXT = END + timedelta(days=1)
VALUE_STREAMS = ("payments", "platform", "mobile", "data")
FLOW_TYPE_WEIGHTS = {"feature": 45, "defect": 30, "risk": 7, "debt": 13, "unclassified": 5}
STATES: dict[Stage, tuple[str, ...]] = {
    Stage.NEW: ("To Do", "Backlog", "Selected"),
    Stage.ACTIVE: ("In Progress", "In Review", "In QA"),
    Stage.WAITING: ("Blocked", "Ready for QA", "Waiting for approval"),
    Stage.DONE: ("Done", "Closed"),
    Stage.CANCELED: ("Won't Do",),
}
#: what happens to a generated item (weights in %): the shares of a typical tracker
FATES = {"done": 66, "canceled": 8, "wip": 15, "backlog": 9, "backlog_closed": 2}
PAGE = 1000


class History:
    """Builds one item's transitions, moving from state to state."""

    def __init__(self, rng: random.Random, created: datetime) -> None:
        self.rng = rng
        self.transitions = [Transition(created, None, "To Do", None, Stage.NEW)]

    @property
    def at(self) -> datetime:
        return self.transitions[-1].at

    def move(self, after: timedelta, stage: Stage) -> None:
        prev = self.transitions[-1]
        choices = [s for s in STATES[stage] if s != prev.to_state] or list(STATES[stage])
        state = self.rng.choice(choices)
        at = prev.at + max(after, timedelta(seconds=1))
        self.transitions.append(Transition(at, prev.to_state, state, prev.to_stage, stage))

    def days(self, mean: float) -> timedelta:
        return timedelta(seconds=self.rng.expovariate(1 / (mean * 86400)))


def work(h: History, steps: int, mean_days: float) -> None:
    """`steps` moves between active and waiting states, each after ~`mean_days`."""
    for i in range(steps):
        stage = Stage.ACTIVE if i % 3 != 2 else Stage.WAITING
        h.move(h.days(mean_days), stage)


def generate_item(rng: random.Random, n: int) -> FlowItem:
    vs = VALUE_STREAMS[n % len(VALUE_STREAMS)]
    flow_type = rng.choices(list(FLOW_TYPE_WEIGHTS), list(FLOW_TYPE_WEIGHTS.values()))[0]
    fate = rng.choices(list(FATES), list(FATES.values()))[0]
    created = START + timedelta(seconds=rng.uniform(0, (END - START).total_seconds()))
    h = History(rng, created)
    h.move(h.days(3), Stage.NEW)  # triaged
    if fate == "backlog":
        h.move(h.days(20), Stage.NEW)
    elif fate == "backlog_closed":
        h.move(h.days(15), Stage.DONE)
    elif fate == "wip":
        work(h, 8, 40)  # long-running: months in progress, never finished
    else:
        flow_days = rng.lognormvariate(2.0, 0.8)  # median ~7 days
        work(h, 8, flow_days / 8)
        if fate == "canceled":
            h.move(h.days(2), Stage.CANCELED)
        else:
            h.move(h.days(1), Stage.DONE)
            if rng.random() < 0.06:  # reopened once, then done again
                h.move(h.days(6), Stage.ACTIVE)
                h.move(h.days(2), Stage.DONE)
            elif rng.random() < 0.3:
                h.move(h.days(3), Stage.DONE)  # Done -> Closed
    transitions = [t for t in h.transitions if t.at <= END]
    return make_item(n, vs, flow_type, transitions)


def make_item(n: int, vs: str, flow_type: str, transitions: list[Transition]) -> FlowItem:
    last = transitions[-1]
    return FlowItem(
        source="bench",
        id=str(n),
        key=f"{vs.upper()}-{n}",
        kind="issue",
        title=f"generated item {n}",
        project=vs,
        flow_type=flow_type,
        value_stream=vs,
        stage=last.to_stage,
        state=last.to_state,
        created_at=transitions[0].at,
        updated_at=last.at,
        transitions=transitions,
    )


def items_of(count: int, seed: int) -> list[FlowItem]:
    rng = random.Random(seed)
    return [generate_item(rng, n) for n in range(count)]


def changed_items(
    items: list[FlowItem], seed: int, old_reopens: float, day: int = 0
) -> tuple[list[FlowItem], dict[str, int]]:
    """1 % of the items as a sync sees them `day` + 1 days after END (see the module
    docstring); `old_reopens` of the reopened items were done more than 60 days before."""
    base = END + timedelta(days=day)
    rng = random.Random(seed + 1 + day)
    by_stage: dict[str, list[FlowItem]] = {"progress": [], "new": [], "done": [], "recent": []}
    for it in items:
        stage = it.transitions[-1].to_stage
        if stage.in_progress:
            by_stage["progress"].append(it)
        elif stage is Stage.NEW:
            by_stage["new"].append(it)
        elif stage is Stage.DONE:
            recent = it.transitions[-1].at > base - timedelta(days=60)
            by_stage["recent" if recent else "done"].append(it)
    total = max(1, len(items) // 100)
    reopens = round(total * 0.15)
    plan = {  # share of the changes, and which items they pick from
        "progress": round(total * 0.55),
        "start": round(total * 0.20),
        "reopen_recent": reopens - round(reopens * old_reopens),
        "reopen_old": round(reopens * old_reopens),
    }
    plan["close"] = total - sum(plan.values())
    pools = {
        "progress": by_stage["progress"],
        "start": by_stage["new"],
        "reopen_recent": by_stage["recent"],
        "reopen_old": by_stage["done"],
        "close": by_stage["recent"] + by_stage["done"],
    }
    chosen: set[str] = set()
    out: list[FlowItem] = []
    counts: dict[str, int] = {}
    for action, count in plan.items():
        pool = [it for it in pools[action] if it.id not in chosen]
        picked = rng.sample(pool, min(count, len(pool)))
        counts[action] = len(picked)
        for it in picked:
            chosen.add(it.id)
            out.append(change(rng, it, action, base))
    counts["late"] = sum(1 for it in out if it.transitions[-1].at <= base)
    return out, counts


def change(rng: random.Random, it: FlowItem, action: str, base: datetime) -> FlowItem:
    h = History(rng, it.created_at)
    h.transitions = list(it.transitions)
    # most changes happen during the day after the full recompute; 5 % arrive late, stamped
    # a few hours before it (a sync's lookback window picks them up)
    late = rng.random() < 0.05
    floor = base - timedelta(hours=6) if late else base
    when = floor + timedelta(seconds=rng.uniform(60, 6 * 3600))
    gap = max(when - h.at, timedelta(seconds=1))
    if action == "progress":
        h.move(gap, Stage.WAITING if h.transitions[-1].to_stage is Stage.ACTIVE else Stage.ACTIVE)
        if rng.random() < 0.4:
            h.move(timedelta(hours=rng.uniform(1, 12)), Stage.DONE)  # finished
    elif action == "start":
        h.move(gap, Stage.ACTIVE)
    elif action in ("reopen_recent", "reopen_old"):
        h.move(gap, Stage.ACTIVE)
        if rng.random() < 0.5:
            h.move(timedelta(hours=rng.uniform(1, 12)), Stage.WAITING)
    else:
        h.move(gap, Stage.DONE)  # Done -> Closed: a state change within done
    return make_item(int(it.id), it.value_stream, it.flow_type, h.transitions)


def commit(url: str, items: list[FlowItem], now: datetime) -> float:
    from syncd.contract import Cursor, Page
    from syncd.warehouse.store import Warehouse

    warehouse = Warehouse(url)
    t0 = time.perf_counter()
    for start in range(0, len(items), PAGE):
        page = Page(raws=[], items=items[start : start + PAGE], cursor=Cursor(watermark=now))
        warehouse.commit_page(source="bench", stream="issues", run_id="bench", page=page, now=now)
    elapsed = time.perf_counter() - t0
    warehouse.close()
    return elapsed


def phase(name: str, url: str, count: int, seed: int, old_reopens: float) -> dict[str, Any]:
    """One phase, in this (fresh) process."""
    from syncd.metrics.incremental import update_metrics
    from syncd.warehouse.store import Warehouse

    if name == "generate":
        items = items_of(count, seed)
        transitions = sum(len(it.transitions) for it in items)
        stages = [it.transitions[-1].to_stage for it in items]
        seconds = commit(url, items, END)
        return {
            "items": count,
            "transitions": transitions,
            "in_progress": sum(1 for s in stages if s.in_progress),
            "canceled": sum(1 for s in stages if s is Stage.CANCELED),
            "commit_s": round(seconds, 2),
        }
    if name == "change":
        items, counts = changed_items(items_of(count, seed), seed, old_reopens)
        seconds = commit(url, items, NEXT)
        return {"changed": len(items), **counts, "commit_s": round(seconds, 2)}
    warehouse = Warehouse(url)
    t0, c0 = time.perf_counter(), time.process_time()
    if name == "full":
        stats = update_metrics(warehouse, as_of=END, full=True)
    else:
        stats = update_metrics(warehouse, as_of=NEXT)
        assert not stats.full
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    out: dict[str, Any] = {
        "seconds": round(seconds, 4),
        "cpu_seconds": round(cpu, 4),
        "peak_rss_mb": peak_rss_mb(),
        "rows": stats.rows,
        "buckets": stats.buckets,
        "items_read": stats.items_read,
    }
    if name == "incremental":
        # as a daemon sees it: the next day's 1 % and update in the same, warm process
        items = items_of(count, seed)
        changed, _ = changed_items(items, seed, old_reopens)
        by_id = {it.id: it for it in changed}
        items = [by_id.get(it.id, it) for it in items]
        next_day = changed_items(items, seed, old_reopens, day=1)[0]
        del items, changed, by_id  # a daemon does not hold the generated world in memory
        commit(url, next_day, NEXT + timedelta(days=1))
        del next_day
        gc.collect()
        t0 = time.perf_counter()
        warm = update_metrics(warehouse, as_of=NEXT + timedelta(days=1))
        out["warm_seconds"] = round(time.perf_counter() - t0, 4)
        out["warm_rows"] = warm.rows
    warehouse.close()
    return out


def run_phase(name: str, url: str, count: int, seed: int, old_reopens: float) -> dict[str, Any]:
    args = ["--items", str(count), "--seed", str(seed), "--old-reopens", str(old_reopens)]
    return run_phase_of(__file__, name, "--url", url, *args)


class Snapshots:
    """Saved states of the benchmark's warehouse, so that a phase can run again on the same
    data: copies of the SQLite file, or template databases on the throwaway PostgreSQL."""

    def __init__(self, url: str, server: Any = None) -> None:
        self.url = url
        self.server = server
        self.path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite") else None
        self.dbname = url.rsplit("/", 1)[1] if server is not None else None

    @property
    def available(self) -> bool:
        return self.path is not None or self.dbname is not None

    def save(self, tag: str) -> None:
        if self.path is not None:
            import sqlite3

            with sqlite3.connect(self.path) as conn:  # everything into the main file
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            shutil.copyfile(self.path, f"{self.path}.{tag}")
        elif self.dbname is not None:
            self._admin(f'DROP DATABASE IF EXISTS "{self.dbname}_{tag}"')
            self._admin(f'CREATE DATABASE "{self.dbname}_{tag}" TEMPLATE "{self.dbname}"')

    def restore(self, tag: str) -> None:
        if self.path is not None:
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(f"{self.path}.{tag}", self.path)
        elif self.dbname is not None:
            self._admin(f'DROP DATABASE "{self.dbname}"')
            self._admin(f'CREATE DATABASE "{self.dbname}" TEMPLATE "{self.dbname}_{tag}"')

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.server.url(), autocommit=True) as conn:
            conn.execute(sql)


def vacuum(url: str) -> None:
    """PostgreSQL: VACUUM ANALYZE, as autovacuum does in time (right after a bulk write,
    index-only scans still visit the heap, and the first reads set hint bits)."""
    import psycopg

    from syncd.warehouse.store import engine_url

    with psycopg.connect(engine_url(url).replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def one_size(
    url: str, count: int, seed: int, old_reopens: float, repeat: int, snapshots: Snapshots
) -> dict[str, Any]:
    generated = run_phase("generate", url, count, seed, old_reopens)
    if url.startswith("postgresql"):
        vacuum(url)
    fulls: list[dict[str, Any]] = []
    incrementals: list[dict[str, Any]] = []
    for attempt in range(repeat):
        # each attempt in turn: the full recompute from the generated warehouse, then a
        # day's sync and update on its result, so that both sides of an attempt's ratio
        # run minutes apart at most, whatever the shared machine does over the whole run
        if attempt == 0:
            snapshots.save("generated")
        else:
            snapshots.restore("generated")
        fulls.append(run_phase("full", url, count, seed, old_reopens))
        if url.startswith("postgresql"):
            vacuum(url)  # the full recompute, too, happened long before a daily update
        changed = run_phase("change", url, count, seed, old_reopens)
        incrementals.append(run_phase("incremental", url, count, seed, old_reopens))
    full_s = median(r["seconds"] for r in fulls)
    full_cpu = median(r["cpu_seconds"] for r in fulls)
    incr_s = median(r["seconds"] for r in incrementals)
    incr_cpu = median(r["cpu_seconds"] for r in incrementals)
    warm_s = median(r["warm_seconds"] for r in incrementals)
    pairs = list(zip(fulls, incrementals, strict=True))
    paired = median(100 * i["seconds"] / f["seconds"] for f, i in pairs)
    paired_cpu = median(100 * i["cpu_seconds"] / f["cpu_seconds"] for f, i in pairs)
    last = incrementals[-1]
    return {
        "dialect": url.split(":", 1)[0].split("+", 1)[0],
        **generated,
        "runs": repeat,
        "full_s": full_s,
        "full_runs_s": [r["seconds"] for r in fulls],
        "full_cpu_s": full_cpu,
        "full_peak_rss_mb": max(r["peak_rss_mb"] for r in fulls),
        "full_rows": fulls[-1]["rows"],
        "changed": changed,
        "incremental_s": incr_s,
        "incremental_runs_s": [r["seconds"] for r in incrementals],
        "incremental_cpu_s": incr_cpu,
        "incremental_pct_of_full": round(100 * incr_s / full_s, 2),
        "incremental_cpu_pct_of_full": round(100 * incr_cpu / full_cpu, 2),
        "paired_pct_of_full": round(paired, 2),
        "paired_cpu_pct_of_full": round(paired_cpu, 2),
        "next_day_in_same_process_s": warm_s,
        "next_day_pct_of_full": round(100 * warm_s / full_s, 2),
        "incremental_peak_rss_mb": max(r["peak_rss_mb"] for r in incrementals),
        "rows_rewritten": last["rows"],
        "buckets_recomputed": last["buckets"],
        "facts_read": last["items_read"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_warehouse_options(parser)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--old-reopens",
        type=float,
        default=0.0,
        help="share of the reopened items done more than 60 days before (default 0)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of the full and of the incremental update, each in a fresh process on the "
        "same data; medians are reported (default 3; 1 with --url)",
    )
    parser.add_argument("--phase", choices=["generate", "full", "change", "incremental"])
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.url, args.items, args.seed, args.old_reopens)))
        return 0

    with Warehouses(args, "bench") as warehouses:
        for count in sizes_of(args):
            url = warehouses.new(count)
            snapshots = Snapshots(url, warehouses.server)
            repeat = args.repeat if snapshots.available else 1
            load = os.getloadavg()
            result = one_size(url, count, args.seed, args.old_reopens, repeat, snapshots)
            result["load_average"] = [round(v, 2) for v in (*load, *os.getloadavg())]
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
