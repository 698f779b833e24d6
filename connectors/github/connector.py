"""GitHub (github.com and Enterprise Server): issues and pull requests with their timelines.

One stream per repository. Listing: `GET /repos/{o}/{r}/issues?state=all&sort=created
&direction=asc&since=<watermark − lookback>&per_page=100`, following the `Link` header (GitHub
switches deep listings to cursor links; explicit deep `page=` numbers are refused). Creation
order does not change while items are edited mid-sync, so paging neither skips nor repeats;
`since` still limits the listing to what changed. The first page is sent with the ETag of the
previous run's first page: an unchanged repository costs one 304, which GitHub does not count
against the rate limit.

Timelines of the changed items: GraphQL, up to `batch_size` items per query (aliases), paging
inside an item whose timeline exceeds 100 events; the REST timeline (bounded concurrency)
where GraphQL is unavailable.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import structlog

from connectors.github.parse import (
    ISSUE_ITEM_TYPES,
    ISSUE_SELECTION,
    PULL_ITEM_TYPES,
    PULL_SELECTION,
    Event,
    GitHubMapping,
    events_from_graphql,
    events_from_rest,
    parse_item,
)
from connectors.github.settings import GitHubSourceConfig
from syncd import records
from syncd.config import SourceConfig
from syncd.contract import CheckResult, Cursor, Page, RawPage, RunContext
from syncd.domain import FlowItem
from syncd.errors import (
    AuthError,
    BadRequest,
    ConfigError,
    ConnectorError,
    MalformedPage,
    NotFound,
    RateLimited,
    SkippableRecord,
    SyncdError,
)
from syncd.http import (
    HttpClient,
    decode_json,
    default_classifier,
    describe,
    retry_after,
    seconds_until,
)
from syncd.mapping import FlowTypeRules, StageOverrides

if TYPE_CHECKING:
    from connectors.github.renormalise import GitHubRebuilder

log = structlog.get_logger("syncd.github")

#: per item: its events (parsed on demand), the issues it closes with their labels, and a
#: pull request's head branch (None where unknown: REST timelines do not carry it)
_Timeline = tuple[Callable[[], list[Event]], list[tuple[str, list[str]]], str | None]

#: GitHub asks clients hit by a secondary limit without Retry-After to wait at least a minute
SECONDARY_WAIT_S = 60.0


def github_classifier(response: httpx.Response, now: datetime) -> ConnectorError | None:
    """GitHub's special cases on top of the default status table: a 403 or 429 that is a
    secondary rate limit (its message says so, with or without Retry-After), a GraphQL 200
    whose errors say RATE_LIMITED, and permission 403s that name the scopes."""
    status = response.status_code
    where = describe(response.request)
    if status in (403, 429):
        text = response.text.lower()
        if "secondary rate limit" in text or "abuse" in text:
            # only Retry-After speaks of the secondary limit; the reset header is the
            # primary budget's
            header = response.headers.get("retry-after")
            wait = seconds_until(header, now) if header else None
            return RateLimited(
                f"{where}: GitHub secondary rate limit",
                retry_after=wait if wait is not None else SECONDARY_WAIT_S,
                status=status,
            )
        error = default_classifier(response, now)
        if isinstance(error, AuthError):
            have = response.headers.get("x-oauth-scopes")
            need = response.headers.get("x-accepted-oauth-scopes")
            scopes = (
                f" (token scopes: {have or 'none'}; needed: {need})" if need is not None else ""
            )
            return AuthError(f"{error}{scopes}", status=status)
        return error
    if status == 200 and response.url.path.endswith("/graphql"):
        try:
            body = response.json()
        except ValueError:
            return None
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors and any(isinstance(e, dict) and e.get("type") == "RATE_LIMITED" for e in errors):
            return RateLimited(
                f"{where}: GitHub GraphQL point budget exhausted",
                retry_after=retry_after(response, now),
                status=status,
            )
    return default_classifier(response, now)


class _TokenAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def __repr__(self) -> str:
        return "TokenAuth(***)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class _AppAuth(httpx.Auth):
    """GitHub App installation tokens, minted and refreshed through PyGithub."""

    def __init__(self, config: GitHubSourceConfig, http: HttpClient) -> None:
        self._config = config
        self._http = http
        self._token: str | None = None
        self._expires: datetime = datetime.min.replace(tzinfo=UTC)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AppAuth(app_id={self._config.app_id})"

    def _current(self) -> str:
        with self._lock:
            if self._token is None or self._expires - datetime.now(UTC) < timedelta(minutes=5):
                from github import Auth, GithubIntegration

                config = self._config
                assert config.app_private_key_file is not None
                assert config.app_id is not None and config.app_installation_id is not None
                key = config.app_private_key_file.read_text(encoding="utf-8")
                integration = GithubIntegration(
                    auth=Auth.AppAuth(config.app_id, key), base_url=config.url
                )
                token = integration.get_access_token(config.app_installation_id)
                self._token = token.token
                self._expires = token.expires_at.astimezone(UTC)
                self._http.register_secret(self._token)
            return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._current()}"
        yield request


class GitHubConnector:
    """Syncs the issues and pull requests of repositories (listed, or every one of an org)."""

    kind: ClassVar[str] = "github"
    config_model: ClassVar[type[SourceConfig]] = GitHubSourceConfig

    def __init__(self, config: SourceConfig, http: HttpClient) -> None:
        if not isinstance(config, GitHubSourceConfig):
            raise ConfigError(f"source {config.name!r} is not a GitHub source")
        self.config = config
        self.http = http
        self.base = config.url
        self._auth: httpx.Auth | None = None
        if config.app_id is not None:
            self._auth = _AppAuth(config, http)
        else:
            token = config.token()
            if token is not None:
                http.register_secret(token.get_secret_value())
                self._auth = _TokenAuth(token.get_secret_value())
        self.graphql_available = config.graphql
        self.mapping = mapping_of(config)

    def __repr__(self) -> str:
        return f"GitHubConnector(source={self.config.name!r}, url={self.base!r})"

    @classmethod
    def rebuilder(cls, config: SourceConfig) -> GitHubRebuilder:
        """Re-normalising from stored raw pages (`syncd.renormalise`)."""
        from connectors.github.renormalise import GitHubRebuilder  # it builds on this module

        return GitHubRebuilder(config)

    # -- HTTP ----------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        raws: list[RawPage] | None,
        stream: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[httpx.Response, Any]:
        """Send a request; return the response and its JSON body, decoded once (None for a
        304), recording it as a raw page when `raws` is given."""
        response = self.http.request(
            method,
            url,
            params=params,
            json_body=body,
            headers=headers,
            auth=self._auth,
            classify=github_classifier,
        )
        decoded = None if response.status_code == 304 else decode_json(response)
        if raws is not None and response.status_code != 304:
            raws.append(
                RawPage(
                    stream=stream,
                    method=method,
                    url=url.split("?", 1)[0],
                    params=dict(
                        body if body is not None else params or dict(response.request.url.params)
                    ),
                    body=decoded,
                    fetched_at=datetime.now(UTC),
                )
            )
        return response, decoded

    def _pages(self, url: str, params: Mapping[str, Any] | None) -> Iterator[Any]:
        """Every page of a Link-paged list (used for small lists: org repositories)."""
        next_url: str | None = url
        while next_url:
            response, page = self._request(
                "GET", next_url, None, "", params=params if next_url == url else None
            )
            yield page
            next_url = response.links.get("next", {}).get("url")

    def ids(self, stream: str) -> Iterator[str]:
        """Every issue and pull request id of the repository (the issues listing holds both),
        100 a page."""
        params = {"state": "all", "per_page": 100}
        for page in self._pages(f"{self.base}/repos/{stream}/issues", params):
            if not isinstance(page, list):
                raise MalformedPage(f"issues of {stream}: expected a JSON array")
            for entry in page:
                if not isinstance(entry, Mapping) or entry.get("id") is None:
                    raise MalformedPage(f"issues of {stream}: an entry without an id")
                yield str(entry["id"])

    def _graphql(
        self, query: str, variables: Mapping[str, Any], raws: list[RawPage], stream: str
    ) -> Mapping[str, Any]:
        _response, body = self._request(
            "POST",
            self.config.graphql_url,
            raws,
            stream,
            body={"query": query, "variables": dict(variables)},
        )
        if not isinstance(body, Mapping) or not isinstance(body.get("data"), Mapping):
            errors = body.get("errors") if isinstance(body, Mapping) else None
            raise BadRequest(f"GraphQL query refused: {str(errors)[:300]}")
        return body

    # -- contract ------------------------------------------------------------------------

    def streams(self) -> Sequence[str]:
        """The configured repositories plus every repository of the configured orgs."""
        repos = dict.fromkeys(self.config.repos)
        for org in self.config.orgs:
            for page in self._pages(
                f"{self.base}/orgs/{org}/repos", {"type": "all", "per_page": 100}
            ):
                if not isinstance(page, list):
                    raise MalformedPage(f"repositories of org {org}: expected a JSON array")
                for repo in page:
                    if repo.get("archived") and not self.config.include_archived:
                        continue
                    repos.setdefault(str(repo["full_name"]), None)
        return list(repos)

    def check(self) -> list[CheckResult]:
        """Token, repository access and GraphQL availability, one line each."""
        name = self.config.name
        results: list[CheckResult] = []
        try:
            response, user = self._request("GET", f"{self.base}/user", None, "")
            scopes = response.headers.get("x-oauth-scopes")
            results.append(
                CheckResult(
                    True,
                    f"{name}: authenticated as {user.get('login')}"
                    + (f" (scopes: {scopes})" if scopes else ""),
                )
            )
        except SyncdError as exc:
            results.append(CheckResult(False, f"{name}: {exc}"))
            return results
        try:
            repos = self.streams()
        except SyncdError as exc:
            return [*results, CheckResult(False, f"{name}: listing org repositories: {exc}")]
        for repo in repos:
            try:
                self._request("GET", f"{self.base}/repos/{repo}", None, repo)
                results.append(CheckResult(True, f"{name}: {repo} readable"))
            except SyncdError as exc:
                results.append(CheckResult(False, f"{name}: {repo}: {exc}"))
        if self.config.graphql:
            try:
                body = self._graphql("query { rateLimit { remaining resetAt } }", {}, [], "")
                remaining = body["data"]["rateLimit"]["remaining"]
                results.append(
                    CheckResult(True, f"{name}: GraphQL available ({remaining} points left)")
                )
            except SyncdError as exc:
                results.append(
                    CheckResult(
                        False,
                        f"{name}: GraphQL unavailable ({exc}); "
                        "set graphql = false to use REST timelines",
                    )
                )
        return results

    def fetch(self, stream: str, cursor: Cursor | None, run: RunContext) -> Iterator[Page]:
        repo = stream
        state = dict(cursor.state) if cursor else {}
        watermark = cursor.watermark if cursor else None
        if run.full:
            watermark, state = None, {}
        listing = f"{self.base}/repos/{repo}/issues"
        if state.get("next"):
            since: str | None = state.get("since")
            next_url: str | None = str(state["next"])
            params: dict[str, Any] | None = None
            etag = state.get("etag")
        else:
            bound = watermark - run.lookback if watermark else None
            since = bound.strftime("%Y-%m-%dT%H:%M:%SZ") if bound else None
            next_url = listing
            params = {
                "state": "all",
                "sort": "created",
                "direction": "asc",
                "per_page": self.config.per_page,
            }
            if since:
                params["since"] = since
            etag = None
        seen = datetime.fromisoformat(state["seen"]) if state.get("seen") else None
        first = params is not None
        raws: list[RawPage] = []
        while next_url:
            headers = None
            if first and state.get("etag") and state.get("since") == since:
                headers = {"If-None-Match": str(state["etag"])}
            try:
                response, page = self._request(
                    "GET", next_url, raws, repo, params=params, headers=headers
                )
            except BadRequest:
                if first:
                    raise
                log.warning(
                    "github.cursor_link_rejected",
                    source=self.config.name,
                    stream=repo,
                    action="restarting the listing from its bound",
                )
                next_url, first = listing, True
                params = {
                    "state": "all",
                    "sort": "created",
                    "direction": "asc",
                    "per_page": self.config.per_page,
                    **({"since": since} if since else {}),
                }
                continue
            if response.status_code == 304:
                yield Page(raws=[], items=[], cursor=Cursor(watermark=watermark, state=state))
                return
            if first:
                etag = response.headers.get("etag")
            if not isinstance(page, list):
                raise MalformedPage(f"issues of {repo}: expected a JSON array")
            next_url = response.links.get("next", {}).get("url")
            params, first = None, False
            seen = records.newest(page, seen, _updated_at)
            changed = records.changed(page, run, _updated_at)
            items, skipped = self._items(repo, changed, raws)
            if next_url:
                new_cursor = Cursor(
                    watermark=watermark,
                    state={
                        "next": next_url,
                        "since": since,
                        "etag": etag,
                        "seen": seen.isoformat() if seen else None,
                    },
                    complete=False,
                )
            else:
                best = max((t for t in (watermark, seen) if t is not None), default=None)
                final = min(best, run.started_at) if best else None
                final_since = (
                    (final - run.lookback).strftime("%Y-%m-%dT%H:%M:%SZ") if final else None
                )
                # the ETag is worth keeping only if the next run asks the same question
                new_cursor = Cursor(
                    watermark=final,
                    state={"etag": etag if final_since == since else None, "since": final_since},
                )
            yield Page(raws=list(raws), items=items, cursor=new_cursor, skipped=skipped)
            raws.clear()

    # -- items ---------------------------------------------------------------------------

    def _items(
        self, repo: str, entries: Sequence[Mapping[str, Any]], raws: list[RawPage]
    ) -> tuple[list[FlowItem], int]:
        if not entries:
            return [], 0
        timelines: dict[int, _Timeline] = {}
        if self.graphql_available:
            try:
                timelines = self._graphql_timelines(repo, entries, raws)
            except NotFound:
                self.graphql_available = False
                log.warning(
                    "github.graphql_unavailable", source=self.config.name, action="REST timelines"
                )
        if not self.graphql_available:
            timelines = self._rest_timelines(repo, entries, raws)

        def parse(entry: Mapping[str, Any]) -> FlowItem:
            if entry.get("number") not in timelines:
                raise SkippableRecord("no timeline (deleted or moved?)")
            events, closing, branch = timelines[int(entry["number"])]
            # the events are parsed here, so a bad event skips its item, not the run
            return item_of(self.config, self.mapping, repo, entry, events(), closing, branch)

        return records.parse_all(
            entries,
            parse,
            event="github.record_skipped",
            source=self.config.name,
            stream=repo,
            key_of=lambda entry: f"{repo}#{entry.get('number')}",
        )

    def _graphql_timelines(
        self,
        repo: str,
        entries: Sequence[Mapping[str, Any]],
        raws: list[RawPage],
    ) -> dict[int, _Timeline]:
        owner, name = repo.split("/", 1)
        out: dict[int, _Timeline] = {}
        size = self.config.batch_size
        for start in range(0, len(entries), size):
            chunk = entries[start : start + size]
            fields = []
            for entry in chunk:
                number = int(entry["number"])
                pull = entry.get("pull_request") is not None
                fields.append(_item_query(f"n{number}", number, pull, None))
            query = (
                "query($owner: String!, $name: String!) { rateLimit { cost remaining "
                "resetAt } repository(owner: $owner, name: $name) { " + " ".join(fields) + " } }"
            )
            body = self._graphql(query, {"owner": owner, "name": name}, raws, repo)
            repository = body["data"].get("repository")
            if not isinstance(repository, Mapping):
                raise AuthError(
                    f"GraphQL cannot see {repo} (the REST listing could): check "
                    f"the token's access: {str(body.get('errors'))[:200]}"
                )
            for entry in chunk:
                number = int(entry["number"])
                node = repository.get(f"n{number}")
                if not isinstance(node, Mapping):
                    continue
                key = f"{repo}#{number}"
                nodes = list(node["timelineItems"]["nodes"])
                page_info = node["timelineItems"]["pageInfo"]
                while page_info.get("hasNextPage"):
                    more = self._graphql(
                        "query($owner: String!, $name: String!) { repository(owner: $owner, "
                        "name: $name) { "
                        + _item_query(
                            "n",
                            number,
                            entry.get("pull_request") is not None,
                            page_info["endCursor"],
                        )
                        + " } }",
                        {"owner": owner, "name": name},
                        raws,
                        repo,
                    )
                    timeline = more["data"]["repository"]["n"]["timelineItems"]
                    nodes.extend(timeline["nodes"])
                    page_info = timeline["pageInfo"]
                closing, branch = pull_refs(node)
                out[number] = (functools.partial(events_from_graphql, nodes, key), closing, branch)
        return out

    def _rest_timelines(
        self,
        repo: str,
        entries: Sequence[Mapping[str, Any]],
        raws: list[RawPage],
    ) -> dict[int, _Timeline]:
        def one(number: int) -> tuple[int, Callable[[], list[Event]], list[RawPage]]:
            local: list[RawPage] = []
            timeline: list[Mapping[str, Any]] = []
            url: str | None = f"{self.base}/repos/{repo}/issues/{number}/timeline"
            params: dict[str, Any] | None = {"per_page": 100}
            while url:
                response, page = self._request("GET", url, local, repo, params=params)
                if not isinstance(page, list):
                    raise MalformedPage(f"timeline of {repo}#{number}: expected a JSON array")
                timeline.extend(page)
                url, params = response.links.get("next", {}).get("url"), None
            return number, functools.partial(events_from_rest, timeline, f"{repo}#{number}"), local

        numbers = [int(e["number"]) for e in entries]
        out: dict[int, _Timeline] = {}
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            for number, events, local in pool.map(one, numbers):
                out[number] = (events, [], None)
                raws.extend(local)
        return out


def mapping_of(config: GitHubSourceConfig) -> GitHubMapping:
    """The source's rules for turning GitHub facts into stages and flow types."""
    return GitHubMapping(
        active_labels=frozenset(label.casefold() for label in config.active_labels),
        waiting_labels=frozenset(label.casefold() for label in config.waiting_labels),
        project_statuses=dict(config.project_statuses),
        overrides=StageOverrides.from_config(config.stages),
        flow_types=FlowTypeRules.from_config(config.flow_type_rules),
    )


