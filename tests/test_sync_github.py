"""End to end: the GitHub simulator on 127.0.0.1 → sync → export / metrics, on SQLite and
PostgreSQL: hand-computed figures, one 304 per unchanged repository, cursor links past the deep
page limit, secondary-rate-limit storms, and the REST timeline fallback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd.config import HttpConfig, load_config
from syncd.export import iter_items, iter_transitions
from syncd.http import HttpClient
from syncd.simulator.github import GitHubSimulator
from syncd.sync import sync_all
from syncd.warehouse.store import Warehouse
from tests.helpers import cli, run_sync

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
TOKEN = "ghp_sim_not_a_real_token_000"
H, D = 3600, 86400


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def write_config(
    tmp_path: Path, url: str, warehouse_url: str, extra: str = "", repos: str = '["acme/web"]'
) -> Path:
    path = tmp_path / "gh.toml"
    path.write_text(
        f"""
[warehouse]
url = "{warehouse_url}"
[[sources]]
name = "gh"
kind = "github"
url = "{url}"
token_env = "GH_TOKEN"
repos = {repos}
value_stream = "Web"
{extra}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GH_TOKEN", TOKEN)


@pytest.fixture
def scenario() -> Iterator[GitHubSimulator]:
    sim = GitHubSimulator(repos=("acme/web",), issues=0, pulls=0, anchor=T0, token=TOKEN)
    repo = "acme/web"
    # 1: a bug that pauses (blocked) and is closed as completed
    one = sim.add_issue(repo, created=h(0), labels=("bug",))
    sim.assign(repo, one, "ana", h(24))
    sim.label(repo, one, "blocked", h(48))
    sim.unlabel(repo, one, "blocked", h(72))
    sim.close(repo, one, h(96), reason="completed")
    # 2: an enhancement that goes back to the backlog, is done, reopened and done again
    two = sim.add_issue(repo, created=h(0), labels=("enhancement",))
    sim.label(repo, two, "in progress", h(24))
    sim.unlabel(repo, two, "in progress", h(48))
    sim.label(repo, two, "in progress", h(72))
    sim.close(repo, two, h(96), reason="completed")
    sim.reopen(repo, two, h(120))
    sim.close(repo, two, h(144), reason="completed")
    # 3: started, then closed as not planned
    three = sim.add_issue(repo, created=h(0))
    sim.assign(repo, three, "bo", h(24))
    sim.close(repo, three, h(48), reason="not_planned")
    # 4: a draft PR closing #1, reviewed twice, merged
    four = sim.add_pull(repo, created=h(12), draft=True, body=f"Closes #{one}")
    sim.ready_for_review(repo, four, h(24))
    sim.request_review(repo, four, "cy", h(36))
    sim.review(repo, four, h(48), "CHANGES_REQUESTED")
    sim.request_review(repo, four, "cy", h(60))
    sim.review(repo, four, h(72), "APPROVED")
    sim.merge(repo, four, h(84))
    # 5: a PR closed unmerged
    five = sim.add_pull(repo, created=h(24))
    sim.request_review(repo, five, "cy", h(30))
    sim.close(repo, five, h(40))
    assert (one, two, three, four, five) == (1, 2, 3, 4, 5)
    with sim:
        yield sim


