"""One value stream fed by Jira, GitHub and GitLab at once, end to end, with numbers computed
by hand.

"Checkout" = Jira project SHOP + GitHub repository acme/checkout-web + GitLab project
payments/api, with a target split; "Platform" = Jira project OPS, which Checkout waits on.
The three simulators run on 127.0.0.1 with scripted histories (all times UTC, week of Monday
2026-03-02):

| item                         | type    | in progress from      | done        | flow/active |
|------------------------------|---------|-----------------------|-------------|-------------|
| SHOP-1 Story                 | feature | Mar 3 08:00           | Mar 5 08:00 | 2 d / 2 d   |
| SHOP-2 Bug, blocked by OPS-1 | defect  | Mar 3 08:00 (1)       | Mar 7 08:00 | 4 d / 3 d   |
| PR "SHOP-1 checkout button"  | feature | Mar 2 12:00 (2)       | Mar 4 12:00 | 2 d / 1 d   |
| issue, "Blocked by OPS-2"    | debt    | Mar 4 00:00 assigned  | open        | -           |
| payments/api MR              | defect  | Mar 3 00:00           | Mar 6 00:00 | 3 d / 3 d   |
| payments/api issue           | feature | Mar 9 00:00 (3)       | open        | -           |
| OPS-1 (Platform)             | feature | Mar 2 00:00           | Mar 10      |             |
| OPS-2 (Platform)             | feature | Mar 5 00:00           | open        |             |

(1) Blocked (waiting) Mar 4 08:00 - Mar 5 08:00. (2) review requested (waiting) Mar 3 12:00.
(3) label workflow::in progress at exactly the week's end: already in progress then.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.simulator.github import GitHubSimulator
from syncd.simulator.gitlab import GitLabSimulator
from syncd.simulator.jira import JiraSimulator
from tests.helpers import cli, jira_toml

D = 86400.0
EMAIL, TOKEN = "bot@example.com", "sim-token-three"


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


@dataclass
class Trackers:
    jira: JiraSimulator
    github: GitHubSimulator
    gitlab: GitLabSimulator


@pytest.fixture
def trackers() -> Iterator[Trackers]:
    anchor = at(20)
    with (
        JiraSimulator(items=0, seed=1, anchor=anchor, email=EMAIL, token=TOKEN) as jira,
        GitHubSimulator(
            repos=("acme/checkout-web",), issues=0, pulls=0, anchor=anchor, token=TOKEN
        ) as github,
        GitLabSimulator(
            projects=("payments/api",), issues=0, merge_requests=0, anchor=anchor, token=TOKEN
        ) as gitlab,
    ):
        ops1 = jira.add_issue(key="OPS-1", issue_type="Story", created=at(1))
        jira.transition(ops1, "In Progress", at(2))
        jira.transition(ops1, "Done", at(10))
        ops2 = jira.add_issue(key="OPS-2", issue_type="Story", created=at(1))
        jira.transition(ops2, "In Progress", at(5))

        shop1 = jira.add_issue(key="SHOP-1", issue_type="Story", created=at(2, 8))
        jira.transition(shop1, "In Progress", at(3, 8))
        jira.transition(shop1, "Done", at(5, 8))
        shop2 = jira.add_issue(
            key="SHOP-2", issue_type="Bug", created=at(2, 8), links=[("Blocks", "inward", ops1)]
        )
        jira.transition(shop2, "In Progress", at(3, 8))
        jira.transition(shop2, "Blocked", at(4, 8))
        jira.transition(shop2, "In Progress", at(5, 8))
        jira.transition(shop2, "Done", at(7, 8))

        repo = "acme/checkout-web"
        pr = github.add_pull(
            repo, created=at(2, 12), title="SHOP-1 checkout button", labels=("enhancement",)
        )
        github.request_review(repo, pr, "octo", at(3, 12))
        github.merge(repo, pr, at(4, 12))
        debt = github.add_issue(
            repo,
            created=at(2),
            title="Drop the legacy cart",
            labels=("tech-debt",),
            body="Blocked by OPS-2",
        )
        github.assign(repo, debt, "octo", at(4))

        project = "payments/api"
        mr = gitlab.add_merge_request(project, created=at(3), labels=("bug",))
        gitlab.merge(project, mr, at(6))
        issue = gitlab.add_issue(project, created=at(2), labels=("feature",))
        gitlab.add_label(project, "issue", issue, "workflow::in progress", at(9))
        yield Trackers(jira, github, gitlab)


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_EMAIL", EMAIL)
    monkeypatch.setenv("SIM_TOKEN", TOKEN)


def write_config(path: Path, trackers: Trackers, warehouse_url: str) -> Path:
    more = f"""
