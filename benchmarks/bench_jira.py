"""Jira sync benchmark against the built-in simulator (a separate process on 127.0.0.1).

Prints, for a first sync of N issues with ~10 status changes each:
  - HTTP requests per 1000 items (complete histories),
  - items/s end to end (simulator → HTTP → parse → SQLite),
  - normalise + upsert items/s into SQLite alone (re-normalising the stored raw pages), by
    the wall clock and by the process's CPU time (steadier on a shared machine), as the
    process is and once the objects it holds are frozen out of the cycle collector,
  - peak RSS of the syncing process,
  - the request count of a no-change re-sync.
With --sizes, each size runs in its own process so peak RSS can be compared across sizes.

    .venv/bin/python benchmarks/bench_jira.py --sizes 2500,10000
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import main_for, peak_rss_mb, start_simulator  # noqa: E402


def start_jira(items: int) -> tuple[subprocess.Popen[str], str]:
    return start_simulator(
        "jira",
        "--items",
        str(items),
        "--seed",
        "11",
        "--email-env",
        "BENCH_EMAIL",
        "--token-env",
        "BENCH_TOKEN",
        env={"BENCH_EMAIL": "bench@example.com", "BENCH_TOKEN": "bench-token-123"},
    )


def proc_mutate(url: str, count: int) -> int:
    """Let `count` issues change in the simulator process (its control endpoint)."""
    import httpx

    return len(httpx.post(f"{url}/_sim/mutate", params={"count": count}, timeout=30).json())


def one(items: int) -> dict[str, object]:
    from connectors.jira.parse import JiraMapping, StatusCatalogue, parse_issue
    from syncd.config import load_config
    from syncd.contract import Cursor, Page
    from syncd.http import HttpClient
    from syncd.logs import configure
    from syncd.mapping import FlowTypeRules, StageOverrides
    from syncd.sync import sync_all
    from syncd.warehouse.store import RAW, Warehouse

    configure("warning")
    os.environ["BENCH_EMAIL"] = "bench@example.com"
    os.environ["BENCH_TOKEN"] = "bench-token-123"
    proc, url = start_jira(items)
    tmp = Path(tempfile.mkdtemp(prefix="syncd-bench-"))
    try:
        config_path = tmp / "bench.toml"
        config_path.write_text(
            f"""
[warehouse]
url = "sqlite:///{tmp / "w.db"}"
raw_retention_days = 0
[[sources]]
name = "bench"
kind = "jira"
url = "{url}"
deployment = "cloud"
email_env = "BENCH_EMAIL"
token_env = "BENCH_TOKEN"
jql = "project = DEMO"
""",
            encoding="utf-8",
        )
        config = load_config(config_path)
        warehouse = Warehouse(config.warehouse.url)
        with HttpClient(config.http) as http:
            t0 = time.perf_counter()
            [first] = sync_all(config, warehouse, http)
            elapsed = time.perf_counter() - t0
            assert first.ok, first.error
            [again] = sync_all(config, warehouse, http)
            assert again.ok, again.error
        sync_rss_mb = peak_rss_mb()

        # metrics: a full recompute (all four period kinds), then 1 % of the issues change
        from syncd.metrics.incremental import update_metrics

        t2 = time.perf_counter()
        full = update_metrics(warehouse, as_of=datetime.now(UTC), full=True)
        full_s = time.perf_counter() - t2
        changed = int(proc_mutate(url, max(1, items // 100)))
        with HttpClient(config.http) as http:
            [third] = sync_all(config, warehouse, http)
            assert third.ok, third.error
        t3 = time.perf_counter()
        incremental = update_metrics(warehouse, as_of=datetime.now(UTC))
        incremental_s = time.perf_counter() - t3
        assert not incremental.full

        # normalise + upsert alone: re-parse the stored raw pages into a fresh warehouse
        import sqlalchemy as sa

        with warehouse.engine.connect() as conn:
            raws = conn.execute(sa.select(RAW.c.url, RAW.c.body).order_by(RAW.c.id)).all()
        statuses = next(json.loads(r.body) for r in raws if r.url.endswith("/status"))
        source = config.sources[0]
        mapping = JiraMapping(
            StatusCatalogue.from_json(statuses),
            StageOverrides.from_config(source.stages),
            frozenset(r.casefold() for r in source.canceled_resolutions),
            FlowTypeRules.from_config(source.flow_type_rules),
        )
        issues: list[dict[str, object]] = []
        histories: dict[str, list[dict[str, object]]] = {}
        for r in raws:
            body = json.loads(r.body)
            if r.url.endswith("/search/jql"):
                issues.extend(body["issues"])
            elif r.url.endswith("/bulkfetch"):
                for entry in body["issueChangeLogs"]:
                    histories.setdefault(str(entry["issueId"]), []).extend(entry["changeHistories"])
        count = len(issues)
        transitions = sum(len(h) for h in histories.values())
        # The input is kept as JSON text, one page of 1000 issues with their histories each,
        # and decoded outside the timing: a sync holds one page at a time, and a million
        # decoded objects held by this harness would make every full cycle collection of the
        # timed code scan them.
        pages = [
            json.dumps([[i, histories.get(str(i["id"]), [])] for i in issues[start : start + 1000]])
            for start in range(0, count, 1000)
        ]
        del issues, histories, raws
        gc.collect()

        def normalise_upsert(name: str) -> tuple[float, float]:
            """Parse and commit every page into a fresh warehouse: (seconds, CPU seconds)."""
            target = Warehouse(f"sqlite:///{tmp / name}")
            wall = cpu = 0.0
            for text in pages:
                page = json.loads(text)
                t1, c1 = time.perf_counter(), time.process_time()
                flow_items = [
                    parse_issue(issue, history, mapping, source="bench", value_stream="bench")
                    for issue, history in page
                ]
                target.commit_page(
                    source="bench",
                    stream="issues",
                    run_id="bench",
                    page=Page(raws=[], items=flow_items, cursor=Cursor()),
                    now=datetime.now(UTC),
                )
                wall += time.perf_counter() - t1
                cpu += time.process_time() - c1
            target.close()
            return wall, cpu

        normalise, normalise_cpu = normalise_upsert("normalise.db")
        # The same once the objects the process holds by now (modules, the sync's state) are
        # frozen out of the cycle collector: then its full collections, one per page here,
        # scan a page's objects only (see docs/benchmarks.md)
        gc.freeze()
        try:
            frozen, frozen_cpu = normalise_upsert("normalise_frozen.db")
        finally:
            gc.unfreeze()
        return {
            "items": first.items,
            "histories": transitions,
            "requests_first": first.requests,
            "requests_per_1000": round(first.requests / first.items * 1000, 2),
            "items_per_s_end_to_end": round(first.items / elapsed),
            "normalise_upsert_items_per_s": round(count / normalise),
            "normalise_upsert_items_per_cpu_s": round(count / normalise_cpu),
            "normalise_upsert_items_per_s_gc_frozen": round(count / frozen),
            "normalise_upsert_items_per_cpu_s_gc_frozen": round(count / frozen_cpu),
            "peak_rss_mb_sync": round(sync_rss_mb, 1),
            "no_change_resync_requests": again.requests,
            "metrics_full_s": round(full_s, 2),
            "metrics_full_rows": full.rows,
            "changed_items": changed,
            "resync_requests_after_change": third.requests,
            "metrics_incremental_s": round(incremental_s, 3),
            "metrics_incremental_rows": incremental.rows,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main_for(one, __file__, 10000))
