"""The fake GitLab's `/api/graphql`: the same notes as REST (times to the second), GitLab's
paging, complexity and depth limits, error shapes, auth, rate limits and the 404 of an
instance without it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from syncd.simulator.gitlab import GitLabSimulator, build_parser
from syncd.simulator.gitlab_graphql import iso_seconds, note_action

ANCHOR = datetime(2025, 3, 1, tzinfo=UTC)
T0 = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
TOKEN = "sim-gitlab-graphql-token-0000"
WEB = "/api/v4/projects/acme%2Fweb"
NOTES = (
    "notes(first: 100, filter: ONLY_ACTIVITY) { count pageInfo { hasNextPage endCursor } "
    "nodes { id body system createdAt systemNoteMetadata { action } author { username } } }"
)
BATCH = (
    "query($p: ID!, $iids: [String!], $first: Int) { project(fullPath: $p) { "
    "mergeRequests(iids: $iids, first: $first) { count nodes { iid " + NOTES + " } } } }"
)


@pytest.fixture
def make_sim(request: pytest.FixtureRequest) -> Callable[..., GitLabSimulator]:
    """Started simulators (20 + 20 items of acme/web, seed 7, with a token), stopped after."""
    defaults: dict[str, Any] = {
        "anchor": ANCHOR,
        "issues": 20,
        "merge_requests": 20,
        "seed": 7,
        "token": TOKEN,
    }

    def make(**options: Any) -> GitLabSimulator:
        sim = GitLabSimulator(**{**defaults, **options})
        request.addfinalizer(sim.stop)
        sim.start()
        return sim

    return make


def client(sim: GitLabSimulator, token: str | None = TOKEN) -> httpx.Client:
    headers = {"PRIVATE-TOKEN": token} if token else {}
    return httpx.Client(base_url=sim.base_url, headers=headers, timeout=10)


def post(sim: GitLabSimulator, query: str, token: str | None = TOKEN, **variables: Any) -> Any:
    with client(sim, token) as http:
        response = http.post("/api/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    return response.json()


def rest_notes(sim: GitLabSimulator, kind: str, iid: int) -> list[dict[str, Any]]:
    with client(sim) as http:
        response = http.get(f"{WEB}/{kind}/{iid}/notes", params={"sort": "asc", "per_page": 100})
    assert response.status_code == 200
    return list(response.json())


def test_notes_are_the_rest_system_notes_to_the_second(
    make_sim: Callable[..., GitLabSimulator],
) -> None:
    sim = make_sim()
    iids = sim.iids("acme/web", "merge_request")
    body = post(sim, BATCH, p="acme/web", iids=[str(i) for i in iids], first=len(iids))
    nodes = body["data"]["project"]["mergeRequests"]["nodes"]
    assert sorted(int(n["iid"]) for n in nodes) == iids
    assert [int(n["iid"]) for n in nodes] == sorted(iids, reverse=True)  # created_desc
    compared = 0
    for node in nodes:
        rest = [n for n in rest_notes(sim, "merge_requests", int(node["iid"])) if n["system"]]
        graph = node["notes"]["nodes"]
        assert node["notes"]["count"] == len(rest)
        assert [g["id"] for g in graph] == [f"gid://gitlab/Note/{r['id']}" for r in rest]
        assert [g["body"] for g in graph] == [r["body"] for r in rest]
        assert [g["author"]["username"] for g in graph] == [r["author"]["username"] for r in rest]
        # GraphQL's Time is ISO 8601 to the second: REST's instant with the milliseconds cut
        assert [g["createdAt"] for g in graph] == [r["created_at"][:19] + "Z" for r in rest]
        assert all(g["system"] for g in graph)
        assert [g["systemNoteMetadata"]["action"] for g in graph] == [
            note_action(r["body"]) for r in rest
        ]
        compared += len(graph)
    assert compared > 40  # the generated merge requests do have system notes


def test_note_filters_and_issues_by_iid(make_sim: Callable[..., GitLabSimulator]) -> None:
    sim = make_sim()
    p = "acme/web"
    issue = sim.add_issue(p, created=T0)
    sim.assign(p, "issue", issue, "alice", T0 + timedelta(hours=1))
    sim.comment(p, "issue", issue, "Any update?", T0 + timedelta(hours=2))
    sim.set_status(p, issue, "In progress", T0 + timedelta(hours=3))
    query = (
        "query($p: ID!, $iids: [String!], $f: NotesFilterType) { project(fullPath: $p) { "
        "issues(iids: $iids) { nodes { iid notes(filter: $f) { count nodes { body system } } } } "
        "} }"
    )
    seen = {}
    for name in ("ALL_NOTES", "ONLY_COMMENTS", "ONLY_ACTIVITY"):
        body = post(sim, query, p=p, iids=[str(issue), "99999", "x"], f=name)
        [node] = body["data"]["project"]["issues"]["nodes"]  # unknown iids are simply absent
        assert node["iid"] == str(issue)
        seen[name] = [n["body"] for n in node["notes"]["nodes"]]
        assert node["notes"]["count"] == len(seen[name])
    assert seen == {
        "ALL_NOTES": ["assigned to @alice", "Any update?", "set status to **In progress**"],
        "ONLY_COMMENTS": ["Any update?"],
        "ONLY_ACTIVITY": ["assigned to @alice", "set status to **In progress**"],
    }


def test_notes_page_by_cursor_at_most_100(make_sim: Callable[..., GitLabSimulator]) -> None:
    sim = make_sim(issues=0, merge_requests=0)
    p = "acme/web"
    mr = sim.add_merge_request(p, created=T0, draft=True)
    for n in range(130):  # 130 system notes, one a minute
        sim.set_draft(p, mr, n % 2 == 1, T0 + timedelta(minutes=n + 1, milliseconds=250))
    query = (
        "query($p: ID!, $iid: String!, $first: Int, $after: String) { project(fullPath: $p) { "
        "mergeRequest(iid: $iid) { notes(first: $first, after: $after, filter: ONLY_ACTIVITY) "
        "{ count pageInfo { hasNextPage hasPreviousPage endCursor } nodes { id createdAt } } } "
        "} }"
    )
    ids: list[str] = []
    after = None
    pages = 0
    while True:
        body = post(sim, query, p=p, iid=str(mr), first=40, after=after)
        notes = body["data"]["project"]["mergeRequest"]["notes"]
        assert notes["count"] == 130
        ids.extend(n["id"] for n in notes["nodes"])
        pages += 1
        if not notes["pageInfo"]["hasNextPage"]:
            break
        after = notes["pageInfo"]["endCursor"]
    assert pages == 4 and len(ids) == len(set(ids)) == 130
    capped = post(sim, query, p=p, iid=str(mr), first=500, after=None)
    body_nodes = capped["data"]["project"]["mergeRequest"]["notes"]
    assert len(body_nodes["nodes"]) == 100 and body_nodes["pageInfo"]["hasNextPage"]  # capped
    unbounded = post(sim, query, p=p, iid=str(mr), first=None, after=None)
    assert len(unbounded["data"]["project"]["mergeRequest"]["notes"]["nodes"]) == 100
    assert body_nodes["nodes"][0]["createdAt"] == iso_seconds(
        int((T0 + timedelta(minutes=1)).timestamp() * 1000) + 250
    )
    garbled = post(sim, query, p=p, iid=str(mr), first=10, after="not-a-cursor")
    assert garbled["data"]["project"]["mergeRequest"] is None
    assert garbled["errors"][0]["message"] == "Please provide a valid cursor"
    assert garbled["errors"][0]["path"] == ["project", "mergeRequest", "notes"]


def test_complexity_is_scored_like_gitlab_and_refused_over_the_limit(
    make_sim: Callable[..., GitLabSimulator],
) -> None:
    sim = make_sim()
    scored = (
        "query($p: ID!, $iids: [String!]) { queryComplexity { score limit } project(fullPath: "
        "$p) { mergeRequests(iids: $iids) { nodes { iid notes(first: 100) { nodes { id body } "
        "} } } } }"
    )
    # notes: (nodes 1 + id 1 + body 1) + resolver 1 = 4, +1 % per item of 100 = 8;
    # nodes: 1 + iid 1 + 8 = 10; mergeRequests: 10 + resolver 1 + sort 1 = 12 (by iids: no
    # per-item growth); project: 12 + 1 = 13; queryComplexity 1 + 2 fields = 3
    body = post(sim, scored, p="acme/web", iids=["1", "2", "3"])
    assert body["data"]["queryComplexity"] == {"score": 16, "limit": 250}
    many = post(sim, scored, p="acme/web", iids=[str(n) for n in range(1, 101)])
    assert many["data"]["queryComplexity"]["score"] == 16  # independent of the iids' number
    # without iids a connection grows 1 % per item of its page
    listing = post(
        sim,
        '{ queryComplexity { score } project(fullPath: "acme/web") { mergeRequests(first: 50)'
        " { nodes { iid } } } }",
    )
    assert listing["data"]["queryComplexity"]["score"] == 2 + 1 + int((2 + 1 + 1) * 1.5)
    too_much = " ".join(f"a{n}: mergeRequests {{ nodes {{ iid title }} }}" for n in range(30))
    with client(sim) as http:
        response = http.post(
            "/api/graphql", json={"query": f'{{ project(fullPath: "acme/web") {{ {too_much} }} }}'}
        )
    assert response.status_code == 200
    refused = response.json()
    assert set(refused) == {"errors"}  # the whole query is refused, no data
    [error] = refused["errors"]
    assert error == {"message": "Query has complexity of 301, which exceeds max complexity of 250"}


def test_per_iid_scoring(make_sim: Callable[..., GitLabSimulator]) -> None:
    sim = make_sim(graphql_iids_complexity=True)
    scored = (
        'query($iids: [String!]) { queryComplexity { score } project(fullPath: "acme/web") { '
        "mergeRequests(iids: $iids) { nodes { iid notes { nodes { id } } } } } }"
    )
    one = post(sim, scored, iids=["1"])["data"]["queryComplexity"]["score"]
    three = post(sim, scored, iids=["1", "2", "3"])["data"]["queryComplexity"]["score"]
    child = 1 + 1 + (1 + 1 + 1) * 2  # nodes + iid + notes(nodes + id, resolver 1) * 2
    assert three - one == 2 * child
    refused = post(sim, scored, iids=[str(n) for n in range(1, 40)])
    assert refused == {
        "errors": [{"message": "Query has complexity of 317, which exceeds max complexity of 250"}]
    }


def test_auth_anonymous_and_invalid_token(make_sim: Callable[..., GitLabSimulator]) -> None:
    sim = make_sim()
    query = (
        "{ queryComplexity { limit } currentUser { username } "
        'project(fullPath: "acme/web") { fullPath } }'
    )
    assert post(sim, query)["data"] == {
        "queryComplexity": {"limit": 250},
        "currentUser": {"username": "root"},
        "project": {"fullPath": "acme/web"},
    }
    # anonymous: private projects are invisible, the limit is 200
    assert post(sim, query, token=None)["data"] == {
        "queryComplexity": {"limit": 200},
        "currentUser": None,
        "project": None,
    }
    with client(sim, "wrong-token-123") as http:
        response = http.post("/api/graphql", json={"query": query})
    assert response.status_code == 401
    assert response.json() == {"errors": [{"message": "Invalid token"}]}
    assert "wrong-token-123" not in response.text and TOKEN not in response.text
    with client(sim, token=None) as http:  # Authorization: Bearer works as well
        bearer = http.post(
            "/api/graphql", json={"query": query}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert bearer.json()["data"]["project"] == {"fullPath": "acme/web"}
    unknown = post(sim, '{ project(fullPath: "other/x") { name } }')
    assert unknown == {"data": {"project": None}}  # unknown or hidden: null, no error


def test_error_shapes(make_sim: Callable[..., GitLabSimulator]) -> None:
    sim = make_sim()
    unknown = post(
        sim,
        '{ project(fullPath: "acme/web") { mergeRequests { nodes { notes(bogus: 1) '
        "{ count } foo } } } }",
    )
    assert [e["message"] for e in unknown["errors"]] == [
        "Field 'notes' doesn't accept argument 'bogus'",
        "Field 'foo' doesn't exist on type 'MergeRequest'",
    ]
    assert unknown["errors"][0]["extensions"]["code"] == "argumentNotAccepted"
    assert unknown["errors"][1]["extensions"]["code"] == "undefinedField"
    assert all("locations" in e for e in unknown["errors"]) and "data" not in unknown
    syntax = post(sim, "{ project(fullPath: ")
    assert set(syntax["errors"][0]) == {"message", "locations"}
    assert post(sim, "")["errors"] == [{"message": "No query string was present"}]
    with client(sim) as http:
        large = http.post("/api/graphql", json={"query": "{ " + " " * 10_001 + "}"})
        assert large.status_code == 422
        assert large.json() == {"errors": [{"message": "Query too large"}]}
        broken = http.post(
            "/api/graphql", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert broken.status_code == 400
        got = http.get(
            "/api/graphql",
            params={
                "query": "query($p: ID!) { project(fullPath: $p) { name } }",
                "variables": '{"p": "acme/web"}',
            },
        )
        assert got.json() == {"data": {"project": {"name": "web"}}}
        put = http.put("/api/graphql", json={"query": "{ currentUser { username } }"})
        assert put.status_code == 404


def test_schema_before_gitlab_16_5_has_no_notes_filter(
    make_sim: Callable[..., GitLabSimulator],
) -> None:
    sim = make_sim(graphql_notes_filter=False)
    refused = post(sim, BATCH, p="acme/web", iids=["1"], first=1)
    assert refused["errors"][0]["message"] == "Field 'notes' doesn't accept argument 'filter'"
    plain = post(
        sim,
        '{ project(fullPath: "acme/web") { mergeRequest(iid: "1") { notes { count } } } }',
    )
    assert plain["data"]["project"]["mergeRequest"]["notes"]["count"] == len(
        rest_notes(sim, "merge_requests", 1)
    )


def test_graphql_shares_the_rate_limit_and_can_be_absent(
    make_sim: Callable[..., GitLabSimulator],
) -> None:
    sim = make_sim(rate_limit_every=2)
    query = "{ currentUser { username } }"
    with client(sim) as http:
        statuses = [http.post("/api/graphql", json={"query": query}).status_code for _ in range(4)]
        rest = http.get(WEB)
        throttled = http.post("/api/graphql", json={"query": query})
    assert statuses == [200, 429, 200, 429] and rest.status_code == 200
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
    assert throttled.headers["RateLimit-Remaining"] == "0"
    assert rest.headers["RateLimit-Observed"] == "5"  # GraphQL counted in the same budget
    assert [r.path for r in sim.requests].count("/api/graphql") == 5
    absent = make_sim(graphql=False)
    with client(absent) as http:
        gone = http.post("/api/graphql", json={"query": query})
    assert gone.status_code == 404 and gone.json() == {"error": "404 Not Found"}


def test_cli_can_serve_without_graphql() -> None:
    assert build_parser().parse_args(["--no-graphql"]).no_graphql is True
    assert build_parser().parse_args([]).no_graphql is False
