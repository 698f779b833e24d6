"""The fake GitHub answers in GitHub's shapes: recorded responses (../shared/fixtures/github:
PyGithub replay data, DevLake raw tables) and the OpenAPI description
(../shared/specs/github-api.github.com.octokit.json). Skipped when ../shared is absent."""

from __future__ import annotations

import csv
import functools
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.simulator.github import GitHubSimulator
from tests.test_simulator_github import review_scenario

pytestmark = pytest.mark.fixtures

SHARED = Path(__file__).resolve().parents[2] / "shared"
GITHUB = SHARED / "fixtures" / "github"
PYGITHUB = GITHUB / "pygithub"
SPEC = SHARED / "specs" / "github-api.github.com.octokit.json"
ANCHOR = datetime(2025, 3, 1, tzinfo=UTC)
T0 = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

# What a sync reads from an issue listing; each must be in the recordings and in ours.
NEEDED_ISSUE_KEYS = {
    "id",
    "node_id",
    "number",
    "title",
    "state",
    "state_reason",
    "labels",
    "user",
    "assignee",
    "assignees",
    "created_at",
    "updated_at",
    "closed_at",
    "html_url",
}
NEEDED_PULL_KEYS = {"pull_request", "draft"}
# Only sub-issues (not simulated) have a parent.
NOT_SIMULATED = {"parent_issue_url"}
# What a sync reads from timeline events, per event.
NEEDED_EVENT_KEYS = {
    "labeled": {"event", "created_at", "label", "actor", "id"},
    "closed": {"event", "created_at", "state_reason", "actor", "id"},
    "assigned": {"event", "created_at", "assignee", "actor", "id"},
    "merged": {"event", "created_at", "actor", "id"},
    "reviewed": {"event", "submitted_at", "state", "user", "id"},
    "cross-referenced": {"event", "created_at", "source"},
}


def need(path: Path) -> Path:
    if not SHARED.exists() or not path.exists():
        pytest.skip(f"../shared/fixtures not found: {path}")
    return path


def load(name: str) -> Any:
    return json.loads(need(PYGITHUB / name).read_text())


@functools.cache
def spec() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(need(SPEC).read_text())
    return data


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = spec()
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def component(name: str) -> dict[str, Any]:
    return resolve({"$ref": f"#/components/schemas/{name}"})