def test_hand_computed_figures_through_export_and_metrics(
    scenario: GitHubSimulator, tmp_path: Path, warehouse_url: str
) -> None:
    config = str(write_config(tmp_path, scenario.base_url, warehouse_url))
    code, out = cli(["sync", "-c", config])
    assert code == 0, out
    code, out = cli(["export", "items", "-c", config, "--format", "jsonl"])
    items = {r["key"]: r for r in map(json.loads, out.splitlines())}
    assert {
        k: (
            r["kind"],
            r["flow_type"],
            r["stage"],
            r["state"],
            r["flow_time_s"],
            r["active_s"],
            r["wait_s"],
        )
        for k, r in items.items()
    } == {
        "acme/web#1": ("issue", "defect", "done", "closed (completed)", 72 * H, 48 * H, 24 * H),
        # active 24–48, 72–96, 120–144; back in the backlog 48–72 and done 96–120 are wait
        "acme/web#2": ("issue", "feature", "done", "closed (completed)", 120 * H, 72 * H, 48 * H),
        "acme/web#3": (
            "issue",
            "unclassified",
            "canceled",
            "closed (not planned)",
            24 * H,
            24 * H,
            0,
        ),
        # active 12–36 (draft, then ready) and 48–60 (changes requested); waiting for review
        # 36–48 and 60–72, approved and waiting for merge 72–84; the PR takes #1's type
        "acme/web#4": ("pull_request", "defect", "done", "merged", 72 * H, 36 * H, 36 * H),
        "acme/web#5": (
            "pull_request",
            "unclassified",
            "canceled",
            "closed unmerged",
            16 * H,
            6 * H,
            10 * H,
        ),
    }
    code, out = cli(["export", "transitions", "-c", config, "--format", "csv"])
    pr = [line for line in out.splitlines() if ",acme/web#4," in line]
    assert [line.split(",")[4] for line in pr] == [
        "draft",
        "open",
        "review requested",
        "changes requested",
        "review requested",
        "approved",
        "merged",
    ]

    code, out = cli(
        [
            "metrics",
            "-c",
            config,
            "--period",
            "week",
            "--as-of",
            h(7 * 24 + 1).isoformat(),
            "--format",
            "json",
        ]
    )
    week = {r["flow_type"]: r for r in json.loads(out) if r["period_start"] == "2026-03-02"}
    row = week["all"]
    assert row["velocity"] == 3  # #1, #2, #4; #3 and #5 canceled
    assert row["flow_time"]["count"] == 3
    assert row["flow_time"]["mean_s"] == pytest.approx((72 + 120 + 72) * H / 3)
    assert row["flow_time"]["p50_s"] == 72 * H and row["flow_time"]["max_s"] == 120 * H
    assert row["efficiency"] == pytest.approx((48 + 72 + 36) / (72 + 120 + 72))
    assert row["load_end"] == 0
    # in progress: #1 72 h, #2 72 h, #3 24 h, #4 72 h, #5 16 h over the 168-hour week
    assert row["load_avg"] == pytest.approx((72 + 72 + 24 + 72 + 16) / 168)
    assert row["distribution"]["defect"] == pytest.approx(2 / 3)
    assert row["distribution"]["feature"] == pytest.approx(1 / 3)
    assert week["defect"]["velocity"] == 2


def test_unchanged_repository_costs_one_304(tmp_path: Path, warehouse_url: str) -> None:
    with GitHubSimulator(
        repos=("acme/web", "acme/api"), issues=30, pulls=30, seed=4, anchor=T0, token=TOKEN
    ) as sim:
        config = load_config(
            write_config(tmp_path, sim.base_url, warehouse_url, repos='["acme/web", "acme/api"]')
        )
        warehouse = Warehouse(warehouse_url)
        assert all(r.ok for r in run_sync(config, warehouse))
        assert len(list(iter_items(warehouse))) == 120
        run_sync(config, warehouse)  # settles the ETag on the steady-state question
        sim.reset_requests()
        results = run_sync(config, warehouse)
        assert all(r.ok and r.items == 0 for r in results)
        assert [(r.path, r.status) for r in sim.requests] == [
            ("/repos/acme/web/issues", 304),
            ("/repos/acme/api/issues", 304),
        ]


