"""A deterministic fake Jira (Cloud or Data Center) for syncd's demo, tests and benchmarks.

`JiraSimulator` holds seeded issues with full status histories in memory and serves the
subset of Jira's REST API that syncd uses, on 127.0.0.1, with the shapes recorded from real
sites (see tests/test_simulator_fixture_shapes.py). It reproduces the behaviours a sync
client gets wrong: cursor paging without totals, page-size caps, truncated embedded
changelogs, minute-precision JQL dates read in the user's zone, DST-varying offsets, 410 for
the removed Cloud search, 429 with Retry-After, 401 without echoing credentials.

Deployment differences (all deliberate, mirroring real sites):

==========================  ==============================  ================================
                            cloud                           datacenter
==========================  ==============================  ================================
API versions                /rest/api/2, /3, /latest        /rest/api/2, /latest (3 → 404)
search                      GET|POST search/jql (cursor);   GET|POST /rest/api/2/search
                            /search → 410 Gone              (startAt/total)
changelog endpoints         issue/{k}/changelog, bulkfetch  none (404): use expand=changelog
embedded changelog          most recent N, newest first     search: oldest N, oldest first;
                                                            single issue: all, oldest first
users                       accountId                       name/key (no accountId)
history items               carry fieldId (most fields)     no fieldId
auth (when configured)      Basic email:token               Bearer token
==========================  ==============================  ================================

Paging, as a client sees it:

- `search/jql` (Cloud): `maxResults` must be 1..5000 (else 400); pages hold at most 100
  issues when any field other than id/key or `expand=changelog` is asked, 5000 otherwise;
  the default is 50, and without `fields` issues are `{"id": ...}` only, as on Cloud. Pages
  have `issues` and `isLast`, never `total`; `nextPageToken` is present exactly when
  `isLast` is false. The token is opaque and tamper-evident: it carries the sort key of the
  last issue served and a digest of the JQL, so the next page starts after that issue even
  when issues changed in between (a changed issue may be served again, none is skipped); a
  garbled token, or one sent with a different JQL, gets 400. Unbounded JQL (no condition)
  gets 400, as on Cloud. Without ORDER BY, issues come in `key DESC` order.
- `/rest/api/2/search` (Data Center): `startAt`/`maxResults` (capped at 1000)/`total`; the
  result is re-evaluated per request, so changes between pages shift offsets, as on Jira.
- `changelog/bulkfetch`: histories of all requested issues ordered by (created, issue id,
  history id), `maxResults` (1..10000, default 1000) histories a page, grouped into
  `issueChangeLogs` entries per run of consecutive histories of one issue (an issue can
  span pages, and appear twice in a page when its histories interleave with another's).
  `nextPageToken` (a keyset cursor like search's) is absent on the last page. Unknown or
  deleted issue ids/keys are ignored.
- `issue/{k}/changelog`: `startAt`/`maxResults` (max 100), oldest first, `nextPage` URL
  while not `isLast`.

Every Jira API request counts towards `rate_limit_every`, whatever its outcome. Control
endpoints (`/_sim/...`) never need auth, are never rate limited and are not part of
`requests`. Responses are byte-identical for the same generation arguments, apart from the
base URL in `self` links.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import hashlib
import hmac
import json
import random
import re
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from syncd.simulator import jql as jqlmod
from syncd.simulator.common import (
    ApiRequest,
    CursorSigner,
    RequestRecord,
    Response,
    Simulator,
    add_serving_arguments,
    env_secret,
    run_cli,
    serving_options,
)
from syncd.simulator.jira_data import (
    CATEGORIES,
    ISSUE_TYPE_BY_NAME,
    ISSUE_TYPES,
    LINK_TYPE_BY_NAME,
    RESOLUTION_BY_NAME,
    RESOLUTIONS,
    SIM_USER,
    STATUS_BY_NAME,
    STATUSES,
    USERS,
    ChangeItem,
    History,
    Issue,
    Link,
    Renderer,
    StatusDef,
    UserDef,
    apply_status_change,
    from_ms,
    generate,
    issue_type_item,
    next_status,
    to_ms,
)

__all__ = ["JiraSimulator", "RequestRecord", "build_parser", "main"]

Json = Any
HistoryTruth = tuple[datetime, str | None, str, str | None]

SEARCH_DEFAULT = 50
SEARCH_CAP_FIELDS = 100
SEARCH_CAP_IDS = 5000
DC_SEARCH_CAP = 1000
BULK_MAX_ISSUES = 1000
BULK_MAX_FIELDS = 10
BULK_DEFAULT = 1000
BULK_MAX = 10000
CHANGELOG_PAGE_MAX = 100
ISSUE_EXPAND = "operations,versionedRepresentations,editmeta,changelog,renderedFields"
ALL_FIELDS = (
    "summary",
    "status",
    "issuetype",
    "labels",
    "resolution",
    "resolutiondate",
    "created",
    "updated",
    "project",
    "issuelinks",
    "assignee",
    "customfield_10016",
)
_KEY_RE = re.compile(r"^([A-Z][A-Z0-9_]*)-([0-9]+)$")


class _HttpError(Exception):
    def __init__(self, status: int, *messages: str, headers: dict[str, str] | None = None):
        super().__init__(status, messages)
        self.status = status
        self.messages = list(messages)
        self.headers = headers or {}

    def response(self) -> Response:
        return Response(self.status, {"errorMessages": self.messages, "errors": {}}, self.headers)


@dataclass(frozen=True, slots=True)
class _Ctx:
    """Per-request rendering context: where `self` links point and which flavour to speak."""

    base: str
    api: str
    cloud: bool


@dataclass(frozen=True, slots=True)
class _Matches:
    ids: list[int]
    keys: list[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class _Merged:
    rows: list[tuple[int, History]]
    keys: list[tuple[object, ...]]


def _tuples(value: Json) -> Json:
    """JSON arrays back to the tuples sort keys are made of."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _position_after(keys: list[tuple[object, ...]], after: tuple[object, ...]) -> int:
    try:
        return bisect.bisect_right(keys, after)
    except TypeError:  # a cursor of another shape; the MAC makes this unlikely
        raise _HttpError(400, "The provided next page token is invalid or expired.") from None


