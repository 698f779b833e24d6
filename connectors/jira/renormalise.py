"""Jira issues rebuilt from stored responses (`syncd.renormalise`), without calling Jira.

What the raw pages of a Jira source hold, as `connectors.jira.connector` fetched them:

- `GET /rest/api/{2,3}/status`: the status catalogue of each run (the newest one maps);
- `POST /rest/api/3/search/jql` (Cloud) and `GET /rest/api/2/search` (Data Center): issue
  records, Data Center's with their embedded changelog;
- the histories of changed issues, fetched in the run that saw them change: Cloud's
  `POST /rest/api/3/changelog/bulkfetch` (the ids asked are in the request body, so an issue
  without history is known to have none), `GET /rest/api/{2,3}/issue/{id}/changelog` pages,
  or Data Center's `GET /rest/api/2/issue/{id}?expand=changelog`.

An issue is rebuilt from its newest record and the newest history fetched for it; a Data
Center record whose embedded changelog is complete needs no other page, as in the sync.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from connectors.jira.connector import _unique_histories, mapping_of
from connectors.jira.parse import JiraMapping, StatusCatalogue, parse_issue
from connectors.jira.settings import JiraSourceConfig
from syncd.config import SourceConfig
from syncd.domain import FlowItem
from syncd.errors import ConfigError
from syncd.renormalise import FetchLog, RawsMissing, ScopeFilter, StoredRaw, first_by_id

_CHANGELOG = re.compile(r"/rest/api/[23]/issue/(?P<id>[^/]+)/changelog$")
_ISSUE = re.compile(r"/rest/api/2/issue/(?P<id>[^/]+)$")
_SEARCHES = ("/rest/api/3/search/jql", "/rest/api/2/search")
_BULKFETCH = "/rest/api/3/changelog/bulkfetch"
_HISTORY = "history"


class JiraRebuilder:
    """Issues of one Jira source from its raw pages, with the source's current mapping."""

    def __init__(self, config: SourceConfig) -> None:
        if not isinstance(config, JiraSourceConfig):
            raise ConfigError(f"source {config.name!r} is not a Jira source")
        self.config = config
        self._catalogue: int | None = None
        self._records: dict[str, int] = {}
        self._histories: FetchLog[str] = FetchLog()
        self._mappings: dict[int, JiraMapping] = {}

    def __repr__(self) -> str:
        return f"JiraRebuilder(source={self.config.name!r})"

    def scan(self, raw: StoredRaw) -> None:
        url = raw.url
        if raw.method == "GET" and url.endswith("/status"):
            self._catalogue = raw.id
        elif url.endswith(_SEARCHES):
            for issue in _issues(raw):
                self._records[str(issue["id"])] = raw.id
        elif url.endswith(_BULKFETCH):
            first = not raw.params.get("nextPageToken")
            for issue_id in raw.params.get("issueIdsOrKeys") or ():
                self._histories.add(str(issue_id), _HISTORY, raw, first_page=first)
        elif match := _CHANGELOG.search(url):
            first = not raw.params.get("startAt")
            self._histories.add(match["id"], _HISTORY, raw, first_page=first)
        elif match := _ISSUE.search(url):
            self._histories.add(match["id"], _HISTORY, raw)

    def plan(self) -> dict[str, list[int]]:
        if self._catalogue is None:
            return {}  # nothing maps statuses to stages: every issue must be fetched again
        return {
            issue_id: [record, self._catalogue, *self._histories.pages(issue_id)]
            for issue_id, record in self._records.items()
        }

    def build(self, item_id: str, raws: Mapping[int, StoredRaw]) -> FlowItem:
        record = raws[self._records[item_id]]
        issue = _issues_by_id(record)[item_id]
        if record.url.endswith("/rest/api/2/search"):
            changelog = issue.get("changelog") or {}
            histories = list(changelog.get("histories") or ())
            total = changelog.get("total")
            if isinstance(total, int) and total > len(histories):  # truncated: completed apart
                histories = self._fetched(item_id, raws)
        else:
            histories = self._fetched(item_id, raws)
        assert self._catalogue is not None
        return parse_issue(
            issue,
            histories,
            self._mapping(raws[self._catalogue]),
            source=self.config.name,
            value_stream=self.config.stream_value,
        )

    def narrowed(self, old_scope: Mapping[str, Any]) -> ScopeFilter | None:
        """A JQL scope cannot be compared without Jira: any change of it is a resync."""
        return None

    def _fetched(self, issue_id: str, raws: Mapping[int, StoredRaw]) -> list[Mapping[str, Any]]:
        fetch = self._histories.get(issue_id)
        if fetch is None or not fetch.parts.get(_HISTORY):
            raise RawsMissing(f"the history of issue {issue_id} is not among the raw pages")
        histories: list[Mapping[str, Any]] = []
        for raw_id in fetch.parts[_HISTORY]:
            raw = raws[raw_id]
            if raw.url.endswith(_BULKFETCH):
                histories.extend(_bulk_by_id(raw).get(issue_id, ()))
            elif _CHANGELOG.search(raw.url):
                histories.extend(raw.body.get("values") or ())
            else:
                histories.extend(((raw.body or {}).get("changelog") or {}).get("histories") or ())
        return _unique_histories(histories)

    def _mapping(self, raw: StoredRaw) -> JiraMapping:
        mapping = self._mappings.get(raw.id)
        if mapping is None:
            catalogue = StatusCatalogue.from_json(raw.body)
            mapping = self._mappings[raw.id] = mapping_of(self.config, catalogue)
        return mapping


def _issues(raw: StoredRaw) -> Sequence[Mapping[str, Any]]:
    body = raw.body
    issues = body.get("issues") if isinstance(body, Mapping) else None
    if not isinstance(issues, list):
        return ()
    return [i for i in issues if isinstance(i, Mapping) and i.get("id") is not None]


def _issues_by_id(raw: StoredRaw) -> dict[str, Mapping[str, Any]]:
    return raw.derived("issues", lambda page: first_by_id(_issues(page)))


def _bulk_by_id(raw: StoredRaw) -> dict[str, list[Mapping[str, Any]]]:
    """The change histories of a bulkfetch page, by issue id."""
    return raw.derived("histories", _index_bulk)


def _index_bulk(raw: StoredRaw) -> dict[str, list[Mapping[str, Any]]]:
    index: dict[str, list[Mapping[str, Any]]] = {}
    for entry in raw.body.get("issueChangeLogs") or ():
        index.setdefault(str(entry.get("issueId")), []).extend(entry.get("changeHistories") or ())
    return index