def test_listing_past_the_deep_page_limit_follows_cursor_links(
    tmp_path: Path, warehouse_url: str
) -> None:
    with GitHubSimulator(
        issues=40, pulls=20, seed=5, anchor=T0, token=TOKEN, deep_page_limit=2
    ) as sim:
        config = load_config(write_config(tmp_path, sim.base_url, warehouse_url, "per_page = 10"))
        warehouse = Warehouse(warehouse_url)
        [result] = run_sync(config, warehouse)
        assert result.ok, result.error
        assert result.items == 60
        assert not any(r.status == 422 for r in sim.requests)
        assert any("after" in r.query for r in sim.requests if r.path.endswith("/issues"))


def test_secondary_rate_limit_storm_loses_nothing(tmp_path: Path, warehouse_url: str) -> None:
    with GitHubSimulator(
        issues=25,
        pulls=25,
        seed=6,
        anchor=T0,
        token=TOKEN,
        secondary_every=3,
        secondary_retry_after=None,
    ) as stormy:
        config = load_config(
            write_config(tmp_path, stormy.base_url, warehouse_url, "per_page = 20\nbatch_size = 10")
        )
        warehouse = Warehouse(warehouse_url)
        sleeps: list[float] = []
        [result] = run_sync(config, warehouse, sleeps)
        assert result.ok, result.error
        assert result.retries >= 3
        assert all(s >= 60 for s in sleeps)  # no Retry-After: at least a minute, per GitHub
        stormy_snapshot = (list(iter_items(warehouse)), list(iter_transitions(warehouse)))
    with GitHubSimulator(issues=25, pulls=25, seed=6, anchor=T0, token=TOKEN) as calm:
        reference = Warehouse(f"sqlite:///{tmp_path / 'calm.db'}")
        calm_config = load_config(
            write_config(tmp_path, calm.base_url, f"sqlite:///{tmp_path / 'calm.db'}")
        )
        run_sync(calm_config, reference)
        strip = ("updated_at",)

        def norm(snapshot: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> Any:
            items, transitions = snapshot
            return ([{k: v for k, v in i.items() if k not in strip} for i in items], transitions)

        assert norm(stormy_snapshot) == norm(
            (list(iter_items(reference)), list(iter_transitions(reference)))
        )


def test_rest_timeline_fallback_matches_graphql(tmp_path: Path, warehouse_url: str) -> None:
    def synced(graphql: bool, db: str) -> dict[str, Any]:
        with GitHubSimulator(
            issues=20, pulls=20, seed=7, anchor=T0, token=TOKEN, graphql=graphql
        ) as sim:
            url = warehouse_url if graphql else f"sqlite:///{tmp_path / db}"
            config = load_config(write_config(tmp_path, sim.base_url, url))
            warehouse = Warehouse(url)
            [result] = run_sync(config, warehouse)
            assert result.ok, result.error
            graphql_calls = [r.status for r in sim.requests if r.path == "/graphql"]
            # without GraphQL: one probe answered 404, then REST timelines only
            assert graphql_calls == [404] if not graphql else set(graphql_calls) == {200}
            timelines = [r for r in sim.requests if r.path.endswith("/timeline")]
            assert bool(timelines) is not graphql
            with_projects = {
                f"acme/web#{n}"
                for n in range(1, 41)
                if any(
                    e.get("type", "").startswith("ProjectV2")
                    or e.get("type") == "AddedToProjectV2Event"
                    for e in sim.timeline("acme/web", n)
                )
            }
            transitions: dict[str, list[Any]] = {}
            for t in iter_transitions(warehouse):
                transitions.setdefault(t["key"], []).append(t)
            return {k: v for k, v in transitions.items() if k not in with_projects}

    graphql = synced(True, "g.db")
    rest = synced(False, "r.db")
    assert graphql and graphql.keys() == rest.keys()
    for key in graphql:
        # PRs' flow types may differ (REST has no closing references); histories must not
        assert graphql[key] == rest[key], key


def test_bad_token_names_the_problem_without_the_token(
    scenario: GitHubSimulator,
    tmp_path: Path,
    warehouse_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GH_TOKEN", "ghp_wrong_wrong_wrong_wrong_0")
    config = str(write_config(tmp_path, scenario.base_url, warehouse_url))
    code, out = cli(["sync", "-c", config])
    assert code == 1 and "401" in out
    code, out = cli(["check", "-c", config])
    assert code == 1 and "FAIL" in out
    everything = out + capsys.readouterr().err
    assert "ghp_wrong_wrong_wrong_wrong_0" not in everything and TOKEN not in everything


def test_org_scope_skips_archived_repositories(tmp_path: Path, warehouse_url: str) -> None:
    with GitHubSimulator(
        repos=("acme/web", "acme/api", "acme/old"),
        archived=("acme/old",),
        issues=3,
        pulls=2,
        seed=8,
        anchor=T0,
        token=TOKEN,
    ) as sim:
        path = write_config(tmp_path, sim.base_url, warehouse_url, 'orgs = ["acme"]', repos="[]")
        warehouse = Warehouse(warehouse_url)
        [result] = run_sync(load_config(path), warehouse)
        assert result.ok, result.error
        assert set(result.streams) == {"acme/web", "acme/api"} and result.items == 10
        keys = {i["key"].split("#")[0] for i in iter_items(warehouse)}
        assert keys == {"acme/web", "acme/api"}


class FakeClock:
    """One clock for the simulator and syncd: syncd's sleeps move it forward."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


def test_exhausted_primary_budget_pauses_until_the_reset(
    tmp_path: Path, warehouse_url: str
) -> None:
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    with GitHubSimulator(
        issues=30,
        pulls=30,
        seed=9,
        anchor=T0,
        token=TOKEN,
        rate_limit=3,
        rate_reset_seconds=120,
        clock=clock,
    ) as sim:
        config = load_config(
            write_config(tmp_path, sim.base_url, warehouse_url, "per_page = 10\ngraphql = false")
        )
        warehouse = Warehouse(warehouse_url)
        with HttpClient(HttpConfig(backoff_initial=0.01), sleep=clock.sleep, clock=clock) as http:
            [result] = sync_all(config, warehouse, http, clock=clock)
        assert result.ok, result.error
        assert result.items == 60
        # every wait is the budget's reset, never a blind retry storm
        assert clock.slept and all(0 < s <= 121 for s in clock.slept)
        refused = [r for r in sim.requests if r.status in (403, 429)]
        assert len(refused) <= len(clock.slept)


def test_github_app_installation_tokens(
    tmp_path: Path, warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    monkeypatch.delenv("GH_TOKEN")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "app.pem").write_bytes(pem)
    with GitHubSimulator(
        issues=6,
        pulls=4,
        seed=10,
        anchor=T0,
        app_id=123,
        app_public_key=public.decode(),
        app_installation_id=456,
    ) as sim:
        path = tmp_path / "app.toml"
        path.write_text(
            f"""
[warehouse]
url = "{warehouse_url}"
[[sources]]
name = "gh"
kind = "github"
url = "{sim.base_url}"
repos = ["acme/web"]
app_id = 123
app_private_key_file = "{tmp_path / "app.pem"}"
app_installation_id = 456
""",
            encoding="utf-8",
        )
        code, out = cli(["sync", "-c", str(path)])
        assert code == 0, out
        assert "gh: ok — 10 items" in out
        minted = [r for r in sim.requests if r.path.startswith("/app/installations/")]
        assert [(r.path, r.status) for r in minted] == [
            ("/app/installations/456/access_tokens", 201)
        ]
        # one token per run, reused for every request of the run (listing + GraphQL)
        assert len([r for r in sim.requests if not r.path.startswith("/app/")]) == 2
        code, out = cli(["sync", "-c", str(path)])
        assert code == 0
        assert len([r for r in sim.requests if r.path.startswith("/app/")]) == 2

        path.write_text(
            path.read_text().replace("app_installation_id = 456", "app_installation_id = 999")
        )
        code, out = cli(["sync", "-c", str(path)])
        assert code == 1 and "FAILED" in out
