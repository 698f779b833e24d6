"""Jira Cloud and Data Center: issues with their complete status histories.

Cloud: `POST /rest/api/3/search/jql` (token paging, no total), then the changelogs of up to
`batch_size` changed issues at once through `POST /rest/api/3/changelog/bulkfetch`, falling
back to `GET /rest/api/3/issue/{id}/changelog` paging where bulkfetch is absent.
Data Center: `GET /rest/api/2/search` (startAt paging) with `expand=changelog`, completing
any truncated changelog through the per-issue endpoints.

The query is `(<scope>) AND updated >= <epoch ms> ORDER BY created ASC`: epoch milliseconds,
because Jira reads formatted dates in the API user's time zone, and creation order, because it
does not change while issues are updated mid-sync, so paging neither skips nor repeats. The
watermark advances only when a stream completes; until then the cursor keeps the page token
(or offset) and the bound, so a crash resumes where the last committed page ended.
"""

from __future__ import annotations

import base64
from collections.abc import Generator, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import structlog

from connectors.jira.parse import (
    HISTORY_FIELDS,
    ISSUE_FIELDS,
    JiraMapping,
    StatusCatalogue,
    parse_issue,
)
from connectors.jira.settings import JiraSourceConfig
from syncd import records
from syncd.config import SourceConfig
from syncd.contract import CheckResult, Cursor, Page, RawPage, RunContext
from syncd.domain import FlowItem
from syncd.errors import (
    BadRequest,
    ConfigError,
    MalformedPage,
    NotFound,
    SyncdError,
)
from syncd.http import HttpClient, decode_json
from syncd.mapping import FlowTypeRules, StageOverrides

if TYPE_CHECKING:
    from connectors.jira.renormalise import JiraRebuilder

log = structlog.get_logger("syncd.jira")

STREAM = "issues"


