"""GitHub issues and pull requests rebuilt from stored responses (`syncd.renormalise`),
without calling GitHub.

What the raw pages of a GitHub source hold, per repository (the raw page's stream), as
`connectors.github.connector` fetched them:

- `GET /repos/{owner}/{name}/issues` listing pages (deep ones may follow a cursor link to
  `/repositories/{id}/issues`): the item records;
- the timelines of changed items, fetched in the run that saw them change: GraphQL queries
  (`POST …/graphql`; each aliased `issue`/`pullRequest` node carries its `number`, a first
  page of its timeline, and for pull requests the issues they close and the head branch;
  queries with `after:` continue one item's timeline), or the REST
  `GET /repos/{owner}/{name}/issues/{n}/timeline` pages where GraphQL was unavailable.

An item is rebuilt from its newest record and the newest timeline fetched for it, read the way
the sync reads it (GraphQL nodes, or REST events without closing references or branch).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from connectors.github.connector import item_of, mapping_of, pull_refs
from connectors.github.parse import events_from_graphql, events_from_rest
from connectors.github.settings import GitHubSourceConfig
from syncd.config import scope_of
from syncd.domain import FlowItem
from syncd.renormalise import (
    NumberedRebuilder,
    RawsMissing,
    ScopeFilter,
    StoredRaw,
    differs_only_in,
    first_by_id,
    nested,
    objects_of,
)

_TIMELINE = re.compile(r"/repos/[^/]+/[^/]+/issues/(?P<number>\d+)/timeline$")
#: query keys of a timeline page after the first (page numbers or cursor links)
_NEXT_PAGE_KEYS = frozenset({"page", "after", "before"})
_GRAPHQL, _REST = "graphql", "rest"
#: scope keys a narrowing may change; any other change of scope is a resync
_NARROWABLE = frozenset({"repos", "orgs"})


class GitHubRebuilder(NumberedRebuilder):
    """Issues and pull requests of one GitHub source from its raw pages, with the source's
    current mapping (containers: repositories; histories: timelines)."""

    config_type = GitHubSourceConfig
    tracker = "GitHub"
    config: GitHubSourceConfig

    def mapping_of(self, config: Any) -> Any:
        return mapping_of(config)

    def scan(self, raw: StoredRaw) -> None:
        repo = raw.stream
        # `/repos/{owner}/{name}/issues`, or `/repositories/{id}/issues` in a cursor link
        if raw.method == "GET" and raw.url.endswith("/issues"):
            for entry in _entries(raw):
                self._records[str(entry["id"])] = (raw.id, repo, int(entry["number"]))
        elif raw.method == "POST" and raw.url == self.config.graphql_url:
            query = str(raw.params.get("query") or "")
            first = 'after: "' not in query  # a continuation pages one item's timeline
            for number in _nodes(raw):
                self._histories.add((repo, number), _GRAPHQL, raw, first_page=first)
        elif raw.method == "GET" and (match := _TIMELINE.search(raw.url)):
            first = not (_NEXT_PAGE_KEYS & raw.params.keys())
            self._histories.add((repo, int(match["number"])), _REST, raw, first_page=first)

    def build(self, item_id: str, raws: Mapping[int, StoredRaw]) -> FlowItem:
        record, repo, number = self._records[item_id]
        entry = _entries_by_id(raws[record])[item_id]
        key = f"{repo}#{number}"
        fetch = self._histories.get((repo, number))
        closing: list[tuple[str, list[str]]] = []
        branch: str | None = None
        if fetch is not None and fetch.parts.get(_GRAPHQL):
            nodes: list[Mapping[str, Any]] = []
            node: Mapping[str, Any] = {}
            for index, raw_id in enumerate(fetch.parts[_GRAPHQL]):
                node = _nodes(raws[raw_id])[number]
                if index == 0:  # as the sync reads them: from the first page's node
                    closing, branch = pull_refs(node)
                nodes.extend(node["timelineItems"]["nodes"])
            if (node["timelineItems"].get("pageInfo") or {}).get("hasNextPage"):
                raise RawsMissing(f"the timeline of {key} is not complete in the raw pages")
            events = events_from_graphql(nodes, key)
        elif fetch is not None and fetch.parts.get(_REST):
            timeline = [e for raw_id in fetch.parts[_REST] for e in objects_of(raws[raw_id])]
            events = events_from_rest(timeline, key)
        else:
            raise RawsMissing(f"the timeline of {key} is not among the raw pages")
        return item_of(self.config, self.mapping, repo, entry, events, closing, branch)

    def narrowed(self, old_scope: Mapping[str, Any]) -> ScopeFilter | None:
        """Repositories or organisations taken out (an organisation's repositories are named
        `org/…`): the items of a repository the old scope held and the new one does not have
        left. Anything else (a repository or organisation added, another URL, archived ones
        included or not) is not a narrowing."""
        if not differs_only_in(old_scope, scope_of(self.config), _NARROWABLE):
            return None
        old_repos, old_orgs = _folded(old_scope.get("repos")), _folded(old_scope.get("orgs"))
        new_repos, new_orgs = _folded(self.config.repos), _folded(self.config.orgs)
        if not new_orgs <= old_orgs:
            return None
        if any(r not in old_repos and _owner(r) not in old_orgs for r in new_repos):
            return None

        def left(project: str) -> bool:
            repo = project.casefold()
            held = repo in old_repos or _owner(repo) in old_orgs
            return held and repo not in new_repos and _owner(repo) not in new_orgs

        return left


def _owner(repo: str) -> str:
    return repo.partition("/")[0]


def _folded(values: Any) -> frozenset[str]:
    return frozenset(str(v).casefold() for v in values or ())


def _entries(raw: StoredRaw) -> Sequence[Mapping[str, Any]]:
    return [e for e in objects_of(raw) if e.get("id") is not None and e.get("number") is not None]


def _entries_by_id(raw: StoredRaw) -> dict[str, Mapping[str, Any]]:
    return raw.derived("entries", lambda page: first_by_id(_entries(page)))


def _nodes(raw: StoredRaw) -> dict[int, Mapping[str, Any]]:
    """The issue and pull request nodes of a GraphQL answer, by number."""
    return raw.derived("nodes", _index_nodes)


def _index_nodes(raw: StoredRaw) -> dict[int, Mapping[str, Any]]:
    index: dict[int, Mapping[str, Any]] = {}
    repository = nested(raw.body, "data", "repository")
    for node in repository.values() if isinstance(repository, Mapping) else ():
        if (
            isinstance(node, Mapping)
            and isinstance(node.get("timelineItems"), Mapping)
            and str(node.get("number", "")).isdigit()
        ):
            index[int(node["number"])] = node
    return index
