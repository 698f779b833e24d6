"""GitLab JSON → flow items. Pure functions: no HTTP, no storage.

An item's history is replayed from its resource state events (closed, reopened, merged — the
first "opened" has no event: the item starts at `created_at`), its resource label events
(scoped labels such as `workflow::in review` replace each other: GitLab records a remove and
an add at the same instant) and, where read, system notes (work item Status, draft/ready,
review requests, approvals).

System notes come from REST (`/notes`, times to the millisecond) or from GraphQL (`notes`
nodes, times to the second: `notes_from_graphql` turns them into the REST shape). A second is
precise enough unless a note shares it with another change of the item, whose order it could
then no longer tell: `note_times_ambiguous` says when the REST notes must be read instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from connectors import references
from syncd.domain import FlowItem, Link, Stage, Transition, parse_timestamp
from syncd.errors import SkippableRecord
from syncd.mapping import FlowTypeRules, StageOverrides

_STATUS_NOTE = re.compile(r"^set status to \*\*(?P<status>.+?)\*\*", re.IGNORECASE)
_REVIEW_NOTE = re.compile(r"^requested review from ", re.IGNORECASE)
_DRAFT_NOTE = re.compile(
    r"^marked this merge request as \*\*(?P<what>draft|ready)\*\*", re.IGNORECASE
)
_APPROVED_NOTE = re.compile(r"^approved this merge request", re.IGNORECASE)
_UNAPPROVED_NOTE = re.compile(r"^unapproved this merge request", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Change:
    """One fact that can change an item's stage, in time order."""

    at: datetime
    kind: str  # state | label_add | label_remove | status | draft | review | approved | unapproved
    value: str | None = None


def _change_of_note(body: str, at: datetime) -> Change | None:
    """The change a system note's body stands for, None for notes that change no stage."""
    if match := _STATUS_NOTE.match(body):
        return Change(at, "status", match.group("status"))
    if match := _DRAFT_NOTE.match(body):
        return Change(at, "draft", match.group("what").lower())
    if _REVIEW_NOTE.match(body):
        return Change(at, "review")
    if _APPROVED_NOTE.match(body):
        return Change(at, "approved")
    if _UNAPPROVED_NOTE.match(body):
        return Change(at, "unapproved")
    return None


def changes_from_events(
    state_events: Iterable[Mapping[str, Any]],
    label_events: Iterable[Mapping[str, Any]],
    notes: Iterable[Mapping[str, Any]],
    key: str,
) -> list[Change]:
    """Resource state and label events and system notes → changes, oldest first. Within one
    instant, label removals come before additions so a scoped replacement never shows both."""
    out: list[tuple[datetime, int, Change]] = []
    for event in state_events:
        at = parse_timestamp(event.get("created_at"), f"{key} state event")
        out.append((at, 2, Change(at, "state", str(event.get("state") or ""))))
    for event in label_events:
        at = parse_timestamp(event.get("created_at"), f"{key} label event")
        label = (event.get("label") or {}).get("name")
        if not label:
            continue  # a deleted label: GitLab keeps the event with label null
        action = "label_add" if event.get("action") == "add" else "label_remove"
        out.append((at, 1 if action == "label_remove" else 2, Change(at, action, str(label))))
    for note in notes:
        if not note.get("system"):
            continue
        body = str(note.get("body") or "").strip()
        at = parse_timestamp(note.get("created_at"), f"{key} note")
        change = _change_of_note(body, at)
        if change is not None:
            out.append((at, 2, change))
    out.sort(key=lambda entry: (entry[0], entry[1]))
    return [change for _at, _order, change in out]


