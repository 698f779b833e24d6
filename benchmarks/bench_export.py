"""Exports at scale: time, peak RSS and file size of `syncd export` per kind and format.

Builds the warehouse of `benchmarks/bench_metrics.py` (N generated items over two years,
~10 transitions each, four value streams; its `generate` and `full` phases, so the metric
rows exist), then runs each export in a fresh process, so peak RSS compares across kinds,
formats and sizes:

  baseline     the same process up to the export (imports, pyarrow, warehouse opened),
               writing nothing: what every export's RSS includes;
  <kind> <fmt> items / transitions / metrics as jsonl, csv, parquet, to a file.

    .venv/bin/python benchmarks/bench_export.py --sizes 25000,100000
    .venv/bin/python benchmarks/bench_export.py --items 100000 --postgres

Flat memory means the peak RSS of an export does not grow with the number of rows: compare
the same kind and format across sizes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import Warehouses, peak_rss_mb, sizes_of  # noqa: E402

KINDS = ("items", "transitions", "metrics")
FORMATS = ("jsonl", "csv", "parquet")


def phase(url: str, kind: str, fmt: str, out_dir: Path) -> dict[str, Any]:
    """One export in this (fresh) process."""
    import pyarrow.parquet  # noqa: F401  (the baseline includes it, as a parquet export does)

    from syncd.export import KINDS as EXPORTS
    from syncd.export import export
    from syncd.warehouse.store import Warehouse

    warehouse = Warehouse(url)
    if kind == "baseline":
        result: dict[str, Any] = {"kind": kind, "peak_rss_mb": peak_rss_mb()}
        warehouse.close()
        return result
    path = out_dir / f"{kind}.{fmt}"
    t0 = time.perf_counter()
    rows = export(warehouse, EXPORTS[kind], fmt, path=path)
    seconds = time.perf_counter() - t0
    warehouse.close()
    return {
        "kind": kind,
        "format": fmt,
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds) if seconds else None,
        "peak_rss_mb": peak_rss_mb(),
        "file_mb": round(path.stat().st_size / 1e6, 1),
    }


def run(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def one_size(url: str, count: int, out_dir: Path) -> list[dict[str, Any]]:
    metrics_bench = str(ROOT / "benchmarks" / "bench_metrics.py")
    generated = run(metrics_bench, "--phase", "generate", "--url", url, "--items", str(count))
    run(metrics_bench, "--phase", "full", "--url", url, "--items", str(count))
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    common = {"dialect": dialect, "items": count, "transitions": generated["transitions"]}
    results = []
    me = str(Path(__file__).resolve())
    for kind, fmt in [("baseline", "-"), *((k, f) for k in KINDS for f in FORMATS)]:
        args = ["--phase", kind, "--format", fmt, "--url", url, "--out", str(out_dir)]
        result = {**common, **run(me, *args)}
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--sizes", help="comma-separated sizes, each measured separately")
    parser.add_argument(
        "--postgres", action="store_true", help="start a throwaway PostgreSQL on 127.0.0.1"
    )
    parser.add_argument("--phase", choices=("baseline", *KINDS))
    parser.add_argument("--format", choices=(*FORMATS, "-"))
    parser.add_argument("--url", help="with --phase: the warehouse")
    parser.add_argument("--out", help="with --phase: the directory to write to")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.url, args.phase, args.format, Path(args.out))))
        return 0

    args.url = None  # in this mode the warehouses are the script's own
    with Warehouses(args, "bench_export") as warehouses:
        for count in sizes_of(args):
            url = warehouses.new(count)
            out_dir = warehouses.tmp / f"out_{count}"
            out_dir.mkdir()
            one_size(url, count, out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
