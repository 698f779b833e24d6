"""Tracker-independent mapping rules: flow types from item types and labels, stage overrides.

Connectors supply their default rules; users override them per source in the config.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from syncd.config import FlowTypeRule
from syncd.domain import Stage


@dataclass(frozen=True, slots=True)
class FlowTypeRules:
    """First-match rules: an item takes the flow type of the first rule whose item types
    contain its type or whose labels meet one of its labels (case-insensitive)."""

    rules: tuple[tuple[str, frozenset[str], frozenset[str]], ...]

    @classmethod
    def from_config(cls, rules: Sequence[FlowTypeRule]) -> FlowTypeRules:
        return cls(
            tuple(
                (
                    rule.flow_type,
                    frozenset(t.casefold() for t in rule.issue_types),
                    frozenset(label.casefold() for label in rule.labels),
                )
                for rule in rules
            )
        )

    def classify(self, item_type: str | None, labels: Iterable[str]) -> str:
        folded_type = (item_type or "").casefold()
        folded_labels = {label.casefold() for label in labels}
        for flow_type, types, rule_labels in self.rules:
            if folded_type in types or folded_labels & rule_labels:
                return flow_type
        return "unclassified"


@dataclass(frozen=True, slots=True)
class StageOverrides:
    """User overrides: a tracker state (by id or by name, names case-insensitive) → stage."""

    by_key: Mapping[str, Stage]

    @classmethod
    def from_config(cls, stages: Mapping[str, Stage]) -> StageOverrides:
        return cls({key.casefold(): stage for key, stage in stages.items()})

    def lookup(self, state_id: str | None, name: str | None) -> Stage | None:
        for key in (state_id, name):
            if key is not None:
                stage = self.by_key.get(key.casefold())
                if stage is not None:
                    return stage
        return None