def item_of(
    config: GitHubSourceConfig,
    mapping: GitHubMapping,
    repo: str,
    entry: Mapping[str, Any],
    events: Sequence[Event],
    closing: Sequence[tuple[str, Sequence[str]]] = (),
    branch: str | None = None,
) -> FlowItem:
    """An issue or pull request record of `repo` and its timeline's events → the source's flow
    item. `closing` and `branch` are what a pull request's GraphQL node says (`pull_refs`).
    Shared by the sync and re-normalising, so both read a record alike."""
    return parse_item(
        entry,
        events,
        mapping,
        repo=repo,
        source=config.name,
        value_stream=config.stream_value,
        closing=closing,
        branch=branch,
    )


def pull_refs(node: Mapping[str, Any]) -> tuple[list[tuple[str, list[str]]], str | None]:
    """What a pull request's GraphQL node (the first page of its timeline) says besides its
    timeline: the issues it closes, with their labels, and its head branch. An issue's node
    has neither."""
    closing = [
        (
            f"{ref['repository']['nameWithOwner']}#{ref['number']}",
            [str(lb["name"]) for lb in (ref.get("labels") or {}).get("nodes") or ()],
        )
        for ref in (node.get("closingIssuesReferences") or {}).get("nodes") or ()
    ]
    head = node.get("headRefName")
    return closing, str(head) if head else None


def _item_query(alias: str, number: int, pull: bool, after: str | None) -> str:
    """One aliased issue/pullRequest selection with its timeline (and closing references)."""
    types = ", ".join(PULL_ITEM_TYPES if pull else ISSUE_ITEM_TYPES)
    page = f', after: "{after}"' if after else ""
    closing = (
        (
            "headRefName closingIssuesReferences(first: 10) { nodes { number repository { "
            "nameWithOwner } labels(first: 20) { nodes { name } } } } "
        )
        if pull
        else ""
    )
    field = "pullRequest" if pull else "issue"
    selection = PULL_SELECTION if pull else ISSUE_SELECTION
    return (
        f"{alias}: {field}(number: {number}) {{ number {closing}"
        f"timelineItems(first: 100{page}, itemTypes: [{types}]) {{ "
        f"pageInfo {{ hasNextPage endCursor }} nodes {{ {selection} }} }} }}"
    )


def _updated_at(record: Mapping[str, Any]) -> Any:
    return record.get("updated_at")