class BearerAuth(httpx.Auth):
    """Data Center personal access token."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def __repr__(self) -> str:
        return "BearerAuth(***)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class _BasicAuth(httpx.BasicAuth):
    def __repr__(self) -> str:
        return "BasicAuth(***)"


#: issue ids per `id in (...)` clause: keeps the JQL well under Jira's length limits
_IDS_PER_QUERY = 200


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


class JiraConnector:
    """Syncs the issues of one Jira site within a JQL scope."""

    kind: ClassVar[str] = "jira"
    config_model: ClassVar[type[SourceConfig]] = JiraSourceConfig

    def __init__(self, config: SourceConfig, http: HttpClient) -> None:
        if not isinstance(config, JiraSourceConfig):
            raise ConfigError(f"source {config.name!r} is not a Jira source")
        self.config = config
        self.http = http
        self.base = config.url
        token = config.token_value()
        email = config.email_value()
        self._token = token  # a SecretStr: never a plain string attribute
        self._email = email
        secret = token.get_secret_value() if token else None
        http.register_secret(secret)
        self._auth_mode = "basic" if email else "bearer"
        self._auth: httpx.Auth | None = None
        if secret and email:
            self._auth = _BasicAuth(email, secret)
            # a tracker (or a proxy) that echoes the Authorization header must not leak it
            http.register_secret(base64.b64encode(f"{email}:{secret}".encode()).decode())
        elif secret:
            self._auth = BearerAuth(secret)
        self.deployment: str | None = None if config.deployment == "auto" else config.deployment
        self.bulkfetch_available = True

    def __repr__(self) -> str:
        return f"JiraConnector(source={self.config.name!r}, url={self.base!r})"

    @classmethod
    def rebuilder(cls, config: SourceConfig) -> JiraRebuilder:
        """Re-normalising from stored raw pages (`syncd.renormalise`)."""
        from connectors.jira.renormalise import JiraRebuilder  # it builds on this module

        return JiraRebuilder(config)

    # -- contract ------------------------------------------------------------------------

    def streams(self) -> Sequence[str]:
        return (STREAM,)

    def check(self) -> list[CheckResult]:
        """Connectivity, authentication, deployment, statuses and the JQL scope.

        Discovery (server info, account, projects, statuses) goes through the `jira` package,
        which knows these endpoints well; the scope is validated with the same search call
        the sync makes."""
        results: list[CheckResult] = []
        name = self.config.name
        try:
            client = self._jira_client()
            info = client.server_info()
            deployment = self.deployment or (
                "cloud" if info.get("deploymentType") == "Cloud" else "datacenter"
            )
            self.deployment = deployment
            results.append(
                CheckResult(
                    True,
                    f"{name}: reached {self.base} (Jira {info.get('version', '?')}, {deployment})",
                )
            )
            me = client.myself()
            results.append(
                CheckResult(
                    True,
                    f"{name}: authenticated as {me.get('displayName') or me.get('name') or '?'}",
                )
            )
            projects = client.projects()
            statuses = client.statuses()
            results.append(
                CheckResult(
                    True, f"{name}: {len(projects)} projects and {len(statuses)} statuses visible"
                )
            )
        except Exception as exc:  # the jira package raises its own and requests' errors
            results.append(CheckResult(False, f"{name}: {self._explain(exc)}"))
            return results
        try:
            self._search_probe()
            results.append(
                CheckResult(True, f"{name}: JQL scope accepted ({self.config.jql or 'all issues'})")
            )
        except SyncdError as exc:
            results.append(CheckResult(False, f"{name}: JQL scope refused: {exc}"))
        return results

    def fetch(self, stream: str, cursor: Cursor | None, run: RunContext) -> Iterator[Page]:
        if stream != STREAM:
            raise ConfigError(f"Jira sources have one stream, {STREAM!r}, not {stream!r}")
        state = dict(cursor.state) if cursor else {}
        self.deployment = self.deployment or state.get("deployment") or self._detect()
        raws: list[RawPage] = []
        mapping = mapping_of(self.config, self._statuses(raws))
        watermark = cursor.watermark if cursor else None
        if run.full:
            watermark, state = None, {}
        if self.deployment == "cloud":
            yield from self._fetch_cloud(watermark, state, run, mapping, raws)
        else:
            yield from self._fetch_datacenter(watermark, state, run, mapping, raws)

    def ids(self, stream: str) -> Iterator[str]:
        """Every issue id in the JQL scope: ids only, in the largest pages Jira gives (5000 on
        Cloud's search/jql, 1000 on Data Center's search)."""
        if stream != STREAM:
            raise ConfigError(f"Jira sources have one stream, {STREAM!r}, not {stream!r}")
        yield from self._ids(self._jql(None))

    def matching(self, jql: str, ids: Sequence[str] | None) -> set[str]:
        """The issues among `ids` (every issue in the source's scope when None) that `jql`
        selects, asked of Jira with ids only: a value stream's JQL scope (syncd/streams.py)."""
        scope = self.config.jql.strip()
        if ids is None:
            return set(self._ids(f"({scope}) AND ({jql})" if scope else f"({jql})"))
        found: set[str] = set()
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ", ".join(str(int(i)) for i in ids[start : start + _IDS_PER_QUERY])
            found.update(self._ids(f"({jql}) AND id in ({chunk})"))
        return found

    def _ids(self, jql: str) -> Iterator[str]:
        self.deployment = self.deployment or self._detect()
        if self.deployment == "cloud":
            token: str | None = None
            while True:
                body: dict[str, Any] = {"jql": jql, "fields": ["id"], "maxResults": 5000}
                if token:
                    body["nextPageToken"] = token
                page = self._call("POST", "/rest/api/3/search/jql", None, body=body)
                yield from _issue_ids(page, "search/jql")
                token = page.get("nextPageToken")
                if not token or page.get("isLast"):
                    return
        start_at = 0
        while True:
            params = {"jql": jql, "startAt": start_at, "maxResults": 1000, "fields": "id"}
            page = self._get("/rest/api/2/search", None, params=params)
            found = list(_issue_ids(page, "search"))
            yield from found
            start_at += len(found)
            total = page.get("total")
            if not found or (isinstance(total, int) and start_at >= total):
                return

    # -- shared pieces -------------------------------------------------------------------

    def _api(self) -> str:
        return "3" if self.deployment == "cloud" else "2"

    def _get(
        self, path: str, raws: list[RawPage] | None, *, params: Mapping[str, Any] | None = None
    ) -> Any:
        return self._call("GET", path, raws, params=params)

    def _call(
        self,
        method: str,
        path: str,
        raws: list[RawPage] | None,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        url = f"{self.base}{path}"
        response = self.http.request(method, url, params=params, json_body=body, auth=self._auth)
        data = decode_json(response)
        if raws is not None:
            raws.append(
                RawPage(
                    stream=STREAM,
                    method=method,
                    url=url,
                    params=dict(body if body is not None else params or {}),
                    body=data,
                    fetched_at=datetime.now(UTC),
                )
            )
        return data

    def _detect(self) -> str:
        info = self._get("/rest/api/2/serverInfo", None)
        if not isinstance(info, Mapping):
            raise MalformedPage("serverInfo: expected a JSON object")
        return "cloud" if info.get("deploymentType") == "Cloud" else "datacenter"

    def _statuses(self, raws: list[RawPage]) -> StatusCatalogue:
        return StatusCatalogue.from_json(self._get(f"/rest/api/{self._api()}/status", raws))

    def _jql(self, bound: datetime | None) -> str:
        scope = self.config.jql.strip()
        clauses = [f"({scope})"] if scope else []
        clauses.append(f"updated >= {_ms(bound) if bound else 0}")
        return " AND ".join(clauses) + " ORDER BY created ASC"

    def _page(
        self,
        raws: list[RawPage],
        items: list[FlowItem],
        skipped: int,
        watermark: datetime | None,
        seen: datetime | None,
        run: RunContext,
        resume: Mapping[str, Any] | None,
    ) -> Page:
        """A page with its cursor: mid-stream the old watermark and where to resume (plus the
        newest `updated` seen so far); at the end of the stream the new watermark. Takes the
        raw responses collected so far and empties the list."""
        if resume is None:
            state: dict[str, Any] = {"deployment": self.deployment}
            cursor = Cursor(watermark=self._final_watermark(watermark, seen, run), state=state)
        else:
            state = {
                "deployment": self.deployment,
                **resume,
                "seen": seen.isoformat() if seen else None,
            }
            cursor = Cursor(watermark=watermark, state=state, complete=False)
        page = Page(raws=list(raws), items=items, cursor=cursor, skipped=skipped)
        raws.clear()
        return page

    @staticmethod
    def _final_watermark(
        old: datetime | None, seen: datetime | None, run: RunContext
    ) -> datetime | None:
        """Everything updated before the run started and at or after the bound was seen;
        the tracker's own clock decides, capped at the run's start."""
        best = max((t for t in (old, seen) if t is not None), default=None)
        return min(best, run.started_at) if best else None

    def _parse(
        self,
        issues: Sequence[Mapping[str, Any]],
        histories: Mapping[str, list[Mapping[str, Any]]],
        mapping: JiraMapping,
    ) -> tuple[list[FlowItem], int]:
        return records.parse_all(
            issues,
            lambda issue: parse_issue(
                issue,
                histories.get(str(issue.get("id")), ()),
                mapping,
                source=self.config.name,
                value_stream=self.config.stream_value,
            ),
            event="jira.record_skipped",
            source=self.config.name,
            stream=STREAM,
            key_of=lambda issue: str(issue.get("key") or ""),
        )

    # -- Cloud ---------------------------------------------------------------------------

    def _fetch_cloud(
        self,
        watermark: datetime | None,
        state: dict[str, Any],
        run: RunContext,
        mapping: JiraMapping,
        raws: list[RawPage],
    ) -> Iterator[Page]:
        if state.get("token") and state.get("bound_ms") is not None:
            bound_ms: int = int(state["bound_ms"])
            token: str | None = str(state["token"])
        else:
            bound = watermark - run.lookback if watermark else None
            bound_ms, token = (_ms(bound) if bound else 0), None
        seen = datetime.fromisoformat(state["seen"]) if state.get("seen") else None
        jql = self._jql(datetime.fromtimestamp(bound_ms / 1000, UTC) if bound_ms else None)
        is_last = False
        while not is_last:
            batch: list[Mapping[str, Any]] = []
            while not is_last and len(batch) < self.config.batch_size:
                body: dict[str, Any] = {
                    "jql": jql,
                    "fields": list(ISSUE_FIELDS),
                    "maxResults": min(self.config.page_size, self.config.batch_size - len(batch)),
                }
                if token:
                    body["nextPageToken"] = token
                try:
                    page = self._call("POST", "/rest/api/3/search/jql", raws, body=body)
                except BadRequest:
                    if not token:
                        raise
                    log.warning(
                        "jira.token_rejected",
                        source=self.config.name,
                        action="restarting the stream from its bound",
                    )
                    token = None
                    continue
                if not isinstance(page, Mapping) or not isinstance(page.get("issues"), list):
                    raise MalformedPage("search/jql: expected an object with an 'issues' array")
                batch.extend(page["issues"])
                token = page.get("nextPageToken")
                is_last = bool(page.get("isLast", not token)) or not token
            seen = records.newest(batch, seen, _jira_updated)
            changed = records.changed(batch, run, _jira_updated)
            histories = self._cloud_histories([str(i["id"]) for i in changed if "id" in i], raws)
            items, skipped = self._parse(changed, histories, mapping)
            resume = None if is_last else {"token": token, "bound_ms": bound_ms}
            yield self._page(raws, items, skipped, watermark, seen, run, resume)

    def _cloud_histories(
        self, ids: Sequence[str], raws: list[RawPage]
    ) -> dict[str, list[Mapping[str, Any]]]:
        if not ids:
            return {}
        if self.bulkfetch_available:
            try:
                return self._bulkfetch(ids, raws)
            except NotFound:
                self.bulkfetch_available = False
                log.warning(
                    "jira.bulkfetch_unavailable",
                    source=self.config.name,
                    action="per-issue changelog paging",
                )
        return {issue_id: self._issue_changelog(issue_id, raws) for issue_id in ids}

    def _bulkfetch(
        self, ids: Sequence[str], raws: list[RawPage]
    ) -> dict[str, list[Mapping[str, Any]]]:
        out: dict[str, list[Mapping[str, Any]]] = {i: [] for i in ids}
        token: str | None = None
        for start in range(0, len(ids), 1000):
            chunk = list(ids[start : start + 1000])
            while True:
                body: dict[str, Any] = {
                    "issueIdsOrKeys": chunk,
                    "fieldIds": list(HISTORY_FIELDS),
                    "maxResults": self.config.changelog_page_size,
                }
                if token:
                    body["nextPageToken"] = token
                page = self._call("POST", "/rest/api/3/changelog/bulkfetch", raws, body=body)
                if not isinstance(page, Mapping) or not isinstance(
                    page.get("issueChangeLogs", []), list
                ):
                    raise MalformedPage("changelog/bulkfetch: expected 'issueChangeLogs' array")
                for log_entry in page.get("issueChangeLogs") or ():
                    issue_id = str(log_entry.get("issueId"))
                    out.setdefault(issue_id, []).extend(log_entry.get("changeHistories") or ())
                token = page.get("nextPageToken")
                if not token:
                    break
        return {issue_id: _unique_histories(h) for issue_id, h in out.items()}

    def _issue_changelog(self, issue_id: str, raws: list[RawPage]) -> list[Mapping[str, Any]]:
        histories: list[Mapping[str, Any]] = []
        start = 0
        while True:
            page = self._get(
                f"/rest/api/{self._api()}/issue/{issue_id}/changelog",
                raws,
                params={"startAt": start, "maxResults": 100},
            )
            values = page.get("values") if isinstance(page, Mapping) else None
            if not isinstance(values, list):
                raise MalformedPage(f"changelog of issue {issue_id}: expected a 'values' array")
            histories.extend(values)
            start += len(values)
            total = page.get("total")
            if page.get("isLast") or not values or (isinstance(total, int) and start >= total):
                return _unique_histories(histories)

    # -- Data Center ---------------------------------------------------------------------

    def _fetch_datacenter(
        self,
        watermark: datetime | None,
        state: dict[str, Any],
        run: RunContext,
        mapping: JiraMapping,
        raws: list[RawPage],
    ) -> Iterator[Page]:
        if state.get("start_at") is not None and state.get("bound_ms") is not None:
            bound_ms, start_at = int(state["bound_ms"]), int(state["start_at"])
        else:
            bound = watermark - run.lookback if watermark else None
            bound_ms, start_at = (_ms(bound) if bound else 0), 0
        seen = datetime.fromisoformat(state["seen"]) if state.get("seen") else None
        jql = self._jql(datetime.fromtimestamp(bound_ms / 1000, UTC) if bound_ms else None)
        while True:
            page = self._get(
                "/rest/api/2/search",
                raws,
                params={
                    "jql": jql,
                    "startAt": start_at,
                    "maxResults": self.config.page_size,
                    "fields": ",".join(ISSUE_FIELDS),
                    "expand": "changelog",
                },
            )
            if not isinstance(page, Mapping) or not isinstance(page.get("issues"), list):
                raise MalformedPage("search: expected an object with an 'issues' array")
            issues: list[Mapping[str, Any]] = page["issues"]
            seen = records.newest(issues, seen, _jira_updated)
            changed = records.changed(issues, run, _jira_updated)
            histories = {
                str(issue.get("id")): self._embedded_or_full(issue, raws) for issue in changed
            }
            items, skipped = self._parse(changed, histories, mapping)
            start_at += len(issues)
            total = page.get("total")
            done = not issues or (isinstance(total, int) and start_at >= total)
            resume = None if done else {"start_at": start_at, "bound_ms": bound_ms}
            yield self._page(raws, items, skipped, watermark, seen, run, resume)
            if done:
                return

    def _embedded_or_full(
        self, issue: Mapping[str, Any], raws: list[RawPage]
    ) -> list[Mapping[str, Any]]:
        changelog = issue.get("changelog") or {}
        histories = list(changelog.get("histories") or ())
        total = changelog.get("total")
        if not isinstance(total, int) or total <= len(histories):
            return histories
        issue_id = str(issue.get("id"))
        try:
            return self._issue_changelog(issue_id, raws)
        except NotFound:
            full = self._get(
                f"/rest/api/2/issue/{issue_id}",
                raws,
                params={"fields": "status", "expand": "changelog"},
            )
            return list(((full or {}).get("changelog") or {}).get("histories") or ())

    # -- check helpers -------------------------------------------------------------------

    def _jira_client(self) -> Any:
        from jira import JIRA  # the jira package is only needed by `syncd check`

        options = {"server": self.base, "verify": True, "headers": {"User-Agent": "syncd-check"}}
        kwargs: dict[str, Any] = {
            "options": options,
            "max_retries": 0,
            "timeout": 20,
            "get_server_info": False,
        }
        secret = self._token.get_secret_value() if self._token else None
        if self._auth_mode == "basic" and secret:
            kwargs["basic_auth"] = (self._email, secret)
        elif secret:
            kwargs["token_auth"] = secret
        return JIRA(**kwargs)

    def _search_probe(self) -> None:
        jql = self._jql(datetime.now(UTC))
        if self.deployment == "cloud":
            self._call(
                "POST",
                "/rest/api/3/search/jql",
                None,
                body={"jql": jql, "fields": ["id"], "maxResults": 1},
            )
        else:
            self._get(
                "/rest/api/2/search", None, params={"jql": jql, "fields": "id", "maxResults": 1}
            )

    def _explain(self, exc: Exception) -> str:
        status = getattr(exc, "status_code", None)
        text = getattr(exc, "text", None) or str(exc)
        text = self.http.scrub(str(text)).replace("\n", " ")[:200]
        if status == 401:
            return f"authentication failed at {self.base} (HTTP 401): check the e-mail and token"
        if status == 403:
            return f"permission denied at {self.base} (HTTP 403): {text}"
        if status:
            return f"{self.base} answered HTTP {status}: {text}"
        return f"cannot reach {self.base}: {type(exc).__name__}: {text}"


def mapping_of(config: JiraSourceConfig, catalogue: StatusCatalogue) -> JiraMapping:
    """The source's rules for stages and flow types, with the site's status catalogue."""
    return JiraMapping(
        catalogue=catalogue,
        overrides=StageOverrides.from_config(config.stages),
        canceled_resolutions=frozenset(r.casefold() for r in config.canceled_resolutions),
        flow_types=FlowTypeRules.from_config(config.flow_type_rules),
    )


def _issue_ids(page: Any, what: str) -> Iterator[str]:
    if not isinstance(page, Mapping) or not isinstance(page.get("issues"), list):
        raise MalformedPage(f"{what}: expected an object with an 'issues' array")
    for issue in page["issues"]:
        if not isinstance(issue, Mapping) or issue.get("id") is None:
            raise MalformedPage(f"{what}: an issue without an id")
        yield str(issue["id"])


def _jira_updated(issue: Mapping[str, Any]) -> Any:
    return (issue.get("fields") or {}).get("updated")


def _unique_histories(histories: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Histories by id, once each (paging over a changing list can repeat one)."""
    out: dict[str, Mapping[str, Any]] = {}
    for history in histories:
        out.setdefault(str(history.get("id")), history)
    return list(out.values())
