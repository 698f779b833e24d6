"""Jira JSON → flow items. Pure functions: no HTTP, no storage.

The status history comes from the changelog: every history item on the `status` field is a
transition, and `resolution` changes decide whether a done-category status means delivered or
canceled. Stages are looked up by status id in the status catalogue (names may be renamed or
non-ASCII), then overridden by the source's configuration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from syncd.domain import FlowItem, Link, Stage, Transition, parse_timestamp
from syncd.errors import MalformedPage, SkippableRecord
from syncd.mapping import FlowTypeRules, StageOverrides

#: Jira status category keys → stage
CATEGORY_STAGE = {"new": Stage.NEW, "indeterminate": Stage.ACTIVE, "done": Stage.DONE}

#: change-history fields syncd reads (bulkfetch filters on these ids)
HISTORY_FIELDS = ("status", "resolution", "issuetype", "labels")

#: issue fields syncd asks search for
ISSUE_FIELDS = (
    "summary",
    "status",
    "issuetype",
    "labels",
    "resolution",
    "created",
    "updated",
    "project",
    "issuelinks",
)


parse_time = parse_timestamp


@dataclass(frozen=True, slots=True)
class StatusCatalogue:
    """Status id → (current name, category key), from /rest/api/{2,3}/status."""

    statuses: Mapping[str, tuple[str, str]]

    @classmethod
    def from_json(cls, body: Any) -> StatusCatalogue:
        if not isinstance(body, list):
            raise MalformedPage("status list: expected a JSON array")
        out: dict[str, tuple[str, str]] = {}
        for status in body:
            try:
                out[str(status["id"])] = (str(status["name"]), str(status["statusCategory"]["key"]))
            except (KeyError, TypeError):
                continue
        return cls(out)

    def with_status(self, status: Mapping[str, Any] | None) -> StatusCatalogue:
        """Add an issue's current status (it may belong to no active workflow any more)."""
        if not status or str(status.get("id")) in self.statuses:
            return self
        category = (status.get("statusCategory") or {}).get("key")
        if not category:
            return self
        return StatusCatalogue(
            {**self.statuses, str(status["id"]): (str(status.get("name")), str(category))}
        )


@dataclass(frozen=True, slots=True)
class JiraMapping:
    """Everything that turns Jira facts into stages and flow types, from the source config."""

    catalogue: StatusCatalogue
    overrides: StageOverrides
    canceled_resolutions: frozenset[str]
    flow_types: FlowTypeRules
    _stages: dict[tuple[str | None, str | None, str | None], Stage] = field(
        default_factory=dict, compare=False, repr=False
    )

    def stage(self, status_id: str | None, name: str | None, resolution: str | None) -> Stage:
        cache_key = (status_id, name, resolution)
        cached = self._stages.get(cache_key)
        if cached is None:
            cached = self._stages[cache_key] = self._stage(status_id, name, resolution)
        return cached

    def _stage(self, status_id: str | None, name: str | None, resolution: str | None) -> Stage:
        override = self.overrides.lookup(status_id, name)
        known = self.catalogue.statuses.get(status_id or "")
        if override is None and known is not None:
            override = self.overrides.lookup(None, known[0])
        stage = override
        if stage is None:
            stage = CATEGORY_STAGE.get(known[1], Stage.NEW) if known else Stage.NEW
        if (
            stage is Stage.DONE
            and resolution
            and resolution.casefold() in self.canceled_resolutions
        ):
            return Stage.CANCELED
        return stage

    def state_name(self, status_id: str | None, fallback: str | None) -> str:
        known = self.catalogue.statuses.get(status_id or "")
        return known[0] if known else (fallback or f"status {status_id}")


def _history_order(history: Mapping[str, Any]) -> tuple[datetime, int]:
    created = parse_time(history.get("created"), "changelog history created")
    raw_id = str(history.get("id", "0"))
    return created, int(raw_id) if raw_id.isdigit() else 0


def _field(item: Mapping[str, Any]) -> str:
    name = item.get("fieldId") or item.get("field") or ""
    return name if name in ("status", "resolution") else str(name).casefold()


