"""GitHub timelines → transitions: the issue and pull-request state machines, hand-made and on
recorded REST timelines."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.github.parse import (
    Event,
    GitHubMapping,
    events_from_graphql,
    events_from_rest,
    parse_item,
)
from connectors.github.settings import (
    DEFAULT_ACTIVE_LABELS,
    DEFAULT_FLOW_TYPES,
    DEFAULT_PROJECT_STATUSES,
    DEFAULT_WAITING_LABELS,
)
from syncd.domain import Stage
from syncd.mapping import FlowTypeRules, StageOverrides

T0 = datetime(2026, 2, 2, 9, tzinfo=UTC)
MAPPING = GitHubMapping(
    active_labels=frozenset(label.casefold() for label in DEFAULT_ACTIVE_LABELS),
    waiting_labels=frozenset(label.casefold() for label in DEFAULT_WAITING_LABELS),
    project_statuses=DEFAULT_PROJECT_STATUSES,
    overrides=StageOverrides.from_config({}),
    flow_types=FlowTypeRules.from_config(DEFAULT_FLOW_TYPES),
)


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def issue(
    number: int = 5,
    *,
    pull: bool = False,
    labels: tuple[str, ...] = (),
    body: str = "",
    draft: bool = False,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": 1000 + number,
        "number": number,
        "title": "t",
        "body": body,
        "created_at": T0.isoformat().replace("+00:00", "Z"),
        "updated_at": h(100).isoformat().replace("+00:00", "Z"),
        "labels": [{"name": label} for label in labels],
        "draft": draft,
    }
    if pull:
        item["pull_request"] = {"url": "x", "merged_at": None}
    return item


def moves(events: list[Event], **kw: Any) -> list[tuple[float, str, Stage]]:
    item = parse_item(issue(**kw), events, MAPPING, repo="acme/web", source="gh", value_stream="vs")
    return [((t.at - T0).total_seconds() / 3600, t.to_state, t.to_stage) for t in item.transitions]


def test_issue_labels_assignees_pause_and_reasons() -> None:
    events = [
        Event(h(1), "assigned", "ana"),
        Event(h(2), "labeled", "blocked"),
        Event(h(5), "unlabeled", "blocked"),
        Event(h(6), "labeled", "bug"),  # no stage change: no transition
        Event(h(8), "closed", "completed"),
        Event(h(9), "reopened"),
        Event(h(10), "unassigned", "ana"),
        Event(h(11), "closed", "not_planned"),
    ]
    assert moves(events) == [
        (0, "open", Stage.NEW),
        (1, "assigned", Stage.ACTIVE),
        (2, "blocked", Stage.WAITING),
        (5, "assigned", Stage.ACTIVE),
        (8, "closed (completed)", Stage.DONE),
        (9, "assigned", Stage.ACTIVE),  # reopened: back to what the labels/assignees say
        (10, "open", Stage.NEW),
        (11, "closed (not planned)", Stage.CANCELED),
    ]


def test_issue_active_label_and_project_status() -> None:
    events = [
        Event(h(1), "project_status", "Todo"),
        Event(h(2), "project_status", "In Progress"),
        Event(h(3), "labeled", "status: in progress"),
        Event(h(4), "unlabeled", "status: in progress"),
        Event(h(5), "project_status", "Blocked"),
        Event(h(6), "closed", "duplicate"),
    ]
    assert moves(events) == [
        (0, "open", Stage.NEW),
        (1, "project: Todo", Stage.NEW),
        (2, "project: In Progress", Stage.ACTIVE),
        (3, "status: in progress", Stage.ACTIVE),
        (4, "project: In Progress", Stage.ACTIVE),
        (5, "project: Blocked", Stage.WAITING),
        (6, "closed (duplicate)", Stage.CANCELED),
    ]


def test_pull_request_review_cycle_and_merge() -> None:
    events = [
        Event(h(1), "ready"),
        Event(h(2), "review_requested", "bo"),
        Event(h(3), "reviewed", "changes_requested"),
        Event(h(5), "review_requested", "bo"),
        Event(h(6), "reviewed", "commented"),  # a comment is no decision: still waiting
        Event(h(7), "reviewed", "approved"),
        Event(h(8), "merged"),
        Event(h(8), "closed", "completed"),
    ]
    assert moves(events, pull=True, draft=False) == [
        (0, "draft", Stage.ACTIVE),
        (1, "open", Stage.ACTIVE),
        (2, "review requested", Stage.WAITING),
        (3, "changes requested", Stage.ACTIVE),
        (5, "review requested", Stage.WAITING),
        (7, "approved", Stage.WAITING),
        (8, "merged", Stage.DONE),
    ]


def test_pull_request_closed_unmerged_then_reopened() -> None:
    events = [
        Event(h(1), "closed", "completed"),
        Event(h(2), "reopened"),
        Event(h(3), "draft"),
        Event(h(4), "closed", "completed"),
    ]
    assert moves(events, pull=True) == [
        (0, "open", Stage.ACTIVE),
        (1, "closed unmerged", Stage.CANCELED),
        (2, "open", Stage.ACTIVE),
        (3, "draft", Stage.ACTIVE),
        (4, "closed unmerged", Stage.CANCELED),
    ]


def test_flow_type_links_and_pr_taking_the_closed_issues_type() -> None:
    pr = parse_item(
        issue(7, pull=True, body="Fixes #3, blocked by acme/api#9"),
        [],
        MAPPING,
        repo="acme/web",
        source="gh",
        value_stream="vs",
        closing=[("acme/web#3", ["security"])],
    )
    assert pr.kind == "pull_request" and pr.key == "acme/web#7" and pr.flow_type == "risk"
    assert {(lk.link_type, lk.direction, lk.target_key) for lk in pr.links} == {
        ("Closes", "outward", "acme/web#3"),
        ("Blocks", "inward", "acme/api#9"),
    }
    bug = parse_item(
        issue(8, labels=("bug",)), [], MAPPING, repo="acme/web", source="gh", value_stream="vs"
    )
    assert bug.flow_type == "defect" and bug.kind == "issue" and bug.links == []


def test_graphql_nodes() -> None:
    nodes = [
        {
            "__typename": "LabeledEvent",
            "createdAt": "2026-02-02T10:00:00Z",
            "label": {"name": "in progress"},
        },
        {
            "__typename": "PullRequestReview",
            "createdAt": "2026-02-02T10:30:00Z",
            "submittedAt": "2026-02-02T11:00:00Z",
            "state": "APPROVED",
        },
        {
            "__typename": "ClosedEvent",
            "createdAt": "2026-02-02T12:00:00Z",
            "stateReason": "NOT_PLANNED",
        },
        {
            "__typename": "ProjectV2ItemStatusChangedEvent",
            "createdAt": "2026-02-02T13:00:00Z",
            "status": "Done",
            "previousStatus": "In Progress",
        },
        {"__typename": "SubscribedEvent", "createdAt": "2026-02-02T14:00:00Z"},
    ]
    assert events_from_graphql(nodes, "k") == [
        Event(h(1), "labeled", "in progress"),
        Event(h(2), "reviewed", "approved"),
        Event(h(3), "closed", "not_planned"),
        Event(h(4), "project_status", "Done"),
    ]


def test_recorded_rest_timelines(shared_fixtures: Path) -> None:
    folder = shared_fixtures / "github" / "pygithub"
    timeline = json.loads((folder / "issue_timeline__issue28.json").read_text(encoding="utf-8"))
    events = events_from_rest(timeline, "PyGithub/PyGithub#28")
    assert [e.kind for e in events] == ["assigned", "assigned", "closed", "assigned", "labeled"]
    pr_timeline = json.loads(
        (folder / "issue_timeline__issue31_pr.json").read_text(encoding="utf-8")
    )
    pr_events = events_from_rest(pr_timeline, "PyGithub/PyGithub#31")
    assert [e.kind for e in pr_events] == [
        "merged",
        "closed",
        "assigned",
        "labeled",
        "reviewed",
        "reviewed",
    ]
    assert all(e.at.tzinfo is UTC for e in events + pr_events)
    raw = json.loads((folder / "issue_get__28.json").read_text(encoding="utf-8"))
    item = parse_item(
        raw, events, MAPPING, repo="PyGithub/PyGithub", source="gh", value_stream="vs"
    )
    assert item.stage is Stage.DONE and item.transitions[0].to_stage is Stage.NEW
    pr_raw = json.loads((folder / "pull_get__31.json").read_text(encoding="utf-8"))
    pr_raw.setdefault("pull_request", {"url": pr_raw.get("url")})
    pr = parse_item(
        pr_raw, pr_events, MAPPING, repo="PyGithub/PyGithub", source="gh", value_stream="vs"
    )
    assert pr.kind == "pull_request" and pr.stage is Stage.DONE and pr.state == "merged"


@pytest.mark.parametrize("broken", [{"id": 1}, {"number": 3, "id": 4, "created_at": "soon"}])
def test_broken_item_is_skippable(broken: dict[str, Any]) -> None:
    from syncd.errors import SkippableRecord

    with pytest.raises(SkippableRecord):
        parse_item(broken, [], MAPPING, repo="a/b", source="gh", value_stream="vs")


def test_recorded_devlake_listing_and_events(shared_fixtures: Path) -> None:
    import csv

    folder = shared_fixtures / "github" / "devlake"
    csv.field_size_limit(10**9)

    def rows(name: str) -> list[dict[str, Any]]:
        with (folder / name).open(encoding="utf-8") as handle:
            return [json.loads(r["data"]) for r in csv.DictReader(handle)]

    items = [
        parse_item(raw, [], MAPPING, repo="panjf2000/ants", source="gh", value_stream="vs")
        for raw in rows("_raw_github_api_issues.csv")
    ]
    kinds = [i.kind for i in items]
    assert kinds.count("pull_request") == 16 and kinds.count("issue") == 26
    events = events_from_rest(rows("_raw_github_api_events.csv"), "panjf2000/ants")
    counted = {
        kind: sum(1 for e in events if e.kind == kind)
        for kind in ("labeled", "closed", "assigned", "ready")
    }
    assert counted == {"labeled": 18, "closed": 12, "assigned": 10, "ready": 1}
    # 11 closes carry no state_reason (older events, PRs): they read as completed
    closes = [e.value for e in events if e.kind == "closed"]
    assert sorted(closes) == ["completed"] * 11 + ["not_planned"]


def test_repository_issue_types_classify() -> None:
    typed = issue(9)
    typed["type"] = {"id": 1, "name": "Bug"}
    item = parse_item(typed, [], MAPPING, repo="acme/web", source="gh", value_stream="vs")
    assert item.flow_type == "defect"


def test_permission_403_names_the_repository_and_scopes_and_is_not_retried() -> None:
    import httpx

    from connectors.github.connector import github_classifier
    from syncd.config import HttpConfig
    from syncd.errors import AuthError, RateLimited
    from syncd.http import HttpClient

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            403,
            json={"message": "Resource not accessible by personal access token"},
            headers={
                "x-oauth-scopes": "read:user",
                "x-accepted-oauth-scopes": "repo",
                "x-ratelimit-remaining": "4999",
            },
        )

    sleeps: list[float] = []
    with HttpClient(
        HttpConfig(), transport=httpx.MockTransport(handler), sleep=sleeps.append
    ) as http:
        with pytest.raises(AuthError) as err:
            http.request(
                "GET", "https://api.github.com/repos/acme/secret/issues", classify=github_classifier
            )
        assert len(seen) == 1 and sleeps == []
        assert "/repos/acme/secret/issues" in str(err.value)
        assert "read:user" in str(err.value) and "needed: repo" in str(err.value)
        assert "Resource not accessible" in str(err.value)
    secondary = httpx.Response(
        403,
        json={"message": "You have exceeded a secondary rate limit."},
        request=httpx.Request("GET", "https://api.github.com/repos/acme/web/issues"),
    )
    error = github_classifier(secondary, datetime(2026, 1, 1, tzinfo=UTC))
    assert isinstance(error, RateLimited) and error.retry_after == 60  # no Retry-After: 1 min


def test_enterprise_server_graphql_url() -> None:
    from connectors.github.settings import GitHubSourceConfig

    ghes = GitHubSourceConfig(
        name="g", kind="github", url="https://ghe.example.com/api/v3", repos=["a/b"]
    )
    assert ghes.graphql_url == "https://ghe.example.com/api/graphql"
    dotcom = GitHubSourceConfig(name="g", kind="github", repos=["a/b"])
    assert dotcom.graphql_url == "https://api.github.com/graphql"
    with pytest.raises(ValueError, match="repos"):
        GitHubSourceConfig(name="g", kind="github")
    with pytest.raises(ValueError, match="owner/name"):
        GitHubSourceConfig(name="g", kind="github", repos=["just-a-name"])


def test_recorded_pull_request_closing_url(shared_fixtures: Path) -> None:
    # DevLake's recorded pull request 189 of panjf2000/ants: "Fixes <issue URL>", read the
    # same in REST mode (no closingIssuesReferences) as the short form
    path = shared_fixtures / "github" / "devlake" / "_raw_github_api_pull_requests.csv"
    csv.field_size_limit(1 << 30)
    with path.open(encoding="utf-8", newline="") as handle:
        pulls = {
            r["number"]: r for r in (json.loads(row["data"]) for row in csv.DictReader(handle))
        }
    pull = pulls[189]
    assert pull["body"] == "Fixes https://github.com/panjf2000/ants/issues/188"
    pull["pull_request"] = {"url": pull["url"], "merged_at": pull.get("merged_at")}
    item = parse_item(pull, [], MAPPING, repo="panjf2000/ants", source="gh", value_stream="v")
    assert ("Closes", "outward", "panjf2000/ants#188") in {
        (lk.link_type, lk.direction, lk.target_key) for lk in item.links
    }
