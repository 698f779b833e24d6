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
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncd.warehouse.store import Warehouse
from tests.helpers import Trackers, cli, empty_trackers, jira_toml

D = 86400.0
EMAIL, TOKEN = "bot@example.com", "sim-token-three"
PULL, DEBT = 1, 2  # GitHub numbers of the pull request and the debt issue (created in order)


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


@pytest.fixture
def trackers() -> Iterator[Trackers]:
    with empty_trackers(at(20), EMAIL, TOKEN) as three:
        jira, github, gitlab = three.jira, three.github, three.gitlab
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
        pull = github.add_pull(
            repo, created=at(2, 12), title="SHOP-1 checkout button", labels=("enhancement",)
        )
        github.request_review(repo, pull, "octo", at(3, 12))
        github.merge(repo, pull, at(4, 12))
        debt = github.add_issue(
            repo,
            created=at(2),
            title="Drop the legacy cart",
            labels=("tech-debt",),
            body="Blocked by OPS-2",
        )
        github.assign(repo, debt, "octo", at(4))
        assert (pull, debt) == (PULL, DEBT)

        project = "payments/api"
        mr = gitlab.add_merge_request(project, created=at(3), labels=("bug",))
        gitlab.merge(project, mr, at(6))
        issue = gitlab.add_issue(project, created=at(2), labels=("feature",))
        gitlab.add_label(project, "issue", issue, "workflow::in progress", at(9))
        yield three


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_EMAIL", EMAIL)
    monkeypatch.setenv("SIM_TOKEN", TOKEN)


