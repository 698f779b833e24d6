"""The warehouse as the release before migrations created it (`schema_version` 1).

Written out table by table, as that release's models made them, so that this revision keeps
its meaning whatever the models become. A warehouse created by that release (its tables, a
`warehouse_meta` row `schema_version` = 1, no `alembic_version`) is stamped with this
revision, then upgraded.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TABLES = (
    "raw_pages",
    "items",
    "transitions",
    "item_links",
    "cursors",
    "sync_runs",
    "metric_rows",
    "metric_items",
    "metric_segments",
    "metric_runs",
    "metric_days",
    "metric_dirt",
    "warehouse_meta",
)


def _instant(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "raw_pages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("stream", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("method", sa.String(), nullable=False),
        sa.Column("url", sa.String(), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        _instant("fetched_at", nullable=False),
    )
    op.create_index("ix_raw_pages_source_stream", "raw_pages", ["source", "stream", "fetched_at"])

    op.create_table(
        "items",
        sa.Column("source", sa.String(), primary_key=True),
        sa.Column("item_id", sa.String(), primary_key=True),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("project", sa.String(), nullable=False),
        sa.Column("flow_type", sa.String(), nullable=False),
        sa.Column("value_stream", sa.String(), nullable=False),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        _instant("created_at", nullable=False),
        _instant("updated_at", nullable=False),
        _instant("work_start"),
        _instant("work_end"),
        sa.Column("outcome", sa.String(), nullable=True),
        sa.Column("flow_time_s", sa.Float(), nullable=True),
        sa.Column("active_s", sa.Float(), nullable=True),
        sa.Column("wait_s", sa.Float(), nullable=True),
        _instant("deleted_at"),
        _instant("synced_at", nullable=False),
    )
    op.create_index("ix_items_vs_start", "items", ["value_stream", "work_start"])
    op.create_index("ix_items_vs_end", "items", ["value_stream", "work_end"])
    op.create_index("ix_items_source_key", "items", ["source", "key"])

    op.create_table(
        "transitions",
        sa.Column("source", sa.String(), primary_key=True),
        sa.Column("item_id", sa.String(), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        _instant("at", nullable=False),
        sa.Column("from_state", sa.String(), nullable=True),
        sa.Column("to_state", sa.String(), nullable=False),
        sa.Column("from_stage", sa.String(), nullable=True),
        sa.Column("to_stage", sa.String(), nullable=False),
    )

    op.create_table(
        "item_links",
        sa.Column("source", sa.String(), primary_key=True),
        sa.Column("item_id", sa.String(), primary_key=True),
        sa.Column("link_type", sa.String(), primary_key=True),
        sa.Column("direction", sa.String(), primary_key=True),
        sa.Column("target_key", sa.String(), primary_key=True),
        sa.Column("target_id", sa.String(), nullable=True),
    )

    op.create_table(
        "cursors",
        sa.Column("source", sa.String(), primary_key=True),
        sa.Column("stream", sa.String(), primary_key=True),
        _instant("watermark"),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        _instant("updated_at", nullable=False),
    )

    op.create_table(
        "sync_runs",
        sa.Column("run_id", sa.String(), primary_key=True),
        sa.Column("source", sa.String(), nullable=False),
        _instant("started_at", nullable=False),
        _instant("finished_at"),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_sync_runs_source", "sync_runs", ["source"])

    op.create_table(
        "metric_rows",
        sa.Column("value_stream", sa.String(), primary_key=True),
        sa.Column("period", sa.String(), primary_key=True),
        sa.Column("period_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("flow_type", sa.String(), primary_key=True),
        _instant("as_of", nullable=False),
        sa.Column("velocity", sa.Integer(), nullable=False),
        sa.Column("load_end", sa.Integer(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
    )

    op.create_table(
        "metric_items",
        sa.Column("source", sa.String(), primary_key=True),
        sa.Column("item_id", sa.String(), primary_key=True),
        sa.Column("value_stream", sa.String(), nullable=False),
        sa.Column("flow_type", sa.String(), nullable=False),
        sa.Column("work_start", sa.BigInteger(), nullable=True),
        sa.Column("work_end", sa.BigInteger(), nullable=True),
        sa.Column("end_day", sa.BigInteger(), nullable=True),
        sa.Column("outcome", sa.String(), nullable=True),
        sa.Column("flow_time_s", sa.Float(), nullable=True),
        sa.Column("active_s", sa.Float(), nullable=True),
        sa.Column("last_at", sa.BigInteger(), nullable=True),
    )
    op.create_index(
        "ix_metric_items_vs_start", "metric_items", ["value_stream", "work_start", "work_end"]
    )
    op.create_index(
        "ix_metric_items_vs_end",
        "metric_items",
        [
            "value_stream",
            "end_day",
            "work_end",
            "outcome",
            "flow_type",
            "flow_time_s",
            "active_s",
        ],
    )
    op.create_index("ix_metric_items_last_at", "metric_items", ["last_at"])

    op.create_table(
        "metric_segments",
        sa.Column("source", sa.String(), primary_key=True),
        sa.Column("item_id", sa.String(), primary_key=True),
        sa.Column("seg_start", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("seg_end", sa.BigInteger(), nullable=True),
        sa.Column("value_stream", sa.String(), nullable=False),
        sa.Column("flow_type", sa.String(), nullable=False),
        sa.Column("work_start", sa.BigInteger(), nullable=False),
        sa.Column("last_at", sa.BigInteger(), nullable=True),
    )
    op.create_index(
        "ix_metric_segments_vs_start",
        "metric_segments",
        ["value_stream", "seg_start", "flow_type", "work_start"],
    )
    op.create_index(
        "ix_metric_segments_vs_end",
        "metric_segments",
        ["value_stream", "seg_end", "seg_start", "flow_type", "work_start"],
    )

    op.create_table(
        "metric_runs",
        sa.Column("source", sa.String(), primary_key=True),
        sa.Column("item_id", sa.String(), primary_key=True),
        sa.Column("run_start", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("left", sa.Boolean(), nullable=False),
        sa.Column("value_stream", sa.String(), nullable=False),
    )
    op.create_index("ix_metric_runs_at", "metric_runs", ["at"])

    op.create_table(
        "metric_days",
        sa.Column("value_stream", sa.String(), primary_key=True),
        sa.Column("day", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("data", sa.Text(), nullable=False),
    )

    op.create_table(
        "metric_dirt",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("value_stream", sa.String(), nullable=False),
        sa.Column("scope", sa.String(), nullable=False),
        sa.Column("span_start", sa.BigInteger(), nullable=False),
        sa.Column("span_end", sa.BigInteger(), nullable=True),
    )

    op.create_table(
        "warehouse_meta",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("value", sa.String(), nullable=False),
    )


def downgrade() -> None:
    for table in reversed(_TABLES):
        op.drop_table(table)
