"""Plumbing shared by the benchmark scripts: a simulator in its own process, peak RSS."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

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