def write_config(path: Path, trackers: Trackers, warehouse_url: str) -> Path:
    more = f"""
[sources.stages]
"Blocked" = "waiting"
{trackers.sources_toml("SIM_TOKEN")}
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


def _view(warehouse_url: str, sql: str, **params: object) -> list[dict[str, object]]:
    warehouse = Warehouse(warehouse_url)
    try:
        with warehouse.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]
    finally:
        warehouse.close()


def test_sql_views_show_the_same_numbers(synced: Path, warehouse_url: str) -> None:
    # `syncd metrics` stores the rows and the value stream tables the views read
    assert cli(["metrics", "-c", str(synced)])[0] == 0
    rows = {
        r["flow_type"]: r
        for r in _view(
            warehouse_url,
            "SELECT * FROM flow_metrics WHERE value_stream = 'Checkout' "
            "AND period_kind = 'week' AND period_start = :start",
            start=at(2) if "postgresql" in warehouse_url else "2026-03-02",
        )
    }
    if not rows:  # SQLite keeps instants as text with a time part
        rows = {
            r["flow_type"]: r
            for r in _view(
                warehouse_url,
                "SELECT * FROM flow_metrics WHERE value_stream = 'Checkout' "
                "AND period_kind = 'week' AND period_start LIKE '2026-03-02%'",
            )
        }
    whole = rows["all"]
    assert whole["velocity"] == 4 and whole["load_end"] == 2
    assert whole["flow_time_p85_s"] == pytest.approx(3.55 * D)
    assert whole["efficiency"] == pytest.approx(9 / 11)
    assert rows["feature"]["distribution_share"] == pytest.approx(0.5)
    assert rows["feature"]["target_share"] == pytest.approx(0.5)
    assert rows["defect"]["deviation"] == pytest.approx(0.25)
    assert rows["debt"]["deviation"] == pytest.approx(-0.25)
    assert rows["debt"]["load_share"] == pytest.approx(0.5)
    assert rows["risk"]["target_share"] is None

    items = _view(warehouse_url, "SELECT value_stream, source FROM flow_items")
    by_stream: dict[object, set[object]] = {}
    for item in items:
        by_stream.setdefault(item["value_stream"], set()).add(item["source"])
    assert by_stream == {"Checkout": {"jira", "gh", "gl"}, "Platform": {"jira"}}

    # at the end of Mar 8 (Mar 9 00:00): the debt issue and the GitLab issue are in progress
    load = _view(
        warehouse_url,
        "SELECT flow_type, in_progress, done FROM flow_load_daily "
        "WHERE value_stream = 'Checkout' AND CAST(day AS TEXT) LIKE '2026-03-08%'",
    )
    assert {r["flow_type"]: r["in_progress"] for r in load if r["in_progress"]} == {
        "debt": 1,
        "feature": 1,
    }
    assert sum(int(str(r["done"])) for r in load) == 4

    deps = _view(
        warehouse_url,
        "SELECT from_key, to_key, link_type, blocking, cross_value_stream "
        "FROM flow_dependencies ORDER BY from_key, to_key",
    )
    blocking = {(d["from_key"], d["to_key"]) for d in deps if d["blocking"]}
    assert blocking == {("SHOP-2", "OPS-1"), (f"acme/checkout-web#{DEBT}", "OPS-2")}
    assert all(d["cross_value_stream"] for d in deps if d["blocking"])
    references = [d for d in deps if d["link_type"] == "References"]
    assert [(d["from_key"], d["to_key"]) for d in references] == [
        (f"acme/checkout-web#{PULL}", "SHOP-1")
    ]


def test_dependencies_across_trackers(synced: Path) -> None:
    code, out = cli(
        [
            "dependencies",
            "-c",
            str(synced),
            "--period",
            "week",
            "--as-of",
            "2026-03-20T00:00:00Z",
            "--format",
            "json",
        ]
    )
    assert code == 0, out
    rows = json.loads(out)
    week = next(
        r for r in rows if r["value_stream"] == "Checkout" and r["period_start"] == "2026-03-02"
    )
    # at Mar 9 00:00 only the debt issue waits on Platform (OPS-2 still in progress); SHOP-2
    # waited on OPS-1 all its 4 days in progress, the debt issue 5 days (Mar 4 to Mar 9)
    assert week["blocked_cross"] == 1
    assert week["blocked_cross_s"] == pytest.approx(9 * D)
    assert week["blocked_same"] == 0


def test_http_api_and_dashboard_show_the_value_stream(synced: Path, warehouse_url: str) -> None:
    from fastapi.testclient import TestClient

    from syncd.api.app import create_app

    assert cli(["metrics", "-c", str(synced)])[0] == 0
    warehouse = Warehouse(warehouse_url)
    try:
        client = TestClient(create_app(warehouse))
        answer = client.get(
            "/api/v1/metrics",
            params={"value_stream": "Checkout", "period": "week", "flow_type": "all"},
        )
        assert answer.status_code == 200, answer.text
        records = answer.json()["metrics"]
        week = next(r for r in records if str(r["period_start"]).startswith("2026-03-02"))
        assert week["velocity"] == 4 and week["load_end"] == 2
        assert week["efficiency"] == pytest.approx(9 / 11)

        csv_text = client.get(
            "/api/v1/metrics",
            params={"value_stream": "Checkout", "period": "week", "format": "csv"},
        ).text
        assert csv_text.splitlines()[0].startswith("value_stream,")

        listed = client.get("/api/v1/value-streams").json()["value_streams"]
        checkout = next(s for s in listed if s["name"] == "Checkout")
        assert checkout["targets"] == {"feature": 0.5, "defect": 0.25, "debt": 0.25}

        graph = client.get("/api/v1/dependencies", params={"value_stream": "Checkout"}).json()
        assert {(e["from_key"], e["to_key"]) for e in graph["edges"] if e["blocking"]} == {
            ("SHOP-2", "OPS-1"),
            (f"acme/checkout-web#{DEBT}", "OPS-2"),
        }

        page = client.get("/dashboard", params={"value_stream": "Checkout", "weeks": 52})
        assert page.status_code == 200
        assert page.text.count("<svg") >= 4 and "Checkout" in page.text
        assert "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")
    finally:
        warehouse.close()
