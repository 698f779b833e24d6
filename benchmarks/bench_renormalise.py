"""Re-normalising after a mapping change, against the simulators, versus a resync.

For each tracker: its simulator runs in its own process on 127.0.0.1; a first sync of N items
fills a fresh warehouse (raw pages kept, as by default); then the source's mapping changes
(stages and flow types, keys of `syncd.config.MAPPING_KEYS`) and the source is re-normalised
from its stored raw pages as `syncd renormalise` does it (`Daemon.renormalise`, then one
metric update). Counted on the simulator: the tracker requests made meanwhile, which must be
0. With --resync, the same source is then resynced as the daemon does when raw pages cannot
serve (cursors forgotten, every item fetched again, then reconciled), for comparison.

Every phase runs in a fresh process (peak RSS is the phase's own), the simulator's request
count read before and after it. One JSON line per measurement: `renormalise` (items rebuilt,
rewritten and unchanged, seconds, items/s, the metric update after it, requests, peak RSS,
how many items changed stage or flow type) and, with --resync, `resync` (seconds, requests).

    .venv/bin/python benchmarks/bench_renormalise.py --tracker jira --items 5000 --resync
    .venv/bin/python benchmarks/bench_renormalise.py --tracker gitlab --items 2000 --resync
    .venv/bin/python benchmarks/bench_renormalise.py --items 2000 --postgres

Items are per tracker: Jira issues; GitHub and GitLab half issues, half pull / merge requests,
in one repository / project. The GitLab simulator enforces gitlab.com's 2,000 requests per
minute, so its first sync and its resync each take about a minute per 1,000 items.
The process exits 1 when a re-normalise made a tracker request or did not succeed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import (  # noqa: E402
    Warehouses,
    add_warehouse_options,
    peak_rss_mb,
    run_phase_of,
    simulator_requests,
    start_simulator,
)

TRACKERS = ("jira", "github", "gitlab")
SOURCE = "bench"
SECRETS = {"BENCH_EMAIL": "bench@example.com", "BENCH_TOKEN": "bench-token-123"}


@dataclass(frozen=True)
class Tracker:
    """How one tracker is benchmarked: its simulator's arguments for N items, the source's
    keys (`{url}`: the simulator's) and the mapping it changes to (TOML tables, written after
    the source's plain keys)."""

    name: str
    source: str
    remap: str

    def simulator_args(self, items: int) -> list[str]:
        half, rest = items // 2, items - items // 2
        if self.name == "jira":
            return ["--items", str(items), "--email-env", "BENCH_EMAIL"]
        if self.name == "github":
            return ["--repos", "acme/web", "--issues", str(half), "--pulls", str(rest)]
        return ["--projects", "acme/web", "--issues", str(half), "--merge-requests", str(rest)]


# The changed mappings: a team's decision that review is a wait, and a new reading of flow
# types. Each moves a share of the items to another stage or flow type.
TRACKER = {
    "jira": Tracker(
        "jira",
        'kind = "jira"\nurl = "{url}"\ndeployment = "cloud"\nemail_env = "BENCH_EMAIL"\n'
        'token_env = "BENCH_TOKEN"\njql = "project = DEMO"\n',
        '[sources.stages]\n"In Review" = "waiting"\n"Ready for QA" = "waiting"\n'
        '[[sources.flow_types]]\nflow_type = "risk"\nissue_types = ["Vulnerability"]\n'
        '[[sources.flow_types]]\nflow_type = "debt"\nissue_types = ["Tech Debt", "Task"]\n'
        '[[sources.flow_types]]\nflow_type = "defect"\nissue_types = ["Bug", "Incident"]\n'
        '[[sources.flow_types]]\nflow_type = "feature"\nissue_types = ["Story", "Epic"]\n',
    ),
    "github": Tracker(
        "github",
        'kind = "github"\nurl = "{url}"\ntoken_env = "BENCH_TOKEN"\nrepos = ["acme/web"]\n',
        'active_labels = ["in progress"]\n'
        'waiting_labels = ["blocked", "waiting", "status: in progress"]\n'
        '[sources.stages]\n"review requested" = "waiting"\n'
        '[[sources.flow_types]]\nflow_type = "debt"\nlabels = ["tech-debt", "documentation"]\n'
        '[[sources.flow_types]]\nflow_type = "defect"\nlabels = ["bug", "security"]\n'
        '[[sources.flow_types]]\nflow_type = "feature"\nlabels = ["enhancement"]\n',
    ),
    "gitlab": Tracker(
        "gitlab",
        'kind = "gitlab"\nurl = "{url}"\ntoken_env = "BENCH_TOKEN"\nprojects = ["acme/web"]\n',
        '[sources.label_stages]\n"workflow::in progress" = "active"\n'
        '"workflow::in review" = "waiting"\n"workflow::review" = "waiting"\n'
        '"workflow::blocked" = "waiting"\n"workflow::done" = "done"\n'
        '[[sources.flow_types]]\nflow_type = "debt"\nlabels = ["tech debt"]\n'
        '[[sources.flow_types]]\nflow_type = "defect"\nlabels = ["bug", "type::bug", "security"]\n'
        '[[sources.flow_types]]\nflow_type = "feature"\nlabels = ["feature"]\n',
    ),
}


def write_config(path: Path, warehouse_url: str, source_keys: str, mapping: str) -> Path:
    path.write_text(
        f'[warehouse]\nurl = "{warehouse_url}"\n[[sources]]\nname = "{SOURCE}"\n'
        f"{source_keys}{mapping}",
        encoding="utf-8",
    )
    return path


# -- the phases, each in a fresh process ----------------------------------------------------


def _classes(warehouse: Any) -> dict[str, tuple[str, str]]:
    """Each stored item's (stage, flow type)."""
    import sqlalchemy as sa

    from syncd.warehouse.store import ITEMS

    query = sa.select(ITEMS.c.item_id, ITEMS.c.stage, ITEMS.c.flow_type).where(
        ITEMS.c.source == SOURCE
    )
    with warehouse.engine.connect() as conn:
        return {r.item_id: (r.stage, r.flow_type) for r in conn.execute(query)}


def phase_sync(config_path: Path) -> dict[str, Any]:
    """The first sync (through the daemon, which records the source's configuration with
    its items), then the first metric update (a full recompute)."""
    from syncd.config import load_config
    from syncd.daemon import Daemon
    from syncd.warehouse.store import Warehouse

    config = load_config(config_path)
    warehouse = Warehouse(config.warehouse.url)
    daemon = Daemon(config, warehouse)
    try:
        t0 = time.perf_counter()
        result = daemon.run_source(config.source(SOURCE), metrics=False)
        seconds = time.perf_counter() - t0
        if result is None or result.status != "ok":
            raise RuntimeError(f"first sync failed: {result}")
        daemon.update_metrics()
    finally:
        daemon.stop()
        warehouse.close()
    return {"items": result.items, "seconds": round(seconds, 2), "peak_rss_mb": peak_rss_mb()}


def phase_renormalise(old_path: Path, new_path: Path) -> dict[str, Any]:
    """`syncd renormalise` with the changed mapping: the re-normalise, then a metric update."""
    from syncd.config import MAPPING_KEYS, load_config
    from syncd.daemon import Daemon
    from syncd.renormalise import CONFIG_KEY, assess
    from syncd.warehouse.store import Warehouse

    old, new = load_config(old_path).source(SOURCE), load_config(new_path)
    source = new.source(SOURCE)
    changed_keys = sorted(
        k for k in MAPPING_KEYS if old.model_dump().get(k) != source.model_dump().get(k)
    )
    warehouse = Warehouse(new.warehouse.url)
    daemon = Daemon(new, warehouse)
    try:
        change = assess(warehouse.get_meta(CONFIG_KEY + SOURCE), source)
        before = _classes(warehouse)
        t0, c0 = time.perf_counter(), time.process_time()
        result = daemon.renormalise(source)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        t1 = time.perf_counter()
        stats = daemon.update_metrics()
        metrics_s = time.perf_counter() - t1
        after = _classes(warehouse)
    finally:
        daemon.stop()
        warehouse.close()
    if result is None:
        raise RuntimeError("re-normalise skipped: the source's lock is held elsewhere")
    rebuilt = result.items + result.unchanged
    return {
        "assessed": change.action,
        "mapping_keys_changed": changed_keys,
        "status": result.status,
        "reason": result.reason,
        "items_rebuilt": rebuilt,
        "items_rewritten": result.items,
        "items_unchanged": result.unchanged,
        "items_skipped": result.skipped,
        "raw_pages_read": result.raws,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "items_per_s": round(rebuilt / seconds) if seconds else None,
        "metrics_update_s": round(metrics_s, 3),
        "metrics_rows": stats.rows,
        "stage_changed": sum(1 for k, v in after.items() if before.get(k, v)[0] != v[0]),
        "flow_type_changed": sum(1 for k, v in after.items() if before.get(k, v)[1] != v[1]),
        "flow_types_after": dict(sorted(Counter(v[1] for v in after.values()).items())),
        "peak_rss_mb": peak_rss_mb(),
    }


def phase_resync(new_path: Path) -> dict[str, Any]:
    """A resync of the source, as the daemon starts one when raw pages cannot serve: its
    cursors forgotten, every item fetched again, then the scope reconciled."""
    from syncd.config import load_config
    from syncd.daemon import Daemon
    from syncd.renormalise import RESYNC_KEY
    from syncd.warehouse.store import Warehouse

    config = load_config(new_path)
    source = config.source(SOURCE)
    warehouse = Warehouse(config.warehouse.url)
    daemon = Daemon(config, warehouse)
    try:
        warehouse.start_resync(SOURCE, {RESYNC_KEY + SOURCE: datetime.now(UTC).isoformat()})
        t0 = time.perf_counter()
        result = daemon.run_source(source, metrics=False)
        seconds = time.perf_counter() - t0
        pending = warehouse.get_meta(RESYNC_KEY + SOURCE)
    finally:
        daemon.stop()
        warehouse.close()
    if result is None or result.status != "ok":
        raise RuntimeError(f"resync failed: {result}")
    if pending is not None:
        raise RuntimeError("the resync did not complete")
    return {
        "items_fetched": result.items,
        "sync_requests": result.requests,
        "retries": result.retries,
        "seconds": round(seconds, 2),
        "peak_rss_mb": peak_rss_mb(),
    }


def run_phase(*args: str) -> dict[str, Any]:
    return run_phase_of(__file__, *args)


# -- one tracker --------------------------------------------------------------------------


def one_tracker(
    tracker: Tracker, items: int, url: str, tmp: Path, resync: bool
) -> list[dict[str, Any]]:
    proc, sim = start_simulator(
        tracker.name,
        *tracker.simulator_args(items),
        "--seed",
        "11",
        "--token-env",
        "BENCH_TOKEN",
        env=SECRETS,
    )
    try:
        old = write_config(
            tmp / f"{tracker.name}-old.toml", url, tracker.source.format(url=sim), ""
        )
        new = write_config(
            tmp / f"{tracker.name}-new.toml", url, tracker.source.format(url=sim), tracker.remap
        )
        dialect = url.split(":", 1)[0].split("+", 1)[0]
        first = simulator_requests(sim)
        synced = run_phase("sync", str(old))
        before = simulator_requests(sim)
        renormalised = run_phase("renormalise", str(old), str(new))
        after = simulator_requests(sim)
        lines = [
            {
                "measurement": "renormalise",
                "tracker": tracker.name,
                "dialect": dialect,
                "items": synced["items"],
                "first_sync_requests": before - first,
                "first_sync_s": synced["seconds"],
                "requests": after - before,
                **renormalised,
            }
        ]
        if resync:
            resynced = run_phase("resync", str(new))
            lines.append(
                {
                    "measurement": "resync",
                    "tracker": tracker.name,
                    "dialect": dialect,
                    "items": synced["items"],
                    "requests": simulator_requests(sim) - after,
                    **resynced,
                }
            )
        return lines
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tracker",
        action="append",
        choices=TRACKERS,
        help="the tracker to measure (repeatable; default: all three)",
    )
    parser.add_argument("--items", type=int, default=2000, help="items per tracker (default 2000)")
    parser.add_argument(
        "--resync", action="store_true", help="also time a resync of the same source"
    )
    add_warehouse_options(parser, items=None)
    parser.add_argument(
        "--phase", choices=["sync", "renormalise", "resync"], help=argparse.SUPPRESS
    )
    parser.add_argument("configs", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        from syncd.logs import configure

        configure("warning")
        paths = [Path(p) for p in args.configs]
        if args.phase == "sync":
            result = phase_sync(*paths)
        elif args.phase == "renormalise":
            result = phase_renormalise(*paths)
        else:
            result = phase_resync(*paths)
        print(json.dumps(result))
        return 0

    os.environ.update(SECRETS)  # the phases' configs name these variables
    failed: list[str] = []
    with Warehouses(args, "bench_renormalise") as warehouses:
        for name in args.tracker or TRACKERS:
            url = warehouses.new(name)
            load = os.getloadavg()
            lines = one_tracker(TRACKER[name], args.items, url, warehouses.tmp, args.resync)
            for line in lines:
                line["load_average"] = [round(v, 2) for v in (*load, *os.getloadavg())]
                print(json.dumps(line), flush=True)
            first = lines[0]
            if first["requests"] != 0 or first["status"] != "ok":
                failed.append(
                    f"{name}: re-normalise made {first['requests']} tracker requests, "
                    f"status {first['status']} ({first['reason']})"
                )
    for message in failed:
        print(message, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
