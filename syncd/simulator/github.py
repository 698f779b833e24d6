"""A deterministic fake GitHub (REST v3 + GraphQL v4) for syncd's demo, tests and benchmarks.

`GitHubSimulator` holds seeded repositories of issues and pull requests with complete
timelines in memory and serves, on 127.0.0.1, the part of GitHub's API a sync uses, with
the shapes of the OpenAPI description and of recorded responses (see
tests/test_simulator_github_shapes.py). The REST root is `base_url` itself (like
https://api.github.com); GraphQL is `POST base_url/graphql` (see `github_graphql`).

What a client meets, as on GitHub:

- `GET /repos/{o}/{r}/issues`: issues *and* pull requests (PRs carry `pull_request`),
  `state` (default open), `sort` created|updated|comments (default created), `direction`
  (default desc), `since` (updated_at >= since), `per_page` 1..100 (default 30), ties broken
  by number. `Link` has next/last/first/prev page links while pages stay within
  `deep_page_limit`; the `next` link of the last such page switches to an opaque cursor
  (`after=`), which is never refused, while asking for `page=N` beyond the limit gets 422.
  The cursor is a keyset (sort key of the last item served), so items that do not change
  between pages are never skipped or repeated.
- `GET /repos/{o}/{r}/issues/{n}/timeline`: REST timeline events (no Projects v2 events,
  as on GitHub), page-linked. Also `GET /repos/{o}/{r}`, `/repos/{o}/{r}/issues/{n}`,
  `/orgs/{org}/repos`, `/user`, `/rate_limit`.
- Every response has `x-ratelimit-*` (resource `core`, or `graphql` on /graphql),
  `x-github-request-id` and a weak `ETag`; `If-None-Match` with the ETag of a 200 gets 304,
  which costs nothing. Other REST requests (errors too) take one unit of the `core` budget,
  except `/rate_limit`; when it is spent: 403 with remaining 0 until the reset instant (read
  from `clock`; the window starts with the first request). `secondary_every` turns every
  Nth API request (REST or GraphQL) into a secondary-limit 403, with `Retry-After:
  secondary_retry_after` or, when that is None, without (GitHub then asks for >= 60 s).
- With `token` set, `Authorization: Bearer <t>` or `token <t>` is required, else 401
  `Bad credentials` (the token is never echoed).

Control endpoints (`/_sim/mutate?count=N`, `/_sim/stats`) need no auth, are never rate
limited and are not recorded. Responses are byte-identical for the same generation
arguments and clock, apart from the base URL in links.
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
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from syncd.simulator import github_graphql
from syncd.simulator.common import (
    ApiRequest,
    CursorSigner,
    RequestRecord,
    Response,
    Simulator,
    add_serving_arguments,
    dump_json,
    run_cli,
    serving_options,
)
from syncd.simulator.github_data import (
    DAY,
    EVENT_KINDS,
    LABEL_COLORS,
    USERS,
    Event,
    Item,
    RateBudget,
    Repo,
    World,
    advance,
    event_node_id,
    generate,
    iso,
    label_id,
    node_id,
    renumber_events,
    user_id,
)

__all__ = ["GitHubSimulator", "RequestRecord", "build_parser", "main"]

Json = Any
Query = dict[str, list[str]]

VIEWER = USERS[0]
PER_PAGE_DEFAULT = 30
PER_PAGE_MAX = 100
DOCS = "https://docs.github.com/rest"
_DOC_ISSUES = f"{DOCS}/issues/issues#list-repository-issues"
_DOC_RATE = f"{DOCS}/overview/rate-limits-for-the-rest-api"
_ISSUE_SORTS: dict[str, Callable[[Item], int]] = {
    "created": lambda item: item.created,
    "updated": lambda item: item.updated,
    "comments": lambda item: 0,
}
_REPO_URLS: tuple[tuple[str, str], ...] = (
    ("forks_url", "/forks"),
    ("keys_url", "/keys{/key_id}"),
    ("collaborators_url", "/collaborators{/collaborator}"),
    ("teams_url", "/teams"),
    ("hooks_url", "/hooks"),
    ("issue_events_url", "/issues/events{/number}"),
    ("events_url", "/events"),
    ("assignees_url", "/assignees{/user}"),
    ("branches_url", "/branches{/branch}"),
    ("tags_url", "/tags"),
    ("blobs_url", "/git/blobs{/sha}"),
    ("git_tags_url", "/git/tags{/sha}"),
    ("git_refs_url", "/git/refs{/sha}"),
    ("trees_url", "/git/trees{/sha}"),
    ("statuses_url", "/statuses/{sha}"),
    ("languages_url", "/languages"),
    ("stargazers_url", "/stargazers"),
    ("contributors_url", "/contributors"),
    ("subscribers_url", "/subscribers"),
    ("subscription_url", "/subscription"),
    ("commits_url", "/commits{/sha}"),
    ("git_commits_url", "/git/commits{/sha}"),
    ("comments_url", "/comments{/number}"),
    ("issue_comment_url", "/issues/comments{/number}"),
    ("contents_url", "/contents/{+path}"),
    ("compare_url", "/compare/{base}...{head}"),
    ("merges_url", "/merges"),
    ("archive_url", "/{archive_format}{/ref}"),
    ("downloads_url", "/downloads"),
    ("issues_url", "/issues{/number}"),
    ("pulls_url", "/pulls{/number}"),
    ("milestones_url", "/milestones{/number}"),
    ("notifications_url", "/notifications{?since,all,participating}"),
    ("labels_url", "/labels{/name}"),
    ("releases_url", "/releases{/id}"),
    ("deployments_url", "/deployments"),
)


class _GitHubError(Exception):
    """An HTTP error answered with GitHub's `{"message", "documentation_url"}` body."""

    def __init__(
        self,
        status: int,
        message: str,
        documentation_url: str = DOCS,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.documentation_url = documentation_url
        self.headers = headers or {}

    def response(self) -> Response:
        body = {"message": self.message, "documentation_url": self.documentation_url}
        if self.status != 422:  # GitHub's validation-error body has no `status`
            body["status"] = str(self.status)
        return Response(self.status, body, dict(self.headers))


def _not_found(documentation_url: str = DOCS) -> _GitHubError:
    return _GitHubError(404, "Not Found", documentation_url)


@dataclass(frozen=True, slots=True)
class _Listing:
    items: list[Item]
    keys: list[tuple[int, int]]


@dataclass(slots=True)
class _Page:
    """One page of a listing and the links to its neighbours (`rel` → URL)."""

    rows: list[Any]
    links: dict[str, str] = field(default_factory=dict)


def _first(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _positive(query: Query, name: str, default: int) -> int:
    """A positive integer parameter; absent or unreadable values get the default, as GitHub
    ignores them."""
    raw = _first(query, name)
    try:
        value = int(raw) if raw else default
    except ValueError:
        return default
    return value if value >= 1 else default


def _choice(query: Query, name: str, allowed: Sequence[str], default: str) -> str:
    value = _first(query, name) or default
    if value not in allowed:
        raise _GitHubError(
            422,
            f"Invalid value for `{name}`: {value!r}; expected one of {', '.join(allowed)}.",
            _DOC_ISSUES,
        )
    return value


def _instant(text: str) -> int:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _GitHubError(422, f"Invalid value for `since`: {text!r}.", _DOC_ISSUES) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return math.floor(value.timestamp())


def _seconds(value: datetime) -> int:
    """Whole epoch seconds of an aware datetime (GitHub keeps second precision)."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: the simulator needs aware datetimes")
    return math.floor(value.timestamp())


def _from_seconds(value: int) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


class GitHubSimulator(Simulator):
    """A seeded, in-memory GitHub served over HTTP on 127.0.0.1.

    Same `repos`, `issues`, `pulls`, `seed` and `anchor` give byte-identical responses.
    Scenario methods (`add_issue`, `label`, `merge`, ...) build exact histories for tests;
    `timeline` is the ground truth a sync must reproduce.
    """

    server_name = "GitHub.com"
    content_type = "application/json; charset=utf-8"

    def __init__(
        self,
        *,
        repos: Sequence[str] = ("acme/web",),
        issues: int = 50,
        pulls: int = 50,
        seed: int = 1,
        anchor: datetime | None = None,
        token: str | None = None,
        orgs: Mapping[str, Sequence[str]] | None = None,
        archived: Sequence[str] = (),
        graphql: bool = True,
        deep_page_limit: int = 10,
        rate_limit: int = 5000,
        rate_reset_seconds: int = 3600,
        graphql_points: int = 5000,
        secondary_every: int = 0,
        secondary_retry_after: int | None = 1,
        app_id: int | None = None,
        app_public_key: str | None = None,
        app_installation_id: int | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(seed=seed, anchor=anchor, token=token, clock=clock)
        if not repos:
            raise ValueError("at least one repository is needed")
        if issues < 0 or pulls < 0:
            raise ValueError("issues and pulls must not be negative")
        if deep_page_limit < 1:
            raise ValueError("deep_page_limit must be at least 1")
        self.graphql = graphql
        self.deep_page_limit = deep_page_limit
        self.secondary_every = secondary_every
        self.secondary_retry_after = secondary_retry_after
        # GitHub App: RS256 JWTs signed by the app's key buy one-hour installation tokens
        self.app_id = app_id
        self.app_public_key = app_public_key
        self.app_installation_id = app_installation_id
        self._installation_tokens: dict[str, int] = {}
        unknown = sorted(set(archived) - set(repos))
        if unknown:
            raise ValueError(f"archived repositories {unknown} are not in repos")
        anchor_s = _seconds(self.anchor)
        self._world = World()
        for name in repos:
            repo = self._world.add_repo(name, anchor_s - 500 * DAY, archived=name in archived)
            generate(self._world, repo, issues=issues, pulls=pulls, seed=seed, anchor=anchor_s)
        self._world.next_event_id = renumber_events(self._world.items(), 1_000_000_001)
        if orgs is None:
            by_owner: dict[str, list[str]] = {}
            for repo in self._world.repos.values():
                by_owner.setdefault(repo.owner, []).append(repo.full_name)
            orgs = by_owner
        self._orgs: dict[str, list[Repo]] = {}
        for org, names in orgs.items():
            missing = sorted(set(names) - set(self._world.repos))
            if missing:
                raise ValueError(f"org {org} lists unknown repositories {missing}")
            self._orgs[org] = [self._world.repos[n] for n in names]
        self._core = RateBudget(rate_limit, rate_reset_seconds)
        self._points = RateBudget(graphql_points, rate_reset_seconds)
        self._signer = CursorSigner(f"syncd-github-simulator:{seed}")
        self._mutate_rng = random.Random(f"github-mutate:{seed}")
        self._version = 0
        self._listings: OrderedDict[tuple[object, ...], _Listing] = OrderedDict()
        self._users: dict[tuple[str, str], Json] = {}
        if graphql:
            github_graphql.schema()  # built once per process, not on the first request

    # ------------------------------------------------------------------ observation

    @property
    def repos(self) -> list[str]:
        """Full names of the repositories, in creation order."""
        with self._lock:
            return list(self._world.repos)

    def numbers(self, repo: str) -> list[int]:
        """Numbers of the repository's issues and pull requests, ascending."""
        with self._lock:
            return sorted(self._world.repo(repo).items)

    def timeline(self, repo: str, number: int) -> list[dict[str, Any]]:
        """Ground truth of an item's timeline, oldest first: `{"type": <GraphQL type name>,
        "at": aware UTC datetime, "actor": login, ...details}` where the details are
        `label`, `assignee`, `stateReason` (ClosedEvent; None on pull requests),
        `requestedReviewer`, `state` + `author` (PullRequestReview), `source` (repo, number)
        + `willCloseTarget` (CrossReferencedEvent), `status` + `previousStatus`."""
        with self._lock:
            item = self._world.item(repo, number)
            return [_truth(item, event) for event in item.events]

    # ------------------------------------------------------------------ scenario building

    def _change(
        self, repo: str, number: int, at: datetime, apply: Callable[[Item, int], None]
    ) -> None:
        seconds = _seconds(at)
        with self._lock:
            apply(self._world.item(repo, number), seconds)
            self._version += 1

    def add_issue(
        self,
        repo: str,
        *,
        created: datetime,
        title: str = "Scenario issue",
        labels: Sequence[str] = (),
        user: str = VIEWER,
        body: str = "",
    ) -> int:
        """Open an issue and return its number (numbers are shared with pull requests).
        `labels` become LabeledEvents at `created`."""
        return self._create(repo, False, created, title, labels, user, body, False)

    def add_pull(
        self,
        repo: str,
        *,
        created: datetime,
        title: str = "Scenario pull request",
        draft: bool = False,
        labels: Sequence[str] = (),
        body: str = "",
        user: str = VIEWER,
        branch: str = "",
    ) -> int:
        """Open a pull request from `branch` and return its number. "Closes #N" (fixes,
        resolves...) in `body` makes issue N of the same repository one of its
        `closingIssuesReferences`; it adds no timeline event (use `cross_reference` for that)."""
        return self._create(repo, True, created, title, labels, user, body, draft, branch)

    def _create(
        self,
        repo: str,
        pull: bool,
        created: datetime,
        title: str,
        labels: Sequence[str],
        user: str,
        body: str,
        draft: bool,
        branch: str = "",
    ) -> int:
        seconds = _seconds(created)
        with self._lock:
            item = self._world.create(
                self._world.repo(repo),
                pull=pull,
                created=seconds,
                title=title,
                user=user,
                body=body,
                labels=labels,
                draft=draft,
                branch=branch,
            )
            self._version += 1
            return item.number

    def label(self, repo: str, number: int, name: str, at: datetime) -> None:
        """Add label `name` (LabeledEvent)."""
        self._change(repo, number, at, lambda i, t: self._world.label(i, name, t, VIEWER))

    def unlabel(self, repo: str, number: int, name: str, at: datetime) -> None:
        """Remove label `name` (UnlabeledEvent)."""
        self._change(repo, number, at, lambda i, t: self._world.unlabel(i, name, t, VIEWER))

    def assign(self, repo: str, number: int, login: str, at: datetime) -> None:
        """Assign `login` (AssignedEvent)."""
        self._change(repo, number, at, lambda i, t: self._world.assign(i, login, t, VIEWER))

    def unassign(self, repo: str, number: int, login: str, at: datetime) -> None:
        """Unassign `login` (UnassignedEvent)."""
        self._change(repo, number, at, lambda i, t: self._world.unassign(i, login, t, VIEWER))

    def close(self, repo: str, number: int, at: datetime, reason: str = "completed") -> None:
        """Close (ClosedEvent): issues with reason completed|not_planned|duplicate; a pull
        request is closed unmerged (its stateReason stays null, as on GitHub)."""
        self._change(repo, number, at, lambda i, t: self._world.close(i, t, reason, VIEWER))

    def reopen(self, repo: str, number: int, at: datetime) -> None:
        """Reopen (ReopenedEvent); an issue's state_reason becomes `reopened`."""
        self._change(repo, number, at, lambda i, t: self._world.reopen(i, t, VIEWER))

    def request_review(self, repo: str, number: int, reviewer: str, at: datetime) -> None:
        """Request a review of `reviewer` (ReviewRequestedEvent)."""
        self._change(
            repo, number, at, lambda i, t: self._world.request_review(i, reviewer, t, VIEWER)
        )

    def remove_review_request(self, repo: str, number: int, reviewer: str, at: datetime) -> None:
        """Withdraw the review request of `reviewer` (ReviewRequestRemovedEvent)."""
        self._change(
            repo,
            number,
            at,
            lambda i, t: self._world.remove_review_request(i, reviewer, t, VIEWER),
        )

    def review(
        self, repo: str, number: int, at: datetime, state: str, *, reviewer: str | None = None
    ) -> None:
        """Submit a review (PullRequestReview) in `state` APPROVED|CHANGES_REQUESTED|COMMENTED,
        by `reviewer` (default: the first requested reviewer, else "hubot")."""

        def apply(item: Item, seconds: int) -> None:
            author = reviewer or (item.requested[0] if item.requested else "hubot")
            self._world.review(item, seconds, state, author)

        self._change(repo, number, at, apply)

    def ready_for_review(self, repo: str, number: int, at: datetime) -> None:
        """Mark a draft pull request ready (ReadyForReviewEvent)."""
        self._change(repo, number, at, lambda i, t: self._world.ready_for_review(i, t, VIEWER))

    def convert_to_draft(self, repo: str, number: int, at: datetime) -> None:
        """Turn a pull request back into a draft (ConvertToDraftEvent)."""
        self._change(repo, number, at, lambda i, t: self._world.convert_to_draft(i, t, VIEWER))

    def merge(self, repo: str, number: int, at: datetime) -> None:
        """Merge: MergedEvent and ClosedEvent at the same instant, state closed, merged_at."""
        self._change(repo, number, at, lambda i, t: self._world.merge(i, t, VIEWER))

    def project_status(self, repo: str, number: int, status: str, at: datetime) -> None:
        """Set the Projects (v2) status (ProjectV2ItemStatusChangedEvent, previousStatus ""
        the first time, preceded by AddedToProjectV2Event at the same instant)."""
        self._change(
            repo, number, at, lambda i, t: self._world.project_status(i, status, t, VIEWER)
        )

    def cross_reference(
        self,
        repo: str,
        number: int,
        source_repo: str,
        source_number: int,
        at: datetime,
        will_close: bool = False,
    ) -> None:
        """`source_repo#source_number` mentions the item (CrossReferencedEvent on the item)."""
        with self._lock:
            source = self._world.item(source_repo, source_number)
        self._change(
            repo,
            number,
            at,
            lambda i, t: self._world.cross_reference(i, source, t, will_close, VIEWER),
        )

    def mutate(self, count: int, at: datetime | None = None) -> list[tuple[str, int]]:
        """Give `count` seeded-random items one plausible next event at `at` (default: the
        clock). Open items are preferred; merged pull requests never change. When `at` is
        not after an item's last event, that event lands one second after it.
        Returns (repository, number) of the items changed, in order."""
        if count < 0:
            raise ValueError(f"count must not be negative, not {count}")
        seconds = _seconds(at if at is not None else self._clock())
        with self._lock:
            rng = self._mutate_rng
            items = [i for i in self._world.items() if i.merged_at is None]
            open_items = [i for i in items if i.state == "open"]
            closed_items = [i for i in items if i.state != "open"]
            chosen = rng.sample(open_items, min(count, len(open_items)))
            if len(chosen) < count:
                chosen += rng.sample(closed_items, min(count - len(chosen), len(closed_items)))
            changed: list[tuple[str, int]] = []
            for item in chosen:
                advance(self._world, rng, item, max(seconds, item.last_at + 1))
                changed.append((item.repo.full_name, item.number))
            self._version += 1
            return changed

    # ------------------------------------------------------------------ HTTP

    def _error(self, status: int, message: str) -> Response:
        return _GitHubError(status, message).response()

    def _stats(self) -> dict[str, Json]:
        items = list(self._world.items())
        return {
            "repositories": len(self._world.repos),
            "issues": sum(1 for i in items if not i.pull),
            "pulls": sum(1 for i in items if i.pull),
            "events": sum(len(i.events) for i in items),
        }

    def _api(self, request: ApiRequest) -> Response:
        graphql_request = request.path == "/graphql"
        now = _seconds(self._clock())
        budget = self._points if graphql_request else self._core
        budget.roll(now)
        request_id = f"5EED:{self.seed & 0xFFFF:04X}:{request.number:08X}"
        try:
            if request.path.startswith("/app/installations/"):
                return self._installation_token(request, now)
            self._authenticate(request.headers, now)
            if self.secondary_every > 0 and request.number % self.secondary_every == 0:
                raise self._secondary_limit(request_id)
            response = self._graphql(request, now) if graphql_request else self._rest(request)
        except _GitHubError as error:
            response = error.response()
        if response.raw is None:
            response.raw = dump_json(response.body)
            response.headers.setdefault("ETag", _etag(response.raw))
        response.headers = {
            **budget.headers("graphql" if graphql_request else "core"),
            "x-github-request-id": request_id,
            "x-github-media-type": "github.v3; format=json",
            "x-github-api-version-selected": "2022-11-28",
            **response.headers,
        }
        return response

    def _authenticate(self, headers: Mapping[str, str], now: int) -> None:
        if self.token is None and self.app_id is None:
            return
        scheme, _, value = headers.get("authorization", "").strip().partition(" ")
        value = value.strip()
        ok = scheme.lower() in ("bearer", "token") and (
            (self.token is not None and hmac.compare_digest(value.encode(), self.token.encode()))
            or self._installation_tokens.get(value, 0) > now
        )
        if not ok:
            raise _GitHubError(401, "Bad credentials", DOCS)

    def _installation_token(self, request: ApiRequest, now: int) -> Response:
        """`POST /app/installations/{id}/access_tokens` with the app's JWT → a token that
        works for an hour, like GitHub's installation access tokens."""
        import jwt

        parts = request.path.strip("/").split("/")
        if (
            request.method != "POST"
            or len(parts) != 4
            or parts[3] != "access_tokens"
            or self.app_id is None
            or self.app_public_key is None
        ):
            raise _not_found()
        if parts[2] != str(self.app_installation_id):
            raise _not_found()
        scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
        try:
            claims = jwt.decode(
                value.strip(),
                self.app_public_key,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise _GitHubError(
                401, f"A JSON web token could not be decoded ({exc})", DOCS
            ) from None
        if scheme.lower() != "bearer" or str(claims["iss"]) != str(self.app_id):
            raise _GitHubError(401, "'Issuer' claim ('iss') must be the app id", DOCS)
        digest = hashlib.sha256(f"{self.seed}:{len(self._installation_tokens)}".encode())
        token = "ghs_sim" + digest.hexdigest()[:30]
        expires = now + 3600
        self._installation_tokens[token] = expires
        body = {
            "token": token,
            "expires_at": iso(expires),
            "permissions": {"issues": "read", "pull_requests": "read", "metadata": "read"},
            "repository_selection": "all",
        }
        return Response(201, body)

    def _secondary_limit(self, request_id: str) -> _GitHubError:
        headers = {}
        if self.secondary_retry_after is not None:
            headers["retry-after"] = str(self.secondary_retry_after)
        message = (
            "You have exceeded a secondary rate limit. Please wait a few minutes before you "
            "try again. If you reach out to GitHub Support for help, please include the "
            f"request ID {request_id}."
        )
        doc = f"{DOCS}/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
        return _GitHubError(403, message, doc, headers)

    def _secondary_rate_limit(self, number: int, retry_after: int) -> Response | None:
        """The secondary-limit 403 for an injected fault (see `syncd.simulator.faults`)."""
        error = self._secondary_limit(f"5EED:{self.seed & 0xFFFF:04X}:{number:08X}")
        error.headers["retry-after"] = str(retry_after)
        return error.response()

    def _graphql(self, request: ApiRequest, now: int) -> Response:
        if not self.graphql or request.method != "POST":
            raise _not_found("https://docs.github.com/graphql")
        if request.body_error:
            raise _GitHubError(400, "Problems parsing JSON", "https://docs.github.com/graphql")
        context = github_graphql.GraphQLRequest(self._world, self._base, self._points, now)
        return Response(200, github_graphql.run(context, request.body))

    def _rest(self, request: ApiRequest) -> Response:
        path, query = request.path, request.query
        if request.method != "GET":
            raise _not_found()
        counted = path != "/rate_limit"
        if counted and self._core.remaining <= 0:
            raise _GitHubError(
                403, f"API rate limit exceeded for user ID {user_id(VIEWER)}.", _DOC_RATE
            )
        try:
            response = self._route(path, query)
        except _GitHubError as error:  # refusals cost a request too
            response = error.response()
        if response.status == 200:
            response.raw = dump_json(response.body)
            etag = _etag(response.raw)
            response.headers["ETag"] = etag
            conditional = request.headers.get("if-none-match", "")
            wanted = {t.strip() for t in conditional.split(",")}
            if etag in wanted or "*" in wanted:
                return Response(304, None, response.headers, raw=b"")
        if counted:
            self._core.used += 1
        return response

    def _route(self, path: str, query: Query) -> Response:
        parts = path.strip("/").split("/")
        if path == "/user":
            response = Response(200, self._viewer_json())
            response.headers["X-OAuth-Scopes"] = "repo, read:org"
            response.headers["X-Accepted-OAuth-Scopes"] = ""
            return response
        if path == "/rate_limit":
            return Response(200, self._rate_limit_json())
        if len(parts) == 3 and parts[0] == "orgs" and parts[2] == "repos":
            return self._org_repos(parts[1], query)
        if len(parts) >= 3 and parts[0] == "repos":
            repo = self._repo(parts[1], parts[2])
            rest = parts[3:]
            if not rest:
                modified = _http_date(self._repo_updated(repo))
                return Response(200, self._repo_json(repo, full=True), {"Last-Modified": modified})
            if rest == ["issues"]:
                return self._issues(repo, path, query)
            if len(rest) >= 2 and rest[0] == "issues" and rest[1].isdigit():
                item = repo.items.get(int(rest[1]))
                if item is None:
                    raise _not_found(f"{DOCS}/issues/issues#get-an-issue")
                if len(rest) == 2:
                    headers = {"Last-Modified": _http_date(item.updated)}
                    return Response(200, self._issue_json(item), headers)
                if rest[2:] == ["timeline"]:
                    return self._timeline(item, path, query)
        raise _not_found()

    def _repo(self, owner: str, name: str) -> Repo:
        wanted = f"{owner}/{name}".lower()
        for repo in self._world.repos.values():
            if repo.full_name.lower() == wanted:
                return repo
        raise _not_found(f"{DOCS}/repos/repos#get-a-repository")

    # ------------------------------------------------------------------ listings

    def _link(self, path: str, query: Query, **changes: str | None) -> str:
        params = {k: v[0] for k, v in query.items() if v}
        for key, value in changes.items():
            params.pop(key, None)
            if value is not None:
                params[key] = value
        return f"{self._base}{path}?{urlencode(params, quote_via=quote)}"

    def _page_links(self, path: str, query: Query, number: int, last: int) -> dict[str, str]:
        """GitHub's page-number links, in its order: next, last, first, prev."""
        links: dict[str, str] = {}
        if number < last:
            links["next"] = self._link(path, query, page=str(number + 1))
            links["last"] = self._link(path, query, page=str(last))
        if number > 1:
            links["first"] = self._link(path, query, page="1")
            links["prev"] = self._link(path, query, page=str(min(number - 1, last)))
        return links

    def _paged(self, rows: list[Any], path: str, query: Query) -> _Page:
        """Plain page-number paging (no depth limit), as on the timeline and org listings."""
        per_page = min(_positive(query, "per_page", PER_PAGE_DEFAULT), PER_PAGE_MAX)
        number = _positive(query, "page", 1)
        last = max(1, math.ceil(len(rows) / per_page))
        page_rows = rows[(number - 1) * per_page : number * per_page]
        return _Page(page_rows, self._page_links(path, query, number, last))

    @staticmethod
    def _respond(page: _Page, rows: list[Json]) -> Response:
        response = Response(200, rows)
        if page.links:
            response.headers["Link"] = ", ".join(
                f'<{url}>; rel="{rel}"' for rel, url in page.links.items()
            )
        return response

    def _listing(
        self, repo: Repo, state: str, sort: str, direction: str, since: int | None
    ) -> _Listing:
        """Matching items in listing order with their keyset keys; cached until data changes."""
        cache_key = (repo.full_name, state, sort, direction, since, self._version)
        cached = self._listings.get(cache_key)
        if cached is not None:
            self._listings.move_to_end(cache_key)
            return cached
        value = _ISSUE_SORTS[sort]
        sign = -1 if direction == "desc" else 1
        rows = sorted(
            ((sign * value(item), sign * item.number), item)
            for item in repo.items.values()
            if (state == "all" or item.state == state) and (since is None or item.updated >= since)
        )
        listing = _Listing([item for _, item in rows], [key for key, _ in rows])
        self._listings[cache_key] = listing
        while len(self._listings) > 32:
            self._listings.popitem(last=False)
        return listing

    def _issues(self, repo: Repo, path: str, query: Query) -> Response:
        state = _choice(query, "state", ("open", "closed", "all"), "open")
        sort = _choice(query, "sort", tuple(_ISSUE_SORTS), "created")
        direction = _choice(query, "direction", ("asc", "desc"), "desc")
        raw_since = _first(query, "since")
        since = _instant(raw_since) if raw_since else None
        per_page = min(_positive(query, "per_page", PER_PAGE_DEFAULT), PER_PAGE_MAX)
        listing = self._listing(repo, state, sort, direction, since)
        digest = hashlib.sha256(f"{repo.id}|{state}|{sort}|{direction}|{since}".encode())
        scope = digest.hexdigest()[:12]
        items, keys = listing.items, listing.keys
        after = _first(query, "after")
        if after:
            opened = self._signer.open(after)
            if not (isinstance(opened, list) and len(opened) == 3 and opened[0] == scope):
                raise _GitHubError(422, "The `after` cursor is invalid.", _DOC_ISSUES)
            start = bisect.bisect_right(keys, (opened[1], opened[2]))
            page = _Page(items[start : start + per_page])
            number: int | None = None
        else:
            number = _positive(query, "page", 1)
            if number > self.deep_page_limit:
                raise _GitHubError(
                    422,
                    "Pagination with the page parameter is not supported for large datasets, "
                    "please use cursor based pagination (after/before)",
                    _DOC_ISSUES,
                )
            start = (number - 1) * per_page
            last = max(1, math.ceil(len(items) / per_page))
            page = _Page(items[start : start + per_page])
            page.links = self._page_links(path, query, number, last)
            if last > self.deep_page_limit:  # a `last` page link would be refused
                page.links.pop("last", None)
        end = start + len(page.rows)
        page.links.pop("next", None)
        if page.rows and end < len(items):
            if number is not None and number < self.deep_page_limit:
                link = self._link(path, query, page=str(number + 1))
            else:  # past the page limit GitHub hands out cursors
                token = self._signer.sign([scope, *keys[end - 1]])
                link = self._link(path, query, page=None, after=token)
            page.links = {"next": link, **page.links}
        return self._respond(page, [self._issue_json(item) for item in page.rows])

    def _timeline(self, item: Item, path: str, query: Query) -> Response:
        events = [e for e in item.events if EVENT_KINDS[e.kind][0] is not None]
        page = self._paged(events, path, query)
        return self._respond(page, [self._event_json(item, e) for e in page.rows])

    def _org_repos(self, org: str, query: Query) -> Response:
        repos = next((r for name, r in self._orgs.items() if name.lower() == org.lower()), None)
        if repos is None:
            raise _not_found(f"{DOCS}/repos/repos#list-organization-repositories")
        kind = _choice(
            query, "type", ("all", "public", "private", "forks", "sources", "member"), "all"
        )
        sort = _choice(query, "sort", ("created", "updated", "pushed", "full_name"), "created")
        default_direction = "asc" if sort == "full_name" else "desc"
        direction = _choice(query, "direction", ("asc", "desc"), default_direction)
        chosen = [] if kind in ("private", "forks") else list(repos)
        if sort == "full_name":
            chosen.sort(key=lambda r: r.full_name.lower())
        elif sort == "created":
            chosen.sort(key=lambda r: (r.created, r.id))
        else:
            chosen.sort(key=lambda r: (self._repo_updated(r), r.id))
        if direction == "desc":
            chosen.reverse()
        page = self._paged(chosen, f"/orgs/{org}/repos", query)
        return self._respond(page, [self._repo_json(r, full=False) for r in page.rows])

    # ------------------------------------------------------------------ rendering

    def _user_json(self, login: str) -> Json:
        cached = self._users.get((self._base, login))
        if cached is None:
            uid = user_id(login)
            url = f"{self._base}/users/{login}"
            org = any(org.lower() == login.lower() for org in self._orgs)
            cached = {
                "login": login,
                "id": uid,
                "node_id": node_id("O" if org else "U", uid),
                "avatar_url": f"{self._base}/avatars/u/{uid}?v=4",
                "gravatar_id": "",
                "url": url,
                "html_url": f"{self._base}/{login}",
                "followers_url": f"{url}/followers",
                "following_url": f"{url}/following{{/other_user}}",
                "gists_url": f"{url}/gists{{/gist_id}}",
                "starred_url": f"{url}/starred{{/owner}}{{/repo}}",
                "subscriptions_url": f"{url}/subscriptions",
                "organizations_url": f"{url}/orgs",
                "repos_url": f"{url}/repos",
                "events_url": f"{url}/events{{/privacy}}",
                "received_events_url": f"{url}/received_events",
                "type": "Organization" if org else "User",
                "user_view_type": "public",
                "site_admin": False,
            }
            self._users[(self._base, login)] = cached
        return cached

    def _viewer_json(self) -> Json:
        created = iso(_seconds(self.anchor) - 3000 * DAY)
        return {
            **self._user_json(VIEWER),
            "user_view_type": "private",
            "name": "The Octocat",
            "company": "@acme",
            "blog": "",
            "location": None,
            "email": None,
            "hireable": None,
            "bio": None,
            "twitter_username": None,
            "notification_email": None,
            "public_repos": len(self._world.repos),
            "public_gists": 0,
            "followers": 0,
            "following": 0,
            "created_at": created,
            "updated_at": created,
            "private_gists": 0,
            "total_private_repos": 0,
            "owned_private_repos": 0,
            "disk_usage": 0,
            "collaborators": 0,
            "two_factor_authentication": True,
            "plan": {"name": "free", "space": 976562499, "collaborators": 0, "private_repos": 0},
        }

    def _rate_limit_json(self) -> Json:
        def resource(budget: RateBudget) -> Json:
            return {
                "limit": budget.limit,
                "used": min(budget.used, budget.limit),
                "remaining": budget.remaining,
                "reset": budget.reset,
            }

        reset = self._core.reset
        fixed = {"limit": 30, "used": 0, "remaining": 30, "reset": reset}
        return {
            "resources": {
                "core": resource(self._core),
                "search": fixed,
                "graphql": resource(self._points),
                "code_search": {**fixed, "limit": 10, "remaining": 10},
            },
            "rate": resource(self._core),
        }

    def _repo_updated(self, repo: Repo) -> int:
        return max((i.updated for i in repo.items.values()), default=repo.created)

    def _repo_json(self, repo: Repo, *, full: bool) -> Json:
        api = f"{self._base}/repos/{repo.full_name}"
        html = f"{self._base}/{repo.full_name}"
        updated = iso(self._repo_updated(repo))
        open_count = sum(1 for i in repo.items.values() if i.state == "open")
        body: dict[str, Json] = {
            "id": repo.id,
            "node_id": repo.node_id,
            "name": repo.name,
            "full_name": repo.full_name,
            "private": False,
            "owner": self._user_json(repo.owner),
            "html_url": html,
            "description": f"The {repo.name} repository (simulated).",
            "fork": False,
            "url": api,
            **{key: api + suffix for key, suffix in _REPO_URLS},
            "created_at": iso(repo.created),
            "updated_at": updated,
            "pushed_at": updated,
            "git_url": f"git://127.0.0.1/{repo.full_name}.git",
            "ssh_url": f"git@127.0.0.1:{repo.full_name}.git",
            "clone_url": f"{html}.git",
            "svn_url": html,
            "homepage": None,
            "size": 1024,
            "stargazers_count": 0,
            "watchers_count": 0,
            "language": "Python",
            "has_issues": True,
            "has_projects": True,
            "has_downloads": True,
            "has_wiki": False,
            "has_pages": False,
            "has_discussions": False,
            "forks_count": 0,
            "mirror_url": None,
            "archived": repo.archived,
            "disabled": False,
            "open_issues_count": open_count,
            "license": None,
            "allow_forking": True,
            "is_template": False,
            "web_commit_signoff_required": False,
            "topics": [],
            "visibility": "public",
            "forks": 0,
            "open_issues": open_count,
            "watchers": 0,
            "default_branch": "main",
            "permissions": {
                "admin": False,
                "maintain": False,
                "push": True,
                "triage": True,
                "pull": True,
            },
        }
        if full:
            body.update(network_count=0, subscribers_count=0)
        return body

    def _label_json(self, repo: Repo, name: str) -> Json:
        number = label_id(repo, name)
        return {
            "id": number,
            "node_id": node_id("LA", repo.id, number),
            "url": f"{self._base}/repos/{repo.full_name}/labels/{quote(name)}",
            "name": name,
            "color": LABEL_COLORS.get(name, "ededed"),
            "default": name in ("bug", "enhancement", "documentation"),
            "description": None,
        }

    def _issue_json(self, item: Item) -> Json:
        repo = item.repo
        api = f"{self._base}/repos/{repo.full_name}"
        url = f"{api}/issues/{item.number}"
        html = f"{self._base}/{repo.full_name}/{'pull' if item.pull else 'issues'}/{item.number}"
        assignees = [self._user_json(login) for login in item.assignees]
        body: dict[str, Json] = {
            "url": url,
            "repository_url": api,
            "labels_url": f"{url}/labels{{/name}}",
            "comments_url": f"{url}/comments",
            "events_url": f"{url}/events",
            "html_url": html,
            "id": item.id,
            "node_id": item.node_id,
            "number": item.number,
            "title": item.title,
            "user": self._user_json(item.user),
            "labels": [self._label_json(repo, name) for name in item.labels],
            "state": item.state,
            "locked": False,
            "assignee": assignees[0] if assignees else None,
            "assignees": assignees,
            "milestone": None,
            "comments": 0,
            "created_at": iso(item.created),
            "updated_at": iso(item.updated),
            "closed_at": iso(item.closed_at) if item.closed_at is not None else None,
            "author_association": "MEMBER" if item.user in USERS else "CONTRIBUTOR",
            "type": None,
            "active_lock_reason": None,
        }
        if item.pull:
            body["draft"] = item.draft
            body["pull_request"] = {
                "url": f"{api}/pulls/{item.number}",
                "html_url": html,
                "diff_url": f"{html}.diff",
                "patch_url": f"{html}.patch",
                "merged_at": iso(item.merged_at) if item.merged_at is not None else None,
            }
        body.update(
            {
                "body": item.body or None,
                "closed_by": self._user_json(item.closed_by) if item.closed_by else None,
                "reactions": {
                    "url": f"{url}/reactions",
                    "total_count": 0,
                    **dict.fromkeys(
                        ("+1", "-1", "laugh", "hooray", "confused", "heart", "rocket", "eyes"), 0
                    ),
                },
                "timeline_url": f"{url}/timeline",
                "performed_via_github_app": None,
                "state_reason": item.state_reason,
                "sub_issues_summary": {"total": 0, "completed": 0, "percent_completed": 0},
                "issue_dependencies_summary": dict.fromkeys(
                    ("blocked_by", "total_blocked_by", "blocking", "total_blocking"), 0
                ),
            }
        )
        return body

    def _event_json(self, item: Item, event: Event) -> Json:
        repo = item.repo
        name = EVENT_KINDS[event.kind][0]
        api = f"{self._base}/repos/{repo.full_name}"
        if event.kind == "PullRequestReview":
            html = f"{self._base}/{repo.full_name}/pull/{item.number}"
            review_html = f"{html}#pullrequestreview-{event.id}"
            pull_url = f"{api}/pulls/{item.number}"
            return {
                "id": event.id,
                "node_id": event_node_id(item, event),
                "user": self._user_json(event.actor),
                "body": "",
                "commit_id": _sha(item),
                "submitted_at": iso(event.at),
                "state": (event.state or "").lower(),
                "html_url": review_html,
                "pull_request_url": pull_url,
                "author_association": "MEMBER" if event.actor in USERS else "CONTRIBUTOR",
                "_links": {"html": {"href": review_html}, "pull_request": {"href": pull_url}},
                "event": name,
            }
        if event.kind == "CrossReferencedEvent":
            assert event.source is not None
            return {
                "actor": self._user_json(event.actor),
                "created_at": iso(event.at),
                "updated_at": iso(event.at),
                "source": {"type": "issue", "issue": self._issue_json(event.source)},
                "event": name,
            }
        merge_commit = event.kind == "MergedEvent" or (
            event.kind == "ClosedEvent" and item.merged_at == event.at
        )
        body: dict[str, Json] = {
            "id": event.id,
            "node_id": event_node_id(item, event),
            "url": f"{api}/issues/events/{event.id}",
            "actor": self._user_json(event.actor),
            "event": name,
            "commit_id": _sha(item) if merge_commit else None,
            "commit_url": f"{api}/commits/{_sha(item)}" if merge_commit else None,
            "created_at": iso(event.at),
        }
        if event.kind in ("LabeledEvent", "UnlabeledEvent"):
            assert event.label is not None
            color = LABEL_COLORS.get(event.label, "ededed")
            body["label"] = {"name": event.label, "color": color}
        elif event.kind in ("AssignedEvent", "UnassignedEvent"):
            body["assignee"] = self._user_json(event.login or "")
        elif event.kind in ("ReviewRequestedEvent", "ReviewRequestRemovedEvent"):
            body["review_requester"] = self._user_json(event.actor)
            body["requested_reviewer"] = self._user_json(event.login or "")
        elif event.kind in ("ClosedEvent", "ReopenedEvent"):
            body["state_reason"] = event.state.lower() if event.state else None
        body["performed_via_github_app"] = None
        return body


# ---------------------------------------------------------------------- helpers


def _etag(payload: bytes) -> str:
    return f'W/"{hashlib.sha256(payload).hexdigest()}"'


def _http_date(seconds: int) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


def _sha(item: Item) -> str:
    return hashlib.sha1(f"{item.repo.full_name}#{item.number}".encode()).hexdigest()


def _truth(item: Item, event: Event) -> dict[str, Any]:
    truth: dict[str, Any] = {
        "type": event.kind,
        "at": _from_seconds(event.at),
        "actor": event.actor,
    }
    kind = event.kind
    if kind in ("LabeledEvent", "UnlabeledEvent"):
        truth["label"] = event.label
    elif kind in ("AssignedEvent", "UnassignedEvent"):
        truth["assignee"] = event.login
    elif kind in ("ReviewRequestedEvent", "ReviewRequestRemovedEvent"):
        truth["requestedReviewer"] = event.login
    elif kind == "ClosedEvent":
        truth["stateReason"] = event.state
    elif kind == "PullRequestReview":
        truth.update(state=event.state, author=event.login)
    elif kind == "CrossReferencedEvent":
        assert event.source is not None
        truth["source"] = (event.source.repo.full_name, event.source.number)
        truth["willCloseTarget"] = event.will_close
    elif kind == "ProjectV2ItemStatusChangedEvent":
        truth.update(status=event.status, previousStatus=event.previous)
    return truth


# ---------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `syncd simulate github`, separate so the main CLI can embed it."""
    parser = argparse.ArgumentParser(
        prog="syncd simulate github",
        description="Serve a deterministic fake GitHub (REST + GraphQL) on 127.0.0.1 until "
        "SIGINT/SIGTERM.",
    )
    add_serving_arguments(parser)
    parser.add_argument("--repos", default="acme/web", help="comma-separated owner/name list")
    parser.add_argument("--issues", type=int, default=50, help="generated issues per repository")
    parser.add_argument(
        "--pulls", type=int, default=50, help="generated pull requests per repository"
    )
    parser.add_argument(
        "--secondary-every", type=int, default=0, help="every Nth request → secondary limit 403"
    )
    parser.add_argument("--deep-page-limit", type=int, default=10, help="deepest page= allowed")
    parser.add_argument("--no-graphql", action="store_true", help="answer POST /graphql with 404")
    parser.add_argument("--rate-limit", type=int, default=5000, help="REST core budget per hour")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the simulator from the command line; returns the exit code (0 after a signal)."""
    return run_cli(build_parser(), argv, _from_options)


def _from_options(args: argparse.Namespace) -> tuple[GitHubSimulator, Callable[[str], str]]:
    repos = [r.strip() for r in args.repos.split(",") if r.strip()]
    sim = GitHubSimulator(
        **serving_options(args),
        repos=repos,
        issues=args.issues,
        pulls=args.pulls,
        graphql=not args.no_graphql,
        deep_page_limit=args.deep_page_limit,
        rate_limit=args.rate_limit,
        secondary_every=args.secondary_every,
    )
    items = len(repos) * (args.issues + args.pulls)
    return sim, lambda url: f"simulator: github on {url} ({len(repos)} repositories, {items} items)"


if __name__ == "__main__":
    sys.exit(main())