def notes_from_graphql(nodes: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """GraphQL `Note` nodes (`id body system createdAt`) → notes in the REST shape that
    `changes_from_events` reads (`id` is the number of the global id `gid://gitlab/Note/7`)."""
    out: list[dict[str, Any]] = []
    for node in nodes:
        if not isinstance(node, Mapping):
            continue
        gid = str(node.get("id") or "")
        number = gid.rpartition("/")[2]
        out.append(
            {
                "id": int(number) if number.isdigit() else gid,
                "body": node.get("body"),
                "system": bool(node.get("system")),
                "created_at": node.get("createdAt"),
            }
        )
    return out


def note_times_ambiguous(
    state_events: Iterable[Mapping[str, Any]],
    label_events: Iterable[Mapping[str, Any]],
    notes: Iterable[Mapping[str, Any]],
    key: str,
) -> bool:
    """Whether notes timed to the second (GraphQL) could be ordered wrongly among the item's
    other changes: a system note that changes a stage falls in the same second as another
    change (a state or label event, or another such note). Unreadable times count as
    ambiguous, so the REST notes decide."""
    try:
        seconds: list[tuple[int, bool]] = []
        for event in state_events:
            at = parse_timestamp(event.get("created_at"), f"{key} state event")
            seconds.append((int(at.timestamp()), False))
        for event in label_events:
            if (event.get("label") or {}).get("name"):
                at = parse_timestamp(event.get("created_at"), f"{key} label event")
                seconds.append((int(at.timestamp()), False))
        for note in notes:
            if not note.get("system"):
                continue
            at = parse_timestamp(note.get("created_at"), f"{key} note")
            if _change_of_note(str(note.get("body") or "").strip(), at) is not None:
                seconds.append((int(at.timestamp()), True))
    except SkippableRecord:
        return True
    by_second: dict[int, list[bool]] = {}
    for second, is_note in seconds:
        by_second.setdefault(second, []).append(is_note)
    return any(len(kinds) > 1 and any(kinds) for kinds in by_second.values())


@dataclass(frozen=True, slots=True)
class GitLabMapping:
    """The source's rules for turning GitLab facts into stages and flow types."""

    label_stages: Mapping[str, Stage]  # keys case-folded
    status_stages: Mapping[str, Stage]
    canceled_labels: frozenset[str]
    overrides: StageOverrides
    flow_types: FlowTypeRules


_LABEL_PRIORITY = (Stage.WAITING, Stage.ACTIVE, Stage.DONE)


@dataclass(slots=True)
class _State:
    merge_request: bool
    closed: bool = False
    merged: bool = False
    draft: bool = False
    labels: list[str] = field(default_factory=list)
    status: str | None = None
    in_review: bool = False
    approved: bool = False

    def apply(self, change: Change) -> None:
        kind, value = change.kind, change.value
        if kind == "state":
            if value == "closed":
                self.closed = True
            elif value == "reopened":
                self.closed = self.merged = False
            elif value == "merged":
                self.merged = True
        elif kind == "label_add" and value is not None and value not in self.labels:
            self.labels.append(value)
        elif kind == "label_remove" and value in self.labels:
            self.labels.remove(value)
        elif kind == "status":
            self.status = value
        elif kind == "draft":
            self.draft = value == "draft"
        elif kind == "review":
            self.in_review = True
        elif kind == "approved":
            self.approved = True
        elif kind == "unapproved":
            self.approved = False

    def state(self, mapping: GitLabMapping) -> tuple[str, Stage]:
        """The state name shown in exports and its stage (before overrides)."""
        if self.merged:
            return "merged", Stage.DONE
        canceled = next(
            (lb for lb in self.labels if lb.casefold() in mapping.canceled_labels), None
        )
        if self.closed:
            if self.merge_request:
                return "closed unmerged", Stage.CANCELED
            if canceled is not None:
                return f"closed ({canceled})", Stage.CANCELED
            status_stage = mapping.status_stages.get(self.status or "")
            if status_stage is Stage.CANCELED:
                return f"closed ({self.status})", Stage.CANCELED
            return "closed", Stage.DONE
        if self.status is not None and not self.merge_request:
            stage = mapping.status_stages.get(self.status)
            if stage is not None:
                return f"status: {self.status}", stage
        for wanted in _LABEL_PRIORITY:
            for label in self.labels:
                if mapping.label_stages.get(label.casefold()) is wanted:
                    return label, wanted
        if self.merge_request:
            if self.approved:
                return "approved", Stage.WAITING
            if self.in_review:
                return "in review", Stage.WAITING
            return ("draft" if self.draft else "opened"), Stage.ACTIVE
        return "opened", Stage.NEW


def parse_item(
    item: Mapping[str, Any],
    changes: Sequence[Change],
    mapping: GitLabMapping,
    *,
    project: str,
    source: str,
    value_stream: str,
    links: Sequence[Link] = (),
) -> FlowItem:
    """A REST issue or merge request and its changes → a flow item with its transitions.
    `links` are the item's stated links (`parse_links`); "blocked by / depends on" in the
    description and Jira keys in the title or source branch are added (`text_links`)."""
    merge_request = "merged_at" in item or "source_branch" in item
    try:
        iid = int(item["iid"])
        item_id = str(item["id"])
    except (KeyError, TypeError, ValueError):
        raise SkippableRecord("item without iid or id", key=f"{project}?") from None
    key = f"{project}{'!' if merge_request else '#'}{iid}"
    created = parse_timestamp(item.get("created_at"), f"{key} created_at")
    updated = parse_timestamp(item.get("updated_at") or item.get("created_at"), f"{key} updated_at")
    state = _State(merge_request=merge_request)
    if merge_request:
        drafts = [c for c in changes if c.kind == "draft"]
        state.draft = (
            (drafts[0].value == "ready")
            if drafts
            else bool(item.get("draft") or item.get("work_in_progress"))
        )

    def staged() -> tuple[str, Stage]:
        name, stage = state.state(mapping)
        return name, mapping.overrides.lookup(None, name) or stage

    name, stage = staged()
    transitions = [Transition(created, None, name, None, stage)]
    for index, change in enumerate(changes):
        state.apply(change)
        if index + 1 < len(changes) and changes[index + 1].at == change.at:
            continue  # changes of one instant (a scoped label replacement) act together
        new_name, new_stage = staged()
        if new_name != name or new_stage is not stage:
            transitions.append(
                Transition(max(change.at, created), name, new_name, stage, new_stage)
            )
            name, stage = new_name, new_stage

    labels = [str(label) for label in item.get("labels") or ()]
    issue_type = item.get("issue_type") or (str(item.get("type") or "").lower() or None)
    return FlowItem(
        source=source,
        id=item_id,
        key=key,
        kind="merge_request" if merge_request else "issue",
        title=str(item.get("title") or ""),
        project=project,
        flow_type=mapping.flow_types.classify(issue_type, labels),
        value_stream=value_stream,
        stage=stage,
        state=name,
        created_at=created,
        updated_at=max(updated, transitions[-1].at),
        transitions=transitions,
        links=_merged(links, text_links(item, project, merge_request=merge_request)),
        labels=labels,
    )


def parse_links(links: Iterable[Mapping[str, Any]]) -> list[Link]:
    """`/issues/:iid/links` → dependencies in Jira's vocabulary ("Blocks" outward/inward)."""
    out: list[Link] = []
    for link in links:
        other = (
            link.get("references", {}).get("full")
            if isinstance(link.get("references"), Mapping)
            else None
        )
        target = str(other or f"{link.get('project_id')}#{link.get('iid')}")
        kind = str(link.get("link_type") or "relates_to")
        if kind == "blocks":
            out.append(Link("Blocks", "outward", target, str(link.get("id"))))
        elif kind == "is_blocked_by":
            out.append(Link("Blocks", "inward", target, str(link.get("id"))))
        else:
            out.append(Link("Relates", "outward", target, str(link.get("id"))))
    return out


def text_links(item: Mapping[str, Any], project: str, *, merge_request: bool) -> list[Link]:
    """Links an issue or merge request states in words (`connectors.references`): a merge
    request's closing references in its description ("Closes", outward), "blocked by /
    depends on X" in the description ("Blocks", inward: this item is blocked by X) and Jira
    keys in its title or, for a merge request, its source branch ("References", outward)."""
    return references.text_links(
        references.Origin(references.GITLAB, project, _site(item.get("web_url"), project)),
        str(item.get("description") or ""),
        (str(item.get("title") or ""), str(item.get("source_branch") or "")),
        closes=merge_request,
    )


def _site(web_url: Any, project: str) -> str | None:
    """The instance's web root from an item's own URL where it has a path (`https://host/gitlab`
    for `https://host/gitlab/group/proj/-/issues/3`), else None."""
    url = urlsplit(str(web_url or ""))
    at = url.path.casefold().find(f"/{project.casefold()}/")
    return f"{url.scheme}://{url.netloc}{url.path[:at]}" if at > 0 else None


def _merged(stated: Sequence[Link], derived: Sequence[Link]) -> list[Link]:
    """The stated links, then derived ones they do not already say."""
    seen = {(link.link_type, link.direction, link.target_key) for link in stated}
    return [
        *stated,
        *(lk for lk in derived if (lk.link_type, lk.direction, lk.target_key) not in seen),
    ]
