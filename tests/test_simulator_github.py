"""Behaviour of the fake GitHub: generation, REST paging and caching, rate limits, auth,
GraphQL (aliases, fragments, filters, nested paging, cost), scenario histories, CLI."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from syncd.simulator.github import GitHubSimulator, build_parser, main
from syncd.simulator.github_data import LABELS

ANCHOR = datetime(2025, 3, 1, tzinfo=UTC)
T0 = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
REPO_ROOT = Path(__file__).resolve().parents[1]
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ISSUES = "/repos/acme/web/issues"

TIMELINE_FRAGMENT = """
fragment Event on PullRequestTimelineItems {
  __typename
  ... on LabeledEvent { createdAt label { name } }
  ... on UnlabeledEvent { createdAt label { name } }
  ... on AssignedEvent { createdAt assignee { ... on User { login } } }
  ... on UnassignedEvent { createdAt assignee { ... on User { login } } }
  ... on ClosedEvent { createdAt stateReason }
  ... on ReopenedEvent { createdAt }
  ... on MergedEvent { createdAt }
  ... on ReadyForReviewEvent { createdAt }
  ... on ConvertToDraftEvent { createdAt }
  ... on ReviewRequestedEvent { createdAt requestedReviewer { ... on User { login } } }
  ... on ReviewRequestRemovedEvent { createdAt requestedReviewer { ... on User { login } } }
  ... on PullRequestReview { createdAt submittedAt state author { login } }
  ... on CrossReferencedEvent {
    createdAt willCloseTarget
    source { ... on Issue { number repository { nameWithOwner } }
             ... on PullRequest { number repository { nameWithOwner } } }
  }
  ... on AddedToProjectV2Event { createdAt }
  ... on ProjectV2ItemStatusChangedEvent { createdAt status previousStatus }
}
"""
ISSUE_EVENT_FRAGMENT = TIMELINE_FRAGMENT.replace(
    "fragment Event on PullRequestTimelineItems", "fragment IssueEvent on IssueTimelineItems"
)
for _pull_only in (
    "MergedEvent { createdAt }",
    "ReadyForReviewEvent { createdAt }",
    "ConvertToDraftEvent { createdAt }",
):
    ISSUE_EVENT_FRAGMENT = ISSUE_EVENT_FRAGMENT.replace(f"... on {_pull_only}", "")
ISSUE_EVENT_FRAGMENT = re.sub(
    r"  \.\.\. on (ReviewRequestedEvent|ReviewRequestRemovedEvent|PullRequestReview) .*\n",
    "",
    ISSUE_EVENT_FRAGMENT,
)


class Clock:
    """An injectable clock the tests move by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def ts(text: str) -> datetime:
    assert TS_RE.match(text), text
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@pytest.fixture
def exits() -> Iterator[ExitStack]:
    """Stops the simulators and closes the clients a test opened."""
    with ExitStack() as stack:
        yield stack


@pytest.fixture
def make_sim(exits: ExitStack) -> Callable[..., GitHubSimulator]:
    defaults: dict[str, Any] = {"anchor": ANCHOR, "issues": 30, "pulls": 30, "seed": 7}
    return lambda **kwargs: exits.enter_context(GitHubSimulator(**{**defaults, **kwargs}))


@pytest.fixture
def http(exits: ExitStack) -> Callable[[GitHubSimulator], httpx.Client]:
    return lambda sim: exits.enter_context(httpx.Client(base_url=sim.base_url, timeout=10))


def review_scenario(sim: GitHubSimulator, start: datetime) -> tuple[int, list[datetime]]:
    """A pull request through draft, review requests, changes requested, approval, Projects
    status and merge, one step an hour from `start`; returns its number and the times."""
    t = [start + timedelta(hours=h) for h in range(12)]
    n = sim.add_pull("acme/web", created=t[0], draft=True, labels=["enhancement"])
    sim.ready_for_review("acme/web", n, t[1])
    sim.request_review("acme/web", n, "bjorn", t[2])
    sim.request_review("acme/web", n, "chloe", t[3])
    sim.remove_review_request("acme/web", n, "chloe", t[4])
    sim.review("acme/web", n, t[5], "CHANGES_REQUESTED")
    sim.convert_to_draft("acme/web", n, t[6])
    sim.ready_for_review("acme/web", n, t[7])
    sim.review("acme/web", n, t[8], "APPROVED", reviewer="bjorn")
    sim.project_status("acme/web", n, "In Review", t[9])
    sim.project_status("acme/web", n, "Done", t[10])
    sim.merge("acme/web", n, t[11])
    return n, t


