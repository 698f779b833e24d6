"""The SQL views: syncd's stable surface for BI tools (Metabase, Superset, Power BI, Grafana).

BI tools read these views, never the internal tables, so the tables can change while the
views keep their names, columns and meaning (docs/warehouse.md documents every column):

- `flow_items`: every item with its flow figures; tombstoned items flagged `deleted`;
- `flow_transitions`: the state changes of live items;
- `flow_metrics`: the stored metric rows, one per value stream × flow type × period, with
  the actual and target investment shares;
- `flow_load_daily`: per value stream, flow type and UTC day, the items in each stage at the
  day's end (cumulative flow diagrams); `in_progress` is the flow load of the metrics;
- `flow_dependencies`: dependencies between stored items (SQL by `syncd.dependencies`).

Deleted (tombstoned) items are left out of every view but `flow_items`.

The SQL is written for SQLite and PostgreSQL. On SQLite, instants are ISO text as the
warehouse stores them (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC), days are ``YYYY-MM-DD`` text and
booleans are 0/1; on PostgreSQL they are ``timestamptz``, ``date`` and ``boolean``.

Migrations do not read this module: each revision that changes a view keeps its own frozen
copy of the SQL (syncd/warehouse/migrations/), and a test checks that the newest copy equals
what this module creates, so a change here needs a new revision.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.engine import Connection

DIALECTS = ("sqlite", "postgresql")

#: the views, in creation order
VIEW_NAMES: tuple[str, ...] = (
    "flow_items",
    "flow_transitions",
    "flow_metrics",
    "flow_load_daily",
    "flow_dependencies",
)

_FLOW_ITEMS = """
SELECT
    source, item_id, key, kind, title, project, flow_type, value_stream, stage, state, labels,
    created_at, updated_at, work_start, work_end, outcome, flow_time_s, active_s, wait_s,
    (deleted_at IS NOT NULL) AS deleted,
    deleted_at
FROM items
"""

_FLOW_TRANSITIONS = """
SELECT
    t.source, t.item_id, i.key, i.value_stream, i.flow_type, t.seq, t.at,
    t.from_state, t.to_state, t.from_stage, t.to_stage
