"""The flow warehouse's vocabulary: stages, flow types, flow items and their transitions.

These types are what connectors produce and what the warehouse and the metrics consume.
They carry no tracker knowledge and no storage knowledge. All datetimes are aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Stage(StrEnum):
    """Where an item stands in its flow (see docs/metrics.md)."""

    NEW = "new"
    ACTIVE = "active"
    WAITING = "waiting"
    DONE = "done"
    CANCELED = "canceled"

    @property
    def in_progress(self) -> bool:
        return self in (Stage.ACTIVE, Stage.WAITING)

    @property
    def terminal(self) -> bool:
        return self in (Stage.DONE, Stage.CANCELED)


FLOW_TYPES: tuple[str, ...] = ("feature", "defect", "risk", "debt", "unclassified")
ALL = "all"


def utc(value: datetime) -> datetime:
    """Return `value` as aware UTC; a naive datetime is a programming error."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: syncd keeps every timestamp in aware UTC")
    return value.astimezone(UTC)


def parse_timestamp(value: Any, what: str) -> datetime:
    """A tracker's ISO 8601 timestamp with an offset (`2023-11-03T09:58:19.762+0100`,
    `2025-03-01T10:00:00Z`) → aware UTC; anything else is a skippable record naming `what`."""
    from syncd.errors import SkippableRecord

    if not isinstance(value, str):
        raise SkippableRecord(f"{what}: expected a timestamp, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SkippableRecord(f"{what}: unreadable timestamp {value!r}") from None
    if parsed.tzinfo is None:
        raise SkippableRecord(f"{what}: timestamp without offset {value!r}")
    return parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of tracker state. The first transition of an item has `from_state` None:
    it is the item's creation, into its initial state."""

    at: datetime
    from_state: str | None
    to_state: str
    from_stage: Stage | None
    to_stage: Stage


@dataclass(frozen=True, slots=True)
class Link:
    """A dependency between items as the tracker states it, e.g. ("blocks", "PROJ-2")."""

    link_type: str
    direction: str  # "outward" (this item <link_type> target) or "inward"
    target_key: str
    target_id: str | None = None


@dataclass(slots=True)
class FlowItem:
    """One tracker artefact with its complete transition history, ordered by time."""

    source: str
    id: str
    key: str
    kind: str
    title: str
    project: str
    flow_type: str
    value_stream: str
    stage: Stage
    state: str
    created_at: datetime
    updated_at: datetime
    transitions: list[Transition] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    #: the tracker's labels (names), in the tracker's order; value streams can match on them
    labels: list[str] = field(default_factory=list)
