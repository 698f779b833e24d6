"""Jira JSON → flow items: hand-made cases and real recorded responses."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.jira.parse import JiraMapping, StatusCatalogue, parse_issue
from connectors.jira.settings import DEFAULT_CANCELED_RESOLUTIONS, DEFAULT_FLOW_TYPES
from syncd.domain import Stage
from syncd.errors import SkippableRecord
from syncd.mapping import FlowTypeRules, StageOverrides

STATUSES = [
    {"id": "1", "name": "To Do", "statusCategory": {"key": "new"}},
    {"id": "3", "name": "In Progress", "statusCategory": {"key": "indeterminate"}},
    {"id": "4", "name": "Blocked", "statusCategory": {"key": "indeterminate"}},
    {"id": "5", "name": "En révision", "statusCategory": {"key": "indeterminate"}},
    {"id": "6", "name": "完了", "statusCategory": {"key": "done"}},
]


def mapping(statuses: Any = STATUSES, stages: dict[str, Stage] | None = None) -> JiraMapping:
    return JiraMapping(
        catalogue=StatusCatalogue.from_json(statuses),
        overrides=StageOverrides.from_config(stages or {"Blocked": Stage.WAITING}),
        canceled_resolutions=frozenset(r.casefold() for r in DEFAULT_CANCELED_RESOLUTIONS),
        flow_types=FlowTypeRules.from_config(DEFAULT_FLOW_TYPES),
    )


def issue(
    status: tuple[str, str],
    *,
    resolution: str | None = None,
    itype: str = "Bug",
    labels: tuple[str, ...] = (),
) -> dict[str, Any]:
    return {
        "id": "100",
        "key": "ABC-1",
        "fields": {
            "summary": "Checkout fails",
            "status": {"id": status[0], "name": status[1]},
            "issuetype": {"name": itype},
            "labels": list(labels),
            "resolution": {"name": resolution} if resolution else None,
            "created": "2025-03-28T09:00:00.000+0100",
            "updated": "2025-04-02T17:30:00.500+0200",
            "project": {"key": "ABC"},
            "issuelinks": [
                {"type": {"name": "Blocks"}, "outwardIssue": {"id": "101", "key": "ABC-2"}}
            ],
        },
    }


def history(hid: str, created: str, *items: dict[str, Any]) -> dict[str, Any]:
    return {"id": hid, "created": created, "items": list(items)}


def status(frm: tuple[str, str], to: tuple[str, str]) -> dict[str, Any]:
    return {
        "field": "status",
        "fieldtype": "jira",
        "fieldId": "status",
        "from": frm[0],
        "fromString": frm[1],
        "to": to[0],
        "toString": to[1],
    }


def resolution(to: str | None) -> dict[str, Any]:
    return {
        "field": "resolution",
        "fieldId": "resolution",
        "from": None,
        "fromString": None,
        "to": "1" if to else None,
        "toString": to,
    }


def test_history_becomes_transitions_with_stages_in_utc() -> None:
    histories = [  # out of order on purpose: syncd orders by time, then id
        history(
            "12", "2025-03-31T10:00:00.000+0200", status(("4", "Blocked"), ("3", "In Progress"))
        ),
        history("10", "2025-03-28T10:00:00.000+0100", status(("1", "To Do"), ("3", "In Progress"))),
        history(
            "11",
            "2025-03-29T10:00:00.000+0100",
            status(("3", "In Progress"), ("4", "Blocked")),
            {"field": "labels", "fieldId": "labels", "fromString": "", "toString": "x"},
        ),
        history(
            "13",
            "2025-04-02T17:30:00.500+0200",
            status(("3", "In Progress"), ("6", "完了")),
            resolution("Done"),
        ),
    ]
    item = parse_issue(
        issue(("6", "完了"), resolution="Done"), histories, mapping(), source="s", value_stream="vs"
    )
    assert [(t.at, t.from_state, t.to_state, t.to_stage) for t in item.transitions] == [
        (datetime(2025, 3, 28, 8, 0, tzinfo=UTC), None, "To Do", Stage.NEW),
        (datetime(2025, 3, 28, 9, 0, tzinfo=UTC), "To Do", "In Progress", Stage.ACTIVE),
        (datetime(2025, 3, 29, 9, 0, tzinfo=UTC), "In Progress", "Blocked", Stage.WAITING),
        (datetime(2025, 3, 31, 8, 0, tzinfo=UTC), "Blocked", "In Progress", Stage.ACTIVE),
        (datetime(2025, 4, 2, 15, 30, 0, 500000, tzinfo=UTC), "In Progress", "完了", Stage.DONE),
    ]
    assert item.stage is Stage.DONE and item.state == "完了" and item.flow_type == "defect"
    assert item.key == "ABC-1" and item.project == "ABC"
    assert [(lk.link_type, lk.direction, lk.target_key) for lk in item.links] == [
        ("Blocks", "outward", "ABC-2")
    ]


def test_done_with_wont_do_resolution_is_canceled_and_reopen_clears_it() -> None:
    histories = [
        history(
            "1",
            "2025-01-02T00:00:00.000+0000",
            status(("1", "To Do"), ("6", "完了")),
            resolution("Won't Do"),
        ),
        history(
            "2",
            "2025-01-03T00:00:00.000+0000",
            status(("6", "完了"), ("3", "In Progress")),
            resolution(None),
        ),
        history(
            "3",
            "2025-01-04T00:00:00.000+0000",
            resolution("Duplicate"),
            status(("3", "In Progress"), ("6", "完了")),
        ),
    ]
    item = parse_issue(
        issue(("6", "完了"), resolution="Duplicate"),
        histories,
        mapping(),
        source="s",
        value_stream="vs",
    )
    assert [t.to_stage for t in item.transitions] == [
        Stage.NEW,
        Stage.CANCELED,
        Stage.ACTIVE,
        Stage.CANCELED,
    ]
    assert item.stage is Stage.CANCELED


def test_renamed_status_takes_its_current_name_and_overrides_apply_by_id() -> None:
    renamed = [
        *STATUSES,
        {"id": "7", "name": "Peer review", "statusCategory": {"key": "indeterminate"}},
    ]
    histories = [
        history("1", "2025-01-02T00:00:00.000+0000", status(("1", "Open"), ("7", "Code review")))
    ]
    item = parse_issue(
        issue(("7", "Peer review")),
        histories,
        mapping(renamed, {"7": Stage.WAITING}),
        source="s",
        value_stream="vs",
    )
    assert [(t.from_state, t.to_state, t.to_stage) for t in item.transitions] == [
        (None, "To Do", Stage.NEW),
        ("To Do", "Peer review", Stage.WAITING),
    ]


def test_no_history_starts_in_current_status() -> None:
    item = parse_issue(
        issue(("5", "En révision"), itype="Story"), [], mapping(), source="s", value_stream="vs"
    )
    assert [(t.to_state, t.to_stage) for t in item.transitions] == [("En révision", Stage.ACTIVE)]
    assert item.flow_type == "feature"


def test_history_not_reaching_current_status_is_closed_at_update() -> None:
    histories = [
        history("1", "2025-03-29T00:00:00.000+0000", status(("1", "To Do"), ("3", "In Progress")))
    ]
    item = parse_issue(
        issue(("5", "En révision")), histories, mapping(), source="s", value_stream="vs"
    )
    assert item.transitions[-1].to_state == "En révision"
    assert item.transitions[-1].at == datetime(2025, 4, 2, 15, 30, 0, 500000, tzinfo=UTC)


@pytest.mark.parametrize(
    "broken",
    [
        {"key": "X-1"},
        {"id": "1", "key": "X-1", "fields": {"status": None}},
        {"id": "1", "key": "X-1", "fields": {"status": {"id": "1"}, "created": "yesterday"}},
    ],
)
def test_unparseable_issue_is_a_skippable_record(broken: dict[str, Any]) -> None:
    with pytest.raises(SkippableRecord):
        parse_issue(broken, [], mapping(), source="s", value_stream="vs")


def _rows(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(10**9)
    with path.open(encoding="utf-8") as handle:
        text = handle.read().lstrip("\n")
    return list(csv.DictReader(text.splitlines(keepends=True)))


def test_real_jira_cloud_issues_parse_to_complete_histories(shared_fixtures: Path) -> None:
    """DevLake's recorded Jira Cloud issues (embedded, untruncated changelogs): every status
    change in the changelog becomes a transition and the history ends in the issue's status."""
    folder = shared_fixtures / "jira" / "devlake"
    statuses = [json.loads(r["data"]) for r in _rows(folder / "_raw_jira_api_status.csv")]
    m = mapping(statuses, {})
    issues = [json.loads(r["data"]) for r in _rows(folder / "_raw_jira_api_issues.csv")]
    assert len(issues) == 33
    checked = 0
    for raw in issues:
        histories = raw["changelog"]["histories"]
        assert raw["changelog"]["total"] == len(histories)
        item = parse_issue(raw, histories, m, source="merico", value_stream="vs")
        status_changes = sum(1 for h in histories for i in h["items"] if i["field"] == "status")
        moves = [t for t in item.transitions[1:] if t.from_state != t.to_state]
        # every changelog status change is a transition; at most one more closes a history
        # that a workflow migration left short of the current status
        assert len(moves) in (status_changes, status_changes + 1)
        assert item.transitions[-1].to_state == raw["fields"]["status"]["name"]
        assert all(
            a.at <= b.at for a, b in zip(item.transitions, item.transitions[1:], strict=False)
        )
        assert all(
            a.to_state == b.from_state
            for a, b in zip(item.transitions, item.transitions[1:], strict=False)
        )
        checked += status_changes
    assert checked > 50


def test_real_changelog_page_shape(shared_fixtures: Path) -> None:
    page = json.loads(
        (
            shared_fixtures / "jira" / "hack-jira-cfd" / "jira-changelog-response-fixture.json"
        ).read_text(encoding="utf-8")
    )
    raw_issue = issue(("3", "In Progress"))
    item = parse_issue(
        raw_issue,
        page["values"],
        mapping(
            [
                {"id": "10123", "name": "To Do", "statusCategory": {"key": "new"}},
                {"id": "10124", "name": "In Progress", "statusCategory": {"key": "indeterminate"}},
                *STATUSES,
            ]
        ),
        source="s",
        value_stream="vs",
    )
    assert ("To Do", "In Progress") in [(t.from_state, t.to_state) for t in item.transitions]
