"""A deterministic fake GitLab (REST API v4 and GraphQL) for syncd's demo, tests and benchmarks.

`GitLabSimulator` holds seeded projects of issues and merge requests with complete histories
(resource state and label events, system notes, comments, issue links) in memory and serves,
on 127.0.0.1, the part of GitLab's API a sync uses, in the shapes of recorded responses (see
tests/test_simulator_gitlab_shapes.py). `base_url` is the instance root; the API is under
`/api/v4`, and a project or group `:id` is its numeric id or its URL-encoded full path
(`acme%2Fweb`).

What a client meets, as on GitLab:

- `GET /projects/:id/issues`, `/merge_requests` and the group variants (subgroups included):
  `state`, `scope`, `order_by` created_at|updated_at (default created_at), `sort` (default
  desc, ties broken by id), `updated_after`/`updated_before`/`created_after`/`created_before`
  (inclusive), `labels`, `iids[]`, `per_page` 1..100 (default 20), `page`. Offset pages carry
  `X-Total`, `X-Total-Pages` (left out, with the `last` link, above 10,000 rows as on
  gitlab.com), `X-Page`, `X-Per-Page`, `X-Next-Page`, `X-Prev-Page` and `Link` (prev, next,
  first, last). On the project endpoints `pagination=keyset` (unless `keyset=False`) answers
  with only a `Link: <…cursor=…>; rel="next"`; the cursor holds the sort key of the last row
  served, so rows that do not change between pages are never skipped or repeated. The group
  endpoints ignore `pagination=keyset`. With `offset_page_cap`, offset pages beyond it on the
  keyset-capable endpoints get gitlab.com's 405 `{"error": "Offset pagination has a maximum
  allowed offset of …"}`.
- `GET /projects/:id/{issues|merge_requests}/:iid/resource_state_events`,
  `/resource_label_events`, `/resource_milestone_events` (always empty), `/notes` (`sort`
  default desc, `order_by` created_at|updated_at, `activity_filter`) and
  `/issues/:iid/links`; also `/user`, `/version`, `/projects/:id`, `/groups/:id`,
  `/groups/:id/projects` (`include_subgroups`) and single issues and merge requests.
- `POST /api/graphql` (and `GET` with `query`/`variables` parameters): projects, their merge
  requests and issues by iid and their notes, from the same world as the REST endpoints, with
  GitLab's complexity and depth limits and error shapes (see `gitlab_graphql`). With
  `graphql=False` it answers 404, as where a proxy hides it; with `graphql_forbidden=True`
  403 `{"message": "403 Forbidden"}`, as where a policy refuses it; `graphql_notes_filter=False`
  serves the schema of GitLab before 16.5 (`notes` without `filter`);
  `graphql_iids_complexity=True` scores `mergeRequests(iids:)`/`issues(iids:)` per iid.
- With `token` set, `PRIVATE-TOKEN: <t>` or `Authorization: Bearer <t>` is required, else
  401 `{"message": "401 Unauthorized"}` (the token is never echoed); GraphQL without a token is
  anonymous, with a wrong one 401 `{"errors": [{"message": "Invalid token"}]}`. Every
  `rate_limit_every`th API request (GraphQL included: it is under `/api`, in the same budget)
  gets 429 `Retry later` with `Retry-After`, `RateLimit-Reset` (epoch) and
  `RateLimit-Remaining: 0`; other responses carry `RateLimit-Limit`, `-Observed`,
  `-Remaining`, `-Reset` of a one-minute window read from `clock`.

Control endpoints (`/_sim/mutate?count=N`, `/_sim/stats`) need no auth, are never rate
limited and are not recorded. Bodies are byte-identical for the same generation arguments,
apart from the base URL.
"""

from __future__ import annotations

import argparse
import bisect
import email.utils
import hashlib
import hmac
import math
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from syncd.simulator import gitlab_graphql
from syncd.simulator.common import (
    ApiRequest,
    BoundedCache,
    CliError,
    CursorSigner,
    RequestRecord,
    Response,
    Simulator,
    add_serving_arguments,
    run_cli,
    serving_options,
)
from syncd.simulator.gitlab_data import (
    ISSUE,
    LABEL,
    LABEL_COLORS,
    MERGE_REQUEST,
    NOTE,
    STATE,
    TABLES,
    VIEWER,
    Event,
    Group,
    Item,
    Project,
    World,
    advance,
    generate,
    iso_ms,
    label_id,
    renumber,
    user_id,
    user_name,
)
from syncd.simulator.jira_data import DAY_MS, from_ms, to_ms

__all__ = ["GitLabSimulator", "RequestRecord", "build_parser", "main"]

Json = Any
Query = dict[str, list[str]]

API = "/api/v4"
GRAPHQL = "/api/graphql"
PER_PAGE_DEFAULT = 20
PER_PAGE_MAX = 100
COUNTED_ROWS_MAX = 10_000  # gitlab.com leaves X-Total out above this
RATE_LIMIT = 2000  # gitlab.com: authenticated API requests per minute
_STATES = {
    ISSUE: ("opened", "closed", "all"),
    MERGE_REQUEST: ("opened", "closed", "locked", "merged", "all"),
}
_SCOPES = ("all", "created_by_me", "created-by-me", "assigned_to_me", "assigned-to-me")
_ORDERS: dict[str, Callable[[Item], int]] = {
    "created_at": lambda item: item.created,
    "updated_at": lambda item: item.updated,
}
_SEGMENTS = {"issues": ISSUE, "merge_requests": MERGE_REQUEST}
_EVENT_TABLES = {"resource_state_events": STATE, "resource_label_events": LABEL}
_NOT_FOUND_NAMES = {ISSUE: "Issue", MERGE_REQUEST: "Merge Request"}


class _GitLabError(Exception):
    """An HTTP error with GitLab's body: `{"message": …}` from the API's own checks,
    `{"error": …}` from parameter validation and unknown routes."""

    def __init__(self, status: int, text: str, key: str = "message") -> None:
        super().__init__(status, text)
        self.status = status
        self.body = {key: text}

    def response(self) -> Response:
        return Response(self.status, self.body)


