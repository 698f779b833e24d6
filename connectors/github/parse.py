"""GitHub JSON → flow items. Pure functions: no HTTP, no storage.

GitHub has no status field: an issue's or pull request's state is derived by replaying its
timeline (labels, assignees, close/reopen with a reason, Projects v2 status, draft/ready,
review requests and reviews, merge). GraphQL timeline nodes and REST timeline events are both
turned into one `Event` list first, so the state machines below serve both paths.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.references import GITHUB, Origin, text_links
from syncd.domain import FlowItem, Link, Stage, Transition, parse_timestamp
from syncd.errors import SkippableRecord
from syncd.mapping import FlowTypeRules, StageOverrides

#: timeline item types asked from GraphQL, per kind of item (PR-only types are refused on issues)
ISSUE_ITEM_TYPES = (
    "LABELED_EVENT",
    "UNLABELED_EVENT",
    "ASSIGNED_EVENT",
    "UNASSIGNED_EVENT",
    "CLOSED_EVENT",
    "REOPENED_EVENT",
    "CROSS_REFERENCED_EVENT",
    "ADDED_TO_PROJECT_V2_EVENT",
    "PROJECT_V2_ITEM_STATUS_CHANGED_EVENT",
)
PULL_ITEM_TYPES = (
    *ISSUE_ITEM_TYPES,
    "MERGED_EVENT",
    "READY_FOR_REVIEW_EVENT",
    "CONVERT_TO_DRAFT_EVENT",
    "REVIEW_REQUESTED_EVENT",
    "REVIEW_REQUEST_REMOVED_EVENT",
    "PULL_REQUEST_REVIEW",
)

#: the fields read from each timeline node (inline fragments on the timeline unions; GitHub
#: refuses fragments of PR-only event types on an issue's timeline)
_COMMON_SELECTION = """__typename
... on LabeledEvent { createdAt label { name } }
... on UnlabeledEvent { createdAt label { name } }
... on AssignedEvent { createdAt assignee { ... on User { login } } }
... on UnassignedEvent { createdAt assignee { ... on User { login } } }
... on ClosedEvent { createdAt stateReason }
... on ReopenedEvent { createdAt }
... on CrossReferencedEvent { createdAt willCloseTarget
    source { ... on Issue { number repository { nameWithOwner } }
             ... on PullRequest { number repository { nameWithOwner } } } }
... on AddedToProjectV2Event { createdAt }
... on ProjectV2ItemStatusChangedEvent { createdAt status previousStatus }"""
ISSUE_SELECTION = _COMMON_SELECTION
PULL_SELECTION = (
    _COMMON_SELECTION
    + """
