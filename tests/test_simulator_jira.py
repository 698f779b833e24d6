"""Behaviour of the fake Jira: paging, JQL, changelog endpoints, auth, rate limits, CLI."""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.simulator.jira import JiraSimulator, build_parser, main

ANCHOR = datetime(2025, 3, 1, tzinfo=UTC)
T0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}$")
SEARCH = "/rest/api/3/search/jql"
BULK = "/rest/api/3/changelog/bulkfetch"

Truth = tuple[datetime, str | None, str, str | None]


def ts(text: str) -> datetime:
    assert TS_RE.match(text), text
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")


def ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


@pytest.fixture
def make_sim() -> Iterator[Callable[..., JiraSimulator]]:
    started: list[JiraSimulator] = []

    def factory(**kwargs: Any) -> JiraSimulator:
        kwargs.setdefault("anchor", ANCHOR)
        kwargs.setdefault("items", 60)
        kwargs.setdefault("seed", 7)
        sim = JiraSimulator(**kwargs)
        sim.start()
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        sim.stop()


@pytest.fixture
def http() -> Iterator[Callable[[JiraSimulator], httpx.Client]]:
    clients: list[httpx.Client] = []

    def factory(sim: JiraSimulator, **kwargs: Any) -> httpx.Client:
        client = httpx.Client(base_url=sim.base_url, timeout=10, **kwargs)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


