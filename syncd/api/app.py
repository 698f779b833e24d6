"""The read-only HTTP API and dashboard as an ASGI application (FastAPI).

Every operation reads the SQL views and the value stream tables through `syncd.api.queries`
and answers JSON or CSV (`?format=` or `Accept`). Bad filters are 400 with a JSON body naming
the parameter; unknown parameters are refused the same way, so a typo never silently widens
a query. The OpenAPI 3 description, generated from the same declarations that validate the
requests, is served at `/api/v1/openapi.json`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, SecretStr
from sqlalchemy.engine import Connection
from starlette.exceptions import HTTPException as StarletteHTTPException

from syncd import __version__, dependencies
from syncd.api import dashboard, queries
from syncd.api.auth import PUBLIC_PATHS, TokenGate
from syncd.api.formats import CSV, JSON, csv_body, json_body, negotiate
from syncd.api.queries import BadFilter
from syncd.warehouse.store import Warehouse, labels_of

log = structlog.get_logger("syncd.api")

FlowType = Literal["feature", "defect", "risk", "debt", "unclassified"]
FlowTypeOrAll = Literal["feature", "defect", "risk", "debt", "unclassified", "all"]
PeriodKind = Literal["day", "week", "month", "quarter"]
StageName = Literal["new", "active", "waiting", "done", "canceled"]
FormatName = Literal["json", "csv"]

FormatParam = Annotated[
    FormatName | None,
    Query(alias="format", description="`json` or `csv`; overrides the Accept header"),
]
StreamParam = Annotated[str | None, Query(description="only this value stream")]

# -- response documents (they describe the JSON; the handlers build it from the views) ---


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Doc):
    """What every error answers."""

    status: int
    error: str
    message: str
    parameter: str | None = None


class MetricRecord(_Doc):
    """One row of the `flow_metrics` view (docs/warehouse.md explains every column)."""

    value_stream: str
    flow_type: FlowTypeOrAll
    period_kind: PeriodKind
    period_start: datetime
    period_end: datetime
    as_of: datetime | None
    velocity: int
    flow_time_count: int | None
    flow_time_mean_s: float | None
    flow_time_p50_s: float | None
    flow_time_p85_s: float | None
    flow_time_p95_s: float | None
    flow_time_max_s: float | None
    efficiency: float | None
    efficiency_mean: float | None
    load_end: int
    load_avg: float | None
    age_count: int | None
    age_p50_s: float | None
    age_p85_s: float | None
    age_max_s: float | None
    distribution_share: float | None
    load_share: float | None
    target_share: float | None
    deviation: float | None


class MetricsDocument(_Doc):
    metrics: list[MetricRecord]


class ItemRecord(_Doc):
    """One row of the `flow_items` view; `labels` is a list here (JSON text in CSV)."""

    source: str
    item_id: str
    key: str
    kind: str
    title: str
    project: str
    flow_type: str
    value_stream: str
    stage: str
    state: str
    labels: list[str]
    created_at: datetime
    updated_at: datetime
    work_start: datetime | None
    work_end: datetime | None
    outcome: str | None
    flow_time_s: float | None
    active_s: float | None
    wait_s: float | None
    deleted: bool
    deleted_at: datetime | None


class ItemsDocument(_Doc):
    items: list[ItemRecord]
    #: pass as `cursor` for the next page; null on the last page
    next_cursor: str | None


class LoadDay(_Doc):
    """One row of the `flow_load_daily` view."""

    value_stream: str
    flow_type: str
    day: date
    new: int
    active: int
    waiting: int
    done: int
    canceled: int
    in_progress: int


class LoadDailyDocument(_Doc):
    load_daily: list[LoadDay]


class LatestPeriod(_Doc):
    """The value stream's latest period of the kind asked, from `flow_metrics`."""

    period_kind: PeriodKind
    period_start: datetime
    period_end: datetime
    as_of: datetime | None
    velocity: int | None
    #: flow type → share of the items finished in the period (null when none finished)
    distribution: dict[str, float | None]
    #: flow type → share minus target, for the flow types with a target
    deviation: dict[str, float | None]


class ValueStreamRecord(_Doc):
    name: str
    position: int
    configured: bool
    #: flow type → target share (0..1), as configured
    targets: dict[str, float]
    latest: LatestPeriod | None


class ValueStreamsDocument(_Doc):
    value_streams: list[ValueStreamRecord]


