"""Behaviour of the fake GitLab: generation, offset and keyset listings, group endpoints,
resource events and notes matching the scenario, links, auth, rate limits, mutation, CLI."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.simulator import gitlab
from syncd.simulator.gitlab import GitLabSimulator, build_parser, main
from syncd.simulator.gitlab_data import CANCEL_LABELS, TYPE_LABELS, WORKFLOW_LABELS, scope_of
from tests.test_simulator_github import Clock

ANCHOR = datetime(2025, 3, 1, tzinfo=UTC)
T0 = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
REPO_ROOT = Path(__file__).resolve().parents[1]
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
WEB = "/api/v4/projects/acme%2Fweb"
Row = dict[str, Any]


def ts(text: str) -> datetime:
    assert TS_RE.match(text), text
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@pytest.fixture
def make_sim(request: pytest.FixtureRequest) -> Callable[..., GitLabSimulator]:
    """Started simulators (30 + 30 items of acme/web, seed 7), stopped after the test."""
    defaults: dict[str, Any] = {"anchor": ANCHOR, "issues": 30, "merge_requests": 30, "seed": 7}

    def make(**options: Any) -> GitLabSimulator:
        sim = GitLabSimulator(**{**defaults, **options})
        request.addfinalizer(sim.stop)
        sim.start()
        return sim

    return make


@pytest.fixture
def http(request: pytest.FixtureRequest) -> Callable[..., httpx.Client]:
    """Clients of a simulator (with extra headers), closed after the test."""

    def make(sim: GitLabSimulator, **headers: str) -> httpx.Client:
        client = httpx.Client(base_url=sim.base_url, timeout=10, headers=headers)
        request.addfinalizer(client.close)
        return client

    return make


def walk(
    client: httpx.Client, url: str, params: dict[str, Any] | None = None, limit: int = 500
) -> tuple[list[Row], list[httpx.Response]]:
    """Follow `Link: rel="next"` from `url`; returns the rows and the responses."""
    rows: list[Row] = []
    responses: list[httpx.Response] = []
    response = client.get(url, params=params)
    while True:
        assert response.status_code == 200, response.text
        responses.append(response)
        rows.extend(response.json())
        following = response.links.get("next", {}).get("url")
        if not following:
            return rows, responses
        assert len(responses) < limit
        response = client.get(following)


def by_type(events: list[Row], kind: str) -> list[Row]:
    return [e for e in events if e["type"] == kind]


# ---------------------------------------------------------------------------- generation


def test_same_arguments_give_byte_identical_bodies(
    make_sim: Callable[..., GitLabSimulator], http: Callable[..., httpx.Client]
) -> None:
    def snapshot(sim: GitLabSimulator) -> list[bytes]:
        client = http(sim)
        base = sim.base_url.encode()
        answers = [
            client.get(f"{WEB}/issues", params={"per_page": 100}).content,
            client.get(f"{WEB}/merge_requests", params={"per_page": 100}).content,
            client.get(f"{WEB}/issues/4/resource_label_events").content,
            client.get(f"{WEB}/merge_requests/3/notes", params={"sort": "asc"}).content,
        ]
        return [a.replace(base, b"BASE") for a in answers]

    first = snapshot(make_sim())
    assert first == snapshot(make_sim())
    assert first[0] != snapshot(make_sim(seed=8))[0]


def test_generated_histories_are_plausible() -> None:
    sim = GitLabSimulator(
        projects=("acme/web", "acme/api"), issues=400, merge_requests=400, anchor=ANCHOR
    )
    fates: Counter[str] = Counter()
    counts: list[int] = []
    labels_seen: set[str] = set()
    notes_seen: set[str] = set()
    for project in sim.projects:
        for kind in ("issue", "merge_request"):
            assert sim.iids(project, kind) == list(range(1, 401))
            for iid in sim.iids(project, kind):
                events = sim.events(project, kind, iid)
                counts.append(len(events))
                times = [e["at"] for e in events]
                assert times == sorted(times) and all(t < ANCHOR for t in times)
                states = [e["state"] for e in by_type(events, "state")]
                assert "opened" not in states
                current: set[str] = set()
                for event in by_type(events, "label"):
                    labels_seen.add(event["label"])
                    if event["action"] == "add":
                        current.add(event["label"])
                    else:
                        current.remove(event["label"])
                scopes = [scope_of(name) for name in current if scope_of(name)]
                assert len(scopes) == len(set(scopes)), events  # one label per scope
                notes_seen.update(e["body"] for e in by_type(events, "note"))
                if not events:
                    fates["untouched"] += 1
                elif states and states[-1] in ("closed", "merged"):
                    canceled = kind == "issue" and current & set(CANCEL_LABELS)
                    unmerged = kind == "merge_request" and states[-1] == "closed"
                    fates["canceled" if canceled or unmerged else "done"] += 1
    items = len(counts)
    assert 0.42 < fates["done"] / items < 0.62, fates
    assert 0.05 < fates["canceled"] / items < 0.16, fates
    assert 5.5 < sum(counts) / items < 10, sum(counts) / items
    assert set(WORKFLOW_LABELS) | set(TYPE_LABELS) | set(CANCEL_LABELS) <= labels_seen
    assert "workflow::review" in labels_seen
    for body in (
        "marked this merge request as **ready**",
        "marked this merge request as **draft**",
        "approved this merge request",
        "set status to **In progress**",
        "set status to **Done**",
        "set status to **Won't do**",
    ):
        assert body in notes_seen, body
    assert any(b.startswith("requested review from @") for b in notes_seen)
    assert any(b.startswith("marked this issue as blocking") for b in notes_seen)


def test_generated_incidents_reopens_and_scoped_replacements(
    make_sim: Callable[..., GitLabSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=300, merge_requests=0)
    client = http(sim)
    issues, _ = walk(client, f"{WEB}/issues", {"per_page": 100})
    assert {i["issue_type"] for i in issues} == {"issue", "incident"}
    assert {i["type"] for i in issues} == {"ISSUE", "INCIDENT"}
    replaced = reopened = 0
    for issue in issues:
        events = sim.events("acme/web", "issue", issue["iid"])
        states = [e["state"] for e in by_type(events, "state")]
        reopened += "reopened" in states
        labels = by_type(events, "label")
        for first, second in itertools.pairwise(labels):
            scope = scope_of(first["label"])
            pair = (first["action"], second["action"]) == ("add", "remove")
            if pair and scope and scope == scope_of(second["label"]):
                assert first["at"] == second["at"]
                replaced += 1
        replay: set[str] = set()
        for event in labels:
            (replay.add if event["action"] == "add" else replay.discard)(event["label"])
        assert sorted(replay) == issue["labels"]
        assert issue["state"] == ("closed" if states and states[-1] == "closed" else "opened")
    assert replaced > 100 and reopened > 3


def test_generation_of_10000_items_is_fast_and_pages_are_quick(
    make_sim: Callable[..., GitLabSimulator], http: Callable[..., httpx.Client]
) -> None:
    started = time.perf_counter()
    sim = make_sim(issues=5000, merge_requests=5000, seed=1)
    assert time.perf_counter() - started < 2.0
    client = http(sim)

    def best(url: str, params: dict[str, Any]) -> float:
        timings = []
        for _ in range(5):
            began = time.perf_counter()
            response = client.get(url, params=params)
            timings.append(time.perf_counter() - began)
            assert response.status_code == 200
        return min(timings)

    listing = {"per_page": 100, "order_by": "updated_at", "sort": "asc", "page": 20}
    assert best(f"{WEB}/issues", listing) < 0.05
    assert best(f"{WEB}/merge_requests", {**listing, "pagination": "keyset"}) < 0.05
    assert best(f"{WEB}/issues/2500/resource_label_events", {"per_page": 100}) < 0.05
    assert best(f"{WEB}/merge_requests/2500/notes", {"per_page": 100}) < 0.05


# ---------------------------------------------------------------------------- listings


@pytest.mark.parametrize("kind", ["issues", "merge_requests"])
@pytest.mark.parametrize(("order_by", "sort"), [("created_at", "asc"), ("updated_at", "desc")])
def test_keyset_and_offset_listings_cover_every_item_once(
    make_sim: Callable[..., GitLabSimulator],
    http: Callable[..., httpx.Client],
    kind: str,
    order_by: str,
    sort: str,
) -> None:
    sim = make_sim(issues=45, merge_requests=45)
    client = http(sim)
    params = {"order_by": order_by, "sort": sort, "per_page": 10, "scope": "all"}
    keyset, keyset_pages = walk(client, f"{WEB}/{kind}", {**params, "pagination": "keyset"})
    offset, offset_pages = walk(client, f"{WEB}/{kind}", params)
    for rows in (keyset, offset):
        assert sorted(r["iid"] for r in rows) == list(range(1, 46))
    assert [r["iid"] for r in keyset] == [r["iid"] for r in offset]
    values = [(r[order_by], r["id"]) for r in keyset]
    assert values == sorted(values, reverse=sort == "desc")
    assert len(keyset_pages) == len(offset_pages) == 5
    for response in keyset_pages:
        assert "x-total" not in response.headers and "x-page" not in response.headers
    assert "cursor=" in keyset_pages[0].links["next"]["url"]
    assert "&page=" not in keyset_pages[0].links["next"]["url"]
    first = offset_pages[0].headers
    assert (first["x-total"], first["x-total-pages"], first["x-page"]) == ("45", "5", "1")
    assert (first["x-per-page"], first["x-next-page"], first["x-prev-page"]) == ("10", "2", "")
    assert offset_pages[-1].headers["x-next-page"] == ""
    assert set(offset_pages[2].links) == {"prev", "next", "first", "last"}
    assert offset_pages[0].links["last"]["url"].endswith("page=5")


def test_keyset_paging_survives_changes_between_pages(
    make_sim: Callable[..., GitLabSimulator], http: Callable[..., httpx.Client]
) -> None:
    clock = Clock(ANCHOR + timedelta(hours=1))
    sim = make_sim(issues=60, merge_requests=0, clock=clock)
    client = http(sim)
    params: dict[str, Any] = {
        "pagination": "keyset",
        "order_by": "created_at",
        "sort": "asc",
        "per_page": 7,
    }
    response = client.get(f"{WEB}/issues", params=params)
    seen = [r["iid"] for r in response.json()]
    while "next" in response.links:
        sim.mutate(5)
        sim.add_issue("acme/web", created=T0 - timedelta(days=400))  # sorts before the cursor
        response = client.get(response.links["next"]["url"])
        seen += [r["iid"] for r in response.json()]
    assert sorted(seen) == list(range(1, 61))
    tampered = client.get(f"{WEB}/issues", params={**params, "cursor": "bm9wZQ"})
    assert tampered.status_code == 400 and "cursor" in tampered.json()["error"]


def test_offset_cap_refuses_deep_pages_but_keyset_goes_on(
    make_sim: Callable[..., GitLabSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=50, merge_requests=10, offset_page_cap=2)
    client = http(sim)
    assert client.get(f"{WEB}/issues", params={"per_page": 10, "page": 2}).status_code == 200
    deep = client.get(f"{WEB}/issues", params={"per_page": 10, "page": 3})
    assert deep.status_code == 405
    message = deep.json()["error"]
    assert message.startswith("Offset pagination has a maximum allowed offset of 20 ")
    assert message.endswith("Remaining records can be retrieved using keyset pagination.")
    keyset, pages = walk(client, f"{WEB}/issues", {"pagination": "keyset", "per_page": 10})
    assert len(keyset) == 50 and len(pages) == 5
    group = client.get("/api/v4/groups/acme/issues", params={"per_page": 10, "page": 4})
    assert group.status_code == 200  # no keyset there, so no cap either
    uncapped = make_sim(issues=50, merge_requests=0)
    assert http(uncapped).get(f"{WEB}/issues", params={"page": 3}).status_code == 200


def test_large_offset_listings_have_no_total(
    make_sim: Callable[..., GitLabSimulator],
    http: Callable[..., httpx.Client],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gitlab, "COUNTED_ROWS_MAX", 40)  # gitlab.com: 10,000
    client = http(make_sim(issues=41, merge_requests=40))
    many = client.get(f"{WEB}/issues", params={"per_page": 10})
    assert "x-total" not in many.headers and "x-total-pages" not in many.headers
    assert set(many.links) == {"next", "first"} and many.headers["x-next-page"] == "2"
    rows, _ = walk(client, f"{WEB}/issues", {"per_page": 10})
    assert len(rows) == 41
    fewer = client.get(f"{WEB}/merge_requests", params={"per_page": 10})
    assert fewer.headers["x-total"] == "40"


def test_no_keyset_means_offset_pages(
    make_sim: Callable[..., GitLabSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=25, merge_requests=0, keyset=False)
    rows, pages = walk(http(sim), f"{WEB}/issues", {"pagination": "keyset", "per_page": 10})
    assert len(rows) == 25 and pages[0].headers["x-total"] == "25"
    assert "page=2" in pages[0].links["next"]["url"]


def test_group_endpoints_include_subgroups(
    make_sim: Callable[..., GitLabSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(
        projects=("acme/web", "acme/platform/api", "acme/platform/deep/db", "other/site"),
        issues=6,
        merge_requests=4,
    )
    assert sim.groups == ["acme", "acme/platform", "acme/platform/deep", "other"]
    client = http(sim)

    def paths(url: str, **params: Any) -> list[str]:
        rows, pages = walk(client, url, {"per_page": 7, **params})
        assert all("x-total" in p.headers for p in pages)  # offset pages only
        return sorted(r.get("path_with_namespace") or r["references"]["full"] for r in rows)

    direct = paths("/api/v4/groups/acme/projects")
    assert direct == ["acme/web"]
    everything = paths("/api/v4/groups/acme/projects", include_subgroups="true")
    assert everything == ["acme/platform/api", "acme/platform/deep/db", "acme/web"]
    issues = paths("/api/v4/groups/acme/issues", pagination="keyset", order_by="updated_at")
    assert len(issues) == 18 and {i.split("#")[0] for i in issues} == set(everything)
    subgroup = paths("/api/v4/groups/acme%2Fplatform/merge_requests")
    assert {m.split("!")[0] for m in subgroup} == {"acme/platform/api", "acme/platform/deep/db"}
    group = client.get("/api/v4/groups/acme%2Fplatform").json()
    assert (group["full_path"], group["parent_id"]) == (
        "acme/platform",
        client.get("/api/v4/groups/acme").json()["id"],
    )
    by_id = client.get(f"/api/v4/groups/{group['id']}/issues", params={"per_page": 100})
    assert len(by_id.json()) == 12
    assert client.get("/api/v4/groups/nope/issues").json() == {"message": "404 Group Not Found"}


def test_updated_after_state_and_other_filters(
    make_sim: Callable[..., GitLabSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=80, merge_requests=60)
    client = http(sim)
    issues, _ = walk(client, f"{WEB}/issues", {"per_page": 100})
    updates = sorted(ts(i["updated_at"]) for i in issues)
    cut = updates[40]
    after = client.get(
        f"{WEB}/issues",
        params={"updated_after": cut.isoformat().replace("+00:00", "Z"), "per_page": 100},
    ).json()
    assert len(after) == len([u for u in updates if u >= cut])  # inclusive
    assert all(ts(i["updated_at"]) >= cut for i in after)
    closed = client.get(f"{WEB}/issues", params={"state": "closed", "per_page": 100}).json()
    assert closed and all(i["state"] == "closed" and i["closed_at"] for i in closed)
    merged = client.get(f"{WEB}/merge_requests", params={"state": "merged", "per_page": 100})
    assert merged.json() and all(m["merged_at"] and m["closed_at"] is None for m in merged.json())
    picked = client.get(f"{WEB}/issues", params=[("iids[]", "3"), ("iids[]", "5")]).json()
    assert sorted(i["iid"] for i in picked) == [3, 5]
    default = client.get(f"{WEB}/issues").json()
    assert len(default) == 20
    assert [i["created_at"] for i in default] == sorted(
        (i["created_at"] for i in default), reverse=True
    )
    assert len(client.get(f"{WEB}/issues", params={"per_page": 500}).json()) == 80
    bad = client.get(f"{WEB}/issues", params={"order_by": "weight"})
    assert bad.status_code == 400 and bad.json() == {
        "error": "order_by does not have a valid value"
    }
    bad_time = client.get(f"{WEB}/issues", params={"updated_after": "yesterday"})
    assert bad_time.status_code == 400 and bad_time.json() == {"error": "updated_after is invalid"}


def test_lookups_and_not_found(
    make_sim: Callable[..., GitLabSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=3, merge_requests=2)
    client = http(sim)
    project = client.get(WEB).json()
    assert project["path_with_namespace"] == "acme/web" and project["namespace"]["kind"] == "group"
    assert client.get(f"/api/v4/projects/{project['id']}").json() == project
    issue = client.get(f"/api/v4/projects/{project['id']}/issues/2").json()
    assert (issue["iid"], issue["project_id"]) == (2, project["id"])
    assert client.get(f"{WEB}/merge_requests/2").json()["references"]["short"] == "!2"
    nope = client.get("/api/v4/projects/acme%2Fnope/issues")
    assert (nope.status_code, nope.json()) == (404, {"message": "404 Project Not Found"})
    assert client.get(f"{WEB}/issues/99").json() == {"message": "404 Issue Not Found"}
    assert client.get(f"{WEB}/merge_requests/9/notes").json() == {
        "message": "404 Merge Request Not Found"
    }
    for path in (f"{WEB}/pipelines", "/api/v4/nothing", "/elsewhere", f"{WEB}/issues/1/x"):
        response = client.get(path)
        assert (response.status_code, response.json()) == (404, {"error": "404 Not Found"})
    assert client.get("/api/v4/user").json()["username"] == "root"
    assert client.post(f"{WEB}/issues").status_code == 405


# ---------------------------------------------------------------------------- histories


def test_resource_events_match_the_scenario_exactly(
    make_sim: Callable[..., GitLabSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=0, merge_requests=0)
    client = http(sim)
    t = [T0 + timedelta(hours=h, milliseconds=7 * h) for h in range(10)]
    iid = sim.add_issue("acme/web", created=t[0], labels=["type::bug", "workflow::in progress"])
    assert iid == 1 and sim.add_merge_request("acme/web", created=t[0]) == 1
    sim.add_label("acme/web", "issue", iid, "workflow::in review", t[1])
    sim.add_label("acme/web", "issue", iid, "workflow::blocked", t[2])
    sim.remove_label("acme/web", "issue", iid, "type::bug", t[3])
    sim.close("acme/web", "issue", iid, t[4])
    sim.reopen("acme/web", "issue", iid, t[5])
    sim.add_label("acme/web", "issue", iid, "workflow::done", t[6])
    sim.close("acme/web", "issue", iid, t[7])

    base = f"{WEB}/issues/{iid}"
    states = client.get(f"{base}/resource_state_events").json()
    assert [(s["state"], ts(s["created_at"])) for s in states] == [
        ("closed", t[4]),
        ("reopened", t[5]),
        ("closed", t[7]),
    ]
    labels = client.get(f"{base}/resource_label_events").json()
    assert [(e["action"], e["label"]["name"], ts(e["created_at"])) for e in labels] == [
        ("add", "type::bug", t[0]),
        ("add", "workflow::in progress", t[0]),
        ("add", "workflow::in review", t[1]),
        ("remove", "workflow::in progress", t[1]),
        ("add", "workflow::blocked", t[2]),
        ("remove", "workflow::in review", t[2]),
        ("remove", "type::bug", t[3]),
        ("add", "workflow::done", t[6]),
        ("remove", "workflow::blocked", t[6]),
    ]
    assert [e["id"] for e in labels] == sorted(e["id"] for e in labels)
    assert {e["resource_type"] for e in states + labels} == {"Issue"}
    issue = client.get(base).json()
    assert {e["resource_id"] for e in states + labels} == {issue["id"]}
    assert (issue["state"], issue["labels"]) == ("closed", ["workflow::done"])
    assert ts(issue["closed_at"]) == ts(issue["updated_at"]) == t[7]
    truth = sim.events("acme/web", "issue", iid)
    assert [(e["state"], e["at"]) for e in by_type(truth, "state")] == [
        (s["state"], ts(s["created_at"])) for s in states
    ]
    assert [(e["action"], e["label"], e["at"]) for e in by_type(truth, "label")] == [
        (e["action"], e["label"]["name"], ts(e["created_at"])) for e in labels
    ]
    assert client.get(f"{base}/resource_milestone_events").json() == []
    paged = client.get(f"{base}/resource_label_events", params={"per_page": 4, "page": 3})
    assert [e["id"] for e in paged.json()] == [labels[8]["id"]]
    assert paged.headers["x-total"] == "9"


def test_merge_request_scenario_in_events_notes_and_listing(
    make_sim: Callable[..., GitLabSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=0, merge_requests=0)
    client = http(sim)
    t = [T0 + timedelta(hours=h) for h in range(10)]
    iid = sim.add_merge_request("acme/web", created=t[0], title="Fix it", draft=True)
    assert client.get(f"{WEB}/merge_requests/{iid}").json()["title"] == "Draft: Fix it"
    sim.set_draft("acme/web", iid, False, t[1])
    sim.add_reviewer("acme/web", iid, "bjorn", t[2])
    sim.add_label("acme/web", "merge_request", iid, "workflow::review", t[3])
    sim.comment("acme/web", "merge_request", iid, "Please add a test.", t[4], author="bjorn")
    sim.set_draft("acme/web", iid, True, t[5])
    sim.set_draft("acme/web", iid, False, t[6])
    sim.approve("acme/web", iid, "bjorn", t[7])
    sim.merge("acme/web", iid, t[8])

    base = f"{WEB}/merge_requests/{iid}"
    states = client.get(f"{base}/resource_state_events").json()
    assert [(s["state"], ts(s["created_at"]), s["resource_type"]) for s in states] == [
        ("merged", t[8], "MergeRequest")
    ]
    notes = client.get(f"{base}/notes", params={"sort": "asc", "order_by": "created_at"}).json()
    assert [
        (n["body"], n["system"], n["author"]["username"], ts(n["created_at"])) for n in notes
    ] == [
        ("marked this merge request as **ready**", True, "root", t[1]),
        ("requested review from @bjorn", True, "root", t[2]),
        ("Please add a test.", False, "bjorn", t[4]),
        ("marked this merge request as **draft**", True, "root", t[5]),
        ("marked this merge request as **ready**", True, "root", t[6]),
        ("approved this merge request", True, "bjorn", t[7]),
    ]
    assert {(n["noteable_type"], n["noteable_iid"]) for n in notes} == {("MergeRequest", iid)}
    newest_first = client.get(f"{base}/notes").json()
    assert [n["id"] for n in newest_first] == [n["id"] for n in reversed(notes)]
    comments = client.get(f"{base}/notes", params={"activity_filter": "only_comments"}).json()
    assert [n["body"] for n in comments] == ["Please add a test."]
    mr = client.get(f"{WEB}/merge_requests", params={"state": "merged"}).json()[0]
    assert (mr["title"], mr["draft"], mr["work_in_progress"]) == ("Fix it", False, False)
    assert (ts(mr["merged_at"]), mr["closed_at"], mr["state"]) == (t[8], None, "merged")
    assert [r["username"] for r in mr["reviewers"]] == ["bjorn"]
    assert mr["labels"] == ["workflow::review"] and mr["user_notes_count"] == 1
    truth = sim.events("acme/web", "merge_request", iid)
    assert [e["type"] for e in truth] == [
        "note",
        "note",
        "label",
        "note",
        "note",
        "note",
        "note",
        "state",
    ]


def test_work_item_status_notes_and_links(
    make_sim: Callable[..., GitLabSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(projects=("acme/web", "acme/api"), issues=0, merge_requests=0)
    client = http(sim)
    a = sim.add_issue("acme/web", created=T0, issue_type="incident")
    b = sim.add_issue("acme/web", created=T0)
    c = sim.add_issue("acme/api", created=T0)
    sim.set_status("acme/web", a, "In progress", T0 + timedelta(minutes=1))
    sim.link_issues("acme/web", a, "acme/api", c, "blocks")
    sim.link_issues("acme/web", b, "acme/web", a, at=T0 + timedelta(hours=1))
    notes = client.get(f"{WEB}/issues/{a}/notes", params={"sort": "asc"}).json()
    assert [n["body"] for n in notes] == [
        "set status to **In progress**",
        "marked this issue as blocking acme/api#1",
        "marked this issue as related to #2",
    ]
    links = client.get(f"{WEB}/issues/{a}/links").json()
    assert [(i["references"]["full"], i["link_type"]) for i in links] == [
        ("acme/api#1", "blocks"),
        ("acme/web#2", "relates_to"),
    ]
    back = client.get("/api/v4/projects/acme%2Fapi/issues/1/links").json()
    assert [(i["references"]["full"], i["link_type"]) for i in back] == [
        ("acme/web#1", "is_blocked_by")
    ]
    assert {"issue_link_id", "link_created_at", "link_updated_at"} <= set(back[0])
    issue = client.get(f"{WEB}/issues/{a}").json()
    assert (issue["issue_type"], issue["type"], issue["blocking_issues_count"]) == (
        "incident",
        "INCIDENT",
        1,
    )
    api_notes = client.get("/api/v4/projects/acme%2Fapi/issues/1/notes").json()
    assert [n["body"] for n in api_notes] == ["marked this issue as blocked by acme/web#1"]


def test_scenario_rejects_impossible_changes(make_sim: Callable[..., GitLabSimulator]) -> None:
    sim = make_sim(issues=0, merge_requests=0)
    issue = sim.add_issue("acme/web", created=T0, labels=["bug"])
    mr = sim.add_merge_request("acme/web", created=T0, draft=True)
    later = T0 + timedelta(hours=1)
    with pytest.raises(ValueError, match="not after"):
        sim.add_label("acme/web", "issue", issue, "feature", T0)
    with pytest.raises(ValueError, match="already has label"):
        sim.add_label("acme/web", "issue", issue, "bug", later)
    with pytest.raises(ValueError, match="not closed"):
        sim.reopen("acme/web", "issue", issue, later)
    with pytest.raises(ValueError, match="draft"):
        sim.merge("acme/web", mr, later)
    with pytest.raises(ValueError, match="status must be one of"):
        sim.set_status("acme/web", issue, "Doing", later)
    with pytest.raises(ValueError, match="kind must be"):
        sim.close("acme/web", "epic", issue, later)
    with pytest.raises(KeyError):
        sim.close("acme/web", "issue", 42, later)
    with pytest.raises(ValueError, match="naive"):
        sim.close("acme/web", "issue", issue, datetime(2024, 7, 1))
    sim.set_draft("acme/web", mr, False, later)
    sim.merge("acme/web", mr, later + timedelta(hours=1))
    with pytest.raises(ValueError, match="merged, not closed"):
        sim.reopen("acme/web", "merge_request", mr, later + timedelta(hours=2))
    for projects in (("lonely",), ("acme/web", "acme/web/sub"), ("acme/web", "Acme/api")):
        with pytest.raises(ValueError, match=r"full paths|also a group|clashes"):
            GitLabSimulator(projects=projects, issues=0, merge_requests=0)


# ---------------------------------------------------------------------------- auth, limits


def test_token_is_required_and_never_echoed(
    make_sim: Callable[..., GitLabSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(token="glpat-s3cret")
    anonymous = http(sim).get("/api/v4/user")
    assert (anonymous.status_code, anonymous.json()) == (401, {"message": "401 Unauthorized"})
    wrong = http(sim, **{"PRIVATE-TOKEN": "glpat-wrong"}).get(f"{WEB}/issues")
    assert wrong.status_code == 401 and "glpat" not in wrong.text
    assert http(sim, **{"PRIVATE-TOKEN": "glpat-s3cret"}).get(WEB).status_code == 200
    bearer = http(sim, Authorization="Bearer glpat-s3cret").get(f"{WEB}/merge_requests")
    assert bearer.status_code == 200
    assert http(sim).get("/_sim/stats").status_code == 200  # control endpoints need no token


def test_every_nth_request_is_throttled(
    make_sim: Callable[..., GitLabSimulator], http: Callable[..., httpx.Client]
) -> None:
    clock = Clock(datetime(2025, 3, 1, 12, 0, 30, tzinfo=UTC))
    sim = make_sim(rate_limit_every=3, retry_after=7, clock=clock)
    client = http(sim)
    statuses = []
    for _ in range(6):
        client.get("/_sim/stats")  # never counted
        statuses.append(client.get(f"{WEB}/issues").status_code)
    assert statuses == [200, 200, 429, 200, 200, 429]
    now = int(clock.now.timestamp())
    ok = client.get(f"{WEB}/issues")
    assert ok.headers["ratelimit-limit"] == "2000"
    assert ok.headers["ratelimit-observed"] == "7"
    assert ok.headers["ratelimit-remaining"] == "1993"
    assert ok.headers["ratelimit-reset"] == str(now + 30)  # the end of the minute
    client.get(f"{WEB}/issues")
    throttled = client.get(f"{WEB}/issues")
    assert throttled.status_code == 429 and throttled.text == "Retry later\n"
    assert throttled.headers["retry-after"] == "7"
    assert throttled.headers["ratelimit-reset"] == str(now + 7)
    assert throttled.headers["ratelimit-remaining"] == "0"
    clock.now += timedelta(minutes=1)
    assert client.get(f"{WEB}/issues").headers["ratelimit-observed"] == "1"
    assert [r.status for r in sim.requests].count(429) == 3


# ---------------------------------------------------------------------------- mutate, control


def test_mutate_adds_one_plausible_change_at_the_clock(
    make_sim: Callable[..., GitLabSimulator], http: Callable[..., httpx.Client]
) -> None:
    now = ANCHOR + timedelta(hours=5)
    sim = make_sim(clock=lambda: now)
    before = {
        (p, k, i): sim.events(p, k, i)
        for p in sim.projects
        for k in ("issue", "merge_request")
        for i in sim.iids(p, k)
    }
    changed = sim.mutate(8)
    assert len(changed) == len(set(changed)) == 8
    for key in changed:
        after = sim.events(*key)
        assert after[: len(before[key])] == before[key]
        added = after[len(before[key]) :]
        assert added and all(e["at"] == now for e in added)
    client = http(sim)
    updated = client.get(
        f"{WEB}/issues", params={"updated_after": now.isoformat(), "per_page": 100}
    ).json()
    updated += client.get(
        f"{WEB}/merge_requests", params={"updated_after": now.isoformat(), "per_page": 100}
    ).json()
    assert len(updated) == 8
    remote = client.post("/_sim/mutate", params={"count": 2})
    assert remote.status_code == 200 and len(remote.json()) == 2
    assert all(project == "acme/web" for project, _, _ in remote.json())
    assert make_sim(clock=lambda: now).mutate(8) == changed  # seeded


def test_requests_are_recorded_and_control_endpoints_work(
    make_sim: Callable[..., GitLabSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(issues=3, merge_requests=2)
    client = http(sim)
    client.get(f"{WEB}/issues", params={"state": "all"})
    client.get("/api/v4/projects/acme%2Fnope")
    stats = client.get("/_sim/stats").json()
    assert (stats["requests"], stats["issues"], stats["merge_requests"]) == (2, 3, 2)
    assert stats["by_path"] == {
        "/api/v4/projects/acme/web/issues": 1,
        "/api/v4/projects/acme/nope": 1,
    }
    assert {"state_events", "label_events", "notes", "projects", "groups"} <= set(stats)
    assert [(r.method, r.status, r.query) for r in sim.requests] == [
        ("GET", 200, {"state": ["all"]}),
        ("GET", 404, {}),
    ]
    sim.reset_requests()
    assert not sim.requests
    unknown, wrong_method = client.get("/_sim/nothing"), client.get("/_sim/mutate")
    assert (unknown.status_code, wrong_method.status_code) == (404, 405)


# ---------------------------------------------------------------------------- CLI


@contextlib.contextmanager
def serving(*options: str, **env: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`python -m syncd.simulator.gitlab *options` and the first line it printed (waiting up
    to 30 s); killed on the way out if still running."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd.simulator.gitlab", *options],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        ready = select.select([proc.stdout], [], [], 30)[0]
        yield proc, proc.stdout.readline().strip() if ready else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=15)
        proc.stdout.close()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_signalled(stop_signal: signal.Signals) -> None:
    options = "--port 0 --projects acme/web,acme/sub/api --issues 5 --merge-requests 4"
    options += " --mutate-every 0.2 --token-env SIM_GL_TOKEN --offset-page-cap 3"
    with serving(*options.split(), SIM_GL_TOKEN="cli-token") as (proc, line):
        pattern = r"simulator: gitlab on (http://127\.0\.0\.1:\d+) \(2 projects, 18 items\)"
        banner = re.fullmatch(pattern, line)
        assert banner, f"unexpected banner {line!r}"
        api = f"{banner.group(1)}/api/v4"
        assert httpx.get(f"{api}/user", timeout=10).status_code == 401
        token = {"PRIVATE-TOKEN": "cli-token"}
        assert httpx.get(f"{api}/user", headers=token, timeout=10).status_code == 200
        stats = httpx.get(f"{banner.group(1)}/_sim/stats", timeout=10).json()
        assert (stats["projects"], stats["issues"], stats["merge_requests"]) == (2, 10, 8)
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=15) == 0


def test_cli_arguments(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SIM_GL_MISSING", raising=False)
    assert main(["--token-env", "SIM_GL_MISSING"]) == 2
    assert "SIM_GL_MISSING" in capsys.readouterr().err
    assert main(["--projects", "lonely"]) == 2
    assert "full paths" in capsys.readouterr().err
    args = build_parser().parse_args(
        ["--port", "9", "--projects", "a/b,c/d", "--no-keyset", "--offset-page-cap", "4"]
    )
    assert (args.port, args.projects, args.no_keyset, args.offset_page_cap) == (
        9,
        "a/b,c/d",
        True,
        4,
    )
    assert (args.issues, args.merge_requests, args.rate_limit_every, args.seed) == (50, 50, 0, 1)
    assert json.loads(json.dumps(vars(args)))["mutate_count"] == 1