def search_pages(client: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        request = dict(body)
        if token is not None:
            request["nextPageToken"] = token
        response = client.post(SEARCH, json=request)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        token = page.get("nextPageToken")
        if page["isLast"]:
            assert token is None
            return pages
        assert token


def bulk_pages(client: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        request = dict(body)
        if token is not None:
            request["nextPageToken"] = token
        response = client.post(BULK, json=request)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        token = page.get("nextPageToken")
        if token is None:
            return pages


def truth_from_histories(
    created: datetime, status: str, histories: list[dict[str, Any]]
) -> list[Truth]:
    """Rebuild (at, from, to, resolution after) from oldest-first API histories."""
    rebuilt: list[Truth] = []
    resolution: str | None = None
    initial: str | None = None
    for history in histories:
        change = None
        for item in history["items"]:
            if item["field"] == "resolution":
                resolution = item["toString"]
            elif item["field"] == "status":
                change = item
        if change is not None:
            if initial is None:
                initial = change["fromString"]
            rebuilt.append(
                (ts(history["created"]), change["fromString"], change["toString"], resolution)
            )
    return [(created, None, initial or status, None), *rebuilt]


# ---------------------------------------------------------------------------- determinism


def test_same_seed_and_anchor_give_byte_identical_pages(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    a, b, other = make_sim(seed=3), make_sim(seed=3), make_sim(seed=4)
    body = {
        "jql": "project = DEMO ORDER BY created ASC",
        "maxResults": 20,
        "fields": ["*all"],
        "expand": "changelog",
    }

    def page(sim: JiraSimulator) -> bytes:
        response = http(sim).post(SEARCH, json=body)
        assert response.status_code == 200
        return response.content.replace(sim.base_url.encode(), b"BASE")

    def bulk(sim: JiraSimulator) -> bytes:
        response = http(sim).post(BULK, json={"issueIdsOrKeys": sim.keys, "maxResults": 50})
        return response.content.replace(sim.base_url.encode(), b"BASE")

    assert page(a) == page(b)
    assert bulk(a) == bulk(b)
    assert page(a) != page(other)


def test_generated_histories_are_plausible() -> None:
    sim = JiraSimulator(items=1500, seed=11, anchor=ANCHOR, changes_per_item=10)
    categories = {s.name: s.category for s in sim.statuses}
    outcome: Counter[str] = Counter()
    changes = 0
    seen_statuses: set[str] = set()
    for key in sim.keys:
        history = sim.issue_history(key)
        changes += len(history) - 1
        times = [at for at, *_ in history]
        assert times == sorted(times) and len(set(times)) == len(times)
        assert times[-1] < ANCHOR
        for at, _from, to, resolution in history:
            assert at.tzinfo is not None
            seen_statuses.add(to)
            assert (categories[to] == "done") == (resolution is not None), (key, history)
        final, resolution = history[-1][2], history[-1][3]
        if categories[final] == "done":
            outcome["canceled" if resolution in ("Won't Do", "Duplicate") else "done"] += 1
        else:
            outcome[categories[final]] += 1
    assert 8 <= changes / len(sim.keys) <= 12
    assert 0.50 <= outcome["done"] / 1500 <= 0.68
    assert 0.06 <= outcome["canceled"] / 1500 <= 0.14
    assert 0.18 <= outcome["indeterminate"] / 1500 <= 0.32
    assert 0.02 <= outcome["new"] / 1500 <= 0.10
    assert {"En révision", "Väntar på kund", "完了", "Blocked", "Closed"} <= seen_statuses


# ---------------------------------------------------------------------------- search/jql


def test_search_jql_pages_cover_every_issue_exactly_once(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=53)
    pages = search_pages(
        http(sim), {"jql": "project = DEMO ORDER BY key ASC", "maxResults": 7, "fields": ["key"]}
    )
    assert len(pages) == 8
    keys = [issue["key"] for page in pages for issue in page["issues"]]
    assert keys == [f"DEMO-{n}" for n in range(1, 54)]
    for page in pages:
        assert "total" not in page
        assert set(page) <= {"issues", "nextPageToken", "isLast"}
    assert [p["isLast"] for p in pages] == [False] * 7 + [True]


def test_held_after_answers_that_many_requests_then_holds_the_next_until_released(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=10)
    client = http(sim)
    answered: list[int] = []

    def ask() -> None:
        answered.append(client.get("/rest/api/3/serverInfo").status_code)

    with sim.held_after(2):
        ask()
        ask()
        assert not sim.stalled
        third = threading.Thread(target=ask)
        third.start()
        deadline = time.monotonic() + 10
        while not sim.stalled:
            assert time.monotonic() < deadline, "the third request was not held"
            time.sleep(0.005)
        assert answered == [200, 200]
    third.join(timeout=10)
    assert answered == [200, 200, 200] and not sim.stalled


def test_search_jql_get_with_query_parameters(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=12)
    client = http(sim)
    first = client.get(
        SEARCH,
        params={
            "jql": "project = DEMO ORDER BY key ASC",
            "maxResults": 5,
            "fields": "summary,status",
        },
    ).json()
    assert [i["key"] for i in first["issues"]] == [f"DEMO-{n}" for n in range(1, 6)]
    assert set(first["issues"][0]["fields"]) == {"summary", "status"}
    second = client.get(
        SEARCH,
        params={
            "jql": "project = DEMO ORDER BY key ASC",
            "maxResults": 5,
            "fields": "summary",
            "nextPageToken": first["nextPageToken"],
        },
    ).json()
    assert [i["key"] for i in second["issues"]] == [f"DEMO-{n}" for n in range(6, 11)]


def test_search_jql_max_results_caps(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=250, changes_per_item=1)
    client = http(sim)
    jql = "project = DEMO"
    with_fields = client.post(SEARCH, json={"jql": jql, "maxResults": 1000, "fields": ["status"]})
    assert len(with_fields.json()["issues"]) == 100
    with_changelog = client.post(
        SEARCH, json={"jql": jql, "maxResults": 1000, "fields": ["id"], "expand": "changelog"}
    )
    assert len(with_changelog.json()["issues"]) == 100
    ids_only = client.post(SEARCH, json={"jql": jql, "maxResults": 1000, "fields": ["id"]}).json()
    assert len(ids_only["issues"]) == 250 and ids_only["isLast"] is True
    assert all(issue == {"id": issue["id"]} for issue in ids_only["issues"])
    default = client.post(SEARCH, json={"jql": jql}).json()
    assert len(default["issues"]) == 50
    assert set(default["issues"][0]) == {"id"}  # search/jql returns ids unless fields are asked
    for bad in (0, -1, 5001):
        assert client.post(SEARCH, json={"jql": jql, "maxResults": bad}).status_code == 400


def test_removed_search_endpoints_answer_410_on_cloud(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    client = http(make_sim(items=3))
    for path in ("/rest/api/3/search", "/rest/api/2/search"):
        response = client.get(path, params={"jql": "project = DEMO"})
        assert response.status_code == 410
        assert response.json()["errorMessages"]
        assert client.post(path, json={"jql": "project = DEMO"}).status_code == 410


def scenario_sim(make_sim: Callable[..., JiraSimulator]) -> JiraSimulator:
    sim = make_sim(items=0)
    base = datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    for offset in (
        timedelta(minutes=-1, seconds=59, milliseconds=999),  # 09:59:59.999
        timedelta(seconds=30, milliseconds=500),  # 10:00:30.500
        timedelta(minutes=1),  # 10:01:00.000
        timedelta(minutes=2, seconds=15),  # 10:02:15.000
    ):
        sim.add_issue(created=base + offset - timedelta(days=1))
        key = sim.keys[-1]
        sim.transition(key, "In Progress", base + offset)
    return sim


def keys_of(client: httpx.Client, jql: str) -> list[str]:
    response = client.post(SEARCH, json={"jql": jql, "fields": ["key"], "maxResults": 100})
    assert response.status_code == 200, response.text
    return [issue["key"] for issue in response.json()["issues"]]


def test_updated_bounds_are_floored_to_the_minute(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = scenario_sim(make_sim)
    client = http(sim)
    ten = ms(datetime(2024, 6, 1, 10, 0, tzinfo=UTC))
    order = " ORDER BY key ASC"
    # 10:00:45.123 floors to 10:00:00: the issue updated at 10:00:30.500 still matches
    assert keys_of(client, f"project = DEMO AND updated >= {ten + 45_123}{order}") == [
        "DEMO-2",
        "DEMO-3",
        "DEMO-4",
    ]
    assert keys_of(client, f"updated > {ten + 59_999}{order}") == ["DEMO-2", "DEMO-3", "DEMO-4"]
    assert keys_of(client, f"updated >= {ten + 60_000}{order}") == ["DEMO-3", "DEMO-4"]
    assert keys_of(client, f"updated < {ten + 59_000}{order}") == ["DEMO-1"]
    assert keys_of(client, f"(project = DEMO) AND updated <= {ten + 60_000}{order}") == [
        "DEMO-1",
        "DEMO-2",
        "DEMO-3",
    ]
    # a formatted date is read in the simulator's zone (Europe/Berlin, +0200 in June)
    assert keys_of(client, f'updated >= "2024-06-01 12:01"{order}') == ["DEMO-3", "DEMO-4"]
    assert keys_of(client, f'updated >= "2024/06/01 10:01"{order}') == [
        "DEMO-1",
        "DEMO-2",
        "DEMO-3",
        "DEMO-4",
    ]
    assert keys_of(client, f"created >= {ten - 86_400_000 + 60_000}{order}") == ["DEMO-3", "DEMO-4"]


def test_order_by_and_tie_breaking(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=0, projects=("DEMO", "OPS"))
    same = T0
    sim.add_issue(key="DEMO-1", created=same)
    sim.add_issue(key="OPS-1", created=same + timedelta(hours=1))
    sim.add_issue(key="DEMO-2", created=same)
    sim.add_issue(key="DEMO-10", created=same - timedelta(hours=1))
    sim.transition("DEMO-10", "In Progress", same + timedelta(hours=5))
    client = http(sim)
    bound = "project in (DEMO, OPS)"
    assert keys_of(client, f"{bound} ORDER BY created ASC") == [
        "DEMO-10",
        "DEMO-1",
        "DEMO-2",
        "OPS-1",
    ]
    assert keys_of(client, f"{bound} ORDER BY created DESC") == [
        "OPS-1",
        "DEMO-1",
        "DEMO-2",
        "DEMO-10",
    ]
    assert keys_of(client, f"{bound} ORDER BY key ASC") == ["DEMO-1", "DEMO-2", "DEMO-10", "OPS-1"]
    assert keys_of(client, f"{bound} ORDER BY updated DESC, key DESC") == [
        "DEMO-10",
        "OPS-1",
        "DEMO-2",
        "DEMO-1",
    ]
    assert keys_of(client, bound) == ["OPS-1", "DEMO-10", "DEMO-2", "DEMO-1"]  # default key DESC
    assert keys_of(client, 'project = "OPS" OR key = demo-2 order by id asc') == ["OPS-1", "DEMO-2"]
    assert keys_of(client, "id in (10002, 10003) ORDER BY id DESC") == ["DEMO-2", "OPS-1"]


@pytest.mark.parametrize(
    ("jql", "fragment"),
    [
        ("project = ", "Error in the JQL Query"),
        ("project = DEMO AND", "Error in the JQL Query"),
        ("project = DEMO AND (updated >= 1", "Error in the JQL Query"),
        ("status = Done", "Error in the JQL Query"),
        ("summary ~ login", "Error in the JQL Query"),
        ("updated >= -1d", "Error in the JQL Query"),
        ("updated >= now()", "Error in the JQL Query"),
        ("project = DEMO ORDER BY priority", "Error in the JQL Query"),
        ('project = "DEMO', "Error in the JQL Query"),
        ("project = DEMO project = DEMO", "Error in the JQL Query"),
        ("project = NOPE", "does not exist for the field 'project'"),
        ("key = DEMO-999", "does not exist"),
        ("ORDER BY key", "Unbounded JQL"),
        ("", "Unbounded JQL"),
    ],
)
def test_bad_jql_answers_400(
    make_sim: Callable[..., JiraSimulator],
    http: Callable[..., httpx.Client],
    jql: str,
    fragment: str,
) -> None:
    response = http(make_sim(items=5)).post(SEARCH, json={"jql": jql, "fields": ["key"]})
    assert response.status_code == 400
    body = response.json()
    assert body["errors"] == {}
    assert fragment in body["errorMessages"][0]


def test_garbled_or_foreign_page_token_answers_400(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    client = http(make_sim(items=20))
    first = client.post(SEARCH, json={"jql": "project = DEMO", "maxResults": 5}).json()
    token = first["nextPageToken"]
    assert (
        client.post(SEARCH, json={"jql": "project = DEMO", "nextPageToken": token}).status_code
        == 200
    )
    for bad in ("garbage", token[:-2] + "xx", token + "A"):
        response = client.post(SEARCH, json={"jql": "project = DEMO", "nextPageToken": bad})
        assert response.status_code == 400, bad
    other_jql = client.post(
        SEARCH, json={"jql": "project = DEMO ORDER BY key", "nextPageToken": token}
    )
    assert other_jql.status_code == 400


def another_status(sim: JiraSimulator, key: str) -> str:
    return "Blocked" if sim.issue_history(key)[-1][2] != "Blocked" else "To Do"


def test_search_cursor_never_skips_issues_that_change_between_pages(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    """The token is the last row's sort key, not an offset: an issue that moves to the end
    while a client pages shows up again, and nothing behind the cursor is skipped."""
    later = ANCHOR + timedelta(days=1)
    sim = make_sim(items=30, clock=lambda: later)
    client = http(sim)
    body: dict[str, Any] = {
        "jql": "project = DEMO ORDER BY updated ASC",
        "maxResults": 10,
        "fields": ["updated"],
    }
    first = client.post(SEARCH, json=body).json()
    seen = [issue["key"] for issue in first["issues"]]
    moved = seen[0]
    sim.transition(moved, another_status(sim, moved), later)
    rest = search_pages(client, {**body, "nextPageToken": first["nextPageToken"]})
    seen += [issue["key"] for page in rest for issue in page["issues"]]
    assert sorted(set(seen)) == sorted(sim.keys)
    assert seen.count(moved) == 2 and seen[-1] == moved
    assert len(seen) == 31


def test_bulkfetch_cursor_picks_up_histories_added_between_pages(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=10, changes_per_item=5)
    client = http(sim)
    body = {"issueIdsOrKeys": sim.keys, "maxResults": 15}
    first = client.post(BULK, json=body).json()
    sim.transition("DEMO-1", another_status(sim, "DEMO-1"), ANCHOR)
    rest = bulk_pages(client, {**body, "nextPageToken": first["nextPageToken"]})
    served = [
        h["id"]
        for page in [first, *rest]
        for g in page["issueChangeLogs"]
        for h in g["changeHistories"]
    ]
    full = client.get("/rest/api/3/issue/DEMO-1/changelog").json()["values"]
    assert served[-1] == full[-1]["id"]
    assert len(served) == len(set(served))
    total = sum(
        client.get(f"/rest/api/3/issue/{key}/changelog").json()["total"] for key in sim.keys
    )
    assert len(served) == total


@functools.cache
def hypothesis_sim() -> tuple[JiraSimulator, dict[str, int]]:
    """One unstarted simulator (driven through `handle`) and every issue's `updated` in ms."""
    sim = JiraSimulator(
        items=300, seed=5, anchor=datetime(2024, 9, 3, tzinfo=UTC), changes_per_item=4
    )
    updated: dict[str, int] = {}
    token = ""
    while True:
        target = f"{SEARCH}?jql=project%20%3D%20DEMO&fields=updated&maxResults=100{token}"
        status, _, payload = sim.handle("GET", target, {}, b"")
        assert status == 200
        page = json.loads(payload)
        for issue in page["issues"]:
            updated[issue["key"]] = ms(ts(issue["fields"]["updated"]))
        if page["isLast"]:
            break
        token = f"&nextPageToken={page['nextPageToken']}"
    assert len(updated) == 300
    return sim, updated


@settings(max_examples=60, deadline=None)
@given(offset=st.integers(min_value=-3 * 86_400_000, max_value=3 * 86_400_000))
def test_updated_filter_matches_brute_force(offset: int) -> None:
    sim, updated = hypothesis_sim()
    bound = ms(datetime(2024, 9, 1, tzinfo=UTC)) + offset
    floor = bound // 60_000 * 60_000
    jql = quote(f"project = DEMO AND updated >= {bound}")
    target = f"{SEARCH}?jql={jql}&fields=key&maxResults=5000"
    status, _, payload = sim.handle("GET", target, {}, b"")
    assert status == 200
    got = {issue["key"] for issue in json.loads(payload)["issues"]}
    assert got == {key for key, value in updated.items() if value >= floor}


# ---------------------------------------------------------------------------- changelogs


def test_bulkfetch_pages_reassemble_to_issue_history(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=40, changes_per_item=8)
    client = http(sim)
    issues = [
        issue
        for page in search_pages(
            client, {"jql": "project = DEMO", "maxResults": 100, "fields": ["created", "status"]}
        )
        for issue in page["issues"]
    ]
    keys = [issue["key"] for issue in issues]
    pages = bulk_pages(client, {"issueIdsOrKeys": keys, "maxResults": 37})
    sizes = [sum(len(g["changeHistories"]) for g in p["issueChangeLogs"]) for p in pages]
    assert len(pages) > 3
    assert all(size == 37 for size in sizes[:-1]) and 0 < sizes[-1] <= 37
    order = []
    per_issue: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for page in pages:
        groups = page["issueChangeLogs"]
        assert all(a["issueId"] != b["issueId"] for a, b in itertools.pairwise(groups))
        for group in groups:
            for history in group["changeHistories"]:
                order.append((ts(history["created"]), int(group["issueId"]), int(history["id"])))
                per_issue[group["issueId"]].append(history)
    assert order == sorted(order)
    assert len({h for *_, h in order}) == len(order) == sum(sizes)
    for issue in issues:
        rebuilt = truth_from_histories(
            ts(issue["fields"]["created"]),
            issue["fields"]["status"]["name"],
            per_issue.get(issue["id"], []),
        )
        assert rebuilt == sim.issue_history(issue["key"]), issue["key"]


def test_bulkfetch_splits_one_issue_across_pages(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=0)
    sim.add_issue(key="DEMO-1", created=T0)
    sim.add_issue(key="DEMO-2", created=T0)
    flow = ["In Progress", "Blocked", "In Progress", "In Review", "Done"]
    for n in range(45):
        sim.transition("DEMO-1", flow[n % len(flow)], T0 + timedelta(hours=n + 1))
    sim.transition("DEMO-2", "In Progress", T0 + timedelta(hours=10, minutes=30))
    pages = bulk_pages(http(sim), {"issueIdsOrKeys": ["DEMO-2", "10001"], "maxResults": 20})
    shapes = [
        [(g["issueId"], len(g["changeHistories"])) for g in p["issueChangeLogs"]] for p in pages
    ]
    assert shapes == [
        [("10001", 10), ("10002", 1), ("10001", 9)],
        [("10001", 20)],
        [("10001", 6)],
    ]


def test_bulkfetch_field_filter(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=80, changes_per_item=6)
    client = http(sim)
    everything = [
        h
        for p in bulk_pages(client, {"issueIdsOrKeys": sim.keys})
        for g in p["issueChangeLogs"]
        for h in g["changeHistories"]
    ]
    status_only = [
        h
        for p in bulk_pages(client, {"issueIdsOrKeys": sim.keys, "fieldIds": ["status"]})
        for g in p["issueChangeLogs"]
        for h in g["changeHistories"]
    ]
    with_status = [h for h in everything if any(i.get("fieldId") == "status" for i in h["items"])]
    assert len(status_only) == len(with_status) < len(everything)
    assert all(item["fieldId"] == "status" for h in status_only for item in h["items"])
    assert any(len(h["items"]) > 1 for h in with_status)  # status + resolution in one history
    assert [h["id"] for h in status_only] == [h["id"] for h in with_status]
    two = [
        h
        for p in bulk_pages(
            client, {"issueIdsOrKeys": sim.keys, "fieldIds": ["resolution", "labels"]}
        )
        for g in p["issueChangeLogs"]
        for h in g["changeHistories"]
    ]
    assert two and {i["fieldId"] for h in two for i in h["items"]} == {"resolution", "labels"}


def test_bulkfetch_validation_and_switch(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    client = http(make_sim(items=5))
    ok = client.post(BULK, json={"issueIdsOrKeys": ["DEMO-1"]})
    assert ok.status_code == 200 and set(ok.json()) == {"issueChangeLogs"}
    too_many = [f"DEMO-{n}" for n in range(1, 1002)]
    assert client.post(BULK, json={"issueIdsOrKeys": too_many}).status_code == 400
    assert client.post(BULK, json={"issueIdsOrKeys": too_many[:1000]}).status_code == 200
    assert client.post(BULK, json={"issueIdsOrKeys": []}).status_code == 400
    assert client.post(BULK, json={}).status_code == 400
    fields = [f"customfield_{n}" for n in range(11)]
    assert (
        client.post(BULK, json={"issueIdsOrKeys": ["DEMO-1"], "fieldIds": fields}).status_code
        == 400
    )
    for bad in (0, 10001):
        response = client.post(BULK, json={"issueIdsOrKeys": ["DEMO-1"], "maxResults": bad})
        assert response.status_code == 400
    bad_token = client.post(BULK, json={"issueIdsOrKeys": ["DEMO-1"], "nextPageToken": "nope"})
    assert bad_token.status_code == 400
    assert client.get(BULK).status_code == 405
    disabled = http(make_sim(items=5, bulkfetch=False))
    assert disabled.post(BULK, json={"issueIdsOrKeys": ["DEMO-1"]}).status_code == 404


def test_issue_changelog_pages(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=0)
    sim.add_issue(key="DEMO-1", created=T0)
    for n in range(130):
        sim.transition(
            "DEMO-1", "In Progress" if n % 2 == 0 else "Blocked", T0 + timedelta(minutes=n + 1)
        )
    client = http(sim)
    first = client.get("/rest/api/3/issue/DEMO-1/changelog", params={"maxResults": 50}).json()
    assert (first["startAt"], first["maxResults"], first["total"], first["isLast"]) == (
        0,
        50,
        130,
        False,
    )
    values = list(first["values"])
    page = first
    while not page["isLast"]:
        response = httpx.get(page["nextPage"], timeout=10)
        page = response.json()
        values += page["values"]
    assert "nextPage" not in page and page["startAt"] == 100
    assert len(values) == 130
    created = [ts(v["created"]) for v in values]
    assert created == sorted(created)
    assert truth_from_histories(T0, "Blocked", values) == sim.issue_history("DEMO-1")
    capped = client.get("/rest/api/2/issue/10001/changelog", params={"maxResults": 500}).json()
    assert capped["maxResults"] == 100 and len(capped["values"]) == 100
    assert client.get("/rest/api/3/issue/DEMO-404/changelog").status_code == 404
    assert client.get("/rest/api/3/issue/DEMO-404").status_code == 404


def test_cloud_embedded_changelog_is_recent_first_and_truncated(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=30, embedded_changelog_limit=4)
    client = http(sim)
    issues = client.post(
        SEARCH,
        json={
            "jql": "project = DEMO",
            "maxResults": 30,
            "fields": ["status"],
            "expand": "changelog",
        },
    ).json()["issues"]
    truncated = 0
    for issue in issues:
        embedded = issue["changelog"]
        full = client.get(f"/rest/api/3/issue/{issue['key']}/changelog").json()
        assert embedded["total"] == full["total"]
        assert embedded["histories"] == list(reversed(full["values"]))[:4]
        assert embedded["maxResults"] == len(embedded["histories"]) <= 4
        truncated += embedded["total"] > len(embedded["histories"])
    assert truncated > 0
    single = client.get("/rest/api/3/issue/DEMO-3", params={"expand": "changelog"}).json()
    assert len(single["changelog"]["histories"]) <= 4


def test_datacenter_search_and_changelog(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=30, deployment="datacenter", embedded_changelog_limit=3)
    client = http(sim)
    info = client.get("/rest/api/2/serverInfo").json()
    assert info["deploymentType"] == "Server"
    seen: list[str] = []
    start = 0
    truncated = 0
    while True:
        page = client.get(
            "/rest/api/2/search",
            params={
                "jql": "project = DEMO ORDER BY key ASC",
                "startAt": start,
                "maxResults": 8,
                "fields": "status,updated",
                "expand": "changelog",
            },
        ).json()
        assert set(page) == {"expand", "startAt", "maxResults", "total", "issues"}
        assert (page["startAt"], page["maxResults"], page["total"]) == (start, 8, 30)
        for issue in page["issues"]:
            seen.append(issue["key"])
            assert set(issue["fields"]) == {"status", "updated"}
            embedded = issue["changelog"]
            full = client.get(f"/rest/api/2/issue/{issue['key']}", params={"expand": "changelog"})
            histories = full.json()["changelog"]["histories"]
            assert len(histories) == embedded["total"]  # single issue: no truncation
            assert embedded["histories"] == histories[:3]  # search: the oldest ones
            truncated += embedded["total"] > len(embedded["histories"])
            assert all("fieldId" not in item for h in histories for item in h["items"])
            assert all("accountId" not in h["author"] for h in histories)
        start += 8
        if start >= page["total"]:
            break
    assert seen == [f"DEMO-{n}" for n in range(1, 31)]
    assert truncated > 0
    posted = client.post(
        "/rest/api/2/search", json={"jql": "project = DEMO", "maxResults": 5000, "fields": ["key"]}
    ).json()
    assert posted["maxResults"] == 1000 and len(posted["issues"]) == 30
    everything = client.get("/rest/api/2/search").json()  # Data Center accepts unbounded JQL
    assert everything["total"] == 30 and "summary" in everything["issues"][0]["fields"]
    for path in ("/rest/api/3/search/jql", "/rest/api/2/search/jql", "/rest/api/3/serverInfo"):
        assert client.get(path).status_code == 404
    assert (
        client.post(
            "/rest/api/2/changelog/bulkfetch", json={"issueIdsOrKeys": ["DEMO-1"]}
        ).status_code
        == 404
    )
    assert client.get("/rest/api/2/issue/DEMO-1/changelog").status_code == 404


# ---------------------------------------------------------------------------- auth and limits


def test_cloud_basic_auth(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=3, email="bot@example.com", token="s3cr3t-token-value")
    anonymous = http(sim).get("/rest/api/3/myself")
    assert anonymous.status_code == 401
    assert anonymous.json()["errorMessages"]
    wrong = http(sim, auth=("bot@example.com", "wrong-token-xyz")).get("/rest/api/3/myself")
    assert wrong.status_code == 401
    for secret in ("wrong-token-xyz", "s3cr3t-token-value", "bot@example.com"):
        assert secret not in wrong.text and secret not in anonymous.text
    bearer = http(sim, headers={"Authorization": "Bearer s3cr3t-token-value"})
    assert bearer.get("/rest/api/3/myself").status_code == 401
    good = http(sim, auth=("bot@example.com", "s3cr3t-token-value")).get("/rest/api/3/myself")
    assert good.status_code == 200
    me = good.json()
    assert me["emailAddress"] == "bot@example.com" and me["accountId"] and me["timeZone"]
    assert http(sim).get("/_sim/stats").status_code == 200  # control endpoints need no auth
    assert [r.status for r in sim.requests] == [401, 401, 401, 200]


def test_datacenter_bearer_auth(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=3, deployment="datacenter", token="pat-123456")
    assert http(sim).get("/rest/api/2/myself").status_code == 401
    assert http(sim, auth=("x", "pat-123456")).get("/rest/api/2/myself").status_code == 401
    ok = http(sim, headers={"Authorization": "Bearer pat-123456"}).get("/rest/api/2/myself")
    assert ok.status_code == 200 and ok.json()["name"] == "syncd"


def test_every_nth_request_is_rate_limited(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=3, rate_limit_every=3, retry_after=7)
    client = http(sim)
    statuses = []
    for n in range(7):
        if n == 2:
            assert client.get("/_sim/stats").status_code == 200  # not counted
        response = client.get("/rest/api/3/serverInfo")
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.headers["Retry-After"] == "7"
            assert response.json()["errorMessages"]
    assert statuses == [200, 200, 429, 200, 200, 429, 200]
    assert [r.status for r in sim.requests] == statuses


# ---------------------------------------------------------------------------- scenarios


def test_mutate_bumps_updated_and_adds_one_history(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    now = datetime(2025, 3, 2, 9, 30, 15, 250_000, tzinfo=UTC)
    sim = make_sim(items=40, clock=lambda: now)
    twin = JiraSimulator(items=40, seed=7, anchor=ANCHOR, clock=lambda: now)
    before = {key: sim.issue_history(key) for key in sim.keys}
    changed = sim.mutate(3)
    assert changed == twin.mutate(3)  # seeded
    assert len(set(changed)) == 3
    client = http(sim)
    for key in sim.keys:
        after = sim.issue_history(key)
        if key in changed:
            assert after[:-1] == before[key]
            assert after[-1][0] == now and after[-1][1] == before[key][-1][2]
        else:
            assert after == before[key]
    assert sorted(keys_of(client, f"project = DEMO AND updated >= {ms(now)}")) == sorted(changed)
    issue = client.get(f"/rest/api/3/issue/{changed[0]}", params={"fields": "updated"}).json()
    assert ts(issue["fields"]["updated"]) == now


def test_scenario_round_trip(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=0)
    blocker = sim.add_issue(created=T0, summary="Upgrade the database", issue_type="Task")
    key = sim.add_issue(
        created=T0 + timedelta(minutes=5),
        issue_type="Bug",
        labels=["backend", "customer"],
        links=[("Blocks", "inward", blocker), ("Relates", "outward", blocker)],
    )
    assert (blocker, key) == ("DEMO-1", "DEMO-2")
    sim.transition(key, "In Progress", T0 + timedelta(hours=1))
    sim.set_type(key, "Incident", T0 + timedelta(hours=2))
    sim.transition(key, "Done", T0 + timedelta(hours=3))
    sim.transition(key, "In Progress", T0 + timedelta(hours=4))  # reopened
    sim.transition(key, "Closed", T0 + timedelta(hours=5), resolution="Won't Do")
    assert sim.issue_history(key) == [
        (T0 + timedelta(minutes=5), None, "To Do", None),
        (T0 + timedelta(hours=1), "To Do", "In Progress", None),
        (T0 + timedelta(hours=3), "In Progress", "Done", "Done"),
        (T0 + timedelta(hours=4), "Done", "In Progress", None),
        (T0 + timedelta(hours=5), "In Progress", "Closed", "Won't Do"),
    ]
    client = http(sim)
    issue = client.get(f"/rest/api/3/issue/{key}").json()
    fields = issue["fields"]
    assert issue["id"] == "10002"
    assert (
        fields["status"]["name"] == "Closed" and fields["status"]["statusCategory"]["key"] == "done"
    )
    assert fields["resolution"]["name"] == "Won't Do"
    assert ts(fields["resolutiondate"]) == T0 + timedelta(hours=5)
    assert ts(fields["updated"]) == T0 + timedelta(hours=5)
    assert fields["issuetype"]["name"] == "Incident"
    assert fields["labels"] == ["backend", "customer"]
    links = {(link["type"]["name"], "outwardIssue" in link) for link in fields["issuelinks"]}
    assert links == {("Blocks", False), ("Relates", True)}
    other = client.get(f"/rest/api/3/issue/{blocker}").json()["fields"]["issuelinks"]
    assert {(link["type"]["name"], "outwardIssue" in link) for link in other} == {
        ("Blocks", True),
        ("Relates", False),
    }
    values = client.get(f"/rest/api/3/issue/{key}/changelog").json()["values"]
    assert [[i["field"] for i in v["items"]] for v in values] == [
        ["status"],
        ["issuetype"],
        ["resolution", "status"],
        ["resolution", "status"],
        ["resolution", "status"],
    ]
    reopen = values[3]["items"][0]
    assert (reopen["from"], reopen["fromString"], reopen["to"], reopen["toString"]) == (
        "10000",
        "Done",
        None,
        None,
    )
    status_item = values[0]["items"][0]
    catalogue = {s["name"]: s["id"] for s in client.get("/rest/api/3/status").json()}
    assert (status_item["from"], status_item["to"]) == (
        catalogue["To Do"],
        catalogue["In Progress"],
    )
    assert values[1]["items"][0]["fromString"] == "Bug"


def test_scenario_rejects_bad_input(make_sim: Callable[..., JiraSimulator]) -> None:
    sim = make_sim(items=0)
    key = sim.add_issue(created=T0)
    sim.transition(key, "In Progress", T0 + timedelta(hours=1))
    with pytest.raises(ValueError, match="strictly ordered"):
        sim.transition(key, "Done", T0 + timedelta(hours=1))
    with pytest.raises(ValueError, match="unknown status"):
        sim.transition(key, "Nope", T0 + timedelta(hours=2))
    with pytest.raises(ValueError, match="naive"):
        sim.transition(key, "Done", datetime(2024, 7, 1))
    with pytest.raises(ValueError, match="already exists"):
        sim.add_issue(key=key, created=T0)
    with pytest.raises(KeyError):
        sim.add_issue(created=T0, links=[("Blocks", "outward", "DEMO-99")])


def test_delete_issue(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=10)
    client = http(sim)
    sim.delete_issue("DEMO-4")
    assert "DEMO-4" not in keys_of(client, "project = DEMO")
    assert len(keys_of(client, "project = DEMO")) == 9
    assert client.get("/rest/api/3/issue/DEMO-4").status_code == 404
    assert client.get("/rest/api/3/issue/10004/changelog").status_code == 404
    assert client.post(SEARCH, json={"jql": "key = DEMO-4"}).status_code == 400
    gone = client.post(BULK, json={"issueIdsOrKeys": ["DEMO-4", "DEMO-5"]}).json()
    assert {g["issueId"] for g in gone["issueChangeLogs"]} <= {"10005"}


def test_catalogue_endpoints(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    client = http(make_sim(items=2, projects=("DEMO", "OPS")))
    statuses = {s["name"]: s for s in client.get("/rest/api/2/status").json()}
    expected = {
        "To Do": "new",
        "Backlog": "new",
        "In Progress": "indeterminate",
        "In Review": "indeterminate",
        "Blocked": "indeterminate",
        "Ready for QA": "indeterminate",
        "En révision": "indeterminate",
        "Väntar på kund": "indeterminate",
        "Done": "done",
        "Closed": "done",
        "完了": "done",
    }
    assert {name: s["statusCategory"]["key"] for name, s in statuses.items()} == expected
    category_ids = {
        s["statusCategory"]["key"]: s["statusCategory"]["id"] for s in statuses.values()
    }
    assert category_ids == {"new": 2, "indeterminate": 4, "done": 3}
    assert all(s["id"].isdigit() and int(s["id"]) >= 10000 for s in statuses.values())
    projects = client.get("/rest/api/3/project").json()
    assert [p["key"] for p in projects] == ["DEMO", "OPS"]
    page = client.get("/rest/api/3/project/search", params={"maxResults": 1}).json()
    assert page["total"] == 2 and page["isLast"] is False and len(page["values"]) == 1
    assert {t["name"] for t in client.get("/rest/api/3/issuetype").json()} >= {
        "Story",
        "Bug",
        "Tech Debt",
    }
    resolutions = {r["name"] for r in client.get("/rest/api/3/resolution").json()}
    assert resolutions == {"Done", "Won't Do", "Duplicate", "Cannot Reproduce"}
    assert client.get("/rest/api/3/serverInfo").json()["deploymentType"] == "Cloud"
    missing = client.get("/rest/api/3/nothing-here")
    assert missing.status_code == 404 and missing.json()["errorMessages"]
    assert client.get("/elsewhere").status_code == 404


def test_timestamps_carry_dst_dependent_offsets(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=50)
    client = http(sim)
    issues = client.post(
        SEARCH, json={"jql": "project = DEMO", "maxResults": 50, "fields": ["created", "updated"]}
    ).json()["issues"]
    stamps = [issue["fields"][name] for issue in issues for name in ("created", "updated")]
    assert all(TS_RE.match(s) for s in stamps)
    assert {s[-5:] for s in stamps} == {"+0100", "+0200"}
    tokyo = make_sim(items=5, tz="Asia/Tokyo")
    created = http(tokyo).get("/rest/api/3/issue/DEMO-1", params={"fields": "created"}).json()
    assert created["fields"]["created"].endswith("+0900")


def test_requests_are_recorded_and_control_endpoints_work(
    make_sim: Callable[..., JiraSimulator], http: Callable[..., httpx.Client]
) -> None:
    sim = make_sim(items=15)
    client = http(sim)
    client.post(SEARCH, json={"jql": "project = DEMO", "maxResults": 5})
    client.get("/rest/api/3/issue/DEMO-1/changelog", params={"startAt": 0})
    client.get("/rest/api/3/search")
    changed = client.post("/_sim/mutate", params={"count": 2})
    assert changed.status_code == 200 and len(changed.json()) == 2
    assert all(re.fullmatch(r"DEMO-\d+", key) for key in changed.json())
    stats = client.get("/_sim/stats").json()
    assert stats["requests"] == 3 and stats["issues"] == 15
    assert stats["by_path"] == {
        SEARCH: 1,
        "/rest/api/3/issue/DEMO-1/changelog": 1,
        "/rest/api/3/search": 1,
    }
    records = sim.requests
    assert [(r.method, r.path, r.status) for r in records] == [
        ("POST", SEARCH, 200),
        ("GET", "/rest/api/3/issue/DEMO-1/changelog", 200),
        ("GET", "/rest/api/3/search", 410),
    ]
    assert records[0].body == {"jql": "project = DEMO", "maxResults": 5}
    assert records[1].query == {"startAt": ["0"]}
    sim.reset_requests()
    assert sim.requests == []
    assert client.get("/_sim/nothing").status_code == 404


def test_concurrent_clients_and_mutations(make_sim: Callable[..., JiraSimulator]) -> None:
    sim = make_sim(items=200, clock=lambda: ANCHOR + timedelta(hours=1))
    statuses: list[int] = []

    def reader() -> None:
        with httpx.Client(base_url=sim.base_url, timeout=10) as client:
            for _ in range(15):
                page = client.post(SEARCH, json={"jql": "project = DEMO", "fields": ["status"]})
                statuses.append(page.status_code)
                bulk = client.post(BULK, json={"issueIdsOrKeys": sim.keys[:50]})
                statuses.append(bulk.status_code)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(30):
        sim.mutate(2)
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == [200] * 120
    assert len(sim.requests) == 120


def test_stop_closes_kept_alive_connections(make_sim: Callable[..., JiraSimulator]) -> None:
    sim = make_sim(items=2)
    with httpx.Client(base_url=sim.base_url, timeout=5) as client:
        assert client.get("/rest/api/3/serverInfo").status_code == 200
        sim.stop()
        with pytest.raises(httpx.TransportError):
            client.get("/rest/api/3/serverInfo")
    sim.stop()  # idempotent


# ---------------------------------------------------------------------------- CLI


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_signalled(stop_signal: signal.Signals) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "SIM_TEST_TOKEN": "cli-token"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "syncd.simulator.jira",
            "--port",
            str(port),
            "--items",
            "25",
            "--token-env",
            "SIM_TEST_TOKEN",
            "--mutate-every",
            "0.2",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the simulator printed nothing"
        line = proc.stdout.readline().strip()
        assert line == f"simulator: jira cloud on http://127.0.0.1:{port} (25 issues)"
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/rest/api/3/serverInfo", timeout=10).status_code == 401
        authed = httpx.get(f"{base}/rest/api/3/serverInfo", auth=("me", "cli-token"), timeout=10)
        assert authed.status_code == 200
        assert httpx.get(f"{base}/_sim/stats", timeout=10).json()["issues"] == 25
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_refuses_missing_secret_env(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SIM_TEST_MISSING", raising=False)
    assert main(["--token-env", "SIM_TEST_MISSING", "--items", "1"]) == 2
    assert "SIM_TEST_MISSING" in capsys.readouterr().err
    args = build_parser().parse_args(["--port", "9", "--deployment", "datacenter"])
    assert (args.port, args.deployment, args.items) == (9, "datacenter", 200)
