"""GitHub sync benchmark against the built-in simulator (a separate process on 127.0.0.1).

Prints, for a first sync of N issues + N pull requests (~8 timeline events each) in one
repository: HTTP requests per 1000 items, items/s end to end, peak RSS, and what a no-change
re-sync costs (target: one 304 per repository).

    .venv/bin/python benchmarks/bench_github.py --items 5000
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import first_sync_and_resync, main_for  # noqa: E402


def one(items: int) -> dict[str, object]:
    return first_sync_and_resync(
        "github",
        ["--repos", "acme/web", "--issues", str(items), "--pulls", str(items), "--seed", "11"],
        'kind = "github"\nurl = "{url}"\nrepos = ["acme/web"]\n',
    )


if __name__ == "__main__":
    sys.exit(main_for(one, __file__, 5000))
