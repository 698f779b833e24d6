"""Item labels, value streams and their targets, and the SQL views for BI tools.

The views are created from the SQL frozen below (`VIEWS`), not from
`syncd/warehouse/views.py`, so this revision means the same thing whatever that module
becomes; a later change to a view is a later revision with its own copy. Warehouses created
by unreleased builds between the previous release and this revision already have some of
these changes and `schema_version` 1: each step is skipped when its result is there.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from syncd.warehouse.migrations import replace_views

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    tables = set(inspector.get_table_names())
    if "labels" not in {column["name"] for column in inspector.get_columns("items")}:
        op.add_column(
            "items",
            sa.Column("labels", sa.Text(), nullable=False, server_default=sa.text("'[]'")),
        )
    if "value_streams" not in tables:
        op.create_table(
            "value_streams",
            sa.Column("name", sa.String(), primary_key=True),
            sa.Column("position", sa.Integer(), nullable=False),
            sa.Column("configured", sa.Boolean(), nullable=False),
        )
    if "value_stream_targets" not in tables:
        op.create_table(
            "value_stream_targets",
            sa.Column("value_stream", sa.String(), primary_key=True),
            sa.Column("flow_type", sa.String(), primary_key=True),
            sa.Column("share", sa.Float(), nullable=False),
        )
    replace_views(bind, VIEWS[bind.dialect.name])


def downgrade() -> None:
    for name in reversed(list(VIEWS[op.get_bind().dialect.name])):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table("value_stream_targets")
    op.drop_table("value_streams")
    with op.batch_alter_table("items") as batch:
        batch.drop_column("labels")


# The views of this revision: dialect → view name → SELECT body, in creation order.
_SQL: dict[str, dict[str, str]] = {
    "sqlite": {
        "flow_items": """
SELECT
    source, item_id, key, kind, title, project, flow_type, value_stream, stage, state, labels,
    created_at, updated_at, work_start, work_end, outcome, flow_time_s, active_s, wait_s,
    (deleted_at IS NOT NULL) AS deleted,
    deleted_at
FROM items
""",
        "flow_transitions": """
SELECT
    t.source, t.item_id, i.key, i.value_stream, i.flow_type, t.seq, t.at,
    t.from_state, t.to_state, t.from_stage, t.to_stage
FROM transitions t
JOIN items i ON i.source = t.source AND i.item_id = t.item_id
WHERE i.deleted_at IS NULL
""",
        "flow_metrics": """
SELECT
    value_stream, flow_type, period_kind, period_start, period_end, as_of,
    velocity, flow_time_count, flow_time_mean_s, flow_time_p50_s, flow_time_p85_s,
    flow_time_p95_s, flow_time_max_s, efficiency, efficiency_mean, load_end, load_avg,
    age_count, age_p50_s, age_p85_s, age_max_s,
    distribution_share, load_share, target_share,
    distribution_share - target_share AS deviation
