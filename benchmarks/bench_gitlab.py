"""GitLab sync benchmark against the built-in simulator (a separate process on 127.0.0.1).

Prints, for a first sync of N issues + N merge requests (~8 events each) in one project with
the default settings (system notes through GraphQL, 100 items a query): requests per item
(target ≤ 2.2), items/s end to end, peak RSS, and the request count of a no-change re-sync.
With `BENCH_GITLAB_NOTES=rest` in the environment it syncs with `graphql = false` instead
(each item's REST notes, as before GraphQL batching), for comparison.

    .venv/bin/python benchmarks/bench_gitlab.py --items 5000
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import first_sync_and_resync, main_for  # noqa: E402

REST_NOTES = os.environ.get("BENCH_GITLAB_NOTES", "graphql").lower() == "rest"


def one(items: int) -> dict[str, object]:
    result = first_sync_and_resync(
        "gitlab",
        [
            "--projects",
            "acme/web",
            "--issues",
            str(items),
            "--merge-requests",
            str(items),
            "--seed",
            "11",
        ],
        'kind = "gitlab"\nurl = "{url}"\nprojects = ["acme/web"]\n'
        + ("graphql = false\n" if REST_NOTES else ""),
    )
    return {"notes": "REST" if REST_NOTES else "GraphQL", **result}


if __name__ == "__main__":
    sys.exit(main_for(one, __file__, 5000))
