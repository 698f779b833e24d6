"""GitLab resource events and system notes → transitions, hand-made and on documented shapes."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connectors.gitlab.parse import (
    Change,
    GitLabMapping,
    changes_from_events,
    note_times_ambiguous,
    notes_from_graphql,
    parse_item,
)
from connectors.gitlab.settings import (
    DEFAULT_CANCELED_LABELS,
    DEFAULT_FLOW_TYPES,
    DEFAULT_LABEL_STAGES,
    DEFAULT_STATUS_STAGES,
)
from syncd.domain import Stage
from syncd.mapping import FlowTypeRules, StageOverrides

T0 = datetime(2026, 4, 6, 8, tzinfo=UTC)
MAPPING = GitLabMapping(
    label_stages={k.casefold(): v for k, v in DEFAULT_LABEL_STAGES.items()},
    status_stages=DEFAULT_STATUS_STAGES,
    canceled_labels=frozenset(label.casefold() for label in DEFAULT_CANCELED_LABELS),
    overrides=StageOverrides.from_config({}),
    flow_types=FlowTypeRules.from_config(DEFAULT_FLOW_TYPES),
)


def at(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def label(hours: float, name: str, action: str = "add") -> dict[str, Any]:
    return {
        "id": 1,
        "created_at": at(hours),
        "resource_type": "Issue",
        "resource_id": 1,
        "label": {"id": 9, "name": name},
        "action": action,
    }


def state(hours: float, value: str) -> dict[str, Any]:
    return {"id": 1, "created_at": at(hours), "resource_type": "Issue", "state": value}


def note(hours: float, body: str) -> dict[str, Any]:
    return {"id": 1, "created_at": at(hours), "system": True, "body": body}


def item(
    *, mr: bool = False, labels: tuple[str, ...] = (), issue_type: str = "issue"
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": 77,
        "iid": 12,
        "title": "t",
        "created_at": at(0),
        "updated_at": at(200),
        "labels": list(labels),
        "issue_type": issue_type,
    }
    if mr:
        out.update(merged_at=None, source_branch="feature", draft=False)
    return out


def moves(changes: list[Change], **kw: Any) -> list[tuple[float, str, Stage]]:
    flow = parse_item(
        item(**kw), changes, MAPPING, project="acme/web", source="gl", value_stream="vs"
    )
    return [((t.at - T0).total_seconds() / 3600, t.to_state, t.to_stage) for t in flow.transitions]


def test_scoped_labels_replace_each_other_pause_reopen_and_cancel() -> None:
    changes = changes_from_events(
        [state(50, "closed"), state(60, "reopened"), state(80, "closed")],
        [
            label(10, "workflow::in progress"),
            # a scoped replacement: remove and add at the same instant, in either order
            label(20, "workflow::blocked"),
            label(20, "workflow::in progress", "remove"),
            label(30, "workflow::in progress"),
            label(30, "workflow::blocked", "remove"),
            label(70, "duplicate"),
        ],
        [],
        "acme/web#12",
    )
    assert moves(changes) == [
        (0, "opened", Stage.NEW),
        (10, "workflow::in progress", Stage.ACTIVE),
        (20, "workflow::blocked", Stage.WAITING),
        (30, "workflow::in progress", Stage.ACTIVE),
        (50, "closed", Stage.DONE),
        (60, "workflow::in progress", Stage.ACTIVE),
        (80, "closed (duplicate)", Stage.CANCELED),
    ]


def test_work_item_status_notes_win_over_labels() -> None:
    changes = changes_from_events(
        [state(40, "closed")],
        [label(5, "workflow::in progress")],
        [
            note(10, "set status to **In progress**"),
            note(20, "set status to **To do**"),
            {"id": 2, "created_at": at(25), "system": False, "body": "set status to **Done**"},
        ],
        "k",
    )
    assert moves(changes) == [
        (0, "opened", Stage.NEW),
        (5, "workflow::in progress", Stage.ACTIVE),
        (10, "status: In progress", Stage.ACTIVE),
        (20, "status: To do", Stage.NEW),
        (40, "closed", Stage.DONE),
    ]


def test_merge_request_draft_review_approval_and_merge() -> None:
    changes = changes_from_events(
        [state(30, "merged")],
        [],
        [
            note(5, "marked this merge request as **ready**"),
            note(10, "requested review from @ana"),
            note(20, "approved this merge request"),
        ],
        "acme/web!12",
    )
    flow = parse_item(
        item(mr=True), changes, MAPPING, project="acme/web", source="gl", value_stream="vs"
    )
    assert flow.key == "acme/web!12" and flow.kind == "merge_request"
    assert [(t.to_state, t.to_stage) for t in flow.transitions] == [
        ("draft", Stage.ACTIVE),
        ("opened", Stage.ACTIVE),
        ("in review", Stage.WAITING),
        ("approved", Stage.WAITING),
        ("merged", Stage.DONE),
    ]
    closed = changes_from_events([state(3, "closed")], [label(1, "workflow::review")], [], "k")
    assert moves(closed, mr=True) == [
        (0, "opened", Stage.ACTIVE),
        (1, "workflow::review", Stage.WAITING),
        (3, "closed unmerged", Stage.CANCELED),
    ]


def test_flow_types() -> None:
    assert (
        parse_item(
            item(issue_type="incident"), [], MAPPING, project="p", source="s", value_stream="v"
        ).flow_type
        == "defect"
    )
    assert (
        parse_item(
            item(labels=("type::feature",)), [], MAPPING, project="p", source="s", value_stream="v"
        ).flow_type
        == "feature"
    )
    assert (
        parse_item(
            item(labels=("tech debt",)), [], MAPPING, project="p", source="s", value_stream="v"
        ).flow_type
        == "debt"
    )


def test_documented_event_shapes(shared_fixtures: Path) -> None:
    folder = shared_fixtures / "gitlab" / "docs-examples"
    states = json.loads((folder / "issue_resource_state_events__list.json").read_text())
    labels = json.loads((folder / "issue_resource_label_events__list.json").read_text())
    changes = changes_from_events(states, labels, [], "doc")
    assert [c.kind for c in changes].count("state") == len(states)
    assert {c.kind for c in changes} >= {"state", "label_add"}
    assert all(c.at.tzinfo is UTC for c in changes)
    assert changes == sorted(changes, key=lambda c: c.at)


def graphql_note(hours: float, body: str, number: int = 7, system: bool = True) -> dict[str, Any]:
    """A GraphQL `Note` node: global id, and `Time` to the second."""
    return {
        "id": f"gid://gitlab/Note/{number}",
        "body": body,
        "system": system,
        "createdAt": at(hours).replace(".000Z", "Z"),
    }


def test_graphql_notes_become_rest_shaped_notes() -> None:
    nodes: list[Any] = [
        graphql_note(5, "marked this merge request as **ready**", 11),
        graphql_note(10, "requested review from @ana", 12),
        graphql_note(12, "requested review from @ana (a comment)", 13, system=False),
        graphql_note(20, "approved this merge request", 14),
        {"id": "gid://gitlab/Note/abc", "body": "x", "system": True, "createdAt": at(1)},
        "not a node",
    ]
    notes = notes_from_graphql(nodes)
    assert [n["id"] for n in notes] == [11, 12, 13, 14, "gid://gitlab/Note/abc"]
    assert notes[0] == {
        "id": 11,
        "body": "marked this merge request as **ready**",
        "system": True,
        "created_at": "2026-04-06T13:00:00Z",
    }
    # the same changes as the REST notes they stand for
    rest = [
        note(5, "marked this merge request as **ready**"),
        note(10, "requested review from @ana"),
        {"id": 2, "created_at": at(12), "system": False, "body": "requested review from @ana"},
        note(20, "approved this merge request"),
    ]
    assert changes_from_events([], [], notes, "k") == changes_from_events([], [], rest, "k")
    assert [c.kind for c in changes_from_events([], [], notes, "k")] == [
        "draft",
        "review",
        "approved",
    ]


def test_notes_timed_to_the_second_are_ambiguous_only_when_sharing_a_second() -> None:
    def graphql(*nodes: dict[str, Any]) -> list[dict[str, Any]]:
        return notes_from_graphql(nodes)

    review = graphql(graphql_note(10, "requested review from @ana"))
    merged, in_review = [state(30, "merged")], [label(9, "workflow::review")]
    assert not note_times_ambiguous(merged, in_review, review, "k")
    # a label event 400 ms into the note's second: which came first is unknown
    same_second = {**label(10, "workflow::review"), "created_at": at(10 + 0.4 / 3600)}
    assert note_times_ambiguous([], [same_second], review, "k")
    assert note_times_ambiguous([state(10, "closed")], [], review, "k")
    # two stage-changing notes in one second
    approved = graphql_note(10, "approved this merge request", 8)
    assert note_times_ambiguous([], [], [*review, *graphql(approved)], "k")
    # notes that change no stage, comments, and label events of deleted labels do not count
    quiet = [
        *review,
        *graphql(
            graphql_note(10, "assigned to @bo", 9),
            graphql_note(10, "approved this merge request", 10, system=False),
        ),
    ]
    deleted = {**same_second, "label": None}
    assert not note_times_ambiguous([], [deleted], quiet, "k")
    # a scoped replacement (add and remove in one instant) is REST's own, not ambiguous
    replacement = [label(10, "workflow::review"), label(10, "workflow::doing", "remove")]
    assert not note_times_ambiguous([], replacement, [], "k")
    later = graphql(graphql_note(11, "approved this merge request"))
    assert not note_times_ambiguous([], replacement, later, "k")
    # an unreadable time: let the REST notes decide
    assert note_times_ambiguous([], [], [{**review[0], "created_at": "x"}], "k")


def test_recorded_merge_requests_closing_references(shared_fixtures: Path) -> None:
    # DevLake's recorded gitlab.com merge requests: "Closes #11 \n\n* ..." and a closing URL to
    # an issue of another project; an issue saying "Closes" closes nothing
    path = shared_fixtures / "gitlab" / "devlake" / "_raw_gitlab_api_merge_requests.csv"
    csv.field_size_limit(1 << 30)
    with path.open(encoding="utf-8", newline="") as handle:
        records = {r["iid"]: r for r in (json.loads(row["data"]) for row in csv.DictReader(handle))}
    project = "gitlab-data/snowflake_spend"

    def links(record: dict[str, Any]) -> set[tuple[str, str, str]]:
        flow = parse_item(record, [], MAPPING, project=project, source="gl", value_stream="v")
        return {(lk.link_type, lk.direction, lk.target_key) for lk in flow.links}

    assert links(records[12]) == {("Closes", "outward", "gitlab-data/snowflake_spend#11")}
    assert links(records[21]) == {("Closes", "outward", "gitlab-data/analytics#12941")}
    issue = {k: v for k, v in records[12].items() if k not in ("merged_at", "source_branch")}
    assert links(issue) == set()


def test_urls_of_an_instance_under_a_relative_root() -> None:
    # the item's own web_url shows the root path (`/gitlab`), which is no part of a project path
    mr = item(mr=True) | {
        "web_url": "https://example.com/gitlab/acme/web/-/merge_requests/12",
        "description": "Fixes https://example.com/gitlab/acme/web/-/issues/3\n"
        "Blocked by https://example.com/gitlab/acme/api/-/merge_requests/4",
    }
    flow = parse_item(mr, [], MAPPING, project="acme/web", source="gl", value_stream="vs")
    assert {(lk.link_type, lk.target_key) for lk in flow.links} == {
        ("Closes", "acme/web#3"),
        ("Blocks", "acme/api!4"),
    }