def parse_issue(
    issue: Mapping[str, Any],
    histories: Iterable[Mapping[str, Any]],
    mapping: JiraMapping,
    *,
    source: str,
    value_stream: str,
) -> FlowItem:
    """One issue and its complete change histories → a flow item with its transitions."""
    key = issue.get("key")
    try:
        issue_id = str(issue["id"])
        fields = issue["fields"]
        status = fields["status"]
        status_id = str(status["id"])
    except (KeyError, TypeError):
        raise SkippableRecord("issue without id, fields or status", key=key) from None
    key = str(key or issue_id)
    created = parse_time(fields.get("created"), f"{key} created")
    updated = parse_time(fields.get("updated") or fields.get("created"), f"{key} updated")
    catalogue = mapping.catalogue.with_status(status)
    if catalogue is not mapping.catalogue:
        mapping = JiraMapping(
            catalogue, mapping.overrides, mapping.canceled_resolutions, mapping.flow_types
        )
    resolution = (fields.get("resolution") or {}).get("name")

    ordered = sorted((_history_order(h), h) for h in histories if isinstance(h, Mapping))
    status_changes: list[tuple[datetime, Mapping[str, Any] | None, Mapping[str, Any] | None]] = []
    first_status: tuple[str | None, str | None] | None = None
    first_resolution: tuple[bool, str | None] = (False, None)
    for (at, _order), history in ordered:
        status_item = resolution_item = None
        for item in history.get("items") or ():
            name = _field(item)
            if name == "status":
                status_item = item
            elif name == "resolution":
                resolution_item = item
        if status_item is None and resolution_item is None:
            continue
        if status_item is not None and first_status is None:
            first_status = (_str(status_item.get("from")), _str(status_item.get("fromString")))
        if resolution_item is not None and not first_resolution[0]:
            first_resolution = (True, _str(resolution_item.get("fromString")))
        status_changes.append((at, status_item, resolution_item))

    state_id, state_raw = first_status or (status_id, _str(status.get("name")))
    current_resolution = first_resolution[1] if first_resolution[0] else resolution
    state = mapping.state_name(state_id, state_raw)
    stage = mapping.stage(state_id, state, current_resolution)
    transitions = [
        Transition(at=created, from_state=None, to_state=state, from_stage=None, to_stage=stage)
    ]
    for at, status_item, resolution_item in status_changes:
        if at < created:
            at = created  # clock skew between Jira nodes: never before the creation
        if resolution_item is not None:
            current_resolution = _str(resolution_item.get("toString"))
        new_id, new_state = state_id, state
        if status_item is not None:
            new_id = _str(status_item.get("to"))
            new_state = mapping.state_name(new_id, _str(status_item.get("toString")))
        new_stage = mapping.stage(new_id, new_state, current_resolution)
        if new_id != state_id or new_stage is not stage:
            transitions.append(
                Transition(
                    at=at,
                    from_state=state,
                    to_state=new_state,
                    from_stage=stage,
                    to_stage=new_stage,
                )
            )
        state_id, state, stage = new_id, new_state, new_stage

    current_state = mapping.state_name(status_id, _str(status.get("name")))
    current_stage = mapping.stage(status_id, current_state, resolution)
    if state_id != status_id or stage is not current_stage:
        # The history does not end where the issue stands (a status change the changelog
        # does not show, e.g. an import): close the gap at the last update.
        transitions.append(
            Transition(
                at=max(updated, transitions[-1].at),
                from_state=state,
                to_state=current_state,
                from_stage=stage,
                to_stage=current_stage,
            )
        )

    issue_type = (fields.get("issuetype") or {}).get("name")
    labels = [str(label) for label in fields.get("labels") or ()]
    return FlowItem(
        source=source,
        id=issue_id,
        key=key,
        kind="issue",
        title=str(fields.get("summary") or ""),
        project=str((fields.get("project") or {}).get("key") or key.rsplit("-", 1)[0]),
        flow_type=mapping.flow_types.classify(issue_type, labels),
        value_stream=value_stream,
        stage=current_stage,
        state=current_state,
        created_at=created,
        updated_at=max(updated, transitions[-1].at),
        transitions=transitions,
        links=parse_links(fields.get("issuelinks") or ()),
        labels=labels,
    )


def parse_links(links: Sequence[Any]) -> list[Link]:
    """Jira issue links → dependencies (type name and direction as Jira states them)."""
    out: list[Link] = []
    for link in links:
        if not isinstance(link, Mapping):
            continue
        link_type = str((link.get("type") or {}).get("name") or "link")
        for direction, field_name in (("outward", "outwardIssue"), ("inward", "inwardIssue")):
            other = link.get(field_name)
            if isinstance(other, Mapping) and other.get("key"):
                out.append(
                    Link(
                        link_type=link_type,
                        direction=direction,
                        target_key=str(other["key"]),
                        target_id=_str(other.get("id")),
                    )
                )
    return out


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
