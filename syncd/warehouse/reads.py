"""Reads shared by the warehouse and the metrics ledger (which the warehouse imports, so it
cannot import the warehouse back)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.domain import Stage, Transition
from syncd.warehouse.models import TransitionRow

TRANSITIONS = TransitionRow.__table__  # type: ignore[attr-defined]
CHUNK = 500  # ids per IN (…): well under every driver's parameter limit


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def load_transitions(
    conn: Connection, source: str, ids: Sequence[str]
) -> dict[str, list[Transition]]:
    """The stored transitions of a source's items, by item id, oldest first."""
    out: dict[str, list[Transition]] = {}
    for chunk in chunks(ids):
        for r in conn.execute(
            sa.select(
                TRANSITIONS.c.item_id,
                TRANSITIONS.c.at,
                TRANSITIONS.c.from_state,
                TRANSITIONS.c.to_state,
                TRANSITIONS.c.from_stage,
                TRANSITIONS.c.to_stage,
            )
            .where(TRANSITIONS.c.source == source, TRANSITIONS.c.item_id.in_(chunk))
            .order_by(TRANSITIONS.c.item_id, TRANSITIONS.c.seq)
        ):
            out.setdefault(r.item_id, []).append(
                Transition(
                    at=r.at,
                    from_state=r.from_state,
                    to_state=r.to_state,
                    from_stage=Stage(r.from_stage) if r.from_stage else None,
                    to_stage=Stage(r.to_stage),
                )
            )
    return out