FROM (
    SELECT
        m.value_stream,
        m.flow_type,
        m.period AS period_kind,
        m.period_start,
        strftime('%Y-%m-%d %H:%M:%S', m.period_start, CASE m.period
            WHEN 'day' THEN '+1 day' WHEN 'week' THEN '+7 days'
            WHEN 'month' THEN '+1 month' WHEN 'quarter' THEN '+3 months'
        END) || '.000000' AS period_end,
        (
            SELECT replace(substr(value, 1, 19), 'T', ' ')
                || CASE WHEN substr(value, 20, 1) = '.'
                    THEN substr(value, 20, 7) ELSE '.000000' END
            FROM warehouse_meta
            WHERE key = 'metrics_as_of'
        ) AS as_of,
        m.velocity,
        json_extract(m.data, '$.flow_time.count') AS flow_time_count,
        json_extract(m.data, '$.flow_time.mean_s') AS flow_time_mean_s,
        json_extract(m.data, '$.flow_time.p50_s') AS flow_time_p50_s,
        json_extract(m.data, '$.flow_time.p85_s') AS flow_time_p85_s,
        json_extract(m.data, '$.flow_time.p95_s') AS flow_time_p95_s,
        json_extract(m.data, '$.flow_time.max_s') AS flow_time_max_s,
        json_extract(m.data, '$.efficiency') AS efficiency,
        json_extract(m.data, '$.efficiency_mean') AS efficiency_mean,
        json_extract(m.data, '$.load_avg') AS load_avg,
        json_extract(m.data, '$.age.count') AS age_count,
        json_extract(m.data, '$.age.p50_s') AS age_p50_s,
        json_extract(m.data, '$.age.p85_s') AS age_p85_s,
        json_extract(m.data, '$.age.max_s') AS age_max_s,
        m.load_end,
        CASE
            WHEN m.flow_type = 'all' THEN CASE WHEN m.velocity > 0 THEN 1.0 END
            WHEN a.velocity > 0 THEN CAST(m.velocity AS REAL) / a.velocity
        END AS distribution_share,
        CASE
            WHEN m.flow_type = 'all' THEN CASE WHEN m.load_end > 0 THEN 1.0 END
            WHEN a.load_end > 0 THEN CAST(m.load_end AS REAL) / a.load_end
        END AS load_share,
        t.share AS target_share
    FROM metric_rows m
    LEFT JOIN metric_rows a
        ON a.value_stream = m.value_stream AND a.period = m.period
        AND a.period_start = m.period_start AND a.flow_type = 'all'
    LEFT JOIN value_stream_targets t
        ON t.value_stream = m.value_stream AND t.flow_type = m.flow_type
) metric
""",
        "flow_load_daily": """
SELECT
    value_stream,
    flow_type,
    day,
    CAST(SUM(d_new) OVER w AS BIGINT) AS new,
    CAST(SUM(d_active) OVER w AS BIGINT) AS active,
    CAST(SUM(d_waiting) OVER w AS BIGINT) AS waiting,
    CAST(SUM(d_done) OVER w AS BIGINT) AS done,
    CAST(SUM(d_canceled) OVER w AS BIGINT) AS canceled,
    CAST(SUM(d_active + d_waiting) OVER w AS BIGINT) AS in_progress
FROM (
    SELECT
        value_stream, flow_type, day,
        SUM(CASE WHEN stage = 'new' THEN 1 ELSE 0 END
            - CASE WHEN before = 'new' THEN 1 ELSE 0 END) AS d_new,
        SUM(CASE WHEN stage = 'active' THEN 1 ELSE 0 END
            - CASE WHEN before = 'active' THEN 1 ELSE 0 END) AS d_active,
        SUM(CASE WHEN stage = 'waiting' THEN 1 ELSE 0 END
            - CASE WHEN before = 'waiting' THEN 1 ELSE 0 END) AS d_waiting,
        SUM(CASE WHEN stage = 'done' THEN 1 ELSE 0 END
            - CASE WHEN before = 'done' THEN 1 ELSE 0 END) AS d_done,
        SUM(CASE WHEN stage = 'canceled' THEN 1 ELSE 0 END
            - CASE WHEN before = 'canceled' THEN 1 ELSE 0 END) AS d_canceled
    FROM (
        SELECT
            i.value_stream,
            i.flow_type,
            CASE
                WHEN time(t.at) = '00:00:00' AND rtrim(substr(t.at, 20), '0') IN ('', '.')
                THEN date(t.at, '-1 day')
                ELSE date(t.at)
            END AS day,
            t.to_stage AS stage,
            LAG(t.to_stage) OVER (
                PARTITION BY i.value_stream, i.flow_type, t.source, t.item_id
                ORDER BY t.at, t.seq
            ) AS before
        FROM transitions t
        JOIN items i ON i.source = t.source AND i.item_id = t.item_id
        WHERE i.deleted_at IS NULL
        UNION ALL
        SELECT value_stream, flow_type, day, '' AS stage, NULL AS before
        FROM (
            WITH RECURSIVE calendar(value_stream, flow_type, day) AS (
                SELECT value_stream, flow_type, date(MIN(created_at))
                FROM items
                WHERE deleted_at IS NULL
                GROUP BY value_stream, flow_type
                UNION ALL
                SELECT value_stream, flow_type, date(day, '+1 day')
                FROM calendar
                WHERE day < date('now')
            )
            SELECT value_stream, flow_type, day FROM calendar
        ) calendar
    ) steps
    WHERE before IS NULL OR before <> stage
    GROUP BY value_stream, flow_type, day
) moves
WINDOW w AS (PARTITION BY value_stream, flow_type ORDER BY day)
""",
        "flow_dependencies": """
