"""GitLab (gitlab.com and self-managed): issues and merge requests with their histories.

Two streams per project, `<path>:issues` and `<path>:merge_requests`, each with its cursor.
Listing: `/projects/:id/<kind>?scope=all&order_by=created_at&sort=asc&updated_after=…
&per_page=100&pagination=keyset`, following `Link` (keyset) or `X-Next-Page` (offset, where
keyset is refused). Creation order, for the reason given in docs/architecture.md (an item edited
mid-sync must not jump behind the page cursor).

Histories of changed items: resource state events and resource label events (REST, each
paged, `concurrency` items at a time: the documented source of states and labels); issue
links only for issues that report blocking links; system notes only where they matter (merge
requests with reviewers, whose review requests live only in system notes; issues when
`work_item_status` is on).

System notes are read through GraphQL, `graphql_batch_size` items a query:
`project(fullPath:) { mergeRequests|issues(iids:, first:) { nodes { iid notes(first: 100,
filter: ONLY_ACTIVITY) { … } } } }`. GitLab scores a query before running it (limit 250 with
a token); by its resolvers' rules a connection asked for by `iids` scores the same whatever
their number, but where an instance answers "Query has complexity of N, which exceeds max
complexity of L" the batch is split (to about L/N of its size, kept for the connector's life)
and retried, and a single item still too complex is read over REST. An item with more than
100 system notes continues with a query of its own (`after:` its end cursor). Instances
older than 16.5 refuse `notes(filter:)`: the query is sent again without it. Where
`/api/graphql` answers 404 or 403, or refuses the query, or with `graphql = false`, each
item's REST `/notes` is read instead. GraphQL times notes to the second (REST to the
millisecond): where a note that changes a stage shares its second with another change of the
item, so that their order would be a guess, that item's REST notes are read
(`note_times_ambiguous`); otherwise a note-driven transition may be stamped up to 999 ms
earlier than REST would have it.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import httpx
import structlog

from connectors.gitlab.parse import (
    GitLabMapping,
    changes_from_events,
    note_times_ambiguous,
    notes_from_graphql,
    parse_item,
    parse_links,
)
from connectors.gitlab.settings import GitLabSourceConfig
from syncd import records
from syncd.config import SourceConfig
from syncd.contract import CheckResult, Cursor, Page, RawPage, RunContext
from syncd.domain import FlowItem, Link
from syncd.errors import (
    AuthError,
    BadRequest,
    ConfigError,
    MalformedPage,
    NotFound,
    SyncdError,
)
from syncd.http import HttpClient, decode_json
from syncd.mapping import FlowTypeRules, StageOverrides

if TYPE_CHECKING:
    from connectors.gitlab.renormalise import GitLabRebuilder

log = structlog.get_logger("syncd.gitlab")
KINDS = ("issues", "merge_requests")
#: GraphQL fields of the two kinds: the batch connection and the single item
_GRAPHQL_FIELDS = {
    "issues": ("issues", "issue"),
    "merge_requests": ("mergeRequests", "mergeRequest"),
}
_NOTE_SELECTION = "pageInfo { hasNextPage endCursor } nodes { id body system createdAt }"
_TOO_COMPLEX = re.compile(
    r"Query has complexity of (?P<score>\d+), which exceeds max complexity of (?P<limit>\d+)"
)
_FILTER_REFUSED = re.compile(r"doesn't accept argument 'filter'|Unknown argument .filter.")
#: where GraphQL cannot serve notes; REST can (the listing that came first went through)
_GRAPHQL_UNAVAILABLE = (NotFound, AuthError, BadRequest)


class _TooComplex(BadRequest):
    """The instance scored a GraphQL query over its complexity limit."""

    def __init__(self, message: str, score: int, limit: int) -> None:
        super().__init__(message)
        self.score = score
        self.limit = limit


class _FilterRefused(BadRequest):
    """The instance's `notes` has no `filter` argument (GitLab before 16.5)."""


