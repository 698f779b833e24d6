"""GitLab sync benchmark against the built-in simulator (a separate process on 127.0.0.1).

Prints, for a first sync of N issues + N merge requests (~8 events each) in one project:
requests per item (target ≤ 2.2 with REST), items/s end to end, peak RSS, and the request
count of a no-change re-sync.

    .venv/bin/python benchmarks/bench_gitlab.py --items 5000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import peak_rss_mb, run_sizes, start_simulator  # noqa: E402


def one(items: int) -> dict[str, object]:
    from syncd.config import load_config
    from syncd.http import HttpClient
    from syncd.logs import configure
    from syncd.sync import sync_all
    from syncd.warehouse.store import Warehouse

    configure("warning")
    os.environ["BENCH_GL_TOKEN"] = "bench-gl-token-123"
    proc, url = start_simulator(
        "gitlab",
        "--projects",
        "acme/web",
        "--issues",
        str(items),
        "--merge-requests",
        str(items),
        "--seed",
        "11",
        "--token-env",
        "BENCH_GL_TOKEN",
    )
    tmp = Path(tempfile.mkdtemp(prefix="syncd-bench-gl-"))
    try:
        path = tmp / "bench.toml"
        path.write_text(
            f"""
[warehouse]
url = "sqlite:///{tmp / "w.db"}"
[[sources]]
name = "bench"
kind = "gitlab"
url = "{url}"
token_env = "BENCH_GL_TOKEN"
projects = ["acme/web"]
""",
            encoding="utf-8",
        )
        config = load_config(path)
        warehouse = Warehouse(config.warehouse.url)
        with HttpClient(config.http) as http:
            t0 = time.perf_counter()
            [first] = sync_all(config, warehouse, http)
            elapsed = time.perf_counter() - t0
            assert first.ok, first.error
            [again] = sync_all(config, warehouse, http)
            assert again.ok, again.error
        return {
            "items": first.items,
            "requests_first": first.requests,
            "requests_per_item": round(first.requests / first.items, 3),
            "items_per_s_end_to_end": round(first.items / elapsed),
            "peak_rss_mb_sync": peak_rss_mb(),
            "no_change_resync_requests": again.requests,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=5000, help="issues, and as many MRs")
    parser.add_argument("--sizes", help="comma-separated sizes, each in its own process")
    args = parser.parse_args()
    if args.sizes:
        run_sizes(__file__, args.sizes)
        return 0
    print(json.dumps(one(args.items)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