... on MergedEvent { createdAt }
... on ReadyForReviewEvent { createdAt }
... on ConvertToDraftEvent { createdAt }
... on ReviewRequestedEvent { createdAt requestedReviewer { ... on User { login } } }
... on ReviewRequestRemovedEvent { createdAt requestedReviewer { ... on User { login } } }
... on PullRequestReview { createdAt submittedAt state }"""
)

parse_time = parse_timestamp


@dataclass(frozen=True, slots=True)
class Event:
    """One timeline fact that can change an item's stage. `value` carries the label, login,
    close reason, review state or project status, lower-cased where GitHub varies the case."""

    at: datetime
    kind: str
    value: str | None = None


_GRAPHQL_KINDS = {
    "LabeledEvent": "labeled",
    "UnlabeledEvent": "unlabeled",
    "AssignedEvent": "assigned",
    "UnassignedEvent": "unassigned",
    "ClosedEvent": "closed",
    "ReopenedEvent": "reopened",
    "MergedEvent": "merged",
    "ReadyForReviewEvent": "ready",
    "ConvertToDraftEvent": "draft",
    "ReviewRequestedEvent": "review_requested",
    "ReviewRequestRemovedEvent": "review_request_removed",
    "PullRequestReview": "reviewed",
    "ProjectV2ItemStatusChangedEvent": "project_status",
}
_REST_KINDS = {
    "labeled": "labeled",
    "unlabeled": "unlabeled",
    "assigned": "assigned",
    "unassigned": "unassigned",
    "closed": "closed",
    "reopened": "reopened",
    "merged": "merged",
    "ready_for_review": "ready",
    "convert_to_draft": "draft",
    "review_requested": "review_requested",
    "review_request_removed": "review_request_removed",
    "reviewed": "reviewed",
}


def _login(actor: Any) -> str | None:
    return str(actor["login"]) if isinstance(actor, Mapping) and actor.get("login") else None


def events_from_graphql(nodes: Iterable[Mapping[str, Any]], key: str) -> list[Event]:
    """GraphQL timeline nodes → events (unknown node types are ignored)."""
    events: list[Event] = []
    for node in nodes:
        kind = _GRAPHQL_KINDS.get(str(node.get("__typename")))
        if kind is None:
            continue
        stamp = node.get("submittedAt") if kind == "reviewed" else None
        at = parse_time(stamp or node.get("createdAt"), f"{key} {node.get('__typename')}")
        value: str | None = None
        if kind in ("labeled", "unlabeled"):
            value = str((node.get("label") or {}).get("name") or "")
        elif kind in ("assigned", "unassigned"):
            value = _login(node.get("assignee"))
        elif kind in ("review_requested", "review_request_removed"):
            value = _login(node.get("requestedReviewer"))
        elif kind == "closed":
            value = str(node.get("stateReason") or "COMPLETED").lower()
        elif kind == "reviewed":
            value = str(node.get("state") or "").lower()
        elif kind == "project_status":
            value = node.get("status")
        events.append(Event(at, kind, value))
    return events


def events_from_rest(timeline: Iterable[Mapping[str, Any]], key: str) -> list[Event]:
    """REST `/issues/{n}/timeline` events → events."""
    events: list[Event] = []
    for entry in timeline:
        kind = _REST_KINDS.get(str(entry.get("event")))
        if kind is None:
            continue
        stamp = entry.get("submitted_at") if kind == "reviewed" else entry.get("created_at")
        at = parse_time(stamp, f"{key} {entry.get('event')}")
        value: str | None = None
        if kind in ("labeled", "unlabeled"):
            value = str((entry.get("label") or {}).get("name") or "")
        elif kind in ("assigned", "unassigned"):
            value = _login(entry.get("assignee"))
        elif kind in ("review_requested", "review_request_removed"):
            value = _login(entry.get("requested_reviewer"))
        elif kind == "closed":
            value = str(entry.get("state_reason") or "completed").lower()
        elif kind == "reviewed":
            value = str(entry.get("state") or "").lower()
        events.append(Event(at, kind, value))
    return events


@dataclass(frozen=True, slots=True)
class GitHubMapping:
    """The source's rules for turning GitHub facts into stages and flow types."""

    active_labels: frozenset[str]
    waiting_labels: frozenset[str]
    project_statuses: Mapping[str, Stage]
    overrides: StageOverrides
    flow_types: FlowTypeRules


@dataclass(slots=True)
class _State:
    """An item's state while its timeline is replayed."""

    pull: bool
    closed: bool = False
    reason: str | None = None
    merged: bool = False
    draft: bool = False
    labels: list[str] = field(default_factory=list)
    assignees: set[str] = field(default_factory=set)
    project_status: str | None = None
    pending_reviews: set[str] = field(default_factory=set)
    review: str | None = None  # last submitted review decision: approved / changes_requested

    def apply(self, event: Event) -> None:
        kind, value = event.kind, event.value
        if kind == "labeled" and value is not None and value not in self.labels:
            self.labels.append(value)
        elif kind == "unlabeled" and value in self.labels:
            self.labels.remove(value)
        elif kind == "assigned" and value:
            self.assignees.add(value)
        elif kind == "unassigned":
            self.assignees.discard(value or "")
        elif kind == "closed":
            self.closed, self.reason = True, value
        elif kind == "reopened":
            self.closed, self.reason, self.merged = False, None, False
        elif kind == "merged":
            self.merged = True
        elif kind == "ready":
            self.draft = False
        elif kind == "draft":
            self.draft = True
        elif kind == "review_requested":
            self.pending_reviews.add(value or "?")
            self.review = None  # a new request asks for a new decision
        elif kind == "review_request_removed":
            self.pending_reviews.discard(value or "?")
        elif kind == "reviewed" and value in ("approved", "changes_requested"):
            self.review = value
            self.pending_reviews.clear()
        elif kind == "reviewed" and value == "dismissed":
            self.review = None
        elif kind == "project_status":
            self.project_status = value

    def state(self, mapping: GitHubMapping) -> tuple[str, Stage]:
        """The state name shown in exports and the stage it maps to (before overrides)."""
        if self.merged:
            return "merged", Stage.DONE
        if self.closed:
            if self.pull:
                return "closed unmerged", Stage.CANCELED
            reason = (self.reason or "completed").replace("_", " ")
            return f"closed ({reason})", Stage.DONE if reason == "completed" else Stage.CANCELED
        for label in self.labels:
            if label.casefold() in mapping.waiting_labels:
                return label, Stage.WAITING
        if self.pull:
            if self.review == "approved":
                return "approved", Stage.WAITING
            if self.pending_reviews:
                return "review requested", Stage.WAITING
            if self.review == "changes_requested":
                return "changes requested", Stage.ACTIVE
            return ("draft" if self.draft else "open"), Stage.ACTIVE
        for label in self.labels:
            if label.casefold() in mapping.active_labels:
                return label, Stage.ACTIVE
        if self.project_status is not None:
            stage = mapping.project_statuses.get(self.project_status)
            if stage is not None:
                return f"project: {self.project_status}", stage
        if self.assignees:
            return "assigned", Stage.ACTIVE
        return "open", Stage.NEW


