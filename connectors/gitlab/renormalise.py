"""GitLab issues and merge requests rebuilt from stored responses (`syncd.renormalise`),
without calling GitLab.

What the raw pages of a GitLab source hold, per `<project>:<kind>` stream, as
`connectors.gitlab.connector` fetched them:

- `GET /projects/:id/{issues|merge_requests}` listing pages: the item records;
- the histories of changed items, fetched in the run that saw them change, each paged:
  `…/:iid/resource_state_events`, `…/:iid/resource_label_events`, `…/:iid/links` (issues
  that report blocking links) and, where system notes are read, either the GraphQL answers
  (`POST /api/graphql`: a batch by `iids`, then queries with `after:` for an item's further
  pages) or the REST `…/:iid/notes` pages. REST notes, where the sync read them (GraphQL
  refused, or a note shared its second with another change), are the ones it used.

An item is rebuilt from its newest record and the newest history fetched for it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from connectors.gitlab.connector import item_of, mapping_of, wants_notes
from connectors.gitlab.parse import note_times_ambiguous, notes_from_graphql, parse_links
from connectors.gitlab.settings import GitLabSourceConfig
from syncd.config import scope_of
from syncd.domain import FlowItem, Link
from syncd.renormalise import (
    Fetch,
    NumberedRebuilder,
    RawsMissing,
    ScopeFilter,
    StoredRaw,
    differs_only_in,
    first_by_id,
    nested,
    objects_of,
)

#: a listing page: `:id` is the project's encoded path, or its number in keyset links
_LISTING = re.compile(r"/projects/[^/]+/(?:issues|merge_requests)$")
_HISTORY = re.compile(
    r"/(?:issues|merge_requests)/(?P<iid>\d+)/"
    r"(?P<part>resource_state_events|resource_label_events|notes|links)$"
)
#: query keys of a page after the first (offset page numbers, keyset cursors)
_NEXT_PAGE_KEYS = frozenset({"page", "cursor", "id_after"})
_STATE, _LABEL, _NOTES, _LINKS, _GRAPHQL = (
    "resource_state_events",
    "resource_label_events",
    "notes",
    "links",
    "graphql",
)
#: scope keys a narrowing may change; any other change of scope is a resync
_NARROWABLE = frozenset({"projects", "groups", "work_item_status"})


class GitLabRebuilder(NumberedRebuilder):
    """Issues and merge requests of one GitLab source from its raw pages, with the source's
    current mapping (containers: `project:issues` / `project:merge_requests` streams)."""

    config_type = GitLabSourceConfig
    tracker = "GitLab"
    config: GitLabSourceConfig

    def mapping_of(self, config: Any) -> Any:
        return mapping_of(config)

    def scan(self, raw: StoredRaw) -> None:
        project, _, kind = raw.stream.rpartition(":")
        if not project:
            return
        if raw.method == "POST" and raw.url == self.config.graphql_url:
            self._scan_graphql(raw)
        elif raw.method != "GET":
            return
        elif _LISTING.search(raw.url) and raw.url.endswith(f"/{kind}"):
            for entry in _entries(raw):
                self._records[str(entry["id"])] = (raw.id, raw.stream, int(entry["iid"]))
        elif match := _HISTORY.search(raw.url):
            first = not (_NEXT_PAGE_KEYS & raw.params.keys())
            handle = (raw.stream, int(match["iid"]))
            self._histories.add(handle, match["part"], raw, first_page=first)

    def _scan_graphql(self, raw: StoredRaw) -> None:
        variables = raw.params.get("variables")
        if not isinstance(variables, Mapping):
            return
        if "iids" in variables:
            for iid in _batch_notes(raw):
                self._histories.add((raw.stream, iid), _GRAPHQL, raw)
        elif (
            variables.get("after")
            and str(variables.get("iid", "")).isdigit()
            and _more_notes(raw) is not None
        ):
            iid = int(variables["iid"])
            self._histories.add((raw.stream, iid), _GRAPHQL, raw, first_page=False)

    def build(self, item_id: str, raws: Mapping[int, StoredRaw]) -> FlowItem:
        record, stream, iid = self._records[item_id]
        entry = _entries_by_id(raws[record])[item_id]
        project, _, kind = stream.rpartition(":")
        merge_request = kind == "merge_requests"
        key = f"{project}{'!' if merge_request else '#'}{iid}"
        fetch = self._histories.get((stream, iid))
        if fetch is None or _STATE not in fetch.parts or _LABEL not in fetch.parts:
            raise RawsMissing(f"the events of {key} are not among the raw pages")
        state = _concat(fetch, _STATE, raws)
        labels = _concat(fetch, _LABEL, raws)
        notes: list[Mapping[str, Any]] = []
        if wants_notes(self.config, entry, merge_request):
            notes = self._notes(fetch, raws, state, labels, key, iid)
        links: list[Link] = []
        if not merge_request and int(entry.get("blocking_issues_count") or 0) > 0:
            if _LINKS not in fetch.parts:
                raise RawsMissing(f"the links of {key} are not among the raw pages")
            links = parse_links(_concat(fetch, _LINKS, raws))
        return item_of(
            self.config, self.mapping, project, key, entry, (state, labels, notes, links)
        )

    def _notes(
        self,
        fetch: Fetch,
        raws: Mapping[int, StoredRaw],
        state: Sequence[Mapping[str, Any]],
        labels: Sequence[Mapping[str, Any]],
        key: str,
        iid: int,
    ) -> list[Mapping[str, Any]]:
        """The notes the sync used: the REST ones where it read them, else GraphQL's."""
        if _NOTES in fetch.parts:
            return _concat(fetch, _NOTES, raws)
        pages = fetch.parts.get(_GRAPHQL)
        if not pages:
            raise RawsMissing(f"the system notes of {key} are not among the raw pages")
        batch = _batch_notes(raws[pages[0]]).get(iid)
        if batch is None:
            raise RawsMissing(f"the system notes of {key} are not among the raw pages")
        nodes = list(batch.get("nodes") or ())
        info = batch.get("pageInfo") or {}
        for raw_id in pages[1:]:
            more = _more_notes(raws[raw_id]) or {}
            nodes.extend(more.get("nodes") or ())
            info = more.get("pageInfo") or {}
        notes = notes_from_graphql(nodes)
        if info.get("hasNextPage") or note_times_ambiguous(state, labels, notes, key):
            # the sync went on to read these over REST, whose pages are not stored
            raise RawsMissing(f"the system notes of {key} are not complete in the raw pages")
        return list(notes)

    def narrowed(self, old_scope: Mapping[str, Any]) -> ScopeFilter | None:
        """Projects or groups taken out (or a group replaced by some of its subgroups or
        projects), and `work_item_status` turned off (notes then no longer count): the items
        of a project the old scope held by name or by group path and the new one does not
        have left. Projects shared into a group are not under its path: they stay, and the
        next reconciliation decides. Anything else is not a narrowing."""
        if not differs_only_in(old_scope, scope_of(self.config), _NARROWABLE):
            return None
        if self.config.work_item_status and not old_scope.get("work_item_status"):
            return None  # notes are read now that were not: they must be fetched
        old_projects = _folded(old_scope.get("projects"))
        old_groups = _folded(old_scope.get("groups"))
        new_projects, new_groups = _folded(self.config.projects), _folded(self.config.groups)

        def held(path: str, projects: frozenset[str], groups: frozenset[str]) -> bool:
            return path in projects or any(path.startswith(g + "/") for g in groups)

        if any(not held(g, frozenset(), old_groups) and g not in old_groups for g in new_groups):
            return None
        if any(not held(p, old_projects, old_groups) for p in new_projects):
            return None

        def left(project: str) -> bool:
            path = project.casefold()
            was = held(path, old_projects, old_groups)
            return was and not held(path, new_projects, new_groups)

        return left