WITH candidates AS (
    SELECT
        l.source, l.item_id, f.key, l.link_type, l.direction, l.target_key,
        t.source AS t_source, t.item_id AS t_item_id,
        ROW_NUMBER() OVER (
            PARTITION BY l.source, l.item_id, l.link_type, l.direction, l.target_key
            ORDER BY
                CASE WHEN t.source = l.source THEN 0 ELSE 1 END,
                CASE WHEN t.value_stream = f.value_stream THEN 0 ELSE 1 END,
                t.source, t.item_id
        ) AS pick
    FROM item_links l
    JOIN items f ON f.source = l.source AND f.item_id = l.item_id AND f.deleted_at IS NULL
    LEFT JOIN items t ON t.key = l.target_key AND t.deleted_at IS NULL
),
resolved AS (
    SELECT
        source, item_id, key, link_type, direction, target_key, t_source, t_item_id,
        lower(link_type) = 'blocks' AS blocks
    FROM candidates
    WHERE pick = 1
),
edges AS (
    SELECT
        source AS e_from_source, item_id AS e_from_item_id, link_type, direction,
        t_source AS e_to_source, t_item_id AS e_to_item_id, target_key AS e_to_key
    FROM resolved
    WHERE (t_source IS NULL AND lower(link_type) <> 'references')
        OR (t_source IS NOT NULL AND blocks AND direction = 'inward')
        OR (t_source IS NOT NULL AND NOT blocks AND direction <> 'inward')
    UNION
    SELECT
        t_source, t_item_id, link_type,
        CASE WHEN blocks THEN 'inward' ELSE 'outward' END,
        source, item_id, key
    FROM resolved
    WHERE t_source IS NOT NULL
        AND ((blocks AND direction <> 'inward') OR (NOT blocks AND direction = 'inward'))
)
SELECT
    f.source AS from_source,
    f.item_id AS from_item_id,
    f.key AS from_key,
    f.value_stream AS from_value_stream,
    e.link_type,
    e.direction,
    e.e_to_source AS to_source,
    e.e_to_item_id AS to_item_id,
    e.e_to_key AS to_key,
    t.value_stream AS to_value_stream,
    t.stage AS to_stage,
    t.value_stream <> f.value_stream AS cross_value_stream,
    (lower(e.link_type) = 'blocks' AND e.direction = 'inward') AS blocking
FROM edges e  -- both ends are live items, or the target is unknown (NULL)
JOIN items f ON f.source = e.e_from_source AND f.item_id = e.e_from_item_id
LEFT JOIN items t ON t.source = e.e_to_source AND t.item_id = e.e_to_item_id
""",
    },
    "postgresql": {
        "flow_items": """
SELECT
    source, item_id, key, kind, title, project, flow_type, value_stream, stage, state, labels,
    created_at, updated_at, work_start, work_end, outcome, flow_time_s, active_s, wait_s,
    (deleted_at IS NOT NULL) AS deleted,
    deleted_at
FROM items
""",
        "flow_transitions": """
SELECT
    t.source, t.item_id, i.key, i.value_stream, i.flow_type, t.seq, t.at,
    t.from_state, t.to_state, t.from_stage, t.to_stage
FROM transitions t
JOIN items i ON i.source = t.source AND i.item_id = t.item_id
WHERE i.deleted_at IS NULL
""",
        "flow_metrics": """
SELECT
    value_stream, flow_type, period_kind, period_start, period_end, as_of,
    velocity, flow_time_count, flow_time_mean_s, flow_time_p50_s, flow_time_p85_s,
    flow_time_p95_s, flow_time_max_s, efficiency, efficiency_mean, load_end, load_avg,
    age_count, age_p50_s, age_p85_s, age_max_s,
    distribution_share, load_share, target_share,
    distribution_share - target_share AS deviation