def _route_not_found() -> _GitLabError:
    return _GitLabError(404, "404 Not Found", "error")


def _invalid(name: str, why: str = "is invalid") -> _GitLabError:
    return _GitLabError(400, f"{name} {why}", "error")


def _param(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _number(query: Query, name: str, default: int) -> int:
    raw = _param(query, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(name) from None
    return value if value >= 1 else default


def _one_of(query: Query, name: str, allowed: Sequence[str], default: str) -> str:
    value = _param(query, name) or default
    if value not in allowed:
        raise _invalid(name, "does not have a valid value")
    return value


def _instant(query: Query, name: str) -> int | None:
    """An ISO 8601 parameter as epoch ms (naive values are UTC), None when absent."""
    raw = _param(query, name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace(" ", "+"))
    except ValueError:
        raise _invalid(name) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return to_ms(value)


@dataclass(frozen=True, slots=True)
class _Sorted:
    """A listing's rows in order and, for each, its keyset key (sort value, id), both
    negated for descending order so that the keys always ascend."""

    rows: list[Item]
    keys: list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class _Filter:
    """Which items a listing request selects (hashable: it is part of the cache key)."""

    state: str
    scope: str
    updated: tuple[int | None, int | None]  # inclusive bounds, epoch ms
    created: tuple[int | None, int | None]
    iids: frozenset[int] | None
    labels: tuple[str, ...]

    def matches(self, item: Item) -> bool:
        if self.state != "all" and item.state != self.state:
            return False
        if self.scope.startswith("created") and item.author != VIEWER:
            return False
        if self.scope.startswith("assigned") and VIEWER not in item.assignees:
            return False
        if not (_within(item.updated, self.updated) and _within(item.created, self.created)):
            return False
        if self.iids is not None and item.iid not in self.iids:
            return False
        return not self.labels or _labels_match(item, self.labels)


def _within(value: int, bounds: tuple[int | None, int | None]) -> bool:
    low, high = bounds
    return (low is None or value >= low) and (high is None or value <= high)


def _labels_match(item: Item, wanted: tuple[str, ...]) -> bool:
    """GitLab's `labels=a,b`: every one of them (case-insensitive); `None`: no label at
    all, `Any`: at least one."""
    have = {name.lower() for name in item.labels}
    if "None" in wanted:
        return not have
    if "Any" in wanted and not have:
        return False
    return {name.lower() for name in wanted if name != "Any"} <= have


@dataclass(frozen=True, slots=True)
class _Target:
    """What a request path names: the project or group (with `:id` as the client wrote it,
    re-encoded) and the rest of the path."""

    prefix: str
    project: Project | None
    group: Group | None
    tail: list[str]


class GitLabSimulator(Simulator):
    """A seeded, in-memory GitLab served over HTTP on 127.0.0.1.

    Same `projects`, `issues`, `merge_requests`, `seed` and `anchor` give byte-identical
    bodies. Scenario methods (`add_issue`, `add_label`, `merge`, ...) build exact histories for
    tests; `events` is the ground truth a sync must reproduce.
    """

    server_name = "nginx"
    content_type = "application/json"

    def __init__(
        self,
        *,
        projects: Sequence[str] = ("acme/web",),
        issues: int = 50,
        merge_requests: int = 50,
        seed: int = 1,
        anchor: datetime | None = None,
        token: str | None = None,
        keyset: bool = True,
        offset_page_cap: int | None = None,
        rate_limit_every: int = 0,
        retry_after: int = 1,
        clock: Callable[[], datetime] | None = None,
        graphql: bool = True,
        graphql_notes_filter: bool = True,
        graphql_iids_complexity: bool = False,
        graphql_forbidden: bool = False,
    ) -> None:
        super().__init__(seed=seed, anchor=anchor, token=token, clock=clock)
        if not projects:
            raise ValueError("at least one project is needed")
        if issues < 0 or merge_requests < 0:
            raise ValueError("issues and merge_requests must not be negative")
        if offset_page_cap is not None and offset_page_cap < 1:
            raise ValueError("offset_page_cap must be at least 1")
        self.keyset = keyset
        self.offset_page_cap = offset_page_cap
        self.rate_limit_every = rate_limit_every
        self.retry_after = retry_after
        self.graphql = graphql
        self.graphql_notes_filter = graphql_notes_filter
        self.graphql_iids_complexity = graphql_iids_complexity
        self.graphql_forbidden = graphql_forbidden
        if graphql:
            gitlab_graphql.schema(graphql_notes_filter)  # built once, not on the first request
        anchor_ms = to_ms(self.anchor)
        self._world = World()
        for path in projects:
            project = self._world.add_project(path, anchor_ms - 500 * DAY_MS)
            generate(
                self._world,
                project,
                issues=issues,
                merge_requests=merge_requests,
                seed=seed,
                anchor=anchor_ms,
            )
        renumber(self._world, self._world.items())
        self._by_project_id = {p.id: p for p in self._world.projects.values()}
        self._by_group_id = {g.id: g for g in self._world.groups.values()}
        self._signer = CursorSigner(f"syncd-gitlab-simulator:{seed}")
        self._mutate_rng = random.Random(f"gitlab-mutate:{seed}")
        self._version = 0
        self._sorted_cache: BoundedCache[tuple[object, ...], _Sorted] = BoundedCache(32)
        self._people: dict[str, Json] = {}  # user objects by login, for `_people_base`
        self._people_base = ""
        self._window = (0, 0)  # (minute, requests observed in it)

    # ------------------------------------------------------------------ observation

    @property
    def projects(self) -> list[str]:
        """Full paths of the projects, in creation order."""
        with self._lock:
            return list(self._world.projects)

    @property
    def groups(self) -> list[str]:
        """Full paths of the groups and subgroups the project paths imply."""
        with self._lock:
            return list(self._world.groups)

    def iids(self, project: str, kind: str) -> list[int]:
        """The iids of the project's issues (`kind` "issue") or merge requests, ascending."""
        with self._lock:
            return sorted(self._world.project(project).table(kind))

    def events(self, project: str, kind: str, iid: int) -> list[dict[str, Any]]:
        """Ground truth of an item's history, oldest first (rows of one instant in the order
        GitLab writes them): `{"type": "state", "at", "actor", "state"}`, `{"type": "label",
        "at", "actor", "label", "action"}` or `{"type": "note", "at", "actor", "body",
        "system"}`; `at` is an aware UTC datetime. The item's creation is not an event."""
        with self._lock:
            return [_truth(e) for e in self._world.item(project, kind, iid).events]

    # ------------------------------------------------------------------ scenario building

    def _change(self, project: str, kind: str, iid: int, apply: Callable[[Item], None]) -> None:
        with self._lock:
            apply(self._world.item(project, kind, iid))
            self._version += 1

    def add_issue(
        self,
        project: str,
        *,
        created: datetime,
        title: str = "Scenario issue",
        labels: Sequence[str] = (),
        issue_type: str = "issue",
        description: str = "",
        author: str = VIEWER,
    ) -> int:
        """Open an issue (no state event; `created` starts its history) and return its iid.
        `labels` are added at `created`."""
        return self._create(
            project, ISSUE, created, title, labels, description, author, issue_type=issue_type
        )

    def add_merge_request(
        self,
        project: str,
        *,
        created: datetime,
        title: str = "Scenario merge request",
        draft: bool = False,
        labels: Sequence[str] = (),
        description: str = "",
        author: str = VIEWER,
    ) -> int:
        """Open a merge request and return its iid (merge requests have their own iid
        sequence). A draft's title starts with `Draft: `, as on GitLab."""
        return self._create(
            project, MERGE_REQUEST, created, title, labels, description, author, draft=draft
        )

    def _create(
        self,
        project: str,
        kind: str,
        created: datetime,
        title: str,
        labels: Sequence[str],
        description: str,
        author: str,
        *,
        issue_type: str = "issue",
        draft: bool = False,
    ) -> int:
        with self._lock:
            item = self._world.create(
                self._world.project(project),
                kind,
                created=to_ms(created),
                title=title,
                author=author,
                description=description,
                labels=labels,
                issue_type=issue_type,
                draft=draft,
            )
            self._version += 1
            return item.iid

    def add_label(self, project: str, kind: str, iid: int, name: str, at: datetime) -> None:
        """Add a label (label event `add`). A scoped label `scope::value` replaces the item's
        other label of that scope: `add` then `remove`, both at `at`, as GitLab writes them."""
        self._change(project, kind, iid, lambda i: self._world.label(i, name, to_ms(at), VIEWER))

    def remove_label(self, project: str, kind: str, iid: int, name: str, at: datetime) -> None:
        """Remove a label (label event `remove`)."""
        self._change(project, kind, iid, lambda i: self._world.unlabel(i, name, to_ms(at), VIEWER))

    def delete(self, project: str, kind: str, iid: int) -> None:
        """Delete an issue or merge request: it disappears from every endpoint, and from the
        links of the items it was linked to."""
        with self._lock:
            item = self._world.item(project, kind, iid)
            del self._world.project(project).table(kind)[iid]
            for other in self._world.items():
                other.links = [x for x in other.links if item not in (x.source, x.target)]
            self._version += 1

    def close(self, project: str, kind: str, iid: int, at: datetime) -> None:
        """Close (state event `closed`); a merge request is closed unmerged."""
        self._change(project, kind, iid, lambda i: self._world.close(i, to_ms(at), VIEWER))

    def reopen(self, project: str, kind: str, iid: int, at: datetime) -> None:
        """Reopen (state event `reopened`)."""
        self._change(project, kind, iid, lambda i: self._world.reopen(i, to_ms(at), VIEWER))

    def merge(self, project: str, iid: int, at: datetime) -> None:
        """Merge (state event `merged`; `closed_at` stays null, as on GitLab)."""
        self._change(project, MERGE_REQUEST, iid, lambda i: self._world.merge(i, to_ms(at), VIEWER))

    def set_draft(self, project: str, iid: int, draft: bool, at: datetime) -> None:
        """Mark a merge request draft or ready (system note)."""
        self._change(
            project,
            MERGE_REQUEST,
            iid,
            lambda i: self._world.set_draft(i, draft, to_ms(at), VIEWER),
        )

    def add_reviewer(self, project: str, iid: int, login: str, at: datetime) -> None:
        """Request a review (system note `requested review from @login`)."""
        self._change(
            project,
            MERGE_REQUEST,
            iid,
            lambda i: self._world.request_review(i, login, to_ms(at), VIEWER),
        )

    def approve(self, project: str, iid: int, login: str, at: datetime) -> None:
        """Approve as `login` (system note `approved this merge request` by `login`)."""
        self._change(
            project, MERGE_REQUEST, iid, lambda i: self._world.approve(i, login, to_ms(at))
        )

    def set_status(self, project: str, iid: int, status: str, at: datetime) -> None:
        """Set an issue's work item Status (system note `set status to **In progress**`);
        one of To do, In progress, Done, Won't do, Duplicate."""
        self._change(
            project, ISSUE, iid, lambda i: self._world.set_status(i, status, to_ms(at), VIEWER)
        )

    def assign(self, project: str, kind: str, iid: int, login: str, at: datetime) -> None:
        """Assign `login` (system note `assigned to @login`)."""
        self._change(project, kind, iid, lambda i: self._world.assign(i, login, to_ms(at), VIEWER))

    def comment(
        self, project: str, kind: str, iid: int, body: str, at: datetime, author: str = VIEWER
    ) -> None:
        """A comment (a note with `system` false)."""
        self._change(project, kind, iid, lambda i: self._world.comment(i, body, to_ms(at), author))

    def link_issues(
        self,
        project: str,
        iid: int,
        other_project: str,
        other_iid: int,
        link_type: str = "relates_to",
        at: datetime | None = None,
    ) -> None:
        """Link two issues; `link_type` (relates_to, blocks, is_blocked_by) is how the first
        sees the second. Both get a system note (`marked this issue as blocking #2`) at `at`,
        by default one millisecond after the later of their last changes."""
        with self._lock:
            source = self._world.item(project, ISSUE, iid)
            target = self._world.item(other_project, ISSUE, other_iid)
            when = to_ms(at) if at is not None else max(source.last_change, target.last_change) + 1
            self._world.link(source, target, link_type, when, VIEWER)
            self._version += 1

    def mutate(self, count: int, at: datetime | None = None) -> list[tuple[str, str, int]]:
        """Give `count` seeded-random items one plausible next change at `at` (default: the
        clock). Open items go first; merged merge requests never change. When `at` is not
        after an item's last change, the change lands 1 ms after it. Returns (project, kind,
        iid) of the items changed, in order."""
        if count < 0:
            raise ValueError(f"count must not be negative, not {count}")
        when = to_ms(at if at is not None else self._clock())
        with self._lock:
            rng = self._mutate_rng
            movable = [i for i in self._world.items() if i.state != "merged"]
            opened = [i for i in movable if i.state == "opened"]
            picked = rng.sample(opened, min(count, len(opened)))
            others = [i for i in movable if i.state != "opened"]
            picked.extend(rng.sample(others, min(count - len(picked), len(others))))
            for item in picked:
                advance(self._world, rng, item, max(when, item.last_change + 1))
            self._version += 1
            return [(i.project.full_path, i.kind, i.iid) for i in picked]

    # ------------------------------------------------------------------ HTTP

    def _error(self, status: int, message: str) -> Response:
        return Response(status, {"message": message})

    def _stats(self) -> dict[str, Json]:
        counts = dict.fromkeys(TABLES, 0)
        issues = merge_requests = 0
        for item in self._world.items():
            if item.kind == ISSUE:
                issues += 1
            else:
                merge_requests += 1
            for event in item.events:
                counts[event.kind] += 1
        return {
            "projects": len(self._world.projects),
            "groups": len(self._world.groups),
            "issues": issues,
            "merge_requests": merge_requests,
            "state_events": counts[STATE],
            "label_events": counts[LABEL],
            "notes": counts[NOTE],
        }

    def _api(self, request: ApiRequest) -> Response:
        now = math.floor(self._clock().timestamp())
        minute, observed = self._window
        if now // 60 != minute:
            minute, observed = now // 60, 0
        observed += 1
        self._window = (minute, observed)
        reset = (minute + 1) * 60
        request_id = hashlib.sha256(f"{self.seed}:{request.number}".encode()).hexdigest()[:26]
        limits = {
            "RateLimit-Name": "throttle_authenticated_api",
            "RateLimit-Limit": str(RATE_LIMIT),
            "RateLimit-Observed": str(observed),
            "RateLimit-Remaining": str(max(0, RATE_LIMIT - observed)),
            "RateLimit-Reset": str(reset),
            "RateLimit-ResetTime": email.utils.formatdate(reset, usegmt=True),
        }
        if self.rate_limit_every > 0 and request.number % self.rate_limit_every == 0:
            until = now + self.retry_after
            headers = {
                **limits,
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(until),
                "RateLimit-ResetTime": email.utils.formatdate(until, usegmt=True),
                "Retry-After": str(self.retry_after),
                "Content-Type": "text/plain",
            }
            return Response(429, None, headers, raw=b"Retry later\n")
        try:
            if request.path.rstrip("/") == GRAPHQL:
                response = self._graphql(request)
            else:
                self._authenticate(request.headers)
                if request.method not in ("GET", "HEAD"):
                    raise _GitLabError(405, "405 Method Not Allowed")
                response = self._route(request.path, request.query)
        except _GitLabError as error:
            response = error.response()
        response.headers = {
            "Cache-Control": "max-age=0, private, must-revalidate",
            "X-Request-Id": request_id,
            **limits,
            **response.headers,
        }
        return response

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        if self.token is None:
            return
        if not hmac.compare_digest(self._supplied_token(headers).encode(), self.token.encode()):
            raise _GitLabError(401, "401 Unauthorized")

    @staticmethod
    def _supplied_token(headers: Mapping[str, str]) -> str:
        supplied = headers.get("private-token")
        if supplied is None:
            scheme, _, value = headers.get("authorization", "").strip().partition(" ")
            supplied = value.strip() if scheme.lower() == "bearer" else ""
        return supplied

    def _graphql(self, request: ApiRequest) -> Response:
        """`/api/graphql`: GET or POST, anonymous without a token, 401 with a wrong one."""
        if not self.graphql or request.method not in ("GET", "POST"):
            raise _route_not_found()
        if self.graphql_forbidden:
            raise _GitLabError(403, "403 Forbidden")
        supplied = self._supplied_token(request.headers)
        authenticated = self.token is None or bool(supplied)
        if (
            self.token is not None
            and supplied
            and not hmac.compare_digest(supplied.encode(), self.token.encode())
        ):
            return Response(401, {"errors": [{"message": "Invalid token"}]})
        if request.method == "GET":
            body: Json = {name: values[0] for name, values in request.query.items() if values}
        elif request.body_error:
            return Response(400, {"errors": [{"message": "Request body is not valid JSON"}]})
        else:
            body = request.body
        query = body.get("query") if isinstance(body, dict) else None
        if isinstance(query, str) and len(query) > gitlab_graphql.MAX_QUERY_SIZE:
            return Response(422, {"errors": [{"message": "Query too large"}]})
        context = gitlab_graphql.GraphQLRequest(
            self._world, self._base, authenticated, self.graphql_iids_complexity
        )
        return Response(
            200, gitlab_graphql.run(context, body, notes_filter=self.graphql_notes_filter)
        )

    # ------------------------------------------------------------------ routing

    def _route(self, path: str, query: Query) -> Response:
        if not path.startswith(API + "/"):
            raise _route_not_found()
        rest = path[len(API) + 1 :].strip("/")
        if rest == "user":
            return Response(200, self._viewer_json())
        if rest == "version":
            return Response(
                200,
                {
                    "version": "17.6.0-ee",
                    "revision": "5eed0a1b",
                    "kas": {"enabled": False, "externalUrl": None, "version": None},
                    "enterprise": True,
                },
            )
        head, _, named = rest.partition("/")
        if head == "projects" and named:
            return self._project_route(self._target(named, projects=True), query)
        if head == "groups" and named:
            return self._group_route(self._target(named, projects=False), query)
        raise _route_not_found()

    def _target(self, named: str, *, projects: bool) -> _Target:
        """Split `acme/web/issues/3` (decoded `acme%2Fweb/issues/3`) or `52000001/issues/3`
        into the project or group and the rest; 404 when no known one matches."""
        parts = named.split("/")
        found: Project | Group | None = None
        used = 1
        if parts[0].isdigit():
            number = int(parts[0])
            found = (self._by_project_id if projects else self._by_group_id).get(number)
            prefix = parts[0]
        else:
            known: Mapping[str, Project | Group] = (
                self._world.projects if projects else self._world.groups
            )
            lowered = {path.lower(): value for path, value in known.items()}
            for used in range(len(parts), 0, -1):
                found = lowered.get("/".join(parts[:used]).lower())
                if found is not None:
                    break
            prefix = quote(found.full_path, safe="") if found is not None else ""
        if found is None:
            raise _GitLabError(404, f"404 {'Project' if projects else 'Group'} Not Found")
        base = f"{API}/{'projects' if projects else 'groups'}/{prefix}"
        if isinstance(found, Project):
            return _Target(base, found, None, parts[used:])
        return _Target(base, None, found, parts[used:])

    def _project_route(self, target: _Target, query: Query) -> Response:
        project, tail = target.project, target.tail
        assert project is not None
        if not tail:
            return Response(200, self._project_json(project))
        kind = _SEGMENTS.get(tail[0])
        if kind is None:
            raise _route_not_found()
        if len(tail) == 1:
            link = f"{target.prefix}/{tail[0]}"
            return self._list_items(kind, [project], query, link, self.keyset)
        if not tail[1].isdigit():
            raise _route_not_found()
        item = project.table(kind).get(int(tail[1]))
        if item is None:
            raise _GitLabError(404, f"404 {_NOT_FOUND_NAMES[kind]} Not Found")
        link = f"{target.prefix}/{tail[0]}/{tail[1]}"
        if len(tail) == 2:
            return Response(200, self._item_json(item))
        if len(tail) == 3:
            what = tail[2]
            if what in _EVENT_TABLES:
                rows = [e for e in item.events if e.kind == _EVENT_TABLES[what]]
                page, headers = self._offset_page(rows, query, f"{link}/{what}", True)
                render = self._state_json if what == "resource_state_events" else self._label_json
                return Response(200, [render(item, e) for e in page], headers)
            if what == "resource_milestone_events":
                page, headers = self._offset_page([], query, f"{link}/{what}", True)
                return Response(200, [], headers)
            if what == "notes":
                return self._notes(item, query, f"{link}/notes")
            if what == "links" and kind == ISSUE:
                return Response(200, [self._link_json(item, link_) for link_ in item.links])
        raise _route_not_found()

    def _group_route(self, target: _Target, query: Query) -> Response:
        group, tail = target.group, target.tail
        assert group is not None
        if not tail:
            return Response(200, self._group_json(group))
        if len(tail) != 1:
            raise _route_not_found()
        inside = [p for p in self._world.projects.values() if group.contains(p)]
        link = f"{target.prefix}/{tail[0]}"
        if tail[0] == "projects":
            return self._group_projects(group, inside, query, link)
        kind = _SEGMENTS.get(tail[0])
        if kind is None:
            raise _route_not_found()
        return self._list_items(kind, inside, query, link, False)

    # ------------------------------------------------------------------ paging

    def _url(self, path: str, query: Query, **changes: str | None) -> str:
        pairs = [(k, v) for k, values in query.items() if k not in changes for v in values]
        pairs += [(k, v) for k, v in changes.items() if v is not None]
        return f"{self._base}{path}?{urlencode(pairs, quote_via=quote)}"

    def _offset_page(
        self, rows: Sequence[Any], query: Query, path: str, counted: bool
    ) -> tuple[Sequence[Any], dict[str, str]]:
        """GitLab's offset pagination of `rows`: the page and its headers."""
        per_page = min(_number(query, "per_page", PER_PAGE_DEFAULT), PER_PAGE_MAX)
        page = _number(query, "page", 1)
        total = len(rows)
        pages = max(1, math.ceil(total / per_page))
        counted = counted and total <= COUNTED_ROWS_MAX
        more = page * per_page < total
        headers = {
            "X-Page": str(page),
            "X-Per-Page": str(per_page),
            "X-Next-Page": str(page + 1) if more else "",
            "X-Prev-Page": str(page - 1) if page > 1 else "",
        }
        links = []
        if page > 1:
            links.append((self._url(path, query, page=str(page - 1)), "prev"))
        if more:
            links.append((self._url(path, query, page=str(page + 1)), "next"))
        links.append((self._url(path, query, page="1"), "first"))
        if counted:
            headers["X-Total"] = str(total)
            headers["X-Total-Pages"] = str(pages)
            links.append((self._url(path, query, page=str(pages)), "last"))
        headers["Link"] = ", ".join(f'<{url}>; rel="{rel}"' for url, rel in links)
        return rows[(page - 1) * per_page : page * per_page], headers

    def _sorted(
        self, kind: str, projects: Sequence[Project], chosen: _Filter, order_by: str, sort: str
    ) -> _Sorted:
        """The matching items in listing order; cached until the data changes."""
        cache_key = (kind, tuple(p.id for p in projects), chosen, order_by, sort, self._version)
        cached = self._sorted_cache.get(cache_key)
        if cached is not None:
            return cached
        value = _ORDERS[order_by]
        sign = -1 if sort == "desc" else 1
        keyed = sorted(
            ((sign * value(item), sign * item.id), item)
            for project in projects
            for item in project.table(kind).values()
            if chosen.matches(item)
        )
        result = _Sorted([item for _, item in keyed], [key for key, _ in keyed])
        return self._sorted_cache.put(cache_key, result)

    def _list_items(
        self, kind: str, projects: Sequence[Project], query: Query, path: str, keyset: bool
    ) -> Response:
        raw_iids = query.get("iids[]") or query.get("iids")
        try:
            iids = frozenset(int(v) for v in raw_iids) if raw_iids else None
        except ValueError:
            raise _invalid("iids") from None
        raw_labels = _param(query, "labels") or ""
        chosen = _Filter(
            state=_one_of(query, "state", _STATES[kind], "all"),
            scope=_one_of(query, "scope", _SCOPES, "all"),
            updated=(_instant(query, "updated_after"), _instant(query, "updated_before")),
            created=(_instant(query, "created_after"), _instant(query, "created_before")),
            iids=iids,
            labels=tuple(name.strip() for name in raw_labels.split(",") if name.strip()),
        )
        order_by = _one_of(query, "order_by", tuple(_ORDERS), "created_at")
        sort = _one_of(query, "sort", ("asc", "desc"), "desc")
        ordered = self._sorted(kind, projects, chosen, order_by, sort)
        if keyset and _param(query, "pagination") == "keyset":
            listing_id = repr(
                (
                    path,
                    chosen.state,
                    chosen.scope,
                    chosen.updated,
                    chosen.created,
                    sorted(iids or ()),
                    chosen.labels,
                    order_by,
                    sort,
                )
            )
            scope = hashlib.sha256(listing_id.encode()).hexdigest()[:16]
            rows, headers = self._keyset_page(ordered, query, path, scope)
        else:
            page = _number(query, "page", 1)
            if keyset and self.offset_page_cap is not None and page > self.offset_page_cap:
                raise self._offset_refused(kind, query)
            rows, headers = self._offset_page(ordered.rows, query, path, True)
        return Response(200, [self._item_json(item) for item in rows], headers)

    def _offset_refused(self, kind: str, query: Query) -> _GitLabError:
        """gitlab.com's answer to an offset page beyond its limit where keyset works."""
        per_page = min(_number(query, "per_page", PER_PAGE_DEFAULT), PER_PAGE_MAX)
        limit = (self.offset_page_cap or 0) * per_page
        model = "Issue" if kind == ISSUE else "MergeRequest"
        return _GitLabError(
            405,
            f"Offset pagination has a maximum allowed offset of {limit} for requests that "
            f"return objects of type {model}. Remaining records can be retrieved using keyset "
            "pagination.",
            "error",
        )

    def _keyset_page(
        self, ordered: _Sorted, query: Query, path: str, scope: str
    ) -> tuple[Sequence[Item], dict[str, str]]:
        """A page after the cursor's key; `scope` ties cursors to the listing they came from."""
        per_page = min(_number(query, "per_page", PER_PAGE_DEFAULT), PER_PAGE_MAX)
        start = 0
        cursor = _param(query, "cursor")
        if cursor:
            opened = self._signer.open(cursor)
            if not (isinstance(opened, list) and len(opened) == 3 and opened[0] == scope):
                raise _invalid("cursor")
            start = bisect.bisect_right(ordered.keys, (opened[1], opened[2]))
        rows = ordered.rows[start : start + per_page]
        headers: dict[str, str] = {}
        end = start + len(rows)
        if rows and end < len(ordered.rows):
            token = self._signer.sign([scope, *ordered.keys[end - 1]])
            url = self._url(path, query, page=None, cursor=token)
            headers["Link"] = f'<{url}>; rel="next"'
        return rows, headers

    def _notes(self, item: Item, query: Query, path: str) -> Response:
        # notes are never edited, so ordering by updated_at is ordering by created_at
        _one_of(query, "order_by", ("created_at", "updated_at"), "created_at")
        sort = _one_of(query, "sort", ("asc", "desc"), "desc")
        activity = _one_of(
            query, "activity_filter", ("all_notes", "only_comments", "only_activity"), "all_notes"
        )
        notes = [
            e
            for e in item.events
            if e.kind == NOTE
            and (activity == "all_notes" or e.system == (activity == "only_activity"))
        ]
        notes.sort(key=lambda e: (e.at, e.id), reverse=sort == "desc")
        page, headers = self._offset_page(notes, query, path, True)
        return Response(200, [self._note_json(item, e) for e in page], headers)

    def _group_projects(
        self, group: Group, inside: list[Project], query: Query, path: str
    ) -> Response:
        subgroups = (_param(query, "include_subgroups") or "false").lower() == "true"
        chosen = inside if subgroups else list(group.projects)
        order_by = _one_of(
            query,
            "order_by",
            ("id", "name", "path", "created_at", "updated_at", "last_activity_at"),
            "created_at",
        )
        sort = _one_of(query, "sort", ("asc", "desc"), "desc")
        if order_by in ("name", "path"):
            chosen = sorted(chosen, key=lambda p: (p.path.lower(), p.id))
        elif order_by in ("updated_at", "last_activity_at"):
            chosen = sorted(chosen, key=lambda p: (self._project_activity(p), p.id))
        else:
            chosen = sorted(chosen, key=lambda p: (p.created, p.id))
        if sort == "desc":
            chosen.reverse()
        page, headers = self._offset_page(chosen, query, path, True)
        return Response(200, [self._project_json(p) for p in page], headers)

    # ------------------------------------------------------------------ rendering

    def _user_json(self, login: str) -> Json:
        """GitLab's UserBasic of `login`; built once per login (and base URL)."""
        if self._people_base != self._base:
            self._people, self._people_base = {}, self._base
        person = self._people.get(login)
        if person is None:
            number = user_id(login)
            person = self._people[login] = {
                "id": number,
                "username": login,
                "name": user_name(login),
                "state": "active",
                "avatar_url": f"{self._base}/uploads/-/system/user/avatar/{number}/avatar.png",
                "web_url": f"{self._base}/{login}",
            }
        return person

    def _viewer_json(self) -> Json:
        created = iso_ms(to_ms(self.anchor) - 3000 * DAY_MS)
        return {
            **self._user_json(VIEWER),
            "locked": False,
            "created_at": created,
            "bio": "",
            "location": "",
            "public_email": None,
            "linkedin": "",
            "twitter": "",
            "website_url": "",
            "organization": "",
            "job_title": "",
            "bot": False,
            "last_sign_in_at": created,
            "confirmed_at": created,
            "last_activity_on": iso_ms(to_ms(self.anchor))[:10],
            "email": f"{VIEWER}@example.com",
            "projects_limit": 100000,
            "can_create_group": True,
            "can_create_project": True,
            "two_factor_enabled": True,
            "external": False,
            "private_profile": False,
        }

    def _project_activity(self, project: Project) -> int:
        latest = project.created
        for table in (project.issues, project.merge_requests):
            for item in table.values():
                latest = max(latest, item.updated)
        return latest

    def _namespace_json(self, group: Group) -> Json:
        return {
            "id": group.id,
            "name": group.path,
            "path": group.path,
            "kind": "group",
            "full_path": group.full_path,
            "parent_id": group.parent.id if group.parent else None,
            "avatar_url": None,
            "web_url": f"{self._base}/groups/{group.full_path}",
        }

    def _group_json(self, group: Group) -> Json:
        names = []
        node: Group | None = group
        while node is not None:
            names.append(node.path)
            node = node.parent
        return {
            "id": group.id,
            "web_url": f"{self._base}/groups/{group.full_path}",
            "name": group.path,
            "path": group.path,
            "description": "",
            "visibility": "private",
            "full_name": " / ".join(reversed(names)),
            "full_path": group.full_path,
            "created_at": iso_ms(group.created),
            "parent_id": group.parent.id if group.parent else None,
            "avatar_url": None,
        }

    def _project_json(self, project: Project) -> Json:
        web = f"{self._base}/{project.full_path}"
        api = f"{self._base}{API}/projects/{project.id}"
        group = project.group
        opened = sum(1 for i in project.issues.values() if i.state == "opened")
        return {
            "id": project.id,
            "description": f"The {project.path} project (simulated).",
            "name": project.path,
            "name_with_namespace": " / ".join(project.full_path.split("/")),
            "path": project.path,
            "path_with_namespace": project.full_path,
            "created_at": iso_ms(project.created),
            "default_branch": "main",
            "tag_list": [],
            "topics": [],
            "ssh_url_to_repo": f"git@127.0.0.1:{project.full_path}.git",
            "http_url_to_repo": f"{web}.git",
            "web_url": web,
            "readme_url": f"{web}/-/blob/main/README.md",
            "forks_count": 0,
            "avatar_url": None,
            "star_count": 0,
            "last_activity_at": iso_ms(self._project_activity(project)),
            "namespace": self._namespace_json(group),
            "_links": {
                "self": api,
                "issues": f"{api}/issues",
                "merge_requests": f"{api}/merge_requests",
                "repo_branches": f"{api}/repository/branches",
                "labels": f"{api}/labels",
                "events": f"{api}/events",
                "members": f"{api}/members",
                "cluster_agents": f"{api}/cluster_agents",
            },
            "empty_repo": False,
            "archived": False,
            "visibility": "private",
            "issues_enabled": True,
            "merge_requests_enabled": True,
            "open_issues_count": opened,
        }

    def _item_json(self, item: Item) -> Json:
        return self._issue_json(item) if item.kind == ISSUE else self._mr_json(item)

    def _issue_json(self, item: Item) -> Json:
        project = item.project
        api = f"{self._base}{API}/projects/{project.id}"
        assignees = [self._user_json(login) for login in item.assignees]
        blocking = sum(
            1
            for link in item.links
            if link.seen_from(item)[1] == "blocks" and link.seen_from(item)[0].state == "opened"
        )
        return {
            "id": item.id,
            "iid": item.iid,
            "project_id": project.id,
            "title": item.title,
            "description": item.description,
            "state": item.state,
            "created_at": iso_ms(item.created),
            "updated_at": iso_ms(item.updated),
            "closed_at": iso_ms(item.closed_at) if item.closed_at is not None else None,
            "closed_by": self._user_json(item.closed_by) if item.closed_by else None,
            "labels": sorted(item.labels),
            "milestone": None,
            "assignees": assignees,
            "author": self._user_json(item.author),
            "type": item.issue_type.upper(),
            "assignee": assignees[0] if assignees else None,
            "user_notes_count": item.user_notes,
            "merge_requests_count": 0,
            "upvotes": 0,
            "downvotes": 0,
            "due_date": None,
            "confidential": False,
            "discussion_locked": None,
            "issue_type": item.issue_type,
            "web_url": f"{self._base}/{project.full_path}/-/issues/{item.iid}",
            "time_stats": _TIME_STATS,
            "task_completion_status": {"count": 0, "completed_count": 0},
            "weight": None,
            "blocking_issues_count": blocking,
            "has_tasks": False,
            "_links": {
                "self": f"{api}/issues/{item.iid}",
                "notes": f"{api}/issues/{item.iid}/notes",
                "award_emoji": f"{api}/issues/{item.iid}/award_emoji",
                "project": api,
                "closed_as_duplicate_of": None,
            },
            "references": self._references(item),
            "severity": "UNKNOWN",
            "moved_to_id": None,
            "service_desk_reply_to": None,
            "epic_iid": None,
            "epic": None,
            "iteration": None,
            "health_status": None,
        }

    def _references(self, item: Item) -> Json:
        return {"short": item.ref, "relative": item.ref, "full": item.name()}

    def _mr_json(self, item: Item) -> Json:
        project = item.project
        assignees = [self._user_json(login) for login in item.assignees]
        merged_by = self._user_json(item.merged_by) if item.merged_by else None
        sha = hashlib.sha1(f"{item.name()}:{item.updated}".encode()).hexdigest()
        merge_sha = hashlib.sha1(f"{item.name()}:merge".encode()).hexdigest()
        if item.state != "opened":
            detailed = "not_open"
        elif item.draft:
            detailed = "draft_status"
        elif not item.approved_by:
            detailed = "not_approved"
        else:
            detailed = "mergeable"
        return {
            "id": item.id,
            "iid": item.iid,
            "project_id": project.id,
            "title": item.title,
            "description": item.description,
            "state": item.state,
            "created_at": iso_ms(item.created),
            "updated_at": iso_ms(item.updated),
            "merged_by": merged_by,
            "merge_user": merged_by,
            "merged_at": iso_ms(item.merged_at) if item.merged_at is not None else None,
            "closed_by": self._user_json(item.closed_by) if item.closed_by else None,
            "closed_at": iso_ms(item.closed_at) if item.closed_at is not None else None,
            "target_branch": "main",
            "source_branch": f"{item.iid}-{item.title.lower().replace(' ', '-')[:40]}",
            "user_notes_count": item.user_notes,
            "upvotes": 0,
            "downvotes": 0,
            "author": self._user_json(item.author),
            "assignees": assignees,
            "assignee": assignees[0] if assignees else None,
            "reviewers": [self._user_json(login) for login in item.reviewers],
            "source_project_id": project.id,
            "target_project_id": project.id,
            "labels": sorted(item.labels),
            "draft": item.draft,
            "work_in_progress": item.draft,
            "milestone": None,
            "merge_when_pipeline_succeeds": False,
            "merge_status": "can_be_merged",
            "detailed_merge_status": detailed,
            "sha": sha,
            "merge_commit_sha": merge_sha if item.state == "merged" else None,
            "squash_commit_sha": None,
            "discussion_locked": None,
            "should_remove_source_branch": None,
            "force_remove_source_branch": True,
            "prepared_at": iso_ms(item.created),
            "reference": item.ref,
            "references": self._references(item),
            "web_url": f"{self._base}/{project.full_path}/-/merge_requests/{item.iid}",
            "time_stats": _TIME_STATS,
            "squash": False,
            "squash_on_merge": False,
            "task_completion_status": {"count": 0, "completed_count": 0},
            "has_conflicts": False,
            "blocking_discussions_resolved": True,
            "approvals_before_merge": None,
        }

    def _state_json(self, item: Item, event: Event) -> Json:
        return {
            "id": event.id,
            "user": self._user_json(event.actor),
            "created_at": iso_ms(event.at),
            "resource_type": item.resource_type,
            "resource_id": item.id,
            "state": event.state,
        }

    def _label_json(self, item: Item, event: Event) -> Json:
        name = event.label or ""
        return {
            "id": event.id,
            "user": self._user_json(event.actor),
            "created_at": iso_ms(event.at),
            "resource_type": item.resource_type,
            "resource_id": item.id,
            "label": {
                "id": label_id(item.project.top_namespace, name),
                "name": name,
                "color": LABEL_COLORS.get(name, "#6699cc"),
                "description": "",
            },
            "action": event.action,
        }

    def _note_json(self, item: Item, event: Event) -> Json:
        return {
            "id": event.id,
            "type": None,
            "body": event.body,
            "attachment": None,
            "author": self._user_json(event.actor),
            "created_at": iso_ms(event.at),
            "updated_at": iso_ms(event.at),
            "system": event.system,
            "noteable_id": item.id,
            "noteable_type": item.resource_type,
            "project_id": item.project.id,
            "resolvable": False,
            "confidential": False,
            "internal": False,
            "noteable_iid": item.iid,
            "commands_changes": {},
        }

    def _link_json(self, item: Item, link: Any) -> Json:
        other, link_type = link.seen_from(item)
        return {
            **self._issue_json(other),
            "issue_link_id": link.id,
            "link_type": link_type,
            "link_created_at": iso_ms(link.at),
            "link_updated_at": iso_ms(link.at),
        }


_TIME_STATS: Json = {
    "time_estimate": 0,
    "total_time_spent": 0,
    "human_time_estimate": None,
    "human_total_time_spent": None,
}


def _truth(event: Event) -> dict[str, Any]:
    truth: dict[str, Any] = {"type": event.kind, "at": from_ms(event.at), "actor": event.actor}
    if event.kind == STATE:
        truth["state"] = event.state
    elif event.kind == LABEL:
        truth.update(label=event.label, action=event.action)
    else:
        truth.update(body=event.body, system=event.system)
    return truth


# ---------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `syncd simulate gitlab`, separate so the main CLI can embed it."""
    parser = argparse.ArgumentParser(
        prog="syncd simulate gitlab",
        description="Serve a deterministic fake GitLab (REST API v4 and GraphQL) on 127.0.0.1 "
        "until SIGINT/SIGTERM.",
    )
    add_serving_arguments(parser)
    parser.add_argument("--projects", default="acme/web", help="comma-separated full project paths")
    parser.add_argument("--issues", type=int, default=50, help="generated issues per project")
    parser.add_argument(
        "--merge-requests", type=int, default=50, help="generated merge requests per project"
    )
    parser.add_argument("--rate-limit-every", type=int, default=0, help="every Nth request → 429")
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds on 429")
    parser.add_argument(
        "--no-keyset", action="store_true", help="ignore pagination=keyset (offset pages only)"
    )
    parser.add_argument(
        "--offset-page-cap", type=int, default=None, help="deepest offset page allowed"
    )
    parser.add_argument("--no-graphql", action="store_true", help="answer /api/graphql with 404")
    parser.add_argument(
        "--graphql-forbidden", action="store_true", help="answer /api/graphql with 403"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """`syncd simulate gitlab`: serve until SIGINT/SIGTERM, then return 0 (2 for bad options)."""
    return run_cli(build_parser(), argv, _from_options)


def _from_options(args: argparse.Namespace) -> tuple[GitLabSimulator, Callable[[str], str]]:
    projects = [p.strip() for p in args.projects.split(",") if p.strip()]
    if not projects:
        raise CliError("--projects needs at least one group/project path")
    sim = GitLabSimulator(
        **serving_options(args),
        projects=projects,
        issues=args.issues,
        merge_requests=args.merge_requests,
        keyset=not args.no_keyset,
        offset_page_cap=args.offset_page_cap,
        rate_limit_every=args.rate_limit_every,
        retry_after=args.retry_after,
        graphql=not args.no_graphql,
        graphql_forbidden=args.graphql_forbidden,
    )
    items = len(projects) * (args.issues + args.merge_requests)
    return sim, lambda url: f"simulator: gitlab on {url} ({len(projects)} projects, {items} items)"


if __name__ == "__main__":
    sys.exit(main())