def gql(client: httpx.Client, query: str, **variables: Any) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def walk(client: httpx.Client, url: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Follow `Link: rel="next"` from `url`; returns the items and the URLs visited."""
    items: list[dict[str, Any]] = []
    visited: list[str] = []
    next_url: str | None = url
    while next_url:
        visited.append(next_url)
        response = client.get(next_url)
        assert response.status_code == 200, response.text
        items.extend(response.json())
        next_url = response.links.get("next", {}).get("url")
        assert len(visited) < 500
    return items, visited


# ---------------------------------------------------------------------------- generation


def test_same_arguments_give_byte_identical_responses(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    def snapshot(sim: GitHubSimulator) -> list[bytes]:
        client = http(sim)
        base = sim.base_url.encode()
        query = '{ repository(owner: "acme", name: "web") { issue(number: 3) { id title } } }'
        answers = [
            client.get(ISSUES, params={"state": "all", "per_page": 100}).content,
            client.get(f"{ISSUES}/5/timeline").content,
            client.post("/graphql", json={"query": query}).content,
        ]
        return [a.replace(base, b"BASE") for a in answers]

    first = snapshot(make_sim())
    again = snapshot(make_sim())
    other_seed = snapshot(make_sim(seed=8))
    assert first == again
    assert first[0] != other_seed[0]


def test_generated_histories_are_plausible() -> None:
    sim = GitHubSimulator(repos=("acme/web", "acme/api"), issues=400, pulls=400, anchor=ANCHOR)
    outcomes: Counter[str] = Counter()
    event_counts = []
    closes_refs = 0
    for repo in sim.repos:
        numbers = sim.numbers(repo)
        assert numbers == list(range(1, 801))
        for number in numbers:
            timeline = sim.timeline(repo, number)
            event_counts.append(len(timeline))
            times = [event["at"] for event in timeline]
            assert times == sorted(times)
            assert all(t < ANCHOR and t.microsecond == 0 for t in times)
            kinds = [event["type"] for event in timeline]
            if "MergedEvent" in kinds:
                merged = kinds.index("MergedEvent")
                assert kinds[merged + 1] == "ClosedEvent"
                assert timeline[merged]["at"] == timeline[merged + 1]["at"]
                outcomes["merged"] += 1
            elif not timeline:
                outcomes["untouched"] += 1
            closed = [e for e in timeline if e["type"] in ("ClosedEvent", "ReopenedEvent")]
            if closed and closed[-1]["type"] == "ClosedEvent" and "MergedEvent" not in kinds:
                reason = closed[-1]["stateReason"]
                outcomes["completed" if reason == "COMPLETED" else "canceled"] += 1
            closes_refs += sum(
                1 for e in timeline if e["type"] == "CrossReferencedEvent" and e["willCloseTarget"]
            )
    items = 1600
    done = (outcomes["merged"] + outcomes["completed"]) / items
    canceled = outcomes["canceled"] / items
    assert 0.45 < done < 0.62, outcomes
    assert 0.06 < canceled < 0.16, outcomes
    assert 0.02 < outcomes["untouched"] / items < 0.09, outcomes
    assert 5.5 < sum(event_counts) / items < 9.5
    assert closes_refs > 50
    kinds_seen = {e["type"] for r in sim.repos for n in sim.numbers(r) for e in sim.timeline(r, n)}
    assert sorted(kinds_seen) == [
        "AddedToProjectV2Event",
        "AssignedEvent",
        "ClosedEvent",
        "ConvertToDraftEvent",
        "CrossReferencedEvent",
        "LabeledEvent",
        "MergedEvent",
        "ProjectV2ItemStatusChangedEvent",
        "PullRequestReview",
        "ReadyForReviewEvent",
        "ReopenedEvent",
        "ReviewRequestRemovedEvent",
        "ReviewRequestedEvent",
        "UnassignedEvent",
        "UnlabeledEvent",
    ]
    labels = {
        e["label"]
        for r in sim.repos
        for n in sim.numbers(r)
        for e in sim.timeline(r, n)
        if e["type"] == "LabeledEvent"
    }
    assert {"in progress", "blocked", "status: in progress", "waiting", "bug"} <= labels
    assert labels == set(LABELS)


# ---------------------------------------------------------------------------- REST listing


def test_listing_covers_every_item_once_with_page_then_cursor_links(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(deep_page_limit=3)
    client = http(sim)
    items, visited = walk(client, f"{ISSUES}?state=all&per_page=7&direction=asc&labels=")
    numbers = [item["number"] for item in items]
    assert numbers == list(range(1, 61))
    queries = [parse_qs(urlsplit(url).query) for url in visited]
    assert [q.get("page") for q in queries[:3]] == [None, ["2"], ["3"]]
    assert all("after" in q and "page" not in q for q in queries[3:])
    assert len(queries) == 9
    for q in queries[1:]:  # the other parameters survive in every link
        assert q["state"] == ["all"] and q["per_page"] == ["7"] and q["direction"] == ["asc"]
    first_page = client.get(ISSUES, params={"state": "all", "per_page": 7})
    assert set(first_page.links) == {"next"}  # `last` would be beyond the page limit
    small = client.get(ISSUES, params={"state": "all", "per_page": 30})
    assert set(small.links) == {"next", "last"}
    assert parse_qs(urlsplit(small.links["last"]["url"]).query)["page"] == ["2"]
    second = client.get(ISSUES, params={"state": "all", "per_page": 30, "page": 2})
    assert set(second.links) == {"first", "prev"}


def test_explicit_deep_page_is_refused_but_cursors_never_are(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(deep_page_limit=2)
    client = http(sim)
    assert client.get(ISSUES, params={"state": "all", "per_page": 5, "page": 2}).status_code == 200
    deep = client.get(ISSUES, params={"state": "all", "per_page": 5, "page": 3})
    assert deep.status_code == 422
    assert deep.json()["message"] == (
        "Pagination with the page parameter is not supported for large datasets, please use "
        "cursor based pagination (after/before)"
    )
    assert "documentation_url" in deep.json()
    items, visited = walk(client, f"{ISSUES}?state=all&per_page=5")
    assert len(items) == 60 and len(visited) == 12
    garbled = client.get(ISSUES, params={"state": "all", "after": "nope"})
    assert garbled.status_code == 422


def test_cursor_paging_survives_changes_between_pages(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(deep_page_limit=1, clock=lambda: ANCHOR + timedelta(days=1))
    client = http(sim)
    page = client.get(ISSUES, params={"state": "all", "per_page": 10, "direction": "asc"})
    seen = [item["number"] for item in page.json()]
    sim.add_issue("acme/web", created=ANCHOR + timedelta(hours=1))  # appended at the end
    next_url: str | None = page.links["next"]["url"]
    while next_url:
        page = client.get(next_url)
        seen += [item["number"] for item in page.json()]
        next_url = page.links.get("next", {}).get("url")
    assert seen == list(range(1, 62))


def test_per_page_default_and_cap(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=80, pulls=80)
    client = http(sim)
    assert len(client.get(ISSUES, params={"state": "all"}).json()) == 30
    assert len(client.get(ISSUES, params={"state": "all", "per_page": 500}).json()) == 100
    assert len(client.get(ISSUES, params={"state": "all", "per_page": 1}).json()) == 1
    assert len(client.get(ISSUES, params={"state": "all", "per_page": "x"}).json()) == 30


def test_state_since_sort_and_direction(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=60, pulls=60)
    client = http(sim)
    everything, _ = walk(client, f"{ISSUES}?state=all&per_page=100")
    assert len(everything) == 120
    assert [i["number"] for i in everything] == list(range(120, 0, -1))  # created desc
    default, _ = walk(client, f"{ISSUES}?per_page=100")
    assert {i["state"] for i in default} == {"open"}
    assert len(default) == sum(1 for i in everything if i["state"] == "open")
    closed, _ = walk(client, f"{ISSUES}?state=closed&per_page=100")
    assert len(default) + len(closed) == 120
    by_updated, _ = walk(client, f"{ISSUES}?state=all&sort=updated&direction=asc&per_page=100")
    keys = [(ts(i["updated_at"]), i["number"]) for i in by_updated]
    assert keys == sorted(keys)
    since = sorted(ts(i["updated_at"]) for i in everything)[70]
    filtered, _ = walk(
        client, f"{ISSUES}?state=all&per_page=100&since={since.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    )
    expected = {i["number"] for i in everything if ts(i["updated_at"]) >= since}
    assert {i["number"] for i in filtered} == expected and len(filtered) == len(expected)
    bad = client.get(ISSUES, params={"state": "maybe"})
    assert bad.status_code == 422


def test_sort_ties_are_broken_by_number(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=0, pulls=0)
    for _ in range(3):
        sim.add_issue("acme/web", created=T0)
    client = http(sim)
    asc = client.get(ISSUES, params={"sort": "created", "direction": "asc"}).json()
    desc = client.get(ISSUES, params={"sort": "created", "direction": "desc"}).json()
    assert [i["number"] for i in asc] == [1, 2, 3]
    assert [i["number"] for i in desc] == [3, 2, 1]


def test_etag_gives_304_that_costs_nothing(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim()
    client = http(sim)
    first = client.get(ISSUES, params={"state": "all"})
    etag = first.headers["etag"]
    assert re.fullmatch(r'W/"[0-9a-f]{64}"', etag)
    remaining = int(first.headers["x-ratelimit-remaining"])
    again = client.get(ISSUES, params={"state": "all"}, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert int(again.headers["x-ratelimit-remaining"]) == remaining
    other = client.get(ISSUES, params={"state": "all"}, headers={"If-None-Match": 'W/"0"'})
    assert other.status_code == 200
    assert int(other.headers["x-ratelimit-remaining"]) == remaining - 1
    sim.label("acme/web", 60, "needs-triage", ANCHOR + timedelta(hours=1))
    changed = client.get(ISSUES, params={"state": "all"}, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


def test_token_is_required_when_configured(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(token="sim-secret-token")
    client = http(sim)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic xyz"}):
        refused = client.get("/user", headers=headers)
        assert refused.status_code == 401
        assert refused.json()["message"] == "Bad credentials"
        assert "sim-secret-token" not in refused.text
    refused_graphql = client.post("/graphql", json={"query": "{ viewer { login } }"})
    assert refused_graphql.status_code == 401
    for scheme in ("Bearer", "token"):
        ok = client.get("/user", headers={"Authorization": f"{scheme} sim-secret-token"})
        assert ok.status_code == 200
        assert ok.json()["login"] == "octocat"
        assert ok.headers["x-oauth-scopes"] == "repo, read:org"


def test_unknown_repository_and_path_are_json_404(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    client = http(make_sim())
    for path in ("/repos/acme/nope", "/repos/acme/nope/issues", "/nothing", f"{ISSUES}/999"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["message"] == "Not Found"
        assert response.json()["documentation_url"].startswith("https://docs.github.com/")
    repo = client.get("/repos/ACME/Web").json()  # names are case-insensitive
    assert repo["full_name"] == "acme/web" and repo["has_issues"] is True


def test_org_repository_listing(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    names = [f"acme/r{n}" for n in range(5)] + ["other/x"]
    sim = make_sim(repos=names, issues=1, pulls=1, archived=["acme/r3"])
    client = http(sim)
    repos, visited = walk(client, "/orgs/acme/repos?type=all&per_page=2&sort=full_name")
    assert [r["full_name"] for r in repos] == names[:5]
    assert len(visited) == 3
    assert [r["archived"] for r in repos] == [False, False, False, True, False]
    assert {r["owner"]["type"] for r in repos} == {"Organization"}
    assert [r["full_name"] for r in client.get("/orgs/other/repos").json()] == ["other/x"]
    assert client.get("/orgs/acme/repos", params={"type": "forks"}).json() == []
    assert client.get("/orgs/nobody/repos").status_code == 404
    custom = make_sim(repos=names, issues=0, pulls=0, orgs={"team": ["other/x", "acme/r1"]})
    listed = http(custom).get("/orgs/team/repos", params={"sort": "full_name"}).json()
    assert [r["full_name"] for r in listed] == ["acme/r1", "other/x"]
    assert http(custom).get("/orgs/acme/repos").status_code == 404


# ---------------------------------------------------------------------------- rate limits


def test_primary_limit_refuses_until_the_reset(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    clock = Clock(ANCHOR + timedelta(days=2))
    sim = make_sim(rate_limit=3, rate_reset_seconds=600, clock=clock)
    client = http(sim)
    remaining = [client.get("/repos/acme/web").headers["x-ratelimit-remaining"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    refused = client.get(ISSUES)
    assert refused.status_code == 403
    assert refused.json()["message"] == "API rate limit exceeded for user ID 1."
    assert refused.headers["x-ratelimit-remaining"] == "0"
    reset = int(refused.headers["x-ratelimit-reset"])
    assert reset == int(clock.now.timestamp()) + 600
    assert refused.headers["x-ratelimit-resource"] == "core"
    status = client.get("/rate_limit")  # free, and answers even when exhausted
    assert status.status_code == 200 and status.json()["resources"]["core"]["remaining"] == 0
    clock.now += timedelta(seconds=599)
    assert client.get(ISSUES).status_code == 403
    clock.now += timedelta(seconds=1)
    recovered = client.get(ISSUES)
    assert recovered.status_code == 200
    assert recovered.headers["x-ratelimit-remaining"] == "2"
    assert int(recovered.headers["x-ratelimit-reset"]) == reset + 600


@pytest.mark.parametrize("retry_after", [1, None])
def test_secondary_limit_every_nth_request(
    make_sim: Callable[..., GitHubSimulator],
    http: Callable[..., httpx.Client],
    retry_after: int | None,
) -> None:
    sim = make_sim(secondary_every=3, secondary_retry_after=retry_after)
    client = http(sim)
    statuses = [client.get("/repos/acme/web").status_code for _ in range(7)]
    assert statuses == [200, 200, 403, 200, 200, 403, 200]
    refused = client.get("/repos/acme/web")
    refused = client.get("/repos/acme/web")
    assert refused.status_code == 403
    assert refused.json()["message"].startswith("You have exceeded a secondary rate limit")
    assert int(refused.headers["x-ratelimit-remaining"]) > 0
    if retry_after is None:
        assert "retry-after" not in refused.headers
    else:
        assert refused.headers["retry-after"] == "1"


# ---------------------------------------------------------------------------- GraphQL


def test_aliases_for_100_items_in_one_query_match_the_ground_truth(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=60, pulls=60)
    client = http(sim)
    aliases = "\n".join(
        f"n{n}: issueOrPullRequest(number: {n}) {{ ...Item }}" for n in range(1, 101)
    )
    query = (
        TIMELINE_FRAGMENT
        + ISSUE_EVENT_FRAGMENT
        + """
fragment Item on IssueOrPullRequest {
  __typename
  ... on Issue { number issueTimeline: timelineItems(first: 100) { nodes { ...IssueEvent } } }
  ... on PullRequest { number timelineItems(first: 100) { nodes { ...Event } } }
}
query Batch($owner: String!) { repository(owner: $owner, name: "web") { ALIASES } }
""".replace("ALIASES", aliases)
    )
    body = gql(client, query, owner="acme")
    assert "errors" not in body
    repository = body["data"]["repository"]
    assert len(repository) == 100
    for n in range(1, 101):
        node = repository[f"n{n}"]
        truth = sim.timeline("acme/web", n)
        events = (node.get("timelineItems") or node.get("issueTimeline"))["nodes"]
        assert node["number"] == n
        assert [e["__typename"] for e in events] == [t["type"] for t in truth]
        for event, expected in zip(events, truth, strict=True):
            assert ts(event.get("createdAt") or event["submittedAt"]) == expected["at"]
            if "label" in expected:
                assert event["label"]["name"] == expected["label"]
            if "stateReason" in expected:
                assert event["stateReason"] == expected["stateReason"]
            if "status" in expected:
                assert (event["previousStatus"], event["status"]) == (
                    expected["previousStatus"],
                    expected["status"],
                )


def test_fragments_typename_and_global_ids(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=0, pulls=0)
    issue = sim.add_issue("acme/web", created=T0, labels=["bug"])
    pull = sim.add_pull("acme/web", created=T0 + timedelta(hours=1), body="Closes #1")
    client = http(sim)
    query = """
    fragment Common on Node { id __typename }
    query Q($n: Int!, $p: Int!) {
      repository(owner: "acme", name: "web") {
        __typename nameWithOwner
        issue(number: $n) { ...Common number title labels(first: 5) { nodes { name } } }
        pr: pullRequest(number: $p) { ...Common isDraft state merged }
        either: issueOrPullRequest(number: $p) { __typename ... on PullRequest { number } }
      }
    }"""
    data = gql(client, query, n=issue, p=pull)["data"]["repository"]
    assert data["__typename"] == "Repository" and data["nameWithOwner"] == "acme/web"
    assert data["issue"]["__typename"] == "Issue" and data["issue"]["number"] == issue
    assert data["issue"]["labels"]["nodes"] == [{"name": "bug"}]
    assert data["pr"]["__typename"] == "PullRequest" and data["pr"]["state"] == "OPEN"
    assert data["either"] == {"__typename": "PullRequest", "number": pull}
    rest = client.get(f"{ISSUES}/{issue}").json()
    assert rest["node_id"] == data["issue"]["id"]
    ids = [data["issue"]["id"], data["pr"]["id"], "I_kwDOnope"]
    nodes = gql(client, "query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }", ids=ids)
    assert nodes["data"]["nodes"][:2] == [
        {"__typename": "Issue", "id": ids[0]},
        {"__typename": "PullRequest", "id": ids[1]},
    ]
    assert nodes["data"]["nodes"][2] is None
    assert nodes["errors"][0]["type"] == "NOT_FOUND" and nodes["errors"][0]["path"] == ["nodes", 2]


def test_item_types_and_since_filters(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=0, pulls=0)
    n = sim.add_issue("acme/web", created=T0)
    sim.label("acme/web", n, "in progress", T0 + timedelta(hours=1))
    sim.assign("acme/web", n, "alice", T0 + timedelta(hours=2))
    sim.label("acme/web", n, "blocked", T0 + timedelta(hours=3))
    sim.unlabel("acme/web", n, "blocked", T0 + timedelta(hours=4))
    sim.close("acme/web", n, T0 + timedelta(hours=5), reason="not_planned")
    client = http(sim)
    query = """query($n: Int!, $types: [IssueTimelineItemsItemType!], $since: DateTime) {
      repository(owner: "acme", name: "web") { issue(number: $n) {
        timelineItems(first: 10, itemTypes: $types, since: $since) {
          totalCount nodes { __typename ... on LabeledEvent { label { name } } } } } } }"""

    def kinds(**variables: Any) -> tuple[int, list[str]]:
        body = gql(client, query, n=n, **variables)
        assert "errors" not in body, body
        items = body["data"]["repository"]["issue"]["timelineItems"]
        return items["totalCount"], [node["__typename"] for node in items["nodes"]]

    assert kinds() == (
        5,
        ["LabeledEvent", "AssignedEvent", "LabeledEvent", "UnlabeledEvent", "ClosedEvent"],
    )
    assert kinds(types=["LABELED_EVENT", "CLOSED_EVENT"]) == (
        3,
        ["LabeledEvent", "LabeledEvent", "ClosedEvent"],
    )
    assert kinds(since="2024-06-03T12:00:00Z") == (
        3,
        ["LabeledEvent", "UnlabeledEvent", "ClosedEvent"],
    )
    assert kinds(since="2024-06-03T12:00:01Z", types=["UNLABELED_EVENT"]) == (1, ["UnlabeledEvent"])
    pull_only = gql(client, query, n=n, types=["MERGED_EVENT"])
    assert "errors" in pull_only  # MERGED_EVENT is not an IssueTimelineItemsItemType


def test_long_timeline_pages_with_end_cursor(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=0, pulls=0)
    n = sim.add_pull("acme/web", created=T0)
    at = T0
    for step in range(130):
        at += timedelta(minutes=7)
        if step % 2 == 0:
            sim.label("acme/web", n, "waiting", at)
        else:
            sim.unlabel("acme/web", n, "waiting", at)
    sim.merge("acme/web", n, at + timedelta(minutes=1))
    client = http(sim)
    query = """query($after: String) { repository(owner: "acme", name: "web") {
      pullRequest(number: 1) { timelineItems(first: 100, after: $after) {
        totalCount pageInfo { hasNextPage endCursor }
        nodes { __typename ... on LabeledEvent { createdAt } ... on UnlabeledEvent { createdAt }
                ... on MergedEvent { createdAt } ... on ClosedEvent { createdAt } } } } } }"""
    seen: list[dict[str, Any]] = []
    after = None
    pages = 0
    while True:
        page = gql(client, query, after=after)["data"]["repository"]["pullRequest"]
        items = page["timelineItems"]
        assert items["totalCount"] == 132
        seen += items["nodes"]
        pages += 1
        if not items["pageInfo"]["hasNextPage"]:
            break
        after = items["pageInfo"]["endCursor"]
    assert pages == 2
    truth = sim.timeline("acme/web", n)
    assert [(e["__typename"], ts(e["createdAt"])) for e in seen] == [
        (t["type"], t["at"]) for t in truth
    ]
    assert [t["type"] for t in truth[-2:]] == ["MergedEvent", "ClosedEvent"]
    bad = gql(client, query, after="garbage")
    assert bad["errors"][0]["message"] == "`garbage` does not appear to be a valid cursor."


def test_closing_issues_references(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=0, pulls=0)
    a = sim.add_issue("acme/web", created=T0)
    b = sim.add_issue("acme/web", created=T0 + timedelta(minutes=1))
    other = sim.add_pull("acme/web", created=T0 + timedelta(minutes=2))
    pull = sim.add_pull(
        "acme/web",
        created=T0 + timedelta(minutes=3),
        body=f"Closes #{a}, fixes #{b} and mentions #{other}; resolves #{other}.",
    )
    client = http(sim)
    query = """{ repository(owner: "acme", name: "web") { pullRequest(number: 4) {
      closingIssuesReferences(first: 10) { totalCount nodes { number state } } } } }"""
    refs = gql(client, query)["data"]["repository"]["pullRequest"]["closingIssuesReferences"]
    assert pull == 4
    assert refs == {
        "totalCount": 2,
        "nodes": [{"number": a, "state": "OPEN"}, {"number": b, "state": "OPEN"}],
    }


def test_cost_rate_limit_and_node_limit(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(graphql_points=150)
    client = http(sim)
    cheap = gql(client, "{ rateLimit { cost remaining limit used resetAt } }")["data"]
    assert cheap["rateLimit"]["cost"] == 1 and cheap["rateLimit"]["remaining"] == 149
    assert cheap["rateLimit"]["limit"] == 150
    ts(cheap["rateLimit"]["resetAt"])
    nested = """{ rateLimit { cost remaining nodeCount }
      repository(owner: "acme", name: "web") {
        pullRequests(first: 100) { nodes { closingIssuesReferences(first: 100) {
          nodes { timelineItems(first: 10) { totalCount } } } } } } }"""
    # requests: 1 + 100 + 100*100 = 10,101 → 101 points; nodes 100 + 10,000 + 100,000
    body = gql(client, nested)
    assert body["data"]["rateLimit"] == {"cost": 101, "remaining": 48, "nodeCount": 110100}
    response = client.post("/graphql", json={"query": nested})
    assert response.status_code == 200
    assert response.json()["errors"][0]["type"] == "RATE_LIMITED"
    assert response.json()["errors"][0]["message"].startswith("API rate limit exceeded")
    assert "data" not in response.json()
    assert response.headers["x-ratelimit-resource"] == "graphql"
    assert response.headers["x-ratelimit-remaining"] == "48"
    huge = nested.replace("timelineItems(first: 10)", "timelineItems(first: 100)")
    refused = gql(client, huge)
    assert refused["errors"][0]["type"] == "MAX_NODE_LIMIT_EXCEEDED"
    assert "1,010,100" in refused["errors"][0]["message"]
    assert client.get("/rate_limit").json()["resources"]["graphql"]["remaining"] == 48


def test_graphql_exhaustion_recovers_after_reset(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    clock = Clock(ANCHOR + timedelta(days=3))
    sim = make_sim(graphql_points=2, rate_reset_seconds=60, clock=clock)
    client = http(sim)
    query = "{ viewer { login } }"
    assert [("errors" in gql(client, query)) for _ in range(3)] == [False, False, True]
    last = client.post("/graphql", json={"query": query})
    assert last.headers["x-ratelimit-remaining"] == "0"
    clock.now += timedelta(seconds=60)
    assert gql(client, query)["data"] == {"viewer": {"login": "octocat"}}


def test_graphql_errors_in_github_shape(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    client = http(make_sim(issues=2, pulls=0))
    syntax = gql(client, "{ repository(owner: ")
    assert "data" not in syntax
    assert syntax["errors"][0]["locations"] == [{"line": 1, "column": 21}]
    unknown_field = gql(client, '{ repository(owner: "acme", name: "web") { nope } }')
    assert "Cannot query field 'nope' on type 'Repository'" in unknown_field["errors"][0]["message"]
    missing = gql(client, '{ repository(owner: "acme", name: "gone") { nameWithOwner } }')
    assert missing["data"] == {"repository": None}
    error = missing["errors"][0]
    assert error["type"] == "NOT_FOUND" and error["path"] == ["repository"]
    assert error["message"] == "Could not resolve to a Repository with the name 'acme/gone'."
    assert error["locations"] == [{"line": 1, "column": 3}]
    wrong_kind = gql(
        client, '{ repository(owner: "acme", name: "web") { issue(number: 9999) { id } } }'
    )
    assert wrong_kind["errors"][0]["type"] == "NOT_FOUND"
    too_many = gql(
        client,
        '{ repository(owner: "acme", name: "web") { issue(number: 1) { '
        "labels(first: 101) { totalCount } } } }",
    )
    assert too_many["errors"][0]["type"] == "EXCESSIVE_PAGINATION"
    assert too_many["errors"][0]["message"] == (
        "Requesting 101 records on the `labels` connection exceeds the `first` limit of 100 "
        "records."
    )
    no_bound = gql(
        client,
        '{ repository(owner: "acme", name: "web") { issue(number: 1) { labels { totalCount } } } }',
    )
    assert no_bound["errors"][0]["type"] == "MISSING_PAGINATION_BOUNDARIES"
    not_json = client.post("/graphql", content=b"{", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400


def test_graphql_issue_listing_pages_in_order(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=45, pulls=15)
    client = http(sim)
    query = """query($after: String, $since: DateTime) { repository(owner: "acme", name: "web") {
      issues(first: 20, after: $after, orderBy: {field: UPDATED_AT, direction: ASC},
             filterBy: {since: $since}) {
        totalCount pageInfo { hasNextPage endCursor } nodes { number updatedAt } } } }"""
    rest, _ = walk(client, f"{ISSUES}?state=all&per_page=100")
    issues = [i for i in rest if "pull_request" not in i]
    since = sorted(ts(i["updated_at"]) for i in issues)[10]
    expected = sorted(
        (ts(i["updated_at"]), i["number"]) for i in issues if ts(i["updated_at"]) >= since
    )
    seen: list[tuple[datetime, int]] = []
    after = None
    while True:
        body = gql(client, query, after=after, since=since.strftime("%Y-%m-%dT%H:%M:%SZ"))
        page = body["data"]["repository"]["issues"]
        assert page["totalCount"] == len(expected)
        seen += [(ts(n["updatedAt"]), n["number"]) for n in page["nodes"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == expected
    last = """{ repository(owner: "acme", name: "web") {
      pullRequests(last: 3, states: [OPEN, CLOSED, MERGED]) {
        totalCount pageInfo { hasPreviousPage startCursor } nodes { number } } } }"""
    tail = gql(client, last)["data"]["repository"]["pullRequests"]
    pulls = sorted(i["number"] for i in rest if "pull_request" in i)
    assert tail["totalCount"] == 15 and tail["pageInfo"]["hasPreviousPage"] is True
    assert [n["number"] for n in tail["nodes"]] == pulls[-3:]


def test_graphql_can_be_switched_off(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    client = http(make_sim(graphql=False))
    response = client.post("/graphql", json={"query": "{ viewer { login } }"})
    assert response.status_code == 404 and response.json()["message"] == "Not Found"
    assert client.get(ISSUES).status_code == 200


# ---------------------------------------------------------------------------- timelines


def test_rest_timeline_pages_and_event_shapes(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=0, pulls=0)
    issue = sim.add_issue("acme/web", created=T0, labels=["bug"])
    pull = sim.add_pull("acme/web", created=T0 + timedelta(minutes=1), draft=True)
    sim.project_status("acme/web", issue, "Todo", T0 + timedelta(minutes=2))
    sim.assign("acme/web", issue, "alice", T0 + timedelta(minutes=3))
    sim.cross_reference("acme/web", issue, "acme/web", pull, T0 + timedelta(minutes=4), True)
    sim.close("acme/web", issue, T0 + timedelta(minutes=5), reason="duplicate")
    sim.reopen("acme/web", issue, T0 + timedelta(minutes=6))
    sim.unassign("acme/web", issue, "alice", T0 + timedelta(minutes=7))
    sim.unlabel("acme/web", issue, "bug", T0 + timedelta(minutes=8))
    client = http(sim)
    events, visited = walk(client, f"{ISSUES}/{issue}/timeline?per_page=2")
    assert len(visited) == 4
    assert [e["event"] for e in events] == [
        "labeled",
        "assigned",
        "cross-referenced",
        "closed",
        "reopened",
        "unassigned",
        "unlabeled",
    ]  # Projects (v2) events are not in the REST timeline
    labeled, assigned, crossref, closed, reopened, unassigned, unlabeled = events
    assert labeled["label"] == {"name": "bug", "color": "d73a4a"}
    assert ts(labeled["created_at"]) == T0
    assert assigned["assignee"]["login"] == "alice"
    assert crossref["source"]["type"] == "issue"
    assert crossref["source"]["issue"]["number"] == pull
    assert "pull_request" in crossref["source"]["issue"]
    assert closed["state_reason"] == "duplicate"
    assert reopened["state_reason"] is None
    assert unassigned["assignee"]["login"] == "alice"
    assert unlabeled["label"]["name"] == "bug"
    for event in events:
        if event["event"] != "cross-referenced":
            assert isinstance(event["id"], int) and event["node_id"]
            assert event["url"] == f"{sim.base_url}/repos/acme/web/issues/events/{event['id']}"
    state = client.get(f"{ISSUES}/{issue}").json()
    assert (state["state"], state["state_reason"], state["closed_at"]) == ("open", "reopened", None)
    assert client.get(f"{ISSUES}/999/timeline").status_code == 404


def test_pull_request_scenario_in_both_apis(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=0, pulls=0)
    n, t = review_scenario(sim, T0)
    expected = [
        ("LabeledEvent", t[0]),
        ("ReadyForReviewEvent", t[1]),
        ("ReviewRequestedEvent", t[2]),
        ("ReviewRequestedEvent", t[3]),
        ("ReviewRequestRemovedEvent", t[4]),
        ("PullRequestReview", t[5]),
        ("ConvertToDraftEvent", t[6]),
        ("ReadyForReviewEvent", t[7]),
        ("PullRequestReview", t[8]),
        ("AddedToProjectV2Event", t[9]),
        ("ProjectV2ItemStatusChangedEvent", t[9]),
        ("ProjectV2ItemStatusChangedEvent", t[10]),
        ("MergedEvent", t[11]),
        ("ClosedEvent", t[11]),
    ]
    truth = sim.timeline("acme/web", n)
    assert [(e["type"], e["at"]) for e in truth] == expected
    assert truth[5]["author"] == "bjorn" and truth[5]["state"] == "CHANGES_REQUESTED"
    assert truth[10]["previousStatus"] == "" and truth[11]["previousStatus"] == "In Review"
    assert truth[13]["stateReason"] is None
    client = http(sim)
    query = (
        TIMELINE_FRAGMENT
        + """{ repository(owner: "acme", name: "web") {
      pullRequest(number: 1) { state merged mergedAt closedAt isDraft
        timelineItems(first: 50) { nodes { ...Event } } } } }"""
    )
    pull = gql(client, query)["data"]["repository"]["pullRequest"]
    assert (pull["state"], pull["merged"], pull["isDraft"]) == ("MERGED", True, False)
    assert ts(pull["mergedAt"]) == ts(pull["closedAt"]) == t[11]
    nodes = pull["timelineItems"]["nodes"]
    assert [(e["__typename"], ts(e["createdAt"])) for e in nodes] == expected
    assert nodes[2]["requestedReviewer"] == {"login": "bjorn"}
    assert nodes[8]["state"] == "APPROVED" and nodes[8]["author"] == {"login": "bjorn"}
    assert ts(nodes[8]["submittedAt"]) == t[8]
    assert (nodes[11]["previousStatus"], nodes[11]["status"]) == ("In Review", "Done")
    rest = client.get(f"{ISSUES}/{n}/timeline").json()
    assert [e["event"] for e in rest] == [
        "labeled",
        "ready_for_review",
        "review_requested",
        "review_requested",
        "review_request_removed",
        "reviewed",
        "convert_to_draft",
        "ready_for_review",
        "reviewed",
        "merged",
        "closed",
    ]
    assert rest[5]["state"] == "changes_requested" and ts(rest[5]["submitted_at"]) == t[5]
    assert "created_at" not in rest[5]
    assert rest[9]["commit_id"] == rest[10]["commit_id"] and rest[9]["commit_id"]
    assert rest[2]["requested_reviewer"]["login"] == "bjorn"
    listed = client.get(f"{ISSUES}/{n}").json()
    assert listed["state"] == "closed" and listed["state_reason"] is None
    assert ts(listed["pull_request"]["merged_at"]) == t[11]
    assert listed["draft"] is False


def test_scenario_rejects_impossible_changes(make_sim: Callable[..., GitHubSimulator]) -> None:
    sim = make_sim(issues=0, pulls=0)
    issue = sim.add_issue("acme/web", created=T0)
    pull = sim.add_pull("acme/web", created=T0, draft=True)
    sim.label("acme/web", issue, "bug", T0 + timedelta(hours=1))
    with pytest.raises(ValueError, match="strictly ordered"):
        sim.assign("acme/web", issue, "alice", T0 + timedelta(hours=1))
    with pytest.raises(ValueError, match="already has label"):
        sim.label("acme/web", issue, "bug", T0 + timedelta(hours=2))
    with pytest.raises(ValueError, match="draft"):
        sim.merge("acme/web", pull, T0 + timedelta(hours=2))
    with pytest.raises(ValueError, match="not a pull request"):
        sim.request_review("acme/web", issue, "bjorn", T0 + timedelta(hours=2))
    with pytest.raises(ValueError, match="close reason"):
        sim.close("acme/web", issue, T0 + timedelta(hours=2), reason="wontfix")
    with pytest.raises(ValueError, match="naive"):
        sim.label("acme/web", issue, "waiting", datetime(2024, 7, 1))
    with pytest.raises(KeyError):
        sim.label("acme/nope", 1, "bug", T0 + timedelta(hours=3))
    sim.close("acme/web", issue, T0 + timedelta(hours=3))
    with pytest.raises(ValueError, match="already closed"):
        sim.close("acme/web", issue, T0 + timedelta(hours=4))
    assert [e["type"] for e in sim.timeline("acme/web", issue)] == ["LabeledEvent", "ClosedEvent"]


def test_mutate_adds_one_plausible_event_at_the_clock(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    now = ANCHOR + timedelta(hours=5)
    sim = make_sim(clock=lambda: now)
    before = {(r, n): sim.timeline(r, n) for r in sim.repos for n in sim.numbers(r)}
    changed = sim.mutate(8)
    assert len(changed) == 8 == len(set(changed))
    for key, old in before.items():
        new = sim.timeline(*key)
        if key not in changed:
            assert new == old
            continue
        added = new[len(old) :]
        assert new[: len(old)] == old
        assert 1 <= len(added) <= 2
        assert all(e["at"] == now for e in added)
    client = http(sim)
    since = client.get(ISSUES, params={"state": "all", "since": "2025-03-01T05:00:00Z"}).json()
    assert sorted((i["number"]) for i in since) == sorted(n for _, n in changed)
    assert all(ts(i["updated_at"]) == now for i in since)
    remote = client.post("/_sim/mutate", params={"count": 2})
    assert remote.status_code == 200 and len(remote.json()) == 2
    assert all(repo == "acme/web" for repo, _ in remote.json())
    other = make_sim(clock=lambda: now)
    assert other.mutate(8) == changed  # seeded


def test_requests_are_recorded_and_control_endpoints_work(
    make_sim: Callable[..., GitHubSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=3, pulls=2)
    client = http(sim)
    client.get(ISSUES, params={"state": "all"})
    client.post("/graphql", json={"query": "{ viewer { login } }"})
    client.get("/repos/acme/nope")
    stats = client.get("/_sim/stats").json()
    assert stats["requests"] == 3 and stats["issues"] == 3 and stats["pulls"] == 2
    assert stats["by_path"] == {ISSUES: 1, "/graphql": 1, "/repos/acme/nope": 1}
    records = sim.requests
    assert [(r.method, r.path, r.status) for r in records] == [
        ("GET", ISSUES, 200),
        ("POST", "/graphql", 200),
        ("GET", "/repos/acme/nope", 404),
    ]
    assert records[0].query == {"state": ["all"]}
    assert records[1].body == {"query": "{ viewer { login } }"}
    sim.reset_requests()
    assert sim.requests == []
    assert client.get("/_sim/nothing").status_code == 404
    assert client.get("/_sim/mutate").status_code == 405
    ids = {client.get("/user").headers["x-github-request-id"] for _ in range(3)}
    assert len(ids) == 3


# ---------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_signalled(stop_signal: signal.Signals) -> None:
    options = "--port 0 --repos acme/web,acme/api --issues 5 --pulls 4 --mutate-every 0.2"
    command = [sys.executable, "-m", "syncd.simulator.github", *options.split()]
    command += ["--token-env", "SIM_GH_TOKEN"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "SIM_GH_TOKEN": "cli-token"}
    with subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            assert select.select([proc.stdout], [], [], 30)[0], "the simulator printed nothing"
            banner = re.fullmatch(
                r"simulator: github on (http://127\.0\.0\.1:\d+) \(2 repositories, 18 items\)",
                proc.stdout.readline().strip(),
            )
            assert banner is not None
            base = banner.group(1)
            assert httpx.get(f"{base}/user", timeout=10).status_code == 401
            authed = httpx.get(f"{base}/user", headers={"Authorization": "token cli-token"})
            assert authed.status_code == 200
            stats = httpx.get(f"{base}/_sim/stats", timeout=10).json()
            assert (stats["repositories"], stats["issues"], stats["pulls"]) == (2, 10, 8)
            proc.send_signal(stop_signal)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_cli_arguments(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SIM_GH_MISSING", raising=False)
    assert main(["--token-env", "SIM_GH_MISSING"]) == 2
    assert "SIM_GH_MISSING" in capsys.readouterr().err
    assert main(["--repos", "not-a-repo"]) == 2
    assert "owner/name" in capsys.readouterr().err
    args = build_parser().parse_args(
        ["--port", "9", "--repos", "a/b,c/d", "--no-graphql", "--deep-page-limit", "4"]
    )
    assert (args.port, args.repos, args.no_graphql, args.deep_page_limit) == (9, "a/b,c/d", True, 4)
    assert (args.issues, args.pulls, args.secondary_every, args.seed) == (50, 50, 0, 1)
    assert json.loads(json.dumps(vars(args)))["mutate_count"] == 1