FROM (
    SELECT
        m.value_stream,
        m.flow_type,
        m.period AS period_kind,
        m.period_start,
        (m.period_start AT TIME ZONE 'UTC' + CASE m.period
            WHEN 'day' THEN interval '1 day' WHEN 'week' THEN interval '7 days'
            WHEN 'month' THEN interval '1 month' WHEN 'quarter' THEN interval '3 months'
        END) AT TIME ZONE 'UTC' AS period_end,
        (
            SELECT CAST(value AS timestamptz)
            FROM warehouse_meta
            WHERE key = 'metrics_as_of'
        ) AS as_of,
        m.velocity,
        ft.count AS flow_time_count,
        ft.mean_s AS flow_time_mean_s,
        ft.p50_s AS flow_time_p50_s,
        ft.p85_s AS flow_time_p85_s,
        ft.p95_s AS flow_time_p95_s,
        ft.max_s AS flow_time_max_s,
        r.efficiency AS efficiency,
        r.efficiency_mean AS efficiency_mean,
        r.load_avg AS load_avg,
        ag.count AS age_count,
        ag.p50_s AS age_p50_s,
        ag.p85_s AS age_p85_s,
        ag.max_s AS age_max_s,
        m.load_end,
        CASE
            WHEN m.flow_type = 'all' THEN CASE WHEN m.velocity > 0 THEN 1.0 END
            WHEN a.velocity > 0 THEN CAST(m.velocity AS double precision) / a.velocity
        END AS distribution_share,
        CASE
            WHEN m.flow_type = 'all' THEN CASE WHEN m.load_end > 0 THEN 1.0 END
            WHEN a.load_end > 0 THEN CAST(m.load_end AS double precision) / a.load_end
        END AS load_share,
        t.share AS target_share
    FROM metric_rows m
    CROSS JOIN LATERAL json_to_record(CAST(m.data AS json))
        AS r(flow_time json, efficiency float8, efficiency_mean float8, load_avg float8,
             age json)
    CROSS JOIN LATERAL json_to_record(r.flow_time)
        AS ft(count integer, mean_s float8, p50_s float8, p85_s float8, p95_s float8,
              max_s float8)
    CROSS JOIN LATERAL json_to_record(r.age)
        AS ag(count integer, p50_s float8, p85_s float8, max_s float8)
    LEFT JOIN metric_rows a
        ON a.value_stream = m.value_stream AND a.period = m.period
        AND a.period_start = m.period_start AND a.flow_type = 'all'
    LEFT JOIN value_stream_targets t
        ON t.value_stream = m.value_stream AND t.flow_type = m.flow_type
) metric
""",
        "flow_load_daily": """
SELECT
    value_stream,
    flow_type,
    day,
    CAST(SUM(d_new) OVER w AS BIGINT) AS new,
    CAST(SUM(d_active) OVER w AS BIGINT) AS active,
    CAST(SUM(d_waiting) OVER w AS BIGINT) AS waiting,
    CAST(SUM(d_done) OVER w AS BIGINT) AS done,
    CAST(SUM(d_canceled) OVER w AS BIGINT) AS canceled,
    CAST(SUM(d_active + d_waiting) OVER w AS BIGINT) AS in_progress