Notes = list[dict[str, Any]]
_JsonList = Sequence[Mapping[str, Any]]
#: an item's history as fetched: state events, label events, system notes, stated links
History = tuple[_JsonList, _JsonList, _JsonList, Sequence[Link]]


class _PrivateToken(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "PrivateToken(***)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["PRIVATE-TOKEN"] = self._token
        yield request


def _since(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GitLabConnector:
    """Syncs the issues and merge requests of projects (listed, or every one of a group)."""

    kind: ClassVar[str] = "gitlab"
    config_model: ClassVar[type[SourceConfig]] = GitLabSourceConfig

    def __init__(self, config: SourceConfig, http: HttpClient) -> None:
        if not isinstance(config, GitLabSourceConfig):
            raise ConfigError(f"source {config.name!r} is not a GitLab source")
        self.config = config
        self.http = http
        token = config.token()
        self._auth: httpx.Auth | None = None
        if token is not None:
            http.register_secret(token.get_secret_value())
            self._auth = _PrivateToken(token.get_secret_value())
        self.keyset = True
        #: notes through GraphQL until the instance shows it cannot serve them
        self.graphql_available = config.graphql
        self.graphql_batch = config.graphql_batch_size
        self.notes_filter = True
        self.mapping = mapping_of(config)

    def __repr__(self) -> str:
        return f"GitLabConnector(source={self.config.name!r}, url={self.config.url!r})"

    @classmethod
    def rebuilder(cls, config: SourceConfig) -> GitLabRebuilder:
        """Re-normalising from stored raw pages (`syncd.renormalise`)."""
        from connectors.gitlab.renormalise import GitLabRebuilder  # it builds on this module

        return GitLabRebuilder(config)

    def _get(
        self,
        url: str,
        raws: list[RawPage] | None,
        stream: str,
        params: Mapping[str, Any] | None = None,
    ) -> tuple[Any, httpx.Response]:
        response = self.http.request("GET", url, params=params, auth=self._auth)
        body = decode_json(response)
        if raws is not None:
            raws.append(
                RawPage(
                    stream=stream,
                    method="GET",
                    url=url.split("?", 1)[0],
                    params=dict(response.request.url.params),
                    body=body,
                    fetched_at=datetime.now(UTC),
                )
            )
        return body, response

    def _all(
        self, url: str, stream: str, raws: list[RawPage] | None, params: Mapping[str, Any]
    ) -> list[Any]:
        """Every element of an offset- or Link-paged list."""
        out: list[Any] = []
        next_url: str | None = url
        page_params: Mapping[str, Any] | None = params
        while next_url:
            body, response = self._get(next_url, raws, stream, page_params)
            if not isinstance(body, list):
                raise MalformedPage(f"{next_url.split('?')[0]}: expected a JSON array")
            out.extend(body)
            next_url, page_params = self._next(response, next_url, page_params)
        return out

    def _graphql(
        self, query: str, variables: Mapping[str, Any], raws: list[RawPage] | None, stream: str
    ) -> Mapping[str, Any]:
        """POST a query to `/api/graphql`; its decoded body when it carries data. A refusal of
        the whole query (errors, no data) raises `_TooComplex`, `_FilterRefused` or
        BadRequest with GitLab's messages."""
        url = self.config.graphql_url
        payload = {"query": query, "variables": dict(variables)}
        response = self.http.request("POST", url, json_body=payload, auth=self._auth)
        body = decode_json(response)
        if raws is not None:
            raws.append(
                RawPage(
                    stream=stream,
                    method="POST",
                    url=url,
                    params=payload,
                    body=body,
                    fetched_at=datetime.now(UTC),
                )
            )
        if not isinstance(body, Mapping):
            raise MalformedPage(f"{url}: expected a JSON object")
        if isinstance(body.get("data"), Mapping):
            return body
        errors = body.get("errors")
        messages = [
            str(e.get("message"))
            for e in (errors if isinstance(errors, list) else [])
            if isinstance(e, Mapping)
        ]
        text = "; ".join(messages)[:300] or "no data and no errors"
        for message in messages:
            if match := _TOO_COMPLEX.search(message):
                raise _TooComplex(
                    f"{url}: {message}", int(match.group("score")), int(match.group("limit"))
                )
            if _FILTER_REFUSED.search(message):
                raise _FilterRefused(f"{url}: {message}")
        raise BadRequest(f"{url}: GraphQL query refused: {text}")

    @staticmethod
    def _next(
        response: httpx.Response, url: str, params: Mapping[str, Any] | None
    ) -> tuple[str | None, Mapping[str, Any] | None]:
        link = response.links.get("next", {}).get("url")
        if link:
            return link, None
        next_page = response.headers.get("x-next-page", "").strip()
        if next_page:
            merged = {**dict(response.request.url.params), "page": next_page}
            return url.split("?", 1)[0], merged
        return None, None

    # -- contract ------------------------------------------------------------------------

    def _projects(self) -> list[str]:
        projects = dict.fromkeys(self.config.projects)
        for group in self.config.groups:
            for project in self._all(
                f"{self.config.api}/groups/{quote(group, safe='')}/projects",
                "",
                None,
                {"include_subgroups": "true", "per_page": 100, "archived": "false"},
            ):
                projects.setdefault(str(project["path_with_namespace"]), None)
        return list(projects)

    def streams(self) -> Sequence[str]:
        return [f"{project}:{kind}" for project in self._projects() for kind in KINDS]

    def check(self) -> list[CheckResult]:
        name = self.config.name
        try:
            user, _ = self._get(f"{self.config.api}/user", None, "")
            results = [CheckResult(True, f"{name}: authenticated as {user.get('username')}")]
            for project in self._projects():
                self._get(f"{self.config.api}/projects/{quote(project, safe='')}", None, "")
                results.append(CheckResult(True, f"{name}: {project} readable"))
        except SyncdError as exc:
            return [CheckResult(False, f"{name}: {exc}")]
        if self.config.graphql:
            try:
                body = self._graphql("query { currentUser { username } }", {}, None, "")
                user = body["data"].get("currentUser") or {}
                results.append(
                    CheckResult(
                        True,
                        f"{name}: GraphQL available as {user.get('username')} "
                        "(system notes read in batches)",
                    )
                )
            except SyncdError as exc:
                results.append(
                    CheckResult(
                        False,
                        f"{name}: GraphQL unavailable ({exc}); system notes would be read per "
                        "item over REST (set graphql = false to use REST without this check)",
                    )
                )
        return results

    def ids(self, stream: str) -> Iterator[str]:
        """Every issue or merge request id of the project (ids from the listing, 100 a page,
        keyset pages where the instance allows them)."""
        project, _, kind = stream.rpartition(":")
        if kind not in KINDS:
            raise ConfigError(f"unknown GitLab stream {stream!r}")
        listing = f"{self.config.api}/projects/{quote(project, safe='')}/{kind}"
        params: dict[str, Any] = {
            "scope": "all",
            "order_by": "created_at",
            "sort": "asc",
            "per_page": 100,
        }
        try:
            entries = self._all(listing, stream, None, {**params, "pagination": "keyset"})
        except BadRequest:  # keyset refused here: offset pages
            entries = self._all(listing, stream, None, params)
        for entry in entries:
            if not isinstance(entry, Mapping) or entry.get("id") is None:
                raise MalformedPage(f"{kind} of {project}: an entry without an id")
            yield str(entry["id"])

    def fetch(self, stream: str, cursor: Cursor | None, run: RunContext) -> Iterator[Page]:
        project, _, kind = stream.rpartition(":")
        if kind not in KINDS:
            raise ConfigError(f"unknown GitLab stream {stream!r}")
        state = dict(cursor.state) if cursor else {}
        watermark = cursor.watermark if cursor else None
        if run.full:
            watermark, state = None, {}
        listing = f"{self.config.api}/projects/{quote(project, safe='')}/{kind}"
        seen = datetime.fromisoformat(state["seen"]) if state.get("seen") else None
        url: str | None
        params: Mapping[str, Any] | None
        if state.get("next"):
            url, params = str(state["next"]), state.get("next_params")
        else:
            bound = watermark - run.lookback if watermark else None
            url, params = (
                listing,
                {
                    "scope": "all",
                    "order_by": "created_at",
                    "sort": "asc",
                    "per_page": self.config.per_page,
                    **({"updated_after": _since(bound)} if bound else {}),
                    **({"pagination": "keyset"} if self.keyset else {}),
                },
            )
        raws: list[RawPage] = []
        while url:
            try:
                body, response = self._get(url, raws, stream, params)
            except BadRequest:
                if params is None or params.get("pagination") != "keyset":
                    raise
                self.keyset = False  # this instance or endpoint refuses keyset: offset pages
                params = {k: v for k, v in params.items() if k != "pagination"}
                continue
            if not isinstance(body, list):
                raise MalformedPage(f"{kind} of {project}: expected a JSON array")
            url, params = self._next(response, url, params)
            seen = records.newest(body, seen, _updated_at)
            items, skipped = self._items(
                project, kind, records.changed(body, run, _updated_at), raws, stream
            )
            if url:
                new_cursor = Cursor(
                    watermark=watermark,
                    state={
                        "next": url,
                        "next_params": dict(params) if params else None,
                        "seen": seen.isoformat() if seen else None,
                    },
                    complete=False,
                )
            else:
                best = max((t for t in (watermark, seen) if t is not None), default=None)
                new_cursor = Cursor(watermark=min(best, run.started_at) if best else None)
            yield Page(raws=list(raws), items=items, cursor=new_cursor, skipped=skipped)
            raws.clear()

    def _items(
        self,
        project: str,
        kind: str,
        entries: Sequence[Mapping[str, Any]],
        raws: list[RawPage],
        stream: str,
    ) -> tuple[list[FlowItem], int]:
        base = f"{self.config.api}/projects/{quote(project, safe='')}/{kind}"
        merge_requests = kind == "merge_requests"
        sign = "!" if merge_requests else "#"
        wanted = [
            int(entry["iid"])
            for entry in entries
            if str(entry.get("iid", "")).isdigit() and self._wants_notes(entry, merge_requests)
        ]
        batched: dict[int, Notes] = {}
        cursors: dict[int, str] = {}
        if wanted and self.graphql_available:
            try:
                batched, cursors = self._graphql_notes(project, kind, wanted, raws, stream)
            except _GRAPHQL_UNAVAILABLE as exc:
                self.graphql_available = False
                log.warning(
                    "gitlab.graphql_unavailable",
                    source=self.config.name,
                    stream=stream,
                    error=str(exc),
                    action="REST notes per item",
                )
        reread: list[int] = []  # batched items whose notes were read over REST after all

        def rest_notes(iid: Any, local: list[RawPage]) -> Notes:
            return self._all(
                f"{base}/{iid}/notes",
                stream,
                local,
                {"per_page": 100, "sort": "asc", "order_by": "created_at"},
            )

        def history(entry: Mapping[str, Any]) -> tuple[Mapping[str, Any], History, list[RawPage]]:
            local: list[RawPage] = []
            iid = entry.get("iid")
            paged = {"per_page": 100}
            state = self._all(f"{base}/{iid}/resource_state_events", stream, local, paged)
            labels = self._all(f"{base}/{iid}/resource_label_events", stream, local, paged)
            notes: Notes = []
            if self._wants_notes(entry, merge_requests):
                number = int(str(iid)) if str(iid).isdigit() else -1
                found = batched.get(number)
                if found is not None and number in cursors:
                    found = self._more_notes(project, kind, number, cursors[number], found, local)
                    if found is None:
                        reread.append(number)
                if found is not None and note_times_ambiguous(
                    state, labels, found, f"{project}{sign}{iid}"
                ):
                    reread.append(number)
                    found = None
                notes = found if found is not None else rest_notes(iid, local)
            links: list[Link] = []
            if not merge_requests and int(entry.get("blocking_issues_count") or 0) > 0:
                links = parse_links(self._all(f"{base}/{iid}/links", stream, local, paged))
            return entry, (state, labels, notes, links), local

        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            fetched = list(pool.map(history, entries))
        for _entry, _data, local in fetched:
            raws.extend(local)
        if wanted:
            log.debug(
                "gitlab.notes",
                source=self.config.name,
                stream=stream,
                items=len(wanted),
                graphql=len(batched) - len(reread),
                rest=len(wanted) - len(batched) + len(reread),
            )

        def parse(result: tuple[Mapping[str, Any], History, list[RawPage]]) -> FlowItem:
            entry, item_history, _local = result
            key = f"{project}{sign}{entry.get('iid')}"
            return item_of(self.config, self.mapping, project, key, entry, item_history)

        return records.parse_all(
            fetched,
            parse,
            event="gitlab.record_skipped",
            source=self.config.name,
            stream=stream,
            key_of=lambda result: f"{project}{sign}{result[0].get('iid')}",
        )

    def _wants_notes(self, entry: Mapping[str, Any], merge_request: bool) -> bool:
        """Merge requests with reviewers (review requests are only in system notes); issues
        when the work item Status is read."""
        return wants_notes(self.config, entry, merge_request)

    # -- system notes through GraphQL ------------------------------------------------------

    def _notes_field(self, after: bool) -> str:
        arguments = "first: 100" + (", after: $after" if after else "")
        if self.notes_filter:
            arguments += ", filter: ONLY_ACTIVITY"
        return f"notes({arguments}) {{ {_NOTE_SELECTION} }}"

    def _graphql_notes(
        self, project: str, kind: str, iids: Sequence[int], raws: list[RawPage], stream: str
    ) -> tuple[dict[int, Notes], dict[int, str]]:
        """The system notes of `iids` (REST-shaped, by iid) in batches, and the end cursors of
        items with more than one page of them. Items left out (refused even alone, or not
        returned) are for the caller to read over REST."""
        connection = _GRAPHQL_FIELDS[kind][0]
        out: dict[int, Notes] = {}
        cursors: dict[int, str] = {}
        pending = list(iids)
        while pending:
            chunk, pending = pending[: self.graphql_batch], pending[self.graphql_batch :]
            query = (
                "query($project: ID!, $iids: [String!], $first: Int) { project(fullPath: "
                f"$project) {{ items: {connection}(iids: $iids, first: $first) {{ nodes {{ iid "
                f"{self._notes_field(after=False)} }} }} }} }}"
            )
            variables = {"project": project, "iids": [str(i) for i in chunk], "first": len(chunk)}
            try:
                body = self._graphql(query, variables, raws, stream)
            except _TooComplex as exc:
                if len(chunk) == 1:
                    log.warning(
                        "gitlab.graphql_too_complex",
                        source=self.config.name,
                        stream=stream,
                        iid=chunk[0],
                        error=str(exc),
                        action="REST notes",
                    )
                    continue
                self.graphql_batch = max(
                    1, min(len(chunk) // 2, len(chunk) * exc.limit // max(exc.score, 1))
                )
                log.info(
                    "gitlab.graphql_batch_split",
                    source=self.config.name,
                    stream=stream,
                    score=exc.score,
                    limit=exc.limit,
                    batch=self.graphql_batch,
                )
                pending = chunk + pending
                continue
            except _FilterRefused:
                if not self.notes_filter:
                    raise
                self.notes_filter = False  # GitLab before 16.5: every note, system ones kept
                log.info("gitlab.graphql_notes_unfiltered", source=self.config.name)
                pending = chunk + pending
                continue
            found = body["data"].get("project")
            if not isinstance(found, Mapping):
                raise AuthError(
                    f"GraphQL does not show project {project} (the REST API does): "
                    f"{str(body.get('errors'))[:200]}"
                )
            if body.get("errors"):
                log.warning(
                    "gitlab.graphql_partial",
                    source=self.config.name,
                    stream=stream,
                    errors=str(body["errors"])[:300],
                    action="REST notes for items left out",
                )
            nodes = (found.get("items") or {}).get("nodes") or []
            for node in nodes:
                if not isinstance(node, Mapping) or not str(node.get("iid", "")).isdigit():
                    continue
                notes = node.get("notes")
                if not isinstance(notes, Mapping) or not isinstance(notes.get("nodes"), list):
                    continue
                iid = int(node["iid"])
                out[iid] = notes_from_graphql(notes["nodes"])
                page = notes.get("pageInfo") or {}
                if page.get("hasNextPage") and page.get("endCursor"):
                    cursors[iid] = str(page["endCursor"])
        return out, cursors

    def _more_notes(
        self,
        project: str,
        kind: str,
        iid: int,
        cursor: str,
        first: Notes,
        raws: list[RawPage],
    ) -> Notes | None:
        """The notes of one item beyond its first GraphQL page, one query a page; None when
        GraphQL refuses (the caller reads them over REST)."""
        single = _GRAPHQL_FIELDS[kind][1]
        stream = f"{project}:{kind}"
        query = (
            "query($project: ID!, $iid: String!, $after: String) { project(fullPath: $project) "
            f"{{ item: {single}(iid: $iid) {{ {self._notes_field(after=True)} }} }} }}"
        )
        notes = list(first)
        after: str | None = cursor
        try:
            while after:
                body = self._graphql(
                    query, {"project": project, "iid": str(iid), "after": after}, raws, stream
                )
                item = (body["data"].get("project") or {}).get("item") or {}
                page = item.get("notes") if isinstance(item, Mapping) else None
                if not isinstance(page, Mapping) or not isinstance(page.get("nodes"), list):
                    return None
                notes.extend(notes_from_graphql(page["nodes"]))
                info = page.get("pageInfo") or {}
                after = str(info["endCursor"]) if info.get("hasNextPage") else None
        except _GRAPHQL_UNAVAILABLE as exc:
            log.warning(
                "gitlab.graphql_notes_page_refused",
                source=self.config.name,
                stream=stream,
                iid=iid,
                error=str(exc),
                action="REST notes",
            )
            return None
        return notes


def mapping_of(config: GitLabSourceConfig) -> GitLabMapping:
    """The source's rules for turning GitLab facts into stages and flow types."""
    return GitLabMapping(
        label_stages={k.casefold(): v for k, v in config.label_stages.items()},
        status_stages=dict(config.status_stages),
        canceled_labels=frozenset(label.casefold() for label in config.canceled_labels),
        overrides=StageOverrides.from_config(config.stages),
        flow_types=FlowTypeRules.from_config(config.flow_type_rules),
    )


def item_of(
    config: GitLabSourceConfig,
    mapping: GitLabMapping,
    project: str,
    key: str,
    entry: Mapping[str, Any],
    history: History,
) -> FlowItem:
    """An issue or merge request record of `project` (`key` names it in errors) and its
    history → the source's flow item. Shared by the sync and re-normalising, so both read a
    record alike."""
    state, labels, notes, links = history
    return parse_item(
        entry,
        changes_from_events(state, labels, notes, key),
        mapping,
        project=project,
        source=config.name,
        value_stream=config.stream_value,
        links=links,
    )


def wants_notes(config: GitLabSourceConfig, entry: Mapping[str, Any], merge_request: bool) -> bool:
    """Whether an item's system notes are read: merge requests with reviewers (review
    requests are only in system notes); issues when the work item Status is read."""
    if merge_request:
        return bool(entry.get("reviewers"))
    return config.work_item_status


def _updated_at(record: Mapping[str, Any]) -> Any:
    return record.get("updated_at")
