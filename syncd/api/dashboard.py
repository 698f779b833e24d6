"""The dashboard: one HTML page per value stream, its charts drawn as SVG on the server.

Everything on it comes from the same reads as the API (`syncd.api.queries`), so the page,
the API, `syncd metrics` and the SQL views show the same numbers. The page loads nothing
else: no script, no font, no stylesheet from elsewhere (its Content-Security-Policy says so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.engine import Connection

from syncd.api import charts, queries
from syncd.api.charts import FLOW_COLOURS, STAGE_COLOURS, Layer, Point, Series

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
WEEK_CHOICES = (8, 13, 26, 52, 104)
DAY = 86400.0

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1d2430; background: #f6f7f9; }
header { background: #1d2430; color: #fff; padding: 12px 24px; }
header h1 { font-size: 20px; margin: 0 0 4px; }
header p { margin: 0; color: #c8cfdb; }
nav { padding: 8px 24px; background: #e8ebf0; }
nav a { margin-right: 14px; color: #1a4fa0; }
nav a[aria-current="page"] { font-weight: 700; color: #1d2430; text-decoration: none; }
form { display: inline-block; margin-left: 12px; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(660px, 1fr));
       gap: 16px; padding: 16px 24px; }
figure { background: #fff; margin: 0; padding: 12px; border: 1px solid #d8dde6;
         border-radius: 6px; }
figure h2 { font-size: 15px; margin: 0 0 6px; }
figcaption { color: #4a5466; font-size: 12px; margin-top: 4px; }
svg { max-width: 100%; height: auto; display: block; }
svg .grid { stroke: #e3e7ee; }
svg .axis { stroke: #9aa3b2; }
svg .tick, svg .legend { font-size: 11px; fill: #4a5466; }
svg .empty { font-size: 14px; fill: #6b7485; }
.empty-page { padding: 24px; }
"""


def _day(value: datetime | date) -> date:
    return value.date() if isinstance(value, datetime) else value


def _link(**params: Any) -> str:
    return "?" + urlencode({k: v for k, v in params.items() if v is not None})


def render(
    conn: Connection, *, value_stream: str | None, weeks: int, now: datetime
) -> tuple[str, str]:
    """The page for `value_stream` (the first value stream when None), with the last `weeks`
    weeks. Returns (the value stream shown or "", the HTML)."""
    streams = queries.value_streams(conn)
    if not streams:
        body = (
            '<div class="empty-page"><p>No flow items in the warehouse yet: run '
            "<code>syncd sync -c FILE</code> (or <code>syncd run</code>) first.</p></div>"
        )
        return "", _page("syncd dashboard", "", "", body)
    if value_stream is None:
        value_stream = streams[0].name
    else:
        queries.check_value_stream(conn, value_stream)
    as_of = queries.metrics_as_of(conn) or now
    since = as_of - timedelta(weeks=weeks)
    weekly = queries.metrics(conn, value_stream=value_stream, period_kind="week", start=since)
    daily = queries.sum_by_day(
        queries.load_daily(conn, value_stream=value_stream, start=since.date(), end=as_of.date())
    )
    summary = next(s for s in queries.stream_summaries(conn, "month") if s["name"] == value_stream)
    month_all = queries.metrics(
        conn, value_stream=value_stream, period_kind="month", flow_type=queries.ALL
    )
    wip = queries.in_progress(conn, value_stream)

    figures = _trend_figures(value_stream, weekly, weeks)
    figures.append(_cfd(value_stream, daily, weeks))
    figures.append(_distribution_vs_target(value_stream, summary))
    figures.append(_ageing(value_stream, wip, as_of, month_all[-1] if month_all else None))

    nav = "".join(
        f'<a href="{escape(_link(value_stream=s.name, weeks=weeks))}"'
        + (' aria-current="page"' if s.name == value_stream else "")
        + f">{escape(s.name)}</a>"
        for s in streams
    )
    options = "".join(
        f'<option value="{w}"{" selected" if w == weeks else ""}>{w} weeks</option>'
        for w in sorted({*WEEK_CHOICES, weeks})
    )
    nav += (
        f'<form method="get" action=""><input type="hidden" name="value_stream" '
        f'value="{escape(value_stream)}"><label>Show <select name="weeks">{options}</select>'
        '</label> <button type="submit">Update</button></form>'
    )
    subtitle = (
        f"Value stream {value_stream} · metrics as of {as_of:%Y-%m-%d %H:%M} UTC · "
        f"the last {weeks} weeks"
    )
    return value_stream, _page(f"{value_stream} · syncd dashboard", subtitle, nav, "".join(figures))


def _page(title: str, subtitle: str, nav: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>"
        + (f'<nav aria-label="Value streams">{nav}</nav>' if nav else "")
        + f"<main>{body}</main></body></html>"
    )


def _figure(heading: str, svg: str, caption: str, data: str) -> str:
    return (
        f"<figure><h2>{escape(heading)}</h2>{svg}<figcaption>{escape(caption)} "
        f'<a href="{escape(data)}">Data (CSV)</a></figcaption></figure>'
    )


