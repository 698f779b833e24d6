"""The fake GitLab answers in GitLab's shapes: recorded responses (../shared/fixtures/gitlab:
DevLake raw tables, go-gitlab test data) and the examples of GitLab's resource events
documentation. Skipped when ../shared is absent."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from syncd.simulator.gitlab import GitLabSimulator
from tests.test_simulator_github_shapes import SHARED, need

pytestmark = pytest.mark.fixtures

GITLAB = SHARED / "fixtures" / "gitlab"
ANCHOR = datetime(2025, 3, 1, tzinfo=UTC)
T0 = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
WEB = "/api/v4/projects/acme%2Fweb"
Row = dict[str, Any]

# What a sync reads from issues and merge requests; each must be recorded and ours.
NEEDED_ISSUE_KEYS = {
    "id",
    "iid",
    "project_id",
    "title",
    "state",
    "created_at",
    "updated_at",
    "closed_at",
    "labels",
    "references",
    "issue_type",
    "type",
    "web_url",
    "author",
    "assignees",
}
NEEDED_MR_KEYS = (NEEDED_ISSUE_KEYS - {"issue_type", "type"}) | {"merged_at", "draft", "reviewers"}
TIMESTAMP_KEYS = ("created_at", "updated_at", "closed_at", "merged_at")


def recorded(name: str) -> list[Row]:
    """The `data` column of a DevLake raw table: one API object per row."""
    csv.field_size_limit(1 << 30)
    with need(GITLAB / "devlake" / name).open(newline="") as handle:
        return [json.loads(row["data"]) for row in csv.DictReader(handle)]


def example(name: str) -> Any:
    return json.loads(need(GITLAB / name).read_text())


def common_keys(rows: list[Row]) -> set[str]:
    return set.intersection(*(set(row) for row in rows))


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def assert_same_shape(ours: Row, theirs: Row, where: str) -> None:
    """Where both have a non-null value: the same JSON type; objects (and objects in lists)
    with the same keys."""
    for key in set(ours) & set(theirs):
        mine, real = ours[key], theirs[key]
        if mine is None or real is None:
            continue
        assert kind_of(mine) == kind_of(real), f"{where}.{key}: {mine!r} vs {real!r}"
        if isinstance(real, dict) and real and key not in ("commands_changes",):
            assert set(mine) == set(real), f"{where}.{key}"
        if isinstance(real, list) and real and mine:
            assert kind_of(mine[0]) == kind_of(real[0]), f"{where}.{key}[0]"
            if isinstance(real[0], dict):
                assert set(mine[0]) == set(real[0]), f"{where}.{key}[0]"


@pytest.fixture(scope="module")
def sim() -> Iterator[GitLabSimulator]:
    simulator = GitLabSimulator(
        projects=("acme/web",), issues=60, merge_requests=60, anchor=ANCHOR, seed=3
    )
    t = [T0 + timedelta(hours=h, milliseconds=h) for h in range(8)]
    issue = simulator.add_issue("acme/web", created=t[0], labels=["workflow::in progress"])
    simulator.assign("acme/web", "issue", issue, "alice", t[1])
    simulator.add_label("acme/web", "issue", issue, "workflow::in review", t[2])
    simulator.close("acme/web", "issue", issue, t[3])
    mr = simulator.add_merge_request("acme/web", created=t[0], labels=["feature"], draft=True)
    simulator.set_draft("acme/web", mr, False, t[1])
    simulator.add_reviewer("acme/web", mr, "bjorn", t[2])
    simulator.approve("acme/web", mr, "bjorn", t[3])
    simulator.close("acme/web", "merge_request", mr, t[4])
    simulator.reopen("acme/web", "merge_request", mr, t[5])
    simulator.merge("acme/web", mr, t[6])
    with simulator:
        yield simulator


@pytest.fixture(scope="module")
def client(sim: GitLabSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, timeout=10) as http:
        yield http


def listing(client: httpx.Client, kind: str) -> list[Row]:
    response = client.get(f"{WEB}/{kind}", params={"per_page": 100, "sort": "asc"})
    assert response.status_code == 200
    rows: list[Row] = response.json()
    return rows


def test_issues_have_the_recorded_keys_and_shapes(client: httpx.Client) -> None:
    theirs = recorded("_raw_gitlab_api_issues.csv")
    ours = listing(client, "issues")
    assert common_keys(theirs) >= NEEDED_ISSUE_KEYS
    assert common_keys(theirs) <= common_keys(ours), common_keys(theirs) - common_keys(ours)
    move = example("go-gitlab-testdata/issue_move.json")
    assert set(move) <= common_keys(ours)
    for mine in ours:
        assert_same_shape(mine, theirs[1], f"issue {mine['iid']}")
        assert mine["state"] in {row["state"] for row in theirs}
        assert mine["type"] == mine["issue_type"].upper()
        assert all(isinstance(label, str) for label in mine["labels"])
        assert set(mine["references"]) == {"short", "relative", "full"}
        assert mine["references"]["short"] == f"#{mine['iid']}"
        assert (mine["closed_at"] is None) == (mine["state"] == "opened")
    for row in theirs:
        assert row["type"] == row["issue_type"].upper()


def test_merge_requests_have_the_recorded_keys_and_shapes(client: httpx.Client) -> None:
    theirs = recorded("_raw_gitlab_api_merge_requests.csv")
    theirs += recorded("_raw_gitlab_api_merge_requests_for_mr_notes_test.csv")
    ours = listing(client, "merge_requests")
    assert common_keys(theirs) >= NEEDED_MR_KEYS
    # allow_collaboration/allow_maintainer_to_push only come with merge requests from forks
    assert common_keys(theirs) <= common_keys(ours), common_keys(theirs) - common_keys(ours)
    go_gitlab = example("go-gitlab-testdata/get_merge_requests.json")
    assert common_keys(go_gitlab) <= common_keys(ours), common_keys(go_gitlab) - common_keys(ours)
    with_reviewers = example("go-gitlab-testdata/get_merge_request.json")
    assert {row["state"] for row in ours} == {row["state"] for row in theirs}
    for mine in ours:
        assert_same_shape(mine, theirs[0], f"merge request {mine['iid']}")
        assert_same_shape(mine, with_reviewers, f"merge request {mine['iid']}")
        assert mine["references"]["short"] == mine["reference"] == f"!{mine['iid']}"
        assert mine["draft"] == mine["work_in_progress"] == mine["title"].startswith("Draft: ")
    for rows in (theirs, ours):  # a merged merge request has no closed_at
        merged = [row for row in rows if row["state"] == "merged"]
        assert merged and all(r["merged_at"] and r["closed_at"] is None for r in merged)
        closed = [row for row in rows if row["state"] == "closed"]
        assert closed and all(r["closed_at"] and r["merged_at"] is None for r in closed)


def test_timestamps_have_the_recorded_format(client: httpx.Client) -> None:
    theirs = recorded("_raw_gitlab_api_issues.csv") + recorded("_raw_gitlab_api_merge_requests.csv")
    ours = listing(client, "issues") + listing(client, "merge_requests")
    for rows in (theirs, ours):
        values = [row[key] for row in rows for key in TIMESTAMP_KEYS if row.get(key)]
        assert values and all(TS_RE.match(value) for value in values), values[:3]


@pytest.mark.parametrize(
    ("kind", "resource_type"), [("issues", "Issue"), ("merge_requests", "MergeRequest")]
)
def test_resource_events_have_exactly_the_documented_keys(
    client: httpx.Client, kind: str, resource_type: str
) -> None:
    prefix = "issue" if kind == "issues" else "merge_request"
    documented_states = example(f"docs-examples/{prefix}_resource_state_events__list.json")
    documented_labels = example(f"docs-examples/{prefix}_resource_label_events__list.json")
    single = example(f"docs-examples/{prefix}_resource_state_event__single.json")
    states: list[Row] = []
    labels: list[Row] = []
    for iid in range(1, 40):
        base = f"{WEB}/{kind}/{iid}"
        states += client.get(f"{base}/resource_state_events", params={"per_page": 100}).json()
        labels += client.get(f"{base}/resource_label_events", params={"per_page": 100}).json()
    assert states and labels
    for ours, theirs in ((states, [*documented_states, single]), (labels, documented_labels)):
        for mine in ours:
            for doc in theirs:
                assert set(mine) == set(doc)
                assert set(mine["user"]) == set(doc["user"])
                assert_same_shape(mine, doc, "event")
            assert TS_RE.match(mine["created_at"])
            assert mine["resource_type"] == resource_type
    for doc in documented_states + documented_labels:
        assert TS_RE.match(doc["created_at"])
    allowed = {"opened", "closed", "reopened", "merged", "locked"}
    assert {doc["state"] for doc in documented_states} <= allowed
    assert {e["state"] for e in states} <= allowed - {"opened"}
    for mine in labels:
        assert set(mine["label"]) == set(documented_labels[0]["label"])
        assert mine["action"] in {doc["action"] for doc in documented_labels} | {"remove"}
        assert re.fullmatch(r"#[0-9a-fA-F]{6}", mine["label"]["color"])


def test_notes_have_the_recorded_keys(client: httpx.Client) -> None:
    theirs = recorded("_raw_gitlab_api_merge_request_notes.csv")
    ours: list[Row] = []
    for iid in range(1, 30):
        ours += client.get(f"{WEB}/merge_requests/{iid}/notes", params={"per_page": 100}).json()
    assert {True, False} <= {note["system"] for note in ours}
    assert common_keys(theirs) <= common_keys(ours)
    assert {note["noteable_type"] for note in theirs} == {note["noteable_type"] for note in ours}
    for mine in ours:
        assert_same_shape(mine, theirs[0], f"note {mine['id']}")
        assert TS_RE.match(mine["created_at"])
    real_bodies = {note["body"] for note in theirs if note["system"]}
    our_bodies = {note["body"] for note in ours if note["system"]}
    assert "approved this merge request" in real_bodies & our_bodies
