"""Finish changes kept with the metric dirt and the run marks, so that an update changes a
day's stored done items by them instead of reading all the day's finished items again.

Every new column is nullable: dirt recorded and run marks written before this revision have
none, and the update reads those days' finished items as before.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TYPES: dict[str, sa.types.TypeEngine[Any]] = {
    "sign": sa.Integer(),
    "flow_type": sa.String(),
    "done": sa.Boolean(),
    "flow_time_s": sa.Float(),
    "active_s": sa.Float(),
}
_FINISH = ["flow_type", "done", "flow_time_s", "active_s"]
#: the new columns of each table, all nullable
COLUMNS = {"metric_dirt": ["sign", *_FINISH], "metric_runs": _FINISH}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, columns in COLUMNS.items():
        present = {column["name"] for column in inspector.get_columns(table)}
        for name in columns:
            if name not in present:  # a build before migrations made it from the models
                op.add_column(table, sa.Column(name, _TYPES[name], nullable=True))


def downgrade() -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for name in reversed(columns):
                batch.drop_column(name)