class DependencyGraph(BaseModel):
    """Items as nodes, dependencies as edges (see docs/api.md)."""

    model_config = ConfigDict(extra="allow")

    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]


#: CSV columns of the value-streams operation: one line per value stream and flow type
VALUE_STREAM_COLUMNS = (
    "name",
    "position",
    "configured",
    "flow_type",
    "target_share",
    "period_kind",
    "period_start",
    "period_end",
    "distribution_share",
    "deviation",
)

_ERROR = {"model": ErrorBody, "description": "A filter is not valid; `parameter` names it."}


def _tabular(description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": description,
            "content": {CSV: {"schema": {"type": "string"}}},
        },
        400: _ERROR,
    }


# -- the application ------------------------------------------------------------------------


def _allow(*names: str) -> Callable[[Request], None]:
    """A dependency refusing query parameters an operation does not know, and any given more
    than once (each takes one value: `?value_stream=a&value_stream=b` is not "a or b")."""
    known = frozenset(names)

    def check(request: Request) -> None:
        for name in request.query_params:
            if name not in known:
                listed = ", ".join(sorted(known)) or "none"
                raise BadFilter(name, f"unknown query parameter (this operation takes: {listed})")
            if len(request.query_params.getlist(name)) > 1:
                raise BadFilter(name, "given more than once; it takes one value")

    return check


def _respond(
    request: Request,
    fmt: str | None,
    document: Any,
    rows: list[dict[str, Any]],
    columns: list[str] | tuple[str, ...],
    headers: dict[str, str] | None = None,
) -> Response:
    media = negotiate(fmt, request.headers.get("accept"))
    extra = {"Vary": "Accept", **(headers or {})}
    if media == CSV:
        return Response(
            csv_body(rows, columns), media_type="text/csv; charset=utf-8", headers=extra
        )
    return Response(json_body(document), media_type=JSON, headers=extra)


_DAY_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}")
_INSTANT_TEXT = re.compile(
    r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?([Zz]|[+-]\d{2}:\d{2})?)?"
)
_DAY_SCHEMA: dict[str, Any] = {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]}
_INSTANT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "format": "date"},
        {"type": "null"},
    ]
}


