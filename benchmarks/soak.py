"""Soak: sync one world without faults and under injected faults, and compare what is kept.

For each tracker (`--kinds jira,github,gitlab`) a simulator runs in its own process. Each
round syncs the world fault-free into warehouse A, then with `--faults` (default 10 % of API
requests, every kind alike, seeded) into warehouse B — re-running B's source until a run
succeeds with no stream mid-listing or holding its watermark for skipped records (at most
`--max-runs`) — then lets `--mutate` items change; both warehouses see the same world at
every round. At the end it compares items, transitions, links, weekly metric rows and
cursors, and prints faults injected by kind, retries by cause, rate-limit waits, records
skipped, runs needed and whether the warehouses are equal. Not a test: it prints figures.

    .venv/bin/python benchmarks/soak.py                       # all three, a few minutes
    .venv/bin/python benchmarks/soak.py --kinds gitlab --items 400 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import start_simulator  # noqa: E402

ANCHOR = "2026-11-01T00:00:00Z"
TOKEN = "soak-token-5e5e5e5e"
EMAIL = "soak@example.com"
#: short enough that timeouts and backoff keep the soak to minutes, as in a tuned deployment
HTTP = '[http]\ntimeout = "2s"\nbackoff_initial = "250ms"\nbackoff_max = "5s"\nmax_attempts = 6\n'
HOLD_S = 3  # a timeout fault holds the connection longer than the 2 s client timeout
#: default world sizes: a few hundred requests each; GitLab's simulator enforces
#: gitlab.com's 2,000 requests a minute, and its items cost ~2.4 requests each
DEFAULT_ITEMS = {"jira": 2000, "github": 1000, "gitlab": 300}


def simulator_args(kind: str, items: int, seed: int) -> list[str]:
    half = str(max(1, items // 2))
    common = ["--seed", str(seed), "--anchor", ANCHOR, "--token-env", "SOAK_TOKEN"]
    common += ["--fault-hold", str(HOLD_S)]
    if kind == "jira":
        return [*common, "--items", str(items), "--email-env", "SOAK_EMAIL"]
    if kind == "github":
        return [*common, "--repos", "acme/web", "--issues", half, "--pulls", half]
    return [*common, "--projects", "acme/web", "--issues", half, "--merge-requests", half]


def source_toml(kind: str, url: str) -> str:
    """The source, with pages smaller than the defaults so that a world of a few hundred
    items takes enough requests for the faults to matter."""
    head = f'[[sources]]\nname = "soak"\nkind = "{kind}"\nurl = "{url}"\ntoken_env = "SOAK_TOKEN"\n'
    if kind == "jira":
        return head + (
            'deployment = "cloud"\nemail_env = "SOAK_EMAIL"\njql = "project = DEMO"\n'
            "page_size = 10\nbatch_size = 10\n"
        )
    if kind == "github":
        return head + 'repos = ["acme/web"]\nper_page = 10\nbatch_size = 10\n'
    return head + 'projects = ["acme/web"]\nper_page = 50\n'


@dataclass
class Side:
    """One warehouse and everything its runs did."""

    name: str
    config: Any
    warehouse: Any
    runs: int = 0
    failed_runs: int = 0
    skipped: int = 0
    requests: int = 0
    retries: int = 0
    retried: Counter[str] = field(default_factory=Counter)
    rate_limit_waits: int = 0
    rate_limit_wait_s: float = 0.0
    budget_waits: int = 0
    budget_wait_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)

    def run(self) -> Any:
        from syncd.http import HttpClient
        from syncd.sync import sync_source

        with HttpClient(self.config.http) as http:
            result = sync_source(self.config, self.config.sources[0], self.warehouse, http)
            stats = http.stats
        self.runs += 1
        self.failed_runs += 0 if result.ok else 1
        self.skipped += result.skipped
        self.requests += stats.requests
        self.retries += stats.retries
        self.retried.update(stats.retried)
        self.rate_limit_waits += stats.rate_limit_waits
        self.rate_limit_wait_s += stats.rate_limit_wait_seconds
        self.budget_waits += stats.budget_waits
        self.budget_wait_s += stats.budget_wait_seconds
        if result.error:
            self.errors[_error_kind(result.error)] += 1
        return result


def _error_kind(error: str) -> str:
    """A failed run's error without the URL's port or item numbers, to count alike ones."""
    for marker in ("not JSON", "timed out", "failed:", "answered 5", "answered 4", "expected"):
        if marker in error:
            return marker.rstrip(":")
    return error[:60]


def unsettled(warehouse: Any) -> list[str]:
    """Streams whose cursor is mid-listing or holds its watermark for skipped records."""
    import sqlalchemy as sa

    from syncd.records import HOLD_KEY
    from syncd.warehouse.store import CURSORS

    with warehouse.engine.connect() as conn:
        rows = conn.execute(sa.select(CURSORS.c.stream, CURSORS.c.state)).all()
    out = []
    for stream, state in rows:
        decoded = json.loads(state)
        hold = decoded.get(HOLD_KEY) or {}
        if "watermark" in hold or decoded.get("token") or decoded.get("next"):
            out.append(stream)
    return out


def snapshot(warehouse: Any, as_of: datetime) -> dict[str, Any]:
    """What a sync keeps about the tracker (not when it kept it), and the weekly metrics."""
    import sqlalchemy as sa

    from syncd.export import iter_items, iter_transitions, metric_record_flat
    from syncd.metrics.incremental import compute_in_memory
    from syncd.warehouse.store import CURSORS, LINKS

    with warehouse.engine.connect() as conn:
        links = sorted(
            tuple(str(v) for v in row)
            for row in conn.execute(
                sa.select(LINKS.c.item_id, LINKS.c.link_type, LINKS.c.direction, LINKS.c.target_key)
            )
        )
        watermarks = {
            stream: (watermark.isoformat() if watermark else None)
            for stream, watermark in conn.execute(sa.select(CURSORS.c.stream, CURSORS.c.watermark))
        }
    held = set(unsettled(warehouse))
    metrics = [
        metric_record_flat(row) for row in compute_in_memory(warehouse, kind="week", as_of=as_of)
    ]
    return {
        "items": list(iter_items(warehouse)),
        "transitions": list(iter_transitions(warehouse)),
        "links": links,
        "metrics": metrics,
        # complete: not mid-listing, not holding for skipped records, and past the start
        "cursors": {s: s not in held and w is not None for s, w in watermarks.items()},
        "watermarks": watermarks,
    }


def soak(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from syncd.config import load_config
    from syncd.warehouse.store import Warehouse

    items = args.items or DEFAULT_ITEMS[kind]
    proc, url = start_simulator(kind, *simulator_args(kind, items, args.seed))
    tmp = Path(tempfile.mkdtemp(prefix=f"syncd-soak-{kind}-"))
    sides = {}
    for name in ("a", "b"):
        path = tmp / f"{name}.toml"
        path.write_text(
            f'[warehouse]\nurl = "sqlite:///{tmp / name}.db"\n{HTTP}{source_toml(kind, url)}',
            encoding="utf-8",
        )
        config = load_config(path)
        sides[name] = Side(name, config, Warehouse(config.warehouse.url))
    a, b = sides["a"], sides["b"]
    control = httpx.Client(base_url=url, timeout=30)
    faults: Counter[str] = Counter()
    runs_needed: list[int] = []
    unsettled_rounds = 0
    t0 = time.perf_counter()
    try:
        for round_ in range(args.rounds):
            control.post("/_sim/faults", params={"spec": "off"})
            first = a.run()
            if not first.ok:
                raise RuntimeError(f"{kind}: the fault-free run failed: {first.error}")
            control.post(
                "/_sim/faults",
                params={
                    "spec": args.faults,
                    "seed": args.seed * 1000 + round_,
                    "retry_after": args.retry_after,
                    "hold": HOLD_S,
                },
            )
            runs = 0
            while runs < args.max_runs:
                runs += 1
                result = b.run()
                if result.ok and not unsettled(b.warehouse):
                    break
            else:
                unsettled_rounds += 1
            runs_needed.append(runs)
            faults.update(control.get("/_sim/faults").json()["injected"])
            control.post("/_sim/faults", params={"spec": "off"})
            if round_ < args.rounds - 1:
                control.post("/_sim/mutate", params={"count": args.mutate})
        elapsed = time.perf_counter() - t0
    finally:
        control.close()
        proc.terminate()
        proc.wait(timeout=30)
    as_of = datetime.now(UTC).replace(microsecond=0)
    left, right = snapshot(a.warehouse, as_of), snapshot(b.warehouse, as_of)
    # watermarks are capped at each run's start, so they may differ by the time between
    # the A and B runs when the newest change is younger than that: reported, not compared
    differs = [p for p in left if p != "watermarks" and left[p] != right[p]]
    return {
        "tracker": kind,
        "items": len(left["items"]),
        "transitions": len(left["transitions"]),
        "links": len(left["links"]),
        "metric_rows": len(left["metrics"]),
        "rounds": args.rounds,
        "requests_fault_free": a.requests,
        "requests_faulty": b.requests,
        "faults_injected": sum(faults.values()),
        "faults_by_kind": dict(sorted(faults.items())),
        "retries": b.retries,
        "retries_by_cause": dict(sorted(b.retried.items())),
        "rate_limit_waits": b.rate_limit_waits,
        "rate_limit_wait_s": round(b.rate_limit_wait_s, 1),
        "budget_waits": [a.budget_waits, b.budget_waits],
        "records_skipped": b.skipped,
        "runs_needed": runs_needed,
        "failed_runs": b.failed_runs,
        "failed_run_errors": dict(b.errors),
        "unsettled_rounds": unsettled_rounds,
        "equal": not differs,
        "watermarks_equal": left["watermarks"] == right["watermarks"],
        "differs": differs,
        "seconds": round(elapsed, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default="jira,github,gitlab", help="trackers to soak")
    parser.add_argument(
        "--items",
        type=int,
        default=None,
        help="items per tracker (default: jira 2000, github 1000, gitlab 300)",
    )
    parser.add_argument("--rounds", type=int, default=4, help="sync rounds (mutations between)")
    parser.add_argument("--mutate", type=int, default=50, help="items changed between rounds")
    parser.add_argument("--faults", default="0.1", help="fault plan of warehouse B's runs")
    parser.add_argument("--seed", type=int, default=7, help="world and fault seed")
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After of 429/403")
    parser.add_argument("--max-runs", type=int, default=10, help="runs of B per round, at most")
    args = parser.parse_args()

    import logging

    import structlog

    from syncd.logs import configure

    configure("error")
    # skipped records and failed runs log at error level: counted and printed below instead
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    os.environ.update(SOAK_TOKEN=TOKEN, SOAK_EMAIL=EMAIL)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - {"jira", "github", "gitlab"})
    if unknown:
        parser.error(f"unknown tracker(s) {', '.join(unknown)}")
    results = []
    for kind in kinds:
        outcome = soak(kind, args)
        results.append(outcome)
        print(json.dumps(outcome), flush=True)
    for r in results:
        print(
            f"{r['tracker']}: {r['items']} items, {r['faults_injected']} faults in "
            f"{r['requests_faulty']} requests ({r['requests_fault_free']} fault-free), "
            f"{r['retries']} retries, {r['rate_limit_waits']} rate-limit waits "
            f"({r['rate_limit_wait_s']} s), {r['records_skipped']} records skipped, "
            f"runs per round {r['runs_needed']}, warehouses "
            + ("EQUAL" if r["equal"] else f"DIFFER in {', '.join(r['differs'])}")
            + f", {r['seconds']} s"
        )
    return 0 if all(r["equal"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
