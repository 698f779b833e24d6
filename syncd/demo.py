"""The README's demo: simulator → sync → warehouse → metrics, on this machine only.

Starts the built-in Jira simulator on 127.0.0.1, writes a config into a scratch folder, runs
a first sync, lets some issues change, runs an incremental sync, and prints the weekly flow
metrics. Every step goes through the public CLI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from syncd.cli import main as syncd

CONFIG = """\
# Written by the syncd demo: the built-in simulator as a Jira Cloud site.
[warehouse]
url = "sqlite:///{db}"

[[sources]]
name = "demo-jira"
kind = "jira"
url = "{url}"
deployment = "cloud"
email_env = "SYNCD_DEMO_EMAIL"
token_env = "SYNCD_DEMO_TOKEN"
jql = "project = DEMO"
value_stream = "Demo"

[sources.stages]
"Blocked" = "waiting"
"Ready for QA" = "waiting"
"Väntar på kund" = "waiting"
"""


def run(argv: list[str] | None = None) -> int:
    from syncd.simulator.jira import JiraSimulator

    parser = argparse.ArgumentParser(prog="syncd-demo")
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--dir", default=".demo", help="scratch folder (recreated)")
    args = parser.parse_args(argv)

    folder = Path(args.dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["SYNCD_DEMO_EMAIL"] = "demo@example.com"
    os.environ["SYNCD_DEMO_TOKEN"] = "demo-token-not-secret"
    with JiraSimulator(
        items=args.items, seed=7, email="demo@example.com", token="demo-token-not-secret"
    ) as sim:
        config = folder / "syncd.toml"
        config.write_text(
            CONFIG.format(db=(folder / "warehouse.db").resolve().as_posix(), url=sim.base_url),
            encoding="utf-8",
        )
        print(f"== simulator: Jira Cloud with {args.items} issues on {sim.base_url}")
        print(f"== config: {config}")
        print("\n== syncd check")
        if syncd(["check", "-c", str(config)]) != 0:
            return 1
        print("\n== syncd sync (first: every issue with its complete history)")
        sim.reset_requests()
        if syncd(["sync", "-c", str(config)]) != 0:
            return 1
        changed = sim.mutate(12)
        print(f"\n== {len(changed)} issues change in the tracker; syncd sync (incremental)")
        if syncd(["sync", "-c", str(config)]) != 0:
            return 1
        print("\n== syncd metrics --period week (last 12 weeks)")
        code = syncd(["metrics", "-c", str(config), "--period", "week", "--last", "12"])
        print("\nMore (the warehouse stays in place):")
        for command in (
            "metrics -c {c} --period month --format json",
            "export items -c {c} --format csv",
            "export transitions -c {c} --format jsonl",
        ):
            print("  .venv/bin/syncd " + command.format(c=config))

        return code


if __name__ == "__main__":
    sys.exit(run())
