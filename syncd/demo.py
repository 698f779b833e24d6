"""The README's demo: simulator → sync → warehouse → metrics, on this machine only.

Starts the built-in Jira, GitHub and GitLab simulators on 127.0.0.1, writes a config with
two value streams that span them into a scratch folder, runs a first sync, lets some items
change, runs an incremental sync, and prints the monthly flow metrics per value stream with
their target split. Every step goes through the public CLI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from syncd.cli import main as syncd

CONFIG = """\
# Written by the syncd demo: three built-in simulators on 127.0.0.1 (Jira Cloud, GitHub,
# GitLab) and two value streams that span them.
[warehouse]
url = "sqlite:///{db}"

[[sources]]
name = "demo-jira"
kind = "jira"
url = "{jira}"
deployment = "cloud"
email_env = "SYNCD_DEMO_EMAIL"
token_env = "SYNCD_DEMO_TOKEN"
jql = "project = DEMO"
value_stream = "Demo"   # issues no value stream below claims

[sources.stages]
"Blocked" = "waiting"
"Ready for QA" = "waiting"
"Väntar på kund" = "waiting"

[[sources]]
name = "demo-github"
kind = "github"
url = "{github}"
token_env = "SYNCD_DEMO_TOKEN"
repos = ["acme/checkout-web", "acme/infra"]

[[sources]]
name = "demo-gitlab"
kind = "gitlab"
url = "{gitlab}"
token_env = "SYNCD_DEMO_TOKEN"
projects = ["payments/api"]

# An item belongs to the first value stream with a matching scope.
[[value_streams]]
name = "Checkout"
target_distribution = {{ feature = 0.6, defect = 0.2, risk = 0.1, debt = 0.1 }}
scopes = [
  {{ source = "demo-jira", labels = ["frontend", "customer"] }},
  {{ source = "demo-github", projects = ["acme/checkout-web"] }},
  {{ source = "demo-gitlab", projects = ["payments/api"] }},
]

[[value_streams]]
name = "Platform"
target_distribution = {{ feature = 0.4, defect = 0.2, risk = 0.2, debt = 0.2 }}
scopes = [
  {{ source = "demo-jira", labels = ["backend", "security", "tech-debt"] }},
  {{ source = "demo-github", projects = ["acme/infra"] }},
]
"""

TOKEN = "demo-token-not-secret"


def run(argv: list[str] | None = None) -> int:
    from syncd.simulator.github import GitHubSimulator
    from syncd.simulator.gitlab import GitLabSimulator
    from syncd.simulator.jira import JiraSimulator

    parser = argparse.ArgumentParser(prog="syncd-demo")
    parser.add_argument(
        "--items", type=int, default=400, help="Jira issues (GitHub and GitLab get fewer)"
    )
    parser.add_argument("--dir", default=".demo", help="scratch folder (recreated)")
    args = parser.parse_args(argv)

    folder = Path(args.dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["SYNCD_DEMO_EMAIL"] = "demo@example.com"
    os.environ["SYNCD_DEMO_TOKEN"] = TOKEN
    small = max(args.items // 10, 1)
    with (
        JiraSimulator(items=args.items, seed=7, email="demo@example.com", token=TOKEN) as jira,
        GitHubSimulator(
            repos=("acme/checkout-web", "acme/infra"),
            issues=small,
            pulls=small,
            seed=7,
            token=TOKEN,
        ) as github,
        GitLabSimulator(
            projects=("payments/api",),
            issues=small,
            merge_requests=small,
            seed=7,
            token=TOKEN,
        ) as gitlab,
    ):
        config = folder / "syncd.toml"
        config.write_text(
            CONFIG.format(
                db=(folder / "warehouse.db").resolve().as_posix(),
                jira=jira.base_url,
                github=github.base_url,
                gitlab=gitlab.base_url,
            ),
            encoding="utf-8",
        )
        print(f"== simulators: Jira Cloud ({args.items} issues) on {jira.base_url}")
        print(f"               GitHub (2 repositories) on {github.base_url}")
        print(f"               GitLab (1 project) on {gitlab.base_url}")
        print(f"== config: {config}")
        print("\n== syncd check")
        if syncd(["check", "-c", str(config)]) != 0:
            return 1
        print("\n== syncd sync (first: every item with its complete history)")
        if syncd(["sync", "-c", str(config)]) != 0:
            return 1
        changed = len(jira.mutate(12)) + len(github.mutate(6)) + len(gitlab.mutate(6))
        print(f"\n== {changed} items change in the trackers; syncd sync (incremental)")
        if syncd(["sync", "-c", str(config)]) != 0:
            return 1
        print("\n== syncd metrics --period month (last 4 months per value stream)")
        code = syncd(["metrics", "-c", str(config), "--period", "month", "--last", "4"])
        print("\nMore (the warehouse stays in place):")
        for command in (
            "metrics -c {c} --period week --value-stream Checkout --format json",
            "export items -c {c} --format csv",
            "export transitions -c {c} --format jsonl",
        ):
            print("  .venv/bin/syncd " + command.format(c=config))

        return code


if __name__ == "__main__":
    sys.exit(run())