def _day(parameter: str, text: str | None) -> date | None:
    """An ISO 8601 calendar date, `YYYY-MM-DD`."""
    if text is None:
        return None
    try:
        if _DAY_TEXT.fullmatch(text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    raise BadFilter(parameter, f"expected a date like 2026-01-31, got {text!r}")


def _instant(parameter: str, text: str | None) -> datetime | None:
    """An RFC 3339 date-time, or a date (its midnight); without an offset, UTC."""
    if text is None:
        return None
    try:
        if _INSTANT_TEXT.fullmatch(text):
            parsed = datetime.fromisoformat(text.upper())
            if parsed.tzinfo is None:
                return parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        pass
    raise BadFilter(
        parameter, f"expected a date or date-time like 2026-01-31T09:00:00Z, got {text!r}"
    )


def _error(status: int, error: str, message: str, parameter: str | None = None) -> Response:
    body = ErrorBody(status=status, error=error, message=message, parameter=parameter)
    return Response(json_body(body.model_dump()), status_code=status, media_type=JSON)


def create_app(
    warehouse: Warehouse,
    *,
    token: SecretStr | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Any:
    """The ASGI application over `warehouse`; with `token`, every request but the OpenAPI
    description needs it (see `syncd.api.auth`)."""
    app = FastAPI(
        title="syncd flow metrics API",
        version=__version__,
        description=(
            "Read-only access to syncd's flow warehouse: the same numbers as the SQL views "
            "(`flow_metrics`, `flow_items`, `flow_load_daily`, `flow_dependencies`) and "
            "`syncd metrics`. Every data operation answers JSON, or CSV with `?format=csv` "
            "or `Accept: text/csv`."
        ),
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # the interactive docs load scripts from a CDN: not served
        redoc_url=None,
    )

    @contextmanager
    def reading() -> Iterator[Connection]:
        with warehouse.engine.connect() as conn:
            yield conn

    @app.exception_handler(BadFilter)
    async def bad_filter(request: Request, exc: BadFilter) -> Response:
        return _error(400, "Bad Request", str(exc), exc.parameter)

    @app.exception_handler(queries.UnknownValueStream)
    async def unknown_stream(request: Request, exc: queries.UnknownValueStream) -> Response:
        return _error(404, "Not Found", str(exc), exc.parameter)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", ()) if part not in ("query", "path")]
        parameter = loc[0] if loc else None
        message = str(first.get("msg", "invalid request"))
        return _error(
            400, "Bad Request", f"{parameter}: {message}" if parameter else message, parameter
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        reason = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, "Error")
        message = (
            f"no such resource: {request.url.path} (the API is under /api/v1/, the dashboard "
            "at /dashboard)"
            if exc.status_code == 404
            else str(exc.detail)
        )
        response = _error(exc.status_code, reason, message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("api.failed", path=request.url.path, error=type(exc).__name__)
        return _error(500, "Internal Server Error", "the warehouse could not be read")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard", status_code=307)

    @app.get(
        "/api/v1/metrics",
        response_model=MetricsDocument,
        responses=_tabular("Rows of the flow_metrics view."),
        dependencies=[
            Depends(_allow("value_stream", "flow_type", "period", "from", "to", "format"))
        ],
        summary="Flow metrics per value stream, flow type and period",
    )
    def get_metrics(
        request: Request,
        value_stream: StreamParam = None,
        flow_type: Annotated[
            FlowTypeOrAll | None, Query(description="only this flow type (`all`: every type)")
        ] = None,
        period: Annotated[PeriodKind, Query(description="the period kind")] = "week",
        from_: Annotated[
            str | None,
            Query(
                alias="from",
                description="periods ending after this instant (a date is its midnight, UTC)",
                json_schema_extra=_INSTANT_SCHEMA,
            ),
        ] = None,
        to: Annotated[
            str | None,
            Query(
                description="periods starting before this instant (a date is its midnight, UTC)",
                json_schema_extra=_INSTANT_SCHEMA,
            ),
        ] = None,
        fmt: FormatParam = None,
    ) -> Response:
        start, end = _instant("from", from_), _instant("to", to)
        with reading() as conn:
            rows = queries.metrics(
                conn,
                value_stream=value_stream,
                flow_type=flow_type,
                period_kind=period,
                start=start,
                end=end,
            )
        return _respond(
            request, fmt, {"metrics": rows}, rows, queries.columns(queries.FLOW_METRICS)
        )

    @app.get(
        "/api/v1/items",
        response_model=ItemsDocument,
        responses=_tabular(
            "A page of rows of the flow_items view; in CSV the next page's cursor is in the "
            "`X-Next-Cursor` header."
        ),
        dependencies=[
            Depends(
                _allow(
                    "value_stream",
                    "flow_type",
                    "stage",
                    "source",
                    "include_deleted",
                    "limit",
                    "cursor",
                    "format",
                )
            )
        ],
        summary="Flow items, a page at a time",
    )
    def get_items(
        request: Request,
        value_stream: StreamParam = None,
        flow_type: Annotated[FlowType | None, Query(description="only this flow type")] = None,
        stage: Annotated[StageName | None, Query(description="only items in this stage")] = None,
        source: Annotated[str | None, Query(description="only this source (config name)")] = None,
        include_deleted: Annotated[
            bool, Query(description="also items deleted in their tracker")
        ] = False,
        limit: Annotated[int, Query(ge=1, le=1000, description="items per page")] = 100,
        cursor: Annotated[
            str | None, Query(description="`next_cursor` of the previous page, as is")
        ] = None,
        fmt: FormatParam = None,
    ) -> Response:
        with reading() as conn:
            page = queries.items(
                conn,
                value_stream=value_stream,
                flow_type=flow_type,
                stage=stage,
                source=source,
                include_deleted=include_deleted,
                limit=limit,
                cursor=cursor,
            )
        headers = {"X-Next-Cursor": page.next_cursor} if page.next_cursor else {}
        if page.next_cursor:
            params = dict(request.query_params)
            params["cursor"] = page.next_cursor
            next_url = request.url.replace_query_params(**params)
            headers["Link"] = f'<{next_url}>; rel="next"'
        document = {
            "items": [{**row, "labels": labels_of(row["labels"])} for row in page.items],
            "next_cursor": page.next_cursor,
        }
        columns = queries.columns(queries.FLOW_ITEMS)
        return _respond(request, fmt, document, page.items, columns, headers)

    @app.get(
        "/api/v1/value-streams",
        response_model=ValueStreamsDocument,
        responses=_tabular(
            "Value streams with targets and the latest period's distribution; in CSV one line "
            "per value stream and flow type."
        ),
        dependencies=[Depends(_allow("period", "format"))],
        summary="Value streams: targets, actual distribution and deviation",
    )
    def get_value_streams(
        request: Request,
        period: Annotated[
            PeriodKind, Query(description="the kind of the latest period reported")
        ] = "month",
        fmt: FormatParam = None,
    ) -> Response:
        with reading() as conn:
            summaries = queries.stream_summaries(conn, period)
        rows = []
        for s in summaries:
            latest = s["latest"] or {}
            for ft in queries.FLOW_TYPES:
                rows.append(
                    {
                        "name": s["name"],
                        "position": s["position"],
                        "configured": s["configured"],
                        "flow_type": ft,
                        "target_share": s["targets"].get(ft),
                        "period_kind": period,
                        "period_start": latest.get("period_start"),
                        "period_end": latest.get("period_end"),
                        "distribution_share": latest.get("distribution", {}).get(ft),
                        "deviation": latest.get("deviation", {}).get(ft),
                    }
                )
        return _respond(request, fmt, {"value_streams": summaries}, rows, VALUE_STREAM_COLUMNS)

    @app.get(
        "/api/v1/load-daily",
        response_model=LoadDailyDocument,
        responses=_tabular("Rows of the flow_load_daily view (cumulative flow)."),
        dependencies=[Depends(_allow("value_stream", "flow_type", "from", "to", "format"))],
        summary="Items per stage at the end of each UTC day",
    )
    def get_load_daily(
        request: Request,
        value_stream: StreamParam = None,
        flow_type: Annotated[FlowType | None, Query(description="only this flow type")] = None,
        from_: Annotated[
            str | None,
            Query(alias="from", description="first day", json_schema_extra=_DAY_SCHEMA),
        ] = None,
        to: Annotated[
            str | None,
            Query(description="last day (included)", json_schema_extra=_DAY_SCHEMA),
        ] = None,
        fmt: FormatParam = None,
    ) -> Response:
        first, last = _day("from", from_), _day("to", to)
        with reading() as conn:
            rows = queries.load_daily(
                conn, value_stream=value_stream, flow_type=flow_type, start=first, end=last
            )
        columns = queries.columns(queries.FLOW_LOAD_DAILY)
        return _respond(request, fmt, {"load_daily": rows}, rows, columns)

    @app.get(
        "/api/v1/dependencies",
        response_model=DependencyGraph,
        responses=_tabular(
            "The dependency graph as JSON nodes and edges; in CSV the rows of the "
            "flow_dependencies view."
        ),
        dependencies=[Depends(_allow("value_stream", "format"))],
        summary="Dependencies between items, across sources and value streams",
    )
    def get_dependencies(
        request: Request,
        value_stream: Annotated[
            str | None, Query(description="only dependencies with an end in this value stream")
        ] = None,
        fmt: FormatParam = None,
    ) -> Response:
        with reading() as conn:
            if negotiate(fmt, request.headers.get("accept")) == CSV:
                rows = queries.dependency_rows(conn, value_stream)
                columns = queries.columns(queries.FLOW_DEPENDENCIES)
                return _respond(request, fmt, None, rows, columns)
            graph = dependencies.graph(conn, value_stream=value_stream)
        return _respond(request, fmt, graph, [], [])

    @app.get(
        "/dashboard",
        response_class=Response,
        responses={
            200: {"description": "The dashboard page", "content": {"text/html": {}}},
            400: _ERROR,
            404: {"model": ErrorBody, "description": "No value stream of that name."},
        },
        dependencies=[Depends(_allow("value_stream", "weeks"))],
        summary="The dashboard of a value stream (HTML, charts as inline SVG)",
    )
    def get_dashboard(
        value_stream: Annotated[
            str | None, Query(description="the value stream shown (default: the first)")
        ] = None,
        weeks: Annotated[int, Query(ge=1, le=520, description="weeks of history shown")] = 26,
    ) -> Response:
        with reading() as conn:
            _shown, html = dashboard.render(
                conn, value_stream=value_stream, weeks=weeks, now=clock()
            )
        return Response(
            html,
            media_type="text/html; charset=utf-8",
            headers={
                "Content-Security-Policy": dashboard.CONTENT_SECURITY_POLICY,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schemas = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                operation["responses"].pop("422", None)
                if token is not None and path not in PUBLIC_PATHS:
                    operation["responses"]["401"] = {
                        "description": "No token, or not the API's token",
                        "content": {JSON: {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                    }
        if token is not None:
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            schema["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    if token is not None:
        app.add_middleware(TokenGate, token=token)
    return app