[sources.stages]
"Blocked" = "waiting"

[[sources]]
name = "gh"
kind = "github"
url = "{trackers.github.base_url}"
token_env = "SIM_TOKEN"
repos = ["acme/checkout-web"]

[[sources]]
name = "gl"
kind = "gitlab"
url = "{trackers.gitlab.base_url}"
token_env = "SIM_TOKEN"
projects = ["payments/api"]

[[value_streams]]
name = "Checkout"
target_distribution = {{ feature = 0.5, defect = 0.25, debt = 0.25 }}
scopes = [
  {{ source = "jira", projects = ["SHOP"] }},
  {{ source = "gh", projects = ["acme/checkout-web"] }},
  {{ source = "gl", projects = ["payments/api"] }},
]

[[value_streams]]
name = "Platform"
scopes = [{{ source = "jira", projects = ["OPS"] }}]
"""
    return jira_toml(
        path,
        trackers.jira.base_url,
        warehouse_url,
        email_env="SIM_EMAIL",
        token_env="SIM_TOKEN",
        jql="project in (SHOP, OPS)",
        source=more,
    )


@pytest.fixture
def synced(trackers: Trackers, tmp_path: Path, warehouse_url: str) -> Path:
    config = write_config(tmp_path / "syncd.toml", trackers, warehouse_url)
    code, out = cli(["sync", "-c", str(config)])
    assert code == 0, out
    return config


def week_rows(config: Path, stream: str) -> dict[str, dict[str, object]]:
    code, out = cli(["metrics", "-c", str(config), "--period", "week", "--format", "json"])
    assert code == 0, out
    return {
        r["flow_type"]: r
        for r in json.loads(out)
        if r["value_stream"] == stream and r["period_start"] == "2026-03-02"
    }


def test_cli_metrics_of_a_three_tracker_value_stream(synced: Path) -> None:
    rows = week_rows(synced, "Checkout")
    whole = rows["all"]
    assert whole["velocity"] == 4  # SHOP-1, SHOP-2, the PR, the MR
    flow_time = whole["flow_time"]
    assert isinstance(flow_time, dict)
    assert flow_time["count"] == 4
    assert flow_time["mean_s"] == pytest.approx(2.75 * D)
    assert flow_time["p50_s"] == pytest.approx(2.5 * D)
    assert flow_time["p85_s"] == pytest.approx(3.55 * D)  # [2, 2, 3, 4] d, linear
    assert flow_time["p95_s"] == pytest.approx(3.85 * D)
    assert flow_time["max_s"] == pytest.approx(4 * D)
    assert whole["efficiency"] == pytest.approx(9 / 11)  # (2+3+1+3) / (2+4+2+3)
    assert whole["efficiency_mean"] == pytest.approx((1 + 0.75 + 0.5 + 1) / 4)
    # at Mar 9 00:00: the debt issue (since Mar 4) and the GitLab issue (started exactly then)
    assert whole["load_end"] == 2
    assert whole["load_avg"] == pytest.approx((2 + 4 + 2 + 5 + 3) / 7)
    age = whole["age"]
    assert isinstance(age, dict)
    assert age["count"] == 2 and age["max_s"] == pytest.approx(5 * D)
    assert whole["distribution"] == pytest.approx(
        {"feature": 0.5, "defect": 0.5, "risk": 0.0, "debt": 0.0, "unclassified": 0.0}
    )
    assert whole["load_distribution"] == pytest.approx(
        {"feature": 0.5, "defect": 0.0, "risk": 0.0, "debt": 0.5, "unclassified": 0.0}
    )
    # actual vs target, in share points
    assert whole["target_distribution"] == {"feature": 0.5, "defect": 0.25, "debt": 0.25}
    assert whole["distribution_deviation"] == pytest.approx(
        {"feature": 0.0, "defect": 0.25, "debt": -0.25}
    )
    assert rows["defect"]["velocity"] == 2 and rows["defect"]["deviation"] == pytest.approx(0.25)
    assert rows["debt"]["deviation"] == pytest.approx(-0.25) and rows["debt"]["load_end"] == 1
    assert rows["risk"]["target_share"] is None

    platform = week_rows(synced, "Platform")["all"]
    assert platform["velocity"] == 0 and platform["load_end"] == 2
    assert platform["target_distribution"] is None

    code, table = cli(["metrics", "-c", str(synced), "--period", "week"])
    assert code == 0
    line = next(x for x in table.splitlines() if x.startswith("Checkout") and "2026-03-02" in x)
    assert "feature +0 defect +25 debt -25" in line