@dataclass(frozen=True, slots=True)
class _FieldSet:
    names: frozenset[str]  # fields to render inside "fields"
    id_only: bool  # render the issue as {"id": ...} only


def _fieldset(raw: Iterable[str] | None, default_all: bool) -> _FieldSet:
    """Jira's `fields` parameter: names, `*all`/`*navigable`, `-name` exclusions, `id`."""
    tokens = [t.strip() for part in (raw or ()) for t in str(part).split(",") if t.strip()]
    if not tokens:
        if default_all:
            return _FieldSet(frozenset(ALL_FIELDS), False)
        return _FieldSet(frozenset(), True)
    wanted: set[str] = set()
    excluded = {t[1:] for t in tokens if t.startswith("-")}
    for token in tokens:
        if token in ("*all", "*navigable"):
            wanted.update(ALL_FIELDS)
        elif not token.startswith("-"):
            wanted.add(token)
    wanted -= excluded
    names = frozenset(wanted & set(ALL_FIELDS))
    return _FieldSet(names, wanted <= {"id"})


def _expands_changelog(raw: Json) -> bool:
    if raw is None:
        return False
    parts = raw if isinstance(raw, list) else [raw]
    return any(t.strip() == "changelog" for p in parts for t in str(p).split(","))


def _int_param(value: Json, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise _HttpError(400, f"The value '{value}' is invalid for the parameter '{name}'.")
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        message = f"The value '{value}' is invalid for the parameter '{name}'."
        raise _HttpError(400, message) from None


def _first(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


class JiraSimulator(Simulator):
    """A seeded, in-memory Jira site served over HTTP on 127.0.0.1.

    Same `seed`, `anchor`, `items` (and other generation arguments) give byte-identical
    responses. Scenario methods (`add_issue`, `transition`, ...) let tests build exact
    histories; `issue_history` is the ground truth a sync must reproduce.
    """

    server_name = "JiraSimulator/1.0"
    content_type = "application/json;charset=UTF-8"

    def __init__(
        self,
        *,
        items: int = 200,
        seed: int = 1,
        deployment: str = "cloud",
        anchor: datetime | None = None,
        tz: str = "Europe/Berlin",
        email: str | None = None,
        token: str | None = None,
        bulkfetch: bool = True,
        embedded_changelog_limit: int = 100,
        rate_limit_every: int = 0,
        retry_after: int = 1,
        changes_per_item: int = 10,
        clock: Callable[[], datetime] | None = None,
        projects: Sequence[str] = ("DEMO",),
    ) -> None:
        if deployment not in ("cloud", "datacenter"):
            raise ValueError(f"deployment must be 'cloud' or 'datacenter', not {deployment!r}")
        if not projects:
            raise ValueError("at least one project key is needed")
        for key in projects:
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
                raise ValueError(f"invalid project key {key!r}")
        super().__init__(seed=seed, anchor=anchor, token=token, clock=clock)
        self.deployment = deployment
        self.cloud = deployment == "cloud"
        self.tz = tz
        self.email = email
        self.bulkfetch = bulkfetch
        self.embedded_changelog_limit = embedded_changelog_limit
        self.rate_limit_every = rate_limit_every
        self.retry_after = retry_after
        self._render = Renderer(tz)
        self._projects: list[str] = list(dict.fromkeys(projects))
        generated = generate(
            items=items,
            seed=seed,
            anchor_ms=to_ms(self.anchor),
            projects=self._projects,
            changes_per_item=changes_per_item,
        )
        self._issues: dict[int, Issue] = {i.id: i for i in generated}
        self._by_key: dict[str, int] = {i.key: i.id for i in generated}
        self._next_issue_id = 10001 + len(generated)
        self._next_history_id = 100000 + sum(len(i.histories) for i in generated)
        self._next_link_id = 30000
        self._version = 0
        self._mutate_rng = random.Random(f"mutate:{seed}")
        self._signer = CursorSigner(f"syncd-jira-simulator:{seed}")
        self._search_cache: OrderedDict[tuple[str, int], _Matches] = OrderedDict()
        self._bulk_cache: OrderedDict[tuple[str, int], _Merged] = OrderedDict()
        self._user_cache: dict[tuple[str, bool, str], Json] = {}
        self._status_cache: dict[tuple[str, str], Json] = {}

    # ------------------------------------------------------------------ observation

    @property
    def statuses(self) -> list[StatusDef]:
        """The status catalogue (id, name, category key)."""
        return list(STATUSES)

    @property
    def keys(self) -> list[str]:
        """Keys of all live issues, in id order."""
        with self._lock:
            return [issue.key for issue in self._issues.values()]

    def issue_labels(self, key: str) -> list[str]:
        """An issue's current labels."""
        with self._lock:
            return list(self._issue(key).labels)

    def issue_history(self, key: str) -> list[HistoryTruth]:
        """Ground truth of an issue's status history: (at, from, to, resolution after).

        The first entry is the creation: (created, None, initial status, None). Only histories
        that change the status appear; `at` is aware UTC with millisecond precision.
        """
        with self._lock:
            issue = self._issue(key)
            truth: list[HistoryTruth] = [(from_ms(issue.created), None, issue.initial_status, None)]
            resolution: str | None = None
            for history in issue.histories:
                change: ChangeItem | None = None
                for item in history.items:
                    if item.field == "resolution":
                        resolution = item.to_string
                    elif item.field == "status":
                        change = item
                if change is not None:
                    assert change.to_string is not None
                    truth.append(
                        (from_ms(history.created), change.from_string, change.to_string, resolution)
                    )
            return truth

    # ------------------------------------------------------------------ scenario building

    def add_issue(
        self,
        *,
        key: str | None = None,
        issue_type: str = "Story",
        summary: str = "Scenario issue",
        created: datetime,
        status: str = "To Do",
        labels: Sequence[str] = (),
        links: Sequence[tuple[str, str, str]] = (),
    ) -> str:
        """Create an issue with no history yet and return its key.

        `links` are (link type name, "outward"|"inward", other key): ("Blocks", "outward",
        "DEMO-2") means this issue blocks DEMO-2. The other issue must exist; it gets the
        mirrored link. Ids continue the sequence of generated issues.
        """
        if issue_type not in ISSUE_TYPE_BY_NAME:
            raise ValueError(f"unknown issue type {issue_type!r}")
        _status_def(status)
        created_ms = to_ms(created)
        with self._lock:
            if key is None:
                project = self._projects[0]
                numbers = [i.number for i in self._issues.values() if i.project == project]
                number = max(numbers, default=0) + 1
                key = f"{project}-{number}"
            match = _KEY_RE.match(key)
            if match is None:
                raise ValueError(f"invalid issue key {key!r}")
            if key in self._by_key:
                raise ValueError(f"issue {key} already exists")
            project, number = match.group(1), int(match.group(2))
            if project not in self._projects:
                self._projects.append(project)
            resolved_links: list[tuple[str, str, Issue]] = []
            for link_type, direction, other_key in links:
                if link_type not in LINK_TYPE_BY_NAME:
                    raise ValueError(f"unknown link type {link_type!r}")
                if direction not in ("outward", "inward"):
                    raise ValueError(f"link direction must be outward or inward, not {direction!r}")
                resolved_links.append((link_type, direction, self._issue(other_key)))
            issue = Issue(
                id=self._next_issue_id,
                key=key,
                project=project,
                number=number,
                summary=summary,
                issue_type=issue_type,
                created=created_ms,
                updated=created_ms,
                status=status,
                initial_status=status,
                labels=list(labels),
            )
            self._next_issue_id += 1
            for link_type, direction, other in resolved_links:
                self._next_link_id += 1
                source, target = (issue, other) if direction == "outward" else (other, issue)
                link = Link(self._next_link_id, LINK_TYPE_BY_NAME[link_type], source.id, target.id)
                issue.links.append(link)
                other.links.append(link)
            self._issues[issue.id] = issue
            self._by_key[key] = issue.id
            self._version += 1
            return key

    def transition(
        self, key: str, status: str, at: datetime, *, resolution: str | None = None
    ) -> None:
        """Append a history moving `key` to `status` (by name) at `at`; bumps `updated`.

        Entering a done-category status sets the resolution (`resolution`, default "Done") in
        the same history; leaving done clears it. `at` must be after the issue's last change.
        """
        _status_def(status)
        if resolution is not None and resolution not in RESOLUTION_BY_NAME:
            raise ValueError(f"unknown resolution {resolution!r}")
        at_ms = to_ms(at)
        with self._lock:
            issue = self._issue(key)
            self._check_after(issue, at_ms)
            apply_status_change(issue, status, at_ms, resolution, USERS[0], self._history_id())
            self._version += 1

    def set_type(self, key: str, issue_type: str, at: datetime) -> None:
        """Append a history changing the issue type (field `issuetype`) at `at`."""
        if issue_type not in ISSUE_TYPE_BY_NAME:
            raise ValueError(f"unknown issue type {issue_type!r}")
        at_ms = to_ms(at)
        with self._lock:
            issue = self._issue(key)
            self._check_after(issue, at_ms)
            item = issue_type_item(issue.issue_type, issue_type)
            issue.histories.append(History(self._history_id(), at_ms, USERS[0], [item]))
            issue.issue_type = issue_type
            issue.updated = max(issue.updated, at_ms)
            self._version += 1

    def mutate(self, count: int, at: datetime | None = None) -> list[str]:
        """Give `count` seeded-random issues one plausible next status change at `at`.

        `at` defaults to the clock. Unfinished issues are preferred (done ones get reopened
        only when there are not enough); if `at` is not after an issue's last change, that
        issue's change is placed 1 ms after it so histories stay strictly ordered.
        Returns the keys changed, in the order they were changed.
        """
        if count < 0:
            raise ValueError(f"count must not be negative, not {count}")
        at_ms = to_ms(at if at is not None else self._clock())
        with self._lock:
            open_ids = [i.id for i in self._issues.values() if _category(i.status) != "done"]
            done_ids = [i.id for i in self._issues.values() if _category(i.status) == "done"]
            rng = self._mutate_rng
            chosen = rng.sample(open_ids, min(count, len(open_ids)))
            if len(chosen) < count:
                chosen += rng.sample(done_ids, min(count - len(chosen), len(done_ids)))
            changed: list[str] = []
            for issue_id in chosen:
                issue = self._issues[issue_id]
                category = _category(issue.status)
                if category != "indeterminate":
                    new = "In Progress"
                elif rng.random() < 0.35:
                    new = "Done"
                else:
                    new = next_status(rng, issue.status)
                last = issue.histories[-1].created if issue.histories else issue.created
                when = max(at_ms, last + 1)
                author = rng.choice(USERS)
                apply_status_change(issue, new, when, None, author, self._history_id())
                changed.append(issue.key)
            self._version += 1
            return changed

    def move_issue(self, key: str, new_key: str, at: datetime) -> None:
        """Move an issue to another project, as Jira's "Move" does: same id, new key, and a
        changelog entry recording the old and new key and project."""
        project = new_key.rpartition("-")[0]
        with self._lock:
            issue = self._issue(key)
            if new_key in self._by_key:
                raise ValueError(f"{new_key} exists already")
            when = max(int(at.timestamp() * 1000), issue.updated + 1)
            items = [
                ChangeItem("Key", "jira", None, None, issue.key, None, new_key),
                ChangeItem("project", "jira", "project", None, issue.project, None, project),
            ]
            issue.histories.append(History(self._history_id(), when, USERS[0], items))
            del self._by_key[issue.key]
            issue.key, issue.project, issue.updated = new_key, project, when
            self._by_key[new_key] = issue.id
            self._version += 1

    def delete_issue(self, key: str) -> None:
        """Delete an issue (and its links); it disappears from every endpoint."""
        with self._lock:
            issue = self._issue(key)
            del self._issues[issue.id]
            del self._by_key[issue.key]
            for link in issue.links:
                other_id = link.target if link.source == issue.id else link.source
                other = self._issues.get(other_id)
                if other is not None:
                    other.links = [x for x in other.links if x.id != link.id]
            self._version += 1

    def _issue(self, key_or_id: str) -> Issue:
        issue = self._lookup(key_or_id)
        if issue is None:
            raise KeyError(f"no issue {key_or_id!r}")
        return issue

    def _lookup(self, key_or_id: str) -> Issue | None:
        text = str(key_or_id).strip()
        if text.isdigit():
            return self._issues.get(int(text))
        issue_id = self._by_key.get(text.upper())
        return self._issues.get(issue_id) if issue_id is not None else None

    def _history_id(self) -> int:
        self._next_history_id += 1
        return self._next_history_id - 1

    @staticmethod
    def _check_after(issue: Issue, at_ms: int) -> None:
        last = issue.histories[-1].created if issue.histories else issue.created
        if at_ms <= last:
            raise ValueError(
                f"{issue.key}: a change at {from_ms(at_ms).isoformat()} is not after the issue's "
                f"last change ({from_ms(last).isoformat()}); histories must be strictly ordered"
            )

    # ------------------------------------------------------------------ HTTP entry point

    def _api(self, request: ApiRequest) -> Response:
        try:
            if self.rate_limit_every > 0 and request.number % self.rate_limit_every == 0:
                raise _HttpError(
                    429,
                    "Rate limit exceeded.",
                    headers={"Retry-After": str(self.retry_after)},
                )
            self._authenticate(request.headers)
            if request.body_error:
                raise _HttpError(400, "Unexpected character in the request body: not JSON.")
            return self._route(request.method, request.path, request.query, request.body)
        except _HttpError as error:
            return error.response()

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        if self.token is None:
            return
        supplied = headers.get("authorization", "")
        if self.cloud:
            expected = f"{self.email or ''}:{self.token}"
            scheme, _, value = supplied.partition(" ")
            ok = False
            if scheme.lower() == "basic":
                try:
                    decoded = base64.b64decode(value, validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    decoded = ""
                if self.email is None:
                    decoded_token = decoded.partition(":")[2]
                    ok = hmac.compare_digest(decoded_token.encode(), self.token.encode())
                else:
                    ok = hmac.compare_digest(decoded.encode(), expected.encode())
        else:
            ok = hmac.compare_digest(supplied.encode(), f"Bearer {self.token}".encode())
        if not ok:
            raise _HttpError(
                401,
                "You are not authenticated. Authentication required to perform this operation.",
            )

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Json) -> Response:
        match = re.fullmatch(r"/rest/api/(2|3|latest)/(.+?)/?", path)
        if match is None or (not self.cloud and match.group(1) == "3"):
            raise _HttpError(404, "No resource found for this path.")
        version = "2" if match.group(1) == "latest" else match.group(1)
        ctx = _Ctx(self._base, f"{self._base}/rest/api/{version}", self.cloud)
        parts = match.group(2).split("/")
        route = tuple(parts)

        def need(*methods: str) -> None:
            if method not in methods:
                raise _HttpError(405, f"Method {method} is not allowed for {path}.")

        if route == ("serverInfo",):
            need("GET")
            return Response(200, self._server_info())
        if route == ("myself",):
            need("GET")
            return Response(200, self._myself(ctx))
        if route == ("status",):
            need("GET")
            return Response(200, [self._status_json(ctx, s.name) for s in STATUSES])
        if route == ("project",):
            need("GET")
            return Response(200, [self._project_json(ctx, p) for p in self._projects])
        if route == ("project", "search") and self.cloud:
            need("GET")
            return Response(200, self._project_search(ctx, query))
        if route == ("issuetype",):
            need("GET")
            return Response(200, [self._issue_type_json(ctx, t.name) for t in ISSUE_TYPES])
        if route == ("resolution",):
            need("GET")
            return Response(200, [self._resolution_json(ctx, r.name) for r in RESOLUTIONS])
        if route == ("search", "jql") and self.cloud:
            need("GET", "POST")
            return Response(200, self._search_jql(ctx, method, query, body))
        if route == ("search",):
            need("GET", "POST")
            if self.cloud:
                raise _HttpError(
                    410,
                    "The requested API has been removed. Please migrate to the "
                    "/rest/api/3/search/jql API.",
                )
            return Response(200, self._search_dc(ctx, method, query, body))
        if route == ("changelog", "bulkfetch") and self.cloud and self.bulkfetch:
            need("POST")
            return Response(200, self._bulkfetch(ctx, body))
        if len(route) == 2 and route[0] == "issue":
            need("GET")
            return Response(200, self._get_issue(ctx, route[1], query))
        if len(route) == 3 and route[0] == "issue" and route[2] == "changelog" and self.cloud:
            need("GET")
            return Response(200, self._changelog_page(ctx, route[1], query))
        raise _HttpError(404, "No resource found for this path.")

    # ------------------------------------------------------------------ control endpoints

    def _error(self, status: int, message: str) -> Response:
        return _HttpError(status, message).response()

    def _stats(self) -> dict[str, Json]:
        return {"issues": len(self._issues)}

    # ------------------------------------------------------------------ catalogue endpoints

    def _server_info(self) -> Json:
        now = self._render(to_ms(self._clock()))
        if self.cloud:
            return {
                "baseUrl": self._base,
                "displayUrl": self._base,
                "version": "1001.0.0-SNAPSHOT",
                "versionNumbers": [1001, 0, 0],
                "deploymentType": "Cloud",
                "buildNumber": 100300,
                "buildDate": "2025-12-01T00:00:00.000+0000",
                "serverTime": now,
                "scmInfo": "57a0ca5b4a0bb0ac5f3fee4764acb1c14e4d7e71",
                "serverTitle": "Jira",
            }
        return {
            "baseUrl": self._base,
            "version": "9.12.15",
            "versionNumbers": [9, 12, 15],
            "deploymentType": "Server",
            "buildNumber": 9120015,
            "buildDate": "2024-10-01T00:00:00.000+0000",
            "databaseBuildNumber": 9120015,
            "serverTime": now,
            "scmInfo": "b4d0a6a5c2f1e0b9d8c7a6b5f4e3d2c1b0a9f8e7",
            "serverTitle": "Jira",
        }

    def _myself(self, ctx: _Ctx) -> Json:
        email = self.email or SIM_USER.email
        if ctx.cloud:
            return {
                "self": f"{ctx.api}/user?accountId={SIM_USER.account_id}",
                "accountId": SIM_USER.account_id,
                "accountType": "atlassian",
                "emailAddress": email,
                "displayName": SIM_USER.display_name,
                "active": True,
                "timeZone": self.tz,
                "locale": "en_US",
            }
        return {
            "self": f"{ctx.api}/user?username={SIM_USER.name}",
            "key": SIM_USER.name,
            "name": SIM_USER.name,
            "emailAddress": email,
            "displayName": SIM_USER.display_name,
            "active": True,
            "deleted": False,
            "timeZone": self.tz,
            "locale": "en_US",
        }

    def _project_json(self, ctx: _Ctx, key: str) -> Json:
        project_id = str(10000 + self._projects.index(key))
        body: dict[str, Json] = {
            "expand": "description,lead,issueTypes,url,projectKeys,permissions,insight",
            "self": f"{ctx.api}/project/{project_id}",
            "id": project_id,
            "key": key,
            "name": _project_name(key),
            "projectTypeKey": "software",
        }
        if ctx.cloud:
            body.update({"simplified": False, "style": "classic", "isPrivate": False})
        else:
            body["archived"] = False
        return body

    def _project_search(self, ctx: _Ctx, query: dict[str, list[str]]) -> Json:
        start = _int_param(_first(query, "startAt"), "startAt", 0)
        size = min(max(_int_param(_first(query, "maxResults"), "maxResults", 50), 1), 100)
        if start < 0:
            raise _HttpError(400, "startAt must not be negative.")
        values = [self._project_json(ctx, p) for p in self._projects[start : start + size]]
        last = start + size >= len(self._projects)
        page: dict[str, Json] = {
            "self": f"{ctx.api}/project/search?maxResults={size}&startAt={start}",
            "maxResults": size,
            "startAt": start,
            "total": len(self._projects),
            "isLast": last,
            "values": values,
        }
        if not last:
            page["nextPage"] = f"{ctx.api}/project/search?maxResults={size}&startAt={start + size}"
        return page

    def _issue_type_json(self, ctx: _Ctx, name: str) -> Json:
        t = ISSUE_TYPE_BY_NAME[name]
        body: dict[str, Json] = {
            "self": f"{ctx.api}/issuetype/{t.id}",
            "id": t.id,
            "description": t.description,
            "iconUrl": f"{ctx.base}/images/icons/issuetypes/{t.id}.svg",
            "name": t.name,
            "subtask": False,
            "avatarId": int(t.id) + 300,
        }
        if ctx.cloud:
            body["hierarchyLevel"] = 1 if name == "Epic" else 0
        return body

    def _resolution_json(self, ctx: _Ctx, name: str) -> Json:
        r = RESOLUTION_BY_NAME[name]
        return {
            "self": f"{ctx.api}/resolution/{r.id}",
            "id": r.id,
            "description": r.description,
            "name": r.name,
        }

    def _status_json(self, ctx: _Ctx, name: str) -> Json:
        cached = self._status_cache.get((ctx.api, name))
        if cached is None:
            s = STATUS_BY_NAME[name]
            c = CATEGORIES[s.category]
            cached = {
                "self": f"{ctx.api}/status/{s.id}",
                "description": s.description,
                "iconUrl": f"{ctx.base}/images/icons/statuses/generic.png",
                "name": s.name,
                "id": s.id,
                "statusCategory": {
                    "self": f"{ctx.api}/statuscategory/{c.id}",
                    "id": c.id,
                    "key": c.key,
                    "colorName": c.color_name,
                    "name": c.name,
                },
            }
            self._status_cache[(ctx.api, name)] = cached
        return cached

    def _user_json(self, ctx: _Ctx, user: UserDef) -> Json:
        cache_key = (ctx.api, ctx.cloud, user.name)
        cached = self._user_cache.get(cache_key)
        if cached is None:
            if ctx.cloud:
                cached = {
                    "self": f"{ctx.api}/user?accountId={user.account_id}",
                    "accountId": user.account_id,
                    "emailAddress": user.email,
                    "displayName": user.display_name,
                    "active": True,
                    "timeZone": user.time_zone,
                    "accountType": "atlassian",
                }
            else:
                cached = {
                    "self": f"{ctx.api}/user?username={user.name}",
                    "name": user.name,
                    "key": user.name,
                    "emailAddress": user.email,
                    "displayName": user.display_name,
                    "active": True,
                    "timeZone": user.time_zone,
                }
            self._user_cache[cache_key] = cached
        return cached

    # ------------------------------------------------------------------ issue rendering

    def _history_json(self, ctx: _Ctx, history: History, only: frozenset[str] | None) -> Json:
        items = []
        for item in history.items:
            if only is not None and item.field_id not in only:
                continue
            rendered: dict[str, Json] = {"field": item.field, "fieldtype": item.fieldtype}
            from_, to = item.from_, item.to
            if ctx.cloud:
                if item.field_id is not None:
                    rendered["fieldId"] = item.field_id
            elif item.field == "assignee":
                from_, to = _username(from_), _username(to)
            rendered["from"] = from_
            rendered["fromString"] = item.from_string
            rendered["to"] = to
            rendered["toString"] = item.to_string
            items.append(rendered)
        return {
            "id": str(history.id),
            "author": self._user_json(ctx, history.author),
            "created": self._render(history.created),
            "items": items,
        }

    def _embedded_changelog(self, ctx: _Ctx, issue: Issue, everything: bool) -> Json:
        histories = issue.histories
        limit = len(histories) if everything else max(self.embedded_changelog_limit, 0)
        limit = min(limit, len(histories))
        if ctx.cloud:
            chosen = list(reversed(histories[len(histories) - limit :]))
        else:
            chosen = histories[:limit]
        return {
            "startAt": 0,
            "maxResults": len(chosen),
            "total": len(histories),
            "histories": [self._history_json(ctx, h, None) for h in chosen],
        }

    def _issue_json(
        self, ctx: _Ctx, issue: Issue, fields: _FieldSet, changelog: bool, everything: bool = False
    ) -> Json:
        if fields.id_only and not changelog:
            return {"id": str(issue.id)}
        rendered: dict[str, Json] = {}
        names = fields.names
        for name in ALL_FIELDS:
            if name in names:
                rendered[name] = self._field(ctx, issue, name)
        body: dict[str, Json] = {
            "expand": ISSUE_EXPAND,
            "id": str(issue.id),
            "self": f"{ctx.api}/issue/{issue.id}",
            "key": issue.key,
            "fields": rendered,
        }
        if changelog:
            body["changelog"] = self._embedded_changelog(ctx, issue, everything)
        return body

    def _field(self, ctx: _Ctx, issue: Issue, name: str) -> Json:
        if name == "summary":
            return issue.summary
        if name == "status":
            return self._status_json(ctx, issue.status)
        if name == "issuetype":
            return self._issue_type_json(ctx, issue.issue_type)
        if name == "labels":
            return list(issue.labels)
        if name == "resolution":
            return self._resolution_json(ctx, issue.resolution) if issue.resolution else None
        if name == "resolutiondate":
            return self._render(issue.resolution_date) if issue.resolution_date else None
        if name == "created":
            return self._render(issue.created)
        if name == "updated":
            return self._render(issue.updated)
        if name == "project":
            project = self._project_json(ctx, issue.project)
            return {k: v for k, v in project.items() if k != "expand"}
        if name == "issuelinks":
            return [self._link_json(ctx, issue, link) for link in issue.links]
        if name == "assignee":
            return self._user_json(ctx, issue.assignee) if issue.assignee else None
        if name == "customfield_10016":
            return issue.story_points
        raise AssertionError(name)

    def _link_json(self, ctx: _Ctx, issue: Issue, link: Link) -> Json:
        outward = link.source == issue.id
        other = self._issues[link.target if outward else link.source]
        t = link.type
        return {
            "id": str(link.id),
            "self": f"{ctx.api}/issueLink/{link.id}",
            "type": {
                "id": t.id,
                "name": t.name,
                "inward": t.inward,
                "outward": t.outward,
                "self": f"{ctx.api}/issueLinkType/{t.id}",
            },
            ("outwardIssue" if outward else "inwardIssue"): {
                "id": str(other.id),
                "key": other.key,
                "self": f"{ctx.api}/issue/{other.id}",
                "fields": {
                    "summary": other.summary,
                    "status": self._status_json(ctx, other.status),
                    "issuetype": self._issue_type_json(ctx, other.issue_type),
                },
            },
        }

    # ------------------------------------------------------------------ search

    def _catalog(self) -> jqlmod.Catalog:
        names: dict[str, str] = {}
        for key in self._projects:
            names[key.lower()] = key
            names[_project_name(key).lower()] = key
        return jqlmod.Catalog(
            projects=names,
            key_exists=lambda key: key in self._by_key,
            id_exists=lambda issue_id: issue_id in self._issues,
        )

    def _matching(self, jql_text: str, require_bound: bool) -> _Matches:
        """Issue ids matching the JQL in result order, with their sort keys; cached until the
        data changes."""
        try:
            query = jqlmod.parse(jql_text)
        except jqlmod.JqlError as error:
            raise _HttpError(400, str(error)) from None
        if require_bound and query.where is None:
            raise _HttpError(
                400,
                "Unbounded JQL queries are not allowed here. Please add a search restriction "
                "to your query.",
            )
        cache_key = (jql_text, self._version)
        cached = self._search_cache.get(cache_key)
        if cached is not None:
            self._search_cache.move_to_end(cache_key)
            return cached
        try:
            predicate = jqlmod.compile_filter(query, self._catalog(), self._render.zone)
        except jqlmod.JqlError as error:
            raise _HttpError(400, str(error)) from None
        key = jqlmod.sort_key(query.order)
        rows = sorted((key(i), i.id) for i in self._issues.values() if predicate(i))
        matches = _Matches([issue_id for _, issue_id in rows], [k for k, _ in rows])
        self._search_cache[cache_key] = matches
        while len(self._search_cache) > 32:
            self._search_cache.popitem(last=False)
        return matches

    def _token(self, kind: str, digest: str, after: tuple[object, ...]) -> str:
        """An opaque, tamper-evident cursor: the sort key of the last row served."""
        return self._signer.sign([kind, digest, after])

    def _read_token(self, token: str, kind: str, digest: str) -> tuple[object, ...]:
        opened = self._signer.open(token)
        if not isinstance(opened, list) or len(opened) != 3 or opened[0] != kind:
            raise _HttpError(400, "The provided next page token is invalid or expired.")
        if opened[1] != digest:
            raise _HttpError(400, "The next page token does not belong to this request.")
        result = _tuples(opened[2])
        assert isinstance(result, tuple)
        return result

    def _search_jql(self, ctx: _Ctx, method: str, query: dict[str, list[str]], body: Json) -> Json:
        allowed = {
            "jql",
            "nextPageToken",
            "maxResults",
            "fields",
            "expand",
            "properties",
            "fieldsByKeys",
            "reconcileIssues",
            "failFast",
        }
        if method == "POST":
            if not isinstance(body, dict):
                raise _HttpError(400, "The request body must be a JSON object.")
            unknown = sorted(set(body) - allowed)
            if unknown:
                raise _HttpError(400, f'Unrecognized field "{unknown[0]}" in the request body.')
            jql_text = body.get("jql") or ""
            token = body.get("nextPageToken")
            raw_max = body.get("maxResults")
            raw_fields = body.get("fields")
            expand = body.get("expand")
            if raw_fields is not None and not isinstance(raw_fields, list):
                raise _HttpError(400, "fields must be a list of strings.")
        else:
            jql_text = _first(query, "jql") or ""
            token = _first(query, "nextPageToken")
            raw_max = _first(query, "maxResults")
            raw_fields = query.get("fields")
            expand = _first(query, "expand")
        if not isinstance(jql_text, str) or not (token is None or isinstance(token, str)):
            raise _HttpError(400, "jql and nextPageToken must be strings.")
        max_results = _int_param(raw_max, "maxResults", SEARCH_DEFAULT)
        if not 1 <= max_results <= SEARCH_CAP_IDS:
            raise _HttpError(400, f"maxResults must be between 1 and {SEARCH_CAP_IDS}.")
        fields = _fieldset(raw_fields, default_all=False)
        changelog = _expands_changelog(expand)
        cheap = not fields.names and not changelog
        limit = min(max_results, SEARCH_CAP_IDS if cheap else SEARCH_CAP_FIELDS)
        digest = hashlib.sha256(jql_text.encode()).hexdigest()[:16]
        after = self._read_token(token, "s", digest) if token else None
        matches = self._matching(jql_text, require_bound=True)
        start = 0 if after is None else _position_after(matches.keys, after)
        page = matches.ids[start : start + limit]
        result: dict[str, Json] = {
            "issues": [self._issue_json(ctx, self._issues[i], fields, changelog) for i in page]
        }
        if start + limit < len(matches.ids):
            last = matches.keys[start + limit - 1]
            result["nextPageToken"] = self._token("s", digest, last)
            result["isLast"] = False
        else:
            result["isLast"] = True
        return result

    def _search_dc(self, ctx: _Ctx, method: str, query: dict[str, list[str]], body: Json) -> Json:
        if method == "POST":
            if not isinstance(body, dict):
                raise _HttpError(400, "The request body must be a JSON object.")
            jql_text = body.get("jql") or ""
            raw_start, raw_max = body.get("startAt"), body.get("maxResults")
            raw_fields = body.get("fields")
            expand = body.get("expand")
        else:
            jql_text = _first(query, "jql") or ""
            raw_start, raw_max = _first(query, "startAt"), _first(query, "maxResults")
            raw_fields = query.get("fields")
            expand = _first(query, "expand")
        if not isinstance(jql_text, str):
            raise _HttpError(400, "jql must be a string.")
        start = _int_param(raw_start, "startAt", 0)
        max_results = _int_param(raw_max, "maxResults", SEARCH_DEFAULT)
        if start < 0 or max_results < 0:
            raise _HttpError(400, "startAt and maxResults must not be negative.")
        max_results = min(max_results, DC_SEARCH_CAP)
        fields = _fieldset(raw_fields if raw_fields else None, default_all=True)
        changelog = _expands_changelog(expand)
        ids = self._matching(jql_text, require_bound=False).ids
        page = ids[start : start + max_results]
        return {
            "expand": "schema,names",
            "startAt": start,
            "maxResults": max_results,
            "total": len(ids),
            "issues": [self._issue_json(ctx, self._issues[i], fields, changelog) for i in page],
        }

    # ------------------------------------------------------------------ changelogs

    def _get_issue(self, ctx: _Ctx, key_or_id: str, query: dict[str, list[str]]) -> Json:
        issue = self._lookup(key_or_id)
        if issue is None:
            raise _HttpError(404, "Issue does not exist or you do not have permission to see it.")
        fields = _fieldset(query.get("fields"), default_all=True)
        changelog = _expands_changelog(_first(query, "expand"))
        return self._issue_json(ctx, issue, fields, changelog, everything=not ctx.cloud)

    def _changelog_page(self, ctx: _Ctx, key_or_id: str, query: dict[str, list[str]]) -> Json:
        issue = self._lookup(key_or_id)
        if issue is None:
            raise _HttpError(404, "Issue does not exist or you do not have permission to see it.")
        start = _int_param(_first(query, "startAt"), "startAt", 0)
        size = _int_param(_first(query, "maxResults"), "maxResults", CHANGELOG_PAGE_MAX)
        if start < 0 or size < 0:
            raise _HttpError(400, "startAt and maxResults must not be negative.")
        size = min(size, CHANGELOG_PAGE_MAX)
        total = len(issue.histories)
        values = issue.histories[start : start + size]
        last = start + len(values) >= total
        link = f"{ctx.api}/issue/{key_or_id}/changelog"
        page: dict[str, Json] = {"self": f"{link}?maxResults={size}&startAt={start}"}
        if not last:
            page["nextPage"] = f"{link}?maxResults={size}&startAt={start + size}"
        page.update(
            {
                "maxResults": size,
                "startAt": start,
                "total": total,
                "isLast": last,
                "values": [self._history_json(ctx, h, None) for h in values],
            }
        )
        return page

    def _bulkfetch(self, ctx: _Ctx, body: Json) -> Json:
        if not isinstance(body, dict):
            raise _HttpError(400, "The request body must be a JSON object.")
        unknown = sorted(set(body) - {"issueIdsOrKeys", "fieldIds", "maxResults", "nextPageToken"})
        if unknown:
            raise _HttpError(400, f'Unrecognized field "{unknown[0]}" in the request body.')
        wanted = body.get("issueIdsOrKeys")
        if not isinstance(wanted, list) or not wanted:
            raise _HttpError(400, "issueIdsOrKeys must contain at least one issue ID or key.")
        if len(wanted) > BULK_MAX_ISSUES:
            raise _HttpError(
                400, f"You can request changelogs of at most {BULK_MAX_ISSUES} issues at once."
            )
        field_ids = body.get("fieldIds")
        if field_ids is not None and (
            not isinstance(field_ids, list) or len(field_ids) > BULK_MAX_FIELDS
        ):
            message = f"fieldIds must be a list of at most {BULK_MAX_FIELDS} field IDs."
            raise _HttpError(400, message)
        max_results = _int_param(body.get("maxResults"), "maxResults", BULK_DEFAULT)
        if not 1 <= max_results <= BULK_MAX:
            raise _HttpError(400, f"maxResults must be between 1 and {BULK_MAX}.")
        token = body.get("nextPageToken")
        if token is not None and not isinstance(token, str):
            raise _HttpError(400, "nextPageToken must be a string.")
        only = frozenset(str(f) for f in field_ids) if field_ids else None
        request_key = json.dumps([[str(w) for w in wanted], sorted(only or ())])
        digest = hashlib.sha256(request_key.encode()).hexdigest()[:16]
        after = self._read_token(token, "b", digest) if token else None
        merged = self._merged_histories(request_key, [str(w) for w in wanted], only)
        start = 0 if after is None else _position_after(merged.keys, after)
        page = merged.rows[start : start + max_results]
        groups: list[Json] = []
        current_id: int | None = None
        current: list[Json] = []
        for issue_id, history in page:
            if issue_id != current_id:
                current = []
                current_id = issue_id
                groups.append({"issueId": str(issue_id), "changeHistories": current})
            current.append(self._history_json(ctx, history, only))
        result: dict[str, Json] = {"issueChangeLogs": groups}
        if start + max_results < len(merged.rows):
            last = merged.keys[start + max_results - 1]
            result["nextPageToken"] = self._token("b", digest, last)
        return result

    def _merged_histories(
        self, request_key: str, wanted: list[str], only: frozenset[str] | None
    ) -> _Merged:
        """All requested issues' (filtered) histories ordered by (created, issue id, id)."""
        cache_key = (request_key, self._version)
        cached = self._bulk_cache.get(cache_key)
        if cached is not None:
            return cached
        issues: dict[int, Issue] = {}
        for ref in wanted:
            issue = self._lookup(ref)
            if issue is not None:
                issues[issue.id] = issue
        rows = [
            (h.created, issue.id, h.id, h)
            for issue in issues.values()
            for h in issue.histories
            if only is None or any(item.field_id in only for item in h.items)
        ]
        rows.sort(key=lambda row: (row[0], row[1], row[2]))
        merged = _Merged([(row[1], row[3]) for row in rows], [row[:3] for row in rows])
        self._bulk_cache[cache_key] = merged
        while len(self._bulk_cache) > 8:
            self._bulk_cache.popitem(last=False)
        return merged


# ---------------------------------------------------------------------- helpers


def _status_def(name: str) -> StatusDef:
    status = STATUS_BY_NAME.get(name)
    if status is None:
        raise ValueError(f"unknown status {name!r}; the catalogue has {sorted(STATUS_BY_NAME)}")
    return status


def _category(status: str) -> str:
    return STATUS_BY_NAME[status].category


def _project_name(key: str) -> str:
    return f"{key.capitalize()} project"


_USERNAME_BY_ACCOUNT = {u.account_id: u.name for u in (*USERS, SIM_USER)}


def _username(account_id: str | None) -> str | None:
    if account_id is None:
        return None
    return _USERNAME_BY_ACCOUNT.get(account_id, account_id)


# ---------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `syncd simulate jira`, separate so the main CLI can embed it."""
    parser = argparse.ArgumentParser(
        prog="syncd simulate jira",
        description="Serve a deterministic fake Jira on 127.0.0.1 until SIGINT/SIGTERM.",
    )
    add_serving_arguments(parser)
    parser.add_argument("--items", type=int, default=200, help="number of generated issues")
    parser.add_argument("--deployment", choices=("cloud", "datacenter"), default="cloud")
    parser.add_argument("--projects", default="DEMO", help="comma-separated project keys")
    parser.add_argument("--tz", default="Europe/Berlin", help="zone timestamps are rendered in")
    parser.add_argument("--changes-per-item", type=int, default=10)
    parser.add_argument("--embedded-changelog-limit", type=int, default=100)
    parser.add_argument("--no-bulkfetch", action="store_true", help="answer bulkfetch with 404")
    parser.add_argument("--email-env", default=None, help="env var holding the expected email")
    parser.add_argument("--rate-limit-every", type=int, default=0, help="every Nth request → 429")
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds on 429")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the simulator from the command line; returns the exit code (0 after a signal)."""
    return run_cli(build_parser(), argv, _from_options)


def _from_options(args: argparse.Namespace) -> tuple[JiraSimulator, Callable[[str], str]]:
    sim = JiraSimulator(
        **serving_options(args),
        items=args.items,
        deployment=args.deployment,
        tz=args.tz,
        email=env_secret(args.email_env),
        bulkfetch=not args.no_bulkfetch,
        embedded_changelog_limit=args.embedded_changelog_limit,
        rate_limit_every=args.rate_limit_every,
        retry_after=args.retry_after,
        changes_per_item=args.changes_per_item,
        projects=[p.strip() for p in args.projects.split(",") if p.strip()],
    )
    return sim, lambda url: f"simulator: jira {args.deployment} on {url} ({args.items} issues)"


if __name__ == "__main__":
    sys.exit(main())