def _folded(values: Any) -> frozenset[str]:
    return frozenset(str(v).strip("/").casefold() for v in values or ())


def _concat(fetch: Fetch, part: str, raws: Mapping[int, StoredRaw]) -> list[Mapping[str, Any]]:
    return [e for raw_id in fetch.parts.get(part, ()) for e in objects_of(raws[raw_id])]


def _entries(raw: StoredRaw) -> Sequence[Mapping[str, Any]]:
    return [
        e for e in objects_of(raw) if e.get("id") is not None and str(e.get("iid", "")).isdigit()
    ]


def _entries_by_id(raw: StoredRaw) -> dict[str, Mapping[str, Any]]:
    return raw.derived("entries", lambda page: first_by_id(_entries(page)))


def _batch_notes(raw: StoredRaw) -> dict[int, Mapping[str, Any]]:
    """The `notes` connection of each item (by iid) in a batched GraphQL answer."""
    return raw.derived("notes", _index_batch_notes)


def _index_batch_notes(raw: StoredRaw) -> dict[int, Mapping[str, Any]]:
    index: dict[int, Mapping[str, Any]] = {}
    nodes = nested(raw.body, "data", "project", "items", "nodes")
    for node in nodes if isinstance(nodes, list) else ():
        if isinstance(node, Mapping) and str(node.get("iid", "")).isdigit():
            notes = _notes_page(node.get("notes"))
            if notes is not None:
                index[int(node["iid"])] = notes
    return index


def _more_notes(raw: StoredRaw) -> Mapping[str, Any] | None:
    """The `notes` page of a GraphQL answer continuing one item's notes."""
    return _notes_page(nested(raw.body, "data", "project", "item", "notes"))


def _notes_page(notes: Any) -> Mapping[str, Any] | None:
    if isinstance(notes, Mapping) and isinstance(notes.get("nodes"), list):
        return notes
    return None