FROM transitions t
JOIN items i ON i.source = t.source AND i.item_id = t.item_id
WHERE i.deleted_at IS NULL
"""

# The stored rows (metric_rows.data is MetricRow.to_json()), with the bucket's `all` row for
# the shares and the value stream's target for the flow type. Shares and deviation follow
# syncd.streams.target_fields: a flow type's share of the finished items (of the load at the
# period's end); the `all` row's share is 1.0, or NULL when nothing finished (nothing loaded).
_FLOW_METRICS = """
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
        {period_end} AS period_end,
        (
            SELECT {as_of}
            FROM warehouse_meta
            WHERE key = 'metrics_as_of'
        ) AS as_of,
        m.velocity,
        {figures},
        m.load_end,
        CASE
            WHEN m.flow_type = 'all' THEN CASE WHEN m.velocity > 0 THEN 1.0 END
            WHEN a.velocity > 0 THEN CAST(m.velocity AS {float}) / a.velocity
        END AS distribution_share,
        CASE
            WHEN m.flow_type = 'all' THEN CASE WHEN m.load_end > 0 THEN 1.0 END
            WHEN a.load_end > 0 THEN CAST(m.load_end AS {float}) / a.load_end
        END AS load_share,
        t.share AS target_share
    FROM metric_rows m{figures_from}
    LEFT JOIN metric_rows a
        ON a.value_stream = m.value_stream AND a.period = m.period
        AND a.period_start = m.period_start AND a.flow_type = 'all'
    LEFT JOIN value_stream_targets t
        ON t.value_stream = m.value_stream AND t.flow_type = m.flow_type
) metric
"""

#: the view's columns read from the row's JSON: (column, path in MetricRow.to_json(), integer)
_FIGURES: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("flow_time_count", ("flow_time", "count"), True),
    ("flow_time_mean_s", ("flow_time", "mean_s"), False),
    ("flow_time_p50_s", ("flow_time", "p50_s"), False),
    ("flow_time_p85_s", ("flow_time", "p85_s"), False),
    ("flow_time_p95_s", ("flow_time", "p95_s"), False),
    ("flow_time_max_s", ("flow_time", "max_s"), False),
    ("efficiency", ("efficiency",), False),
    ("efficiency_mean", ("efficiency_mean",), False),
    ("load_avg", ("load_avg",), False),
    ("age_count", ("age", "count"), True),
    ("age_p50_s", ("age", "p50_s"), False),
    ("age_p85_s", ("age", "p85_s"), False),
    ("age_max_s", ("age", "max_s"), False),
)

# PostgreSQL parses each row's JSON once per object (json_to_record) instead of once per
# column; the numbers go through float8/integer input, which rounds exactly as Python's json.
_PG_FIGURES_FROM = """
    CROSS JOIN LATERAL json_to_record(CAST(m.data AS json))
        AS r(flow_time json, efficiency float8, efficiency_mean float8, load_avg float8,
             age json)
    CROSS JOIN LATERAL json_to_record(r.flow_time)
        AS ft(count integer, mean_s float8, p50_s float8, p85_s float8, p95_s float8,
              max_s float8)
    CROSS JOIN LATERAL json_to_record(r.age)
        AS ag(count integer, p50_s float8, p85_s float8, max_s float8)"""
_PG_FIGURE_ALIASES = {"flow_time": "ft", "age": "ag"}

# Counts per stage at each UTC day's end. "At the end" means what the metrics mean by the
# load at an instant: every transition at or before it has happened, so one at exactly
# midnight counts for the day that ends there. Each transition moves its item from the stage
# of the one before it (in time order) to its own; summed up to a day, these moves leave
# every item counted once, in its stage at that day's end. Every day from the first creation
# in the (value stream, flow type) to today (UTC) has a row, later days one where something
# changed. The value stream and flow type are partition and grouping keys all the way down,
# so a filter on them reaches the items index instead of running over every transition.
_FLOW_LOAD_DAILY = """
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
        SUM({delta_new}) AS d_new,
        SUM({delta_active}) AS d_active,
        SUM({delta_waiting}) AS d_waiting,
        SUM({delta_done}) AS d_done,
        SUM({delta_canceled}) AS d_canceled
    FROM (
        SELECT
            i.value_stream,
            i.flow_type,
            {change_day} AS day,
            t.to_stage AS stage,
            LAG(t.to_stage) OVER (
                PARTITION BY i.value_stream, i.flow_type, t.source, t.item_id
                ORDER BY t.at, t.seq
            ) AS before
        FROM transitions t
        JOIN items i ON i.source = t.source AND i.item_id = t.item_id
        WHERE i.deleted_at IS NULL{steps_filter}
        UNION ALL
        {calendar}
    ) steps
    WHERE before IS NULL OR before <> stage
    GROUP BY value_stream, flow_type, day
) moves
WINDOW w AS (PARTITION BY value_stream, flow_type ORDER BY day)
"""

# the calendar rows: one per day, moving no item (no stage, none before)
_SQLITE_CALENDAR = """SELECT value_stream, flow_type, day, '' AS stage, NULL AS before
        FROM (
            WITH RECURSIVE calendar(value_stream, flow_type, day) AS (
                SELECT value_stream, flow_type, date(MIN(created_at))
                FROM items
                WHERE deleted_at IS NULL{calendar_filter}
                GROUP BY value_stream, flow_type
                UNION ALL
                SELECT value_stream, flow_type, date(day, '+1 day')
                FROM calendar
                WHERE day < date('now')
            )
            SELECT value_stream, flow_type, day FROM calendar
        ) calendar"""

_POSTGRESQL_CALENDAR = """SELECT s.value_stream, s.flow_type, CAST(d.day AS date), '', NULL
        FROM (
            SELECT value_stream, flow_type, MIN(created_at) AS first
            FROM items
            WHERE deleted_at IS NULL{calendar_filter}
            GROUP BY value_stream, flow_type
        ) s
        CROSS JOIN LATERAL generate_series(
            CAST(CAST(s.first AT TIME ZONE 'UTC' AS date) AS timestamp),
            CAST(CAST(now() AT TIME ZONE 'UTC' AS date) AS timestamp),
            interval '1 day'
        ) AS d(day)"""

_STAGES = ("new", "active", "waiting", "done", "canceled")


def _delta(stage: str) -> str:
    return (
        f"CASE WHEN stage = '{stage}' THEN 1 ELSE 0 END"
        f"\n            - CASE WHEN before = '{stage}' THEN 1 ELSE 0 END"
    )


_DIALECT_SQL: dict[str, dict[str, str]] = {
    "sqlite": {
        "float": "REAL",
        "period_end": (
            "strftime('%Y-%m-%d %H:%M:%S', m.period_start, CASE m.period"
            "\n            WHEN 'day' THEN '+1 day' WHEN 'week' THEN '+7 days'"
            "\n            WHEN 'month' THEN '+1 month' WHEN 'quarter' THEN '+3 months'"
            "\n        END) || '.000000'"
        ),
        # warehouse_meta holds datetime.isoformat() of an aware UTC instant
        "as_of": (
            "replace(substr(value, 1, 19), 'T', ' ')"
            "\n                || CASE WHEN substr(value, 20, 1) = '.'"
            "\n                    THEN substr(value, 20, 7) ELSE '.000000' END"
        ),
        "change_day": (
            "CASE"
            "\n                WHEN time(t.at) = '00:00:00'"
            " AND rtrim(substr(t.at, 20), '0') IN ('', '.')"
            "\n                THEN date(t.at, '-1 day')"
            "\n                ELSE date(t.at)"
            "\n            END"
        ),
        "calendar": _SQLITE_CALENDAR,
    },
    "postgresql": {
        "float": "double precision",
        # calendar arithmetic in UTC, whatever the session's time zone
        "period_end": (
            "(m.period_start AT TIME ZONE 'UTC' + CASE m.period"
            "\n            WHEN 'day' THEN interval '1 day' WHEN 'week' THEN interval '7 days'"
            "\n            WHEN 'month' THEN interval '1 month'"
            " WHEN 'quarter' THEN interval '3 months'"
            "\n        END) AT TIME ZONE 'UTC'"
        ),
        "as_of": "CAST(value AS timestamptz)",
        "change_day": ("CAST((t.at - interval '1 microsecond') AT TIME ZONE 'UTC' AS date)"),
        "calendar": _POSTGRESQL_CALENDAR,
    },
}


def _figures(dialect: str) -> str:
    columns = []
    for name, path, _ in _FIGURES:
        if dialect == "sqlite":
            columns.append(f"json_extract(m.data, '$.{'.'.join(path)}') AS {name}")
        else:
            table = _PG_FIGURE_ALIASES[path[0]] if len(path) > 1 else "r"
            columns.append(f"{table}.{path[-1]} AS {name}")
    return ",\n        ".join(columns)


def _check(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise ValueError(f"views: unsupported dialect {dialect!r}, expected one of {DIALECTS}")


def definitions(dialect: str) -> dict[str, str]:
    """The SELECT body of every view for `dialect` ("sqlite" or "postgresql"), by name, in
    creation order. `flow_dependencies` comes from `syncd.dependencies`."""
    _check(dialect)
    sql = _DIALECT_SQL[dialect]
    bodies = {
        "flow_items": _FLOW_ITEMS,
        "flow_transitions": _FLOW_TRANSITIONS,
        "flow_metrics": _FLOW_METRICS.format(
            period_end=sql["period_end"],
            as_of=sql["as_of"],
            float=sql["float"],
            figures=_figures(dialect),
            figures_from=_PG_FIGURES_FROM if dialect == "postgresql" else "",
        ),
        "flow_load_daily": _load_daily(dialect),
    }
    from syncd import dependencies

    bodies["flow_dependencies"] = dependencies.view_sql(dialect)
    return {name: bodies[name].strip() for name in VIEW_NAMES}


def _load_daily(dialect: str, *, one_value_stream: bool = False) -> str:
    sql = _DIALECT_SQL[dialect]
    deltas = {f"delta_{stage}": _delta(stage) for stage in _STAGES}

    def only(alias: str) -> str:
        return f" AND {alias}value_stream = :value_stream" if one_value_stream else ""

    calendar = sql["calendar"].strip().format(calendar_filter=only(""))
    return _FLOW_LOAD_DAILY.format(
        change_day=sql["change_day"], calendar=calendar, steps_filter=only("i."), **deltas
    ).strip()


def load_daily_of_one_value_stream(dialect: str) -> str:
    """`flow_load_daily`'s SELECT for the value stream bound as `:value_stream`: the same rows
    as the view filtered by it, with the filter applied to the items before their histories
    are walked. PostgreSQL pushes a filter on the view down by itself; SQLite does not (it
    walks every item's history, then filters; docs/benchmarks.md, `bench_views.py`, has
    both timed), so the API and the dashboard ask this way."""
    _check(dialect)
    return _load_daily(dialect, one_value_stream=True)


def create_views(conn: Connection, bodies: Mapping[str, str]) -> None:
    """(Re)create the views `bodies` names (name → SELECT body), inside the caller's
    transaction: each is dropped first, so a changed definition replaces the old one."""
    drop_views(conn, list(bodies))
    for name, body in bodies.items():
        conn.exec_driver_sql(f"CREATE VIEW {name} AS\n{body}")


def drop_views(conn: Connection, names: list[str] | tuple[str, ...] = VIEW_NAMES) -> None:
    """Drop the named views where they exist."""
    for name in reversed(names):
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {name}")


def install(conn: Connection) -> None:
    """Create the current views for the connection's dialect."""
    create_views(conn, definitions(conn.dialect.name))