def _trend_figures(value_stream: str, weekly: Sequence[Mapping[str, Any]], weeks: int) -> list[str]:
    totals = [r for r in weekly if r["flow_type"] == queries.ALL]
    starts = [_day(r["period_start"]) for r in totals]
    data = "/api/v1/metrics" + _link(value_stream=value_stream, period="week", format="csv")
    vs = value_stream

    def column(name: str, scale: float = 1.0) -> list[tuple[date, float | None]]:
        return [
            (d, None if r[name] is None else r[name] / scale)
            for d, r in zip(starts, totals, strict=True)
        ]

    velocity = charts.bar_chart(
        "velocity",
        f"Flow velocity per week, {vs}",
        f"Items finished each week over the last {weeks} weeks, {len(totals)} weeks with data.",
        [(d, float(r["velocity"])) for d, r in zip(starts, totals, strict=True)],
        "#3a9a5b",
    )
    flow_time = charts.line_chart(
        "flow-time",
        f"Flow time per week, {vs}",
        "Median (p50) and 85th percentile (p85) flow time in days of the items finished each week.",
        [
            Series("p50", "#2f6fd0", column("flow_time_p50_s", DAY)),
            Series("p85", "#d0433b", column("flow_time_p85_s", DAY)),
        ],
        charts.days,
    )
    efficiency = charts.line_chart(
        "efficiency",
        f"Flow efficiency per week, {vs}",
        "Share of the flow time of the items finished each week that was active work.",
        [Series("efficiency", "#7d55b8", column("efficiency"))],
        charts.percent,
    )
    load = charts.line_chart(
        "load",
        f"Flow load per week, {vs}",
        "Items in progress (active or waiting) at each week's end, and on average over the week.",
        [
            Series("at week end", "#e39a1c", column("load_end")),
            Series("weekly average", "#8a5a00", column("load_avg"), dashed=True),
        ],
    )
    by_period: dict[date, dict[str, float]] = {}
    for r in weekly:
        if r["flow_type"] != queries.ALL and r["distribution_share"] is not None:
            by_period.setdefault(_day(r["period_start"]), {})[r["flow_type"]] = r[
                "distribution_share"
            ]
    layers = [
        Layer(ft, FLOW_COLOURS[ft], [by_period.get(d, {}).get(ft, 0.0) for d in starts])
        for ft in queries.FLOW_TYPES
    ]
    distribution = charts.stacked_bars(
        "distribution",
        f"Flow distribution per week, {vs}",
        "Share of each flow type among the items finished each week.",
        starts,
        layers,
    )
    return [
        _figure("Flow velocity", velocity, "Items finished per week.", data),
        _figure("Flow time", flow_time, "Days from work start to end, finished items.", data),
        _figure("Flow efficiency", efficiency, "Active time over flow time.", data),
        _figure("Flow load", load, "Work in progress.", data),
        _figure("Flow distribution", distribution, "Finished items by flow type.", data),
    ]


def _cfd(value_stream: str, daily: Sequence[Mapping[str, Any]], weeks: int) -> str:
    order = ("done", "canceled", "waiting", "active", "new")
    layers = [Layer(s, STAGE_COLOURS[s], [float(d[s]) for d in daily]) for s in order]
    svg = charts.stacked_area(
        "cfd",
        f"Cumulative flow diagram, {value_stream}",
        f"Items in each stage at the end of every day of the last {weeks} weeks, stacked: "
        "done and canceled at the bottom, then waiting, active and new.",
        [d["day"] for d in daily],
        layers,
    )
    data = "/api/v1/load-daily" + _link(value_stream=value_stream, format="csv")
    return _figure("Cumulative flow", svg, "Items per stage at each day's end (UTC).", data)


def _distribution_vs_target(value_stream: str, summary: Mapping[str, Any]) -> str:
    latest = summary["latest"]
    targets: Mapping[str, float] = summary["targets"]
    shares: Mapping[str, float | None] = latest["distribution"] if latest else {}
    rows = [(ft, shares.get(ft), targets.get(ft)) for ft in queries.FLOW_TYPES]
    when = (
        f"the month starting {_day(latest['period_start']).isoformat()}"
        if latest
        else "no period yet"
    )
    wanted = ", ".join(f"{ft} {v * 100:.0f}%" for ft, v in targets.items()) or "none set"
    svg = charts.target_bars(
        "distribution-target",
        f"Flow distribution against target, {value_stream}",
        f"Share of each flow type among the items finished in {when}, against the target "
        f"investment split ({wanted}).",
        rows,
    )
    data = "/api/v1/value-streams" + _link(period="month", format="csv")
    return _figure(
        "Distribution vs target", svg, f"Actual shares in {when}; targets as configured.", data
    )


def _ageing(
    value_stream: str,
    wip: Sequence[Mapping[str, Any]],
    as_of: datetime,
    month: Mapping[str, Any] | None,
) -> str:
    points = []
    for item in wip:
        started = item["work_start"] or item["created_at"]
        age = max((as_of - started.astimezone(UTC)).total_seconds(), 0.0) / DAY
        points.append(
            Point(
                category=item["stage"],
                value=age,
                label=f"{item['key']} ({item['flow_type']}, {item['state']}) {item['title']}",
                colour=FLOW_COLOURS.get(item["flow_type"], "#555"),
                key=f"{item['source']}:{item['key']}",
            )
        )
    references = []
    if month is not None:
        for name, column in (("p50", "flow_time_p50_s"), ("p85", "flow_time_p85_s")):
            if month[column] is not None:
                references.append((f"flow time {name} this month:", month[column] / DAY))
    svg = charts.scatter(
        "ageing-wip",
        f"Ageing work in progress, {value_stream}",
        f"Age in days since work started of the {len(points)} items in progress, by stage, "
        "coloured by flow type; dashed lines: this month's flow time percentiles.",
        list(queries.IN_PROGRESS),
        points,
        references=references,
    )
    data = "/api/v1/items" + _link(value_stream=value_stream, stage="active", format="csv")
    return _figure("Ageing WIP", svg, "Items in progress by age; hover a point for it.", data)
