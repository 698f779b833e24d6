"""GitLab (gitlab.com and self-managed): issues and merge requests with their histories.

Two streams per project, `<path>:issues` and `<path>:merge_requests`, each with its cursor.
Listing: `/projects/:id/<kind>?scope=all&order_by=created_at&sort=asc&updated_after=…
&per_page=100&pagination=keyset`, following `Link` (keyset) or `X-Next-Page` (offset, where
keyset is refused). Creation order, for the reason given in docs/architecture.md (an item edited
mid-sync must not jump behind the page cursor).

Histories of changed items, `concurrency` items at a time: resource state events and resource
label events, each paged; system notes only where they matter (merge requests with reviewers;
issues when `work_item_status` is on); issue links only for issues that report blocking links.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import structlog

from connectors.gitlab.parse import (
    GitLabMapping,
    changes_from_events,
    parse_item,
    parse_links,
)
from connectors.gitlab.settings import GitLabSourceConfig
from syncd import records
from syncd.config import SourceConfig
from syncd.contract import CheckResult, Cursor, Page, RawPage, RunContext
from syncd.domain import FlowItem, Link
from syncd.errors import BadRequest, ConfigError, MalformedPage, SyncdError
from syncd.http import HttpClient, decode_json
from syncd.mapping import FlowTypeRules, StageOverrides

log = structlog.get_logger("syncd.gitlab")
KINDS = ("issues", "merge_requests")


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
        self.mapping = GitLabMapping(
            label_stages={k.casefold(): v for k, v in config.label_stages.items()},
            status_stages=dict(config.status_stages),
            canceled_labels=frozenset(label.casefold() for label in config.canceled_labels),
            overrides=StageOverrides.from_config(config.stages),
            flow_types=FlowTypeRules.from_config(config.flow_type_rules),
        )

    def __repr__(self) -> str:
        return f"GitLabConnector(source={self.config.name!r}, url={self.config.url!r})"

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
            return results
        except SyncdError as exc:
            return [CheckResult(False, f"{name}: {exc}")]

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

        def history(entry: Mapping[str, Any]) -> tuple[Mapping[str, Any], Any, list[RawPage]]:
            local: list[RawPage] = []
            iid = entry.get("iid")
            paged = {"per_page": 100}
            state = self._all(f"{base}/{iid}/resource_state_events", stream, local, paged)
            labels = self._all(f"{base}/{iid}/resource_label_events", stream, local, paged)
            notes: list[Any] = []
            if (merge_requests and entry.get("reviewers")) or (
                not merge_requests and self.config.work_item_status
            ):
                notes = self._all(
                    f"{base}/{iid}/notes",
                    stream,
                    local,
                    {"per_page": 100, "sort": "asc", "order_by": "created_at"},
                )
            links: list[Link] = []
            if not merge_requests and int(entry.get("blocking_issues_count") or 0) > 0:
                links = parse_links(self._all(f"{base}/{iid}/links", stream, local, paged))
            return entry, (state, labels, notes, links), local

        sign = "!" if merge_requests else "#"
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            fetched = list(pool.map(history, entries))
        for _entry, _data, local in fetched:
            raws.extend(local)

        def parse(result: tuple[Mapping[str, Any], Any, list[RawPage]]) -> FlowItem:
            entry, (state, labels, notes, links), _local = result
            key = f"{project}{sign}{entry.get('iid')}"
            return parse_item(
                entry,
                changes_from_events(state, labels, notes, key),
                self.mapping,
                project=project,
                source=self.config.name,
                value_stream=self.config.stream_value,
                links=links,
            )

        return records.parse_all(
            fetched,
            parse,
            event="gitlab.record_skipped",
            source=self.config.name,
            stream=stream,
            key_of=lambda result: f"{project}{sign}{result[0].get('iid')}",
        )


def _updated_at(record: Mapping[str, Any]) -> Any:
    return record.get("updated_at")