FROM (
    SELECT
        value_stream, flow_type, day,
        SUM(CASE WHEN stage = 'new' THEN 1 ELSE 0 END
            - CASE WHEN before = 'new' THEN 1 ELSE 0 END) AS d_new,
        SUM(CASE WHEN stage = 'active' THEN 1 ELSE 0 END
            - CASE WHEN before = 'active' THEN 1 ELSE 0 END) AS d_active,
        SUM(CASE WHEN stage = 'waiting' THEN 1 ELSE 0 END
            - CASE WHEN before = 'waiting' THEN 1 ELSE 0 END) AS d_waiting,
        SUM(CASE WHEN stage = 'done' THEN 1 ELSE 0 END
            - CASE WHEN before = 'done' THEN 1 ELSE 0 END) AS d_done,
        SUM(CASE WHEN stage = 'canceled' THEN 1 ELSE 0 END
            - CASE WHEN before = 'canceled' THEN 1 ELSE 0 END) AS d_canceled
    FROM (
        SELECT
            i.value_stream,
            i.flow_type,
            CAST((t.at - interval '1 microsecond') AT TIME ZONE 'UTC' AS date) AS day,
            t.to_stage AS stage,
            LAG(t.to_stage) OVER (
                PARTITION BY i.value_stream, i.flow_type, t.source, t.item_id
                ORDER BY t.at, t.seq
            ) AS before
        FROM transitions t
        JOIN items i ON i.source = t.source AND i.item_id = t.item_id
        WHERE i.deleted_at IS NULL
        UNION ALL
        SELECT s.value_stream, s.flow_type, CAST(d.day AS date), '', NULL
        FROM (
            SELECT value_stream, flow_type, MIN(created_at) AS first
            FROM items
            WHERE deleted_at IS NULL
            GROUP BY value_stream, flow_type
        ) s
        CROSS JOIN LATERAL generate_series(
            CAST(CAST(s.first AT TIME ZONE 'UTC' AS date) AS timestamp),
            CAST(CAST(now() AT TIME ZONE 'UTC' AS date) AS timestamp),
            interval '1 day'
        ) AS d(day)
    ) steps
    WHERE before IS NULL OR before <> stage
    GROUP BY value_stream, flow_type, day
) moves
WINDOW w AS (PARTITION BY value_stream, flow_type ORDER BY day)
""",
        "flow_dependencies": """
WITH candidates AS (
    SELECT
        l.source, l.item_id, f.key, l.link_type, l.direction, l.target_key,
        t.source AS t_source, t.item_id AS t_item_id,
        ROW_NUMBER() OVER (
            PARTITION BY l.source, l.item_id, l.link_type, l.direction, l.target_key
            ORDER BY
                CASE WHEN t.source = l.source THEN 0 ELSE 1 END,
                CASE WHEN t.value_stream = f.value_stream THEN 0 ELSE 1 END,
                t.source, t.item_id
        ) AS pick
    FROM item_links l
    JOIN items f ON f.source = l.source AND f.item_id = l.item_id AND f.deleted_at IS NULL
    LEFT JOIN items t ON t.key = l.target_key AND t.deleted_at IS NULL
),
resolved AS (
    SELECT
        source, item_id, key, link_type, direction, target_key, t_source, t_item_id,
        lower(link_type) = 'blocks' AS blocks
    FROM candidates
    WHERE pick = 1
),
edges AS (
    SELECT
        source AS e_from_source, item_id AS e_from_item_id, link_type, direction,
        t_source AS e_to_source, t_item_id AS e_to_item_id, target_key AS e_to_key
    FROM resolved
    WHERE (t_source IS NULL AND lower(link_type) <> 'references')
        OR (t_source IS NOT NULL AND blocks AND direction = 'inward')
        OR (t_source IS NOT NULL AND NOT blocks AND direction <> 'inward')
    UNION
    SELECT
        t_source, t_item_id, link_type,
        CASE WHEN blocks THEN 'inward' ELSE 'outward' END,
        source, item_id, key
    FROM resolved
    WHERE t_source IS NOT NULL
        AND ((blocks AND direction <> 'inward') OR (NOT blocks AND direction = 'inward'))
)
SELECT
    f.source AS from_source,
    f.item_id AS from_item_id,
    f.key AS from_key,
    f.value_stream AS from_value_stream,
    e.link_type,
    e.direction,
    e.e_to_source AS to_source,
    e.e_to_item_id AS to_item_id,
    e.e_to_key AS to_key,
    t.value_stream AS to_value_stream,
    t.stage AS to_stage,
    t.value_stream <> f.value_stream AS cross_value_stream,
    (lower(e.link_type) = 'blocks' AND e.direction = 'inward') AS blocking
FROM edges e  -- both ends are live items, or the target is unknown (NULL)
JOIN items f ON f.source = e.e_from_source AND f.item_id = e.e_from_item_id
LEFT JOIN items t ON t.source = e.e_to_source AND t.item_id = e.e_to_item_id
""",
    },
}
VIEWS = {
    dialect: {name: body.strip() for name, body in bodies.items()}
    for dialect, bodies in _SQL.items()
}