def conforms(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Problems of `value` against `schema`: keys the schema does not know, missing required
    keys, recursively ($ref, allOf, oneOf, anyOf resolved). Empty when it conforms."""
    schema = resolve(schema)
    if value is None:
        return []
    for key in ("oneOf", "anyOf"):
        if key in schema:
            attempts = [conforms(value, option, path) for option in schema[key]]
            if any(not problems for problems in attempts):
                return []
            return [f"{path}: matches no {key} member: {min(attempts, key=len)}"]
    if "allOf" in schema:
        merged: dict[str, Any] = {"properties": {}, "required": []}
        for part in schema["allOf"]:
            part = resolve(part)
            merged["properties"].update(part.get("properties", {}))
            merged["required"] += part.get("required", [])
        schema = merged
    if isinstance(value, list):
        items = schema.get("items", {})
        return [p for n, v in enumerate(value) for p in conforms(v, items, f"{path}[{n}]")]
    if not isinstance(value, dict) or "properties" not in schema:
        return []
    properties = schema["properties"]
    problems = [f"{path}.{k}: not in the schema" for k in value if k not in properties]
    problems += [
        f"{path}.{k}: required but missing" for k in schema.get("required", []) if k not in value
    ]
    for key, item in value.items():
        if key in properties:
            problems += conforms(item, properties[key], f"{path}.{key}")
    return problems


@pytest.fixture(scope="module")
def sim() -> Iterator[GitHubSimulator]:
    """A generated repository plus items whose timelines hold every event kind."""
    simulator = GitHubSimulator(
        repos=("acme/web", "acme/api"), issues=40, pulls=40, anchor=ANCHOR, seed=3
    )
    at = [T0 + timedelta(hours=h) for h in range(8)]
    issue = simulator.add_issue("acme/web", created=at[0], labels=["bug"], body="It broke.")
    pull, _ = review_scenario(simulator, at[1])
    simulator.assign("acme/web", issue, "alice", at[2])
    simulator.cross_reference("acme/web", issue, "acme/web", pull, at[3], will_close=True)
    simulator.close("acme/web", issue, at[4], reason="not_planned")
    simulator.reopen("acme/web", issue, at[5])
    simulator.unassign("acme/web", issue, "alice", at[6])
    simulator.unlabel("acme/web", issue, "bug", at[7])
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture(scope="module")
def client(sim: GitHubSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, timeout=10) as http:
        yield http


def scenario_numbers(sim: GitHubSimulator) -> tuple[int, int]:
    numbers = sim.numbers("acme/web")
    return numbers[-2], numbers[-1]


def sim_items(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/repos/acme/web/issues", params={"state": "all", "per_page": 100})
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()
    return items


def sim_events(client: httpx.Client, sim: GitHubSimulator) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for number in scenario_numbers(sim):
        events += client.get(f"/repos/acme/web/issues/{number}/timeline").json()
    return events


def recorded_issues() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for path in sorted(need(PYGITHUB).glob("repos_issues__*.json")):
        items += json.loads(path.read_text())
    csv.field_size_limit(1 << 28)
    with need(GITHUB / "devlake" / "_raw_github_api_issues.csv").open(newline="") as handle:
        items += [json.loads(row["data"]) for row in csv.DictReader(handle)]
    return items


# ---------------------------------------------------------------------------- recorded shapes


def test_issue_listing_has_the_recorded_keys(client: httpx.Client) -> None:
    ours = sim_items(client)
    our_issue = next(i for i in ours if "pull_request" not in i)
    our_pull = next(i for i in ours if "pull_request" in i)
    recorded = recorded_issues()
    assert len(recorded) > 100
    recorded_keys: set[str] = set()
    for item in recorded:
        pull = "pull_request" in item
        mine = our_pull if pull else our_issue
        extra = set(item) - set(mine) - NOT_SIMULATED
        assert not extra, (item["url"], sorted(extra))
        assert NEEDED_ISSUE_KEYS | (NEEDED_PULL_KEYS if pull else set()) <= set(mine)
        recorded_keys.update(item)
        for label in item["labels"]:
            assert (
                {"name", "color"}
                <= set(label)
                <= set(mine["labels"][0] if mine["labels"] else label)
            )
        if pull:
            assert set(item["pull_request"]) <= set(mine["pull_request"])
            assert "merged_at" in mine["pull_request"]
    assert recorded_keys >= NEEDED_ISSUE_KEYS | NEEDED_PULL_KEYS  # the needs are real keys
    for mine in ours:
        assert all(TS_RE.match(mine[k]) for k in ("created_at", "updated_at"))
        assert mine["state"] in ("open", "closed")
        assert mine["state_reason"] in (None, "completed", "not_planned", "duplicate", "reopened")
        assert all(set(label) >= {"name", "color", "id"} for label in mine["labels"])


def test_timeline_events_have_the_recorded_keys(client: httpx.Client, sim: GitHubSimulator) -> None:
    recorded: dict[str, set[str]] = {}
    for name in ("issue_timeline__issue28.json", "issue_timeline__issue31_pr.json"):
        for event in load(name):
            recorded.setdefault(event["event"], set()).update(event)
    for path in sorted(need(PYGITHUB / "issue_event_single").glob("*.json")):
        event = json.loads(path.read_text())
        # the issue-events endpoint embeds the issue and names the assigner; timelines do not
        keys = set(event) - {"issue", "assigner", "dismissed_review", "rename", "milestone"}
        recorded.setdefault(event["event"], keys)
    ours: dict[str, dict[str, Any]] = {}
    for event in sim_events(client, sim):
        ours.setdefault(event["event"], event)
    assert set(ours) == {
        "labeled",
        "unlabeled",
        "assigned",
        "unassigned",
        "cross-referenced",
        "closed",
        "reopened",
        "ready_for_review",
        "review_requested",
        "review_request_removed",
        "reviewed",
        "convert_to_draft",
        "merged",
    }
    compared = 0
    for name, event in ours.items():
        if name in recorded:
            compared += 1
            assert recorded[name] <= set(event), (name, sorted(recorded[name] - set(event)))
        assert NEEDED_EVENT_KEYS.get(name, {"event"}) <= set(event)
        stamp = event["submitted_at"] if name == "reviewed" else event["created_at"]
        assert TS_RE.match(stamp)
    assert compared >= 11
    assert ours["reviewed"]["state"] in ("approved", "changes_requested", "commented")
    assert "created_at" not in ours["reviewed"]
    assert ours["closed"]["state_reason"] == "not_planned"
    assert set(ours["labeled"]["label"]) == {"name", "color"}


def test_error_bodies_match_the_recorded_ones() -> None:
    clock_now = [ANCHOR]
    sim = GitHubSimulator(
        issues=1,
        pulls=0,
        anchor=ANCHOR,
        token="shape-token",
        rate_limit=1,
        clock=lambda: clock_now[0],
    )
    secondary = GitHubSimulator(issues=1, pulls=0, anchor=ANCHOR, secondary_every=1)
    with sim, secondary, httpx.Client(base_url=sim.base_url, timeout=10) as http:
        unauthorized = http.get("/user")
        auth = {"Authorization": "token shape-token"}
        missing = http.get("/repos/acme/nope", headers=auth)  # spends the budget of 1
        limited = http.get("/user", headers=auth)
        abuse = httpx.get(f"{secondary.base_url}/user", timeout=10)
    cases = [
        (unauthorized, 401, "error_401_bad_credentials.json"),
        (missing, 404, "error_404_not_found.json"),
        (limited, 403, "error_403_rate_limit_exceeded.json"),
        (abuse, 403, "error_403_secondary_rate_limit.json"),
    ]
    for response, status, name in cases:
        recorded = load(name)
        assert response.status_code == status
        assert set(recorded) <= set(response.json()), name
        assert not conforms(response.json(), component("basic-error"))
    assert unauthorized.json()["message"] == load("error_401_bad_credentials.json")["message"]
    assert missing.json()["message"] == load("error_404_not_found.json")["message"]
    recorded_limit = load("error_403_rate_limit_exceeded.json")["message"]
    for message in (recorded_limit, limited.json()["message"]):
        assert re.match(r"(?i)api rate limit exceeded for ", message)
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert "secondary rate limit" in abuse.json()["message"]
    assert "shape-token" not in unauthorized.text + limited.text


def test_headers_include_the_recorded_ones(sim: GitHubSimulator) -> None:
    index = load("index.json")
    ignored = {"status"}  # the HTTP/1.0-era status line copy
    sims = {
        "exhausted": GitHubSimulator(issues=1, pulls=0, anchor=ANCHOR, rate_limit=0),
        "secondary": GitHubSimulator(issues=1, pulls=0, anchor=ANCHOR, secondary_every=1),
        "token": GitHubSimulator(issues=1, pulls=0, anchor=ANCHOR, token="header-token"),
    }

    def ours(entry: dict[str, Any]) -> httpx.Response | None:
        path = entry["url"].removeprefix("https://api.github.com")
        status = entry["status"]
        with httpx.Client(base_url=sim.base_url, timeout=10) as http:
            if status == 200 and re.fullmatch(r"/repos/[^/]+/[^/]+/issues(\?.*)?", path):
                link = "link" in entry["response_headers"]
                return http.get("/repos/acme/web/issues", params={"per_page": 5 if link else 100})
            if status == 200 and re.fullmatch(r"/repos/[^/]+/[^/]+/issues/\d+", path):
                return http.get("/repos/acme/web/issues/3")
            if status == 200 and re.fullmatch(r"/repos/[^/]+/[^/]+/issues/\d+/timeline", path):
                return http.get(f"/repos/acme/web/issues/{scenario_numbers(sim)[1]}/timeline")
            if status == 200 and path == "/rate_limit":
                return http.get("/rate_limit")
            if status == 404 and path.startswith("/repos/"):
                return http.get("/repos/acme/nope")
            if status == 304 and path.count("/") == 3:
                etag = http.get("/repos/acme/web").headers["etag"]
                return http.get("/repos/acme/web", headers={"If-None-Match": etag})
        if status == 401:
            return httpx.get(f"{sims['token'].base_url}/user", timeout=10)
        if status == 403 and "retry-after" in entry["response_headers"]:
            return httpx.get(f"{sims['secondary'].base_url}/user", timeout=10)
        if status == 403:
            return httpx.get(f"{sims['exhausted'].base_url}/user", timeout=10)
        return None

    compared = 0
    for simulator in sims.values():
        simulator.start()
    try:
        for entry in index:
            response = ours(entry)
            if response is None:
                continue
            compared += 1
            assert response.status_code == entry["status"], entry["url"]
            expected = {h.lower() for h in entry["response_headers"]} - ignored
            got = {h.lower() for h in response.headers}
            assert expected <= got, (entry["url"], sorted(expected - got))
            assert {
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-used",
                "x-ratelimit-reset",
                "x-ratelimit-resource",
                "x-github-request-id",
            } <= got
    finally:
        for simulator in sims.values():
            simulator.stop()
    assert compared >= 15


# ---------------------------------------------------------------------------- OpenAPI


def test_issues_conform_to_the_openapi_issue_schema(client: httpx.Client) -> None:
    items = sim_items(client)
    assert any("pull_request" in i for i in items) and any(i["labels"] for i in items)
    issue_schema = component("issue")
    for item in items:
        assert not conforms(item, issue_schema), conforms(item, issue_schema)[:5]
    single = client.get("/repos/acme/web/issues/1").json()
    assert not conforms(single, issue_schema)


def test_timeline_events_conform_to_the_openapi_schema(
    client: httpx.Client, sim: GitHubSimulator
) -> None:
    schema = component("timeline-issue-events")
    members = {m["$ref"].rsplit("/", 1)[1] for m in schema["anyOf"]}
    assert {"labeled-issue-event", "state-change-issue-event", "timeline-reviewed-event"} <= members
    for event in sim_events(client, sim):
        assert not conforms(event, schema), (event["event"], conforms(event, schema))
    reviewed = next(e for e in sim_events(client, sim) if e["event"] == "reviewed")
    assert not conforms(reviewed, component("timeline-reviewed-event"))
    assert conforms({"event": "labeled", "colour": "x"}, component("labeled-issue-event"))


def test_other_endpoints_conform_to_the_openapi_schemas(client: httpx.Client) -> None:
    repo = client.get("/repos/acme/web").json()
    assert not conforms(repo, component("full-repository")), conforms(
        repo, component("full-repository")
    )
    listed = client.get("/orgs/acme/repos").json()
    assert [r["full_name"] for r in listed] == ["acme/api", "acme/web"]
    for item in listed:
        assert not conforms(item, component("minimal-repository"))
    user_schema = spec()["paths"]["/user"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]
    assert not conforms(client.get("/user").json(), user_schema)
    limits = client.get("/rate_limit").json()
    assert not conforms(limits, component("rate-limit-overview"))
    assert set(load("rate_limit.json")["rate"]) == set(limits["rate"])
    deep = client.get("/repos/acme/web/issues", params={"page": 99})
    assert deep.status_code == 422
    assert not conforms(deep.json(), component("validation-error-simple"))


def test_openapi_checker_can_fail() -> None:
    issue_schema = component("issue")
    assert conforms({"number": 1}, issue_schema)  # required keys missing
    bogus = {**json.loads(json.dumps(load("repos_issues__per_page1.json")[0])), "bogus": 1}
    assert any("bogus" in p for p in conforms(bogus, issue_schema))
    assert not conforms(load("repos_issues__per_page1.json")[0], issue_schema)
