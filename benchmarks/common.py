"""Plumbing shared by the benchmark scripts: a simulator in its own process, peak RSS, fresh
warehouses for each run."""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def start_simulator(
    tracker: str, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """`syncd simulate <tracker> --port 0 <args>` in a child process; returns it and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd.cli", "simulate", tracker, "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if " on " not in line:
        proc.kill()
        raise RuntimeError(f"simulator did not start: {line!r}")
    return proc, line.split(" on ", 1)[1].split(" ", 1)[0]


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_sizes(script: str, sizes: str) -> None:
    """Run the script once per size, each in a fresh process (so peak RSS compares)."""
    for size in sizes.split(","):
        subprocess.run([sys.executable, script, "--items", size], check=True)


def first_sync_and_resync(tracker: str, sim_args: list[str], source_toml: str) -> dict[str, object]:
    """Start the tracker's simulator, sync a fresh SQLite warehouse through it, sync again
    twice (the second settles conditional requests), and report requests, speed and memory.
    `source_toml` is the source's keys; `{url}` in it becomes the simulator's URL."""
    import tempfile
    import time
    from collections import Counter

    from syncd.config import load_config
    from syncd.http import HttpClient
    from syncd.logs import configure
    from syncd.sync import sync_all
    from syncd.warehouse.store import Warehouse

    configure("warning")
    os.environ["BENCH_TOKEN"] = "bench-token-123"
    proc, url = start_simulator(tracker, *sim_args, "--token-env", "BENCH_TOKEN")
    tmp = Path(tempfile.mkdtemp(prefix=f"syncd-bench-{tracker}-"))
    try:
        path = tmp / "bench.toml"
        path.write_text(
            f'[warehouse]\nurl = "sqlite:///{tmp / "w.db"}"\n[[sources]]\n'
            f'name = "bench"\ntoken_env = "BENCH_TOKEN"\n' + source_toml.format(url=url),
            encoding="utf-8",
        )
        config = load_config(path)
        warehouse = Warehouse(config.warehouse.url)
        with HttpClient(config.http) as http:
            t0 = time.perf_counter()
            [first] = sync_all(config, warehouse, http)
            elapsed = time.perf_counter() - t0
            assert first.ok, first.error
            [settle] = sync_all(config, warehouse, http)
            before = Counter(http.stats.by_status)
            [again] = sync_all(config, warehouse, http)
            assert settle.ok and again.ok, (settle.error, again.error)
            no_change = Counter(http.stats.by_status) - before
        return {
            "items": first.items,
            "requests_first": first.requests,
            "requests_per_item": round(first.requests / first.items, 3),
            "requests_per_1000": round(first.requests / first.items * 1000, 2),
            "items_per_s_end_to_end": round(first.items / elapsed),
            "peak_rss_mb_sync": peak_rss_mb(),
            "no_change_resync_requests": again.requests,
            "no_change_resync_statuses": dict(no_change),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main_for(one: Callable[[int], dict[str, object]], script: str, default: int) -> int:
    """The command line every benchmark shares: `--items N` or `--sizes a,b`."""
    import json

    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=default)
    parser.add_argument("--sizes", help="comma-separated sizes, each in its own process")
    args = parser.parse_args()
    if args.sizes:
        run_sizes(script, args.sizes)
        return 0
    print(json.dumps(one(args.items)))
    return 0


def run_phase_of(script: str, *args: str) -> dict[str, Any]:
    """Run `script --phase ...args` in a fresh process (so its peak RSS is its own) and
    return the JSON object its last line of output holds."""
    import json

    out = subprocess.run(
        [sys.executable, script, "--phase", *args], check=True, stdout=subprocess.PIPE, text=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def simulator_requests(url: str) -> int:
    """The tracker API requests the simulator at `url` has recorded so far (its
    `GET /_sim/stats`; control requests are never counted)."""
    import httpx

    stats = httpx.get(f"{url}/_sim/stats", timeout=30).json()
    return int(stats["requests"])


# -- warehouses for a benchmark's runs ---------------------------------------------------


def add_warehouse_options(parser: argparse.ArgumentParser, *, items: int | None = 100_000) -> None:
    """The options every warehouse benchmark takes: where the warehouse lives (`--url`,
    `--postgres`; a temporary SQLite file by default) and, with a default number of `items`,
    the sizes (`--items`, `--sizes`)."""
    if items is not None:
        parser.add_argument("--items", type=int, default=items)
        parser.add_argument("--sizes", help="comma-separated sizes, each measured in turn")
    parser.add_argument("--url", help="warehouse URL (default: a temporary SQLite file)")
    parser.add_argument(
        "--postgres", action="store_true", help="start a throwaway PostgreSQL on 127.0.0.1"
    )


def sizes_of(args: argparse.Namespace) -> list[int]:
    return [int(s) for s in args.sizes.split(",")] if args.sizes else [args.items]


class Warehouses:
    """Fresh, empty warehouses for a benchmark's runs, by `add_warehouse_options`: databases
    on a throwaway PostgreSQL started for the script (`--postgres`), the database of `--url`
    emptied before each run, or SQLite files in a temporary directory (`tmp`, which the
    script may use for its other files too). The server and the directory go at the end."""

    def __init__(self, args: argparse.Namespace, name: str) -> None:
        self.name = name
        self.url_option: str | None = args.url
        self.postgres: bool = args.postgres
        self.server: Any = None
        self.tmp = Path(tempfile.mkdtemp(prefix=f"syncd-{name}-"))

    def __enter__(self) -> Warehouses:
        if self.postgres:
            sys.path.insert(0, str(ROOT))
            from tests.pg import PostgresServer

            self.server = PostgresServer()
            self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def new(self, tag: object) -> str:
        """An empty warehouse's URL for the run `tag` (a size, a tracker...)."""
        if self.server is not None:
            return str(self.server.create_database(f"{self.name}_{tag}"))
        if self.url_option:
            empty_warehouse(self.url_option)
            return self.url_option
        return f"sqlite:///{self.tmp / f'{self.name}_{tag}.db'}"


def empty_warehouse(url: str) -> None:
    """Drop everything syncd made in the database at `url`."""
    from syncd.warehouse import migrations
    from syncd.warehouse.store import create_engine

    engine = create_engine(url)
    try:
        migrations.drop_all(engine)
    finally:
        engine.dispose()