def _stage(mapping: GitHubMapping, state: _State) -> tuple[str, Stage]:
    name, stage = state.state(mapping)
    return name, mapping.overrides.lookup(None, name) or stage


def parse_item(
    item: Mapping[str, Any],
    events: Sequence[Event],
    mapping: GitHubMapping,
    *,
    repo: str,
    source: str,
    value_stream: str,
    closing: Sequence[tuple[str, Sequence[str]]] = (),
    branch: str | None = None,
) -> FlowItem:
    """A REST issue object and its timeline events → a flow item with its transitions.

    `closing` lists the issues a pull request closes, with their labels: an unclassified pull
    request takes the flow type of the first of them that has one. `branch` is a pull
    request's head branch (GraphQL `headRefName`; a REST pull object's `head.ref` is read
    when the item is one): Jira keys in it, as in the title, become "References" links."""
    try:
        number = int(item["number"])
        item_id = str(item["id"])
    except (KeyError, TypeError, ValueError):
        raise SkippableRecord("item without number or id", key=f"{repo}#?") from None
    key = f"{repo}#{number}"
    created = parse_time(item.get("created_at"), f"{key} created_at")
    updated = parse_time(item.get("updated_at") or item.get("created_at"), f"{key} updated_at")
    pull = "pull_request" in item and item["pull_request"] is not None
    state = _State(pull=pull, draft=bool(item.get("draft")) and pull)
    if pull and any(e.kind in ("ready", "draft") for e in events):
        state.draft = next(e for e in events if e.kind in ("ready", "draft")).kind == "ready"
    name, stage = _stage(mapping, state)
    transitions = [Transition(created, None, name, None, stage)]
    for event in sorted(events, key=lambda e: e.at):
        state.apply(event)
        new_name, new_stage = _stage(mapping, state)
        if new_name != name or new_stage is not stage:
            at = max(event.at, created)
            transitions.append(Transition(at, name, new_name, stage, new_stage))
            name, stage = new_name, new_stage

    labels = [str(lb.get("name")) for lb in item.get("labels") or () if isinstance(lb, Mapping)]
    issue_type = (
        (item.get("type") or {}).get("name") if isinstance(item.get("type"), Mapping) else None
    )
    flow_type = mapping.flow_types.classify(issue_type, labels)
    if branch is None and pull and isinstance(item.get("head"), Mapping):
        branch = item["head"].get("ref")
    links = _links(item, repo, closing, branch if pull else None)
    if pull and flow_type == "unclassified":
        for _closed_key, closed_labels in closing:
            linked = mapping.flow_types.classify(None, closed_labels)
            if linked != "unclassified":
                flow_type = linked
                break
    return FlowItem(
        source=source,
        id=item_id,
        key=key,
        kind="pull_request" if pull else "issue",
        title=str(item.get("title") or ""),
        project=repo,
        flow_type=flow_type,
        value_stream=value_stream,
        stage=stage,
        state=name,
        created_at=created,
        updated_at=max(updated, transitions[-1].at),
        transitions=transitions,
        links=links,
        labels=labels,
    )


def _links(
    item: Mapping[str, Any],
    repo: str,
    closing: Sequence[tuple[str, Sequence[str]]],
    branch: str | None,
) -> list[Link]:
    """Closing references (type "Closes", outward: GraphQL's, then the body's closing keywords
    on a pull request), "blocked by / depends on" in the body (type "Blocks", inward: this item
    is blocked by the target), in Jira's vocabulary, and Jira keys in the title or the branch
    name (type "References", outward): `connectors.references`."""
    links: dict[tuple[str, str, str], Link] = {}
    for closed_key, _labels in closing:
        links[("Closes", "outward", closed_key)] = Link("Closes", "outward", closed_key)
    stated = text_links(
        Origin(GITHUB, repo),
        str(item.get("body") or ""),
        (str(item.get("title") or ""), branch or ""),
        closes=item.get("pull_request") is not None,
    )
    for link in stated:
        links.setdefault((link.link_type, link.direction, link.target_key), link)
    return list(links.values())
