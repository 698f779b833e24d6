"""The HTTP API: every endpoint, its filters, JSON and CSV, paging, errors, the bearer token,
its values against the SQL views (on SQLite and PostgreSQL), and schemathesis against the
app's own OpenAPI description."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import random
import shutil
import socket
import tempfile
import threading
import warnings
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from pydantic import SecretStr

from syncd import dependencies
from syncd.api.app import create_app
from syncd.api.auth import TokenGate
from syncd.api.queries import encode_cursor
from syncd.config import load_config
from syncd.contract import Cursor, Page
from syncd.domain import FLOW_TYPES, FlowItem, Link, Stage, Transition
from syncd.errors import ConfigError
from syncd.metrics.incremental import stored_rows, update_metrics
from syncd.streams import ScopeConfig, ValueStreamConfig, ValueStreams, target_fields
from syncd.streams import write_tables as write_stream_tables
from syncd.warehouse.store import Warehouse
from tests.helpers import cli

with warnings.catch_warnings():
    # Starlette asks for its `httpx2` fork in TestClient; httpx is what syncd ships
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

AS_OF = datetime(2026, 11, 18, 12, tzinfo=UTC)
TOKEN = "s3cret-api-token-for-tests"
TARGETS = {"feature": 0.6, "defect": 0.2, "risk": 0.1, "debt": 0.1}
SOURCES = {
    # source: (key of item n, project, value stream)
    "jira": ("SHOP-{n}", "SHOP", "Checkout"),
    "github": ("acme/web#{n}", "acme/web", "Checkout"),
    "gitlab": ("pay/api#{n}", "pay/api", "Payments"),
}
STREAMS = ValueStreams(
    [
        ValueStreamConfig(
            name="Checkout",
            scopes=[
                ScopeConfig(source="jira", projects=["SHOP"]),
                ScopeConfig(source="github", projects=["acme/web"]),
            ],
            target_distribution=TARGETS,
        ),
        ValueStreamConfig(name="Payments", scopes=[ScopeConfig(source="gitlab")]),
    ],
    {name: name for name in SOURCES},
)
#: the item tombstoned by a reconcile: the API hides it unless asked
DELETED = ("github", "4")


def _history(rng: random.Random, created: datetime) -> list[Transition]:
    """new → active → (waiting → active)* → done or canceled, cut at AS_OF."""
    steps: list[tuple[str, Stage]] = [("To Do", Stage.NEW)]
    plan = rng.choice(["done", "done", "done", "canceled", "active", "waiting", "new"])
    if plan != "new":
        steps.append(("In Progress", Stage.ACTIVE))
        for _ in range(rng.randint(0, 2)):
            steps += [("Blocked", Stage.WAITING), ("In Progress", Stage.ACTIVE)]
        if plan == "waiting":
            steps.append(("Blocked", Stage.WAITING))
        elif plan in ("done", "canceled"):
            steps.append(("Done" if plan == "done" else "Won't Do", Stage(plan)))
    out: list[Transition] = []
    at = created
    for state, stage in steps:
        if at > AS_OF:
            break
        prev = out[-1] if out else None
        out.append(
            Transition(
                at=at,
                from_state=prev.to_state if prev else None,
                to_state=state,
                from_stage=prev.to_stage if prev else None,
                to_stage=stage,
            )
        )
        at += timedelta(hours=rng.uniform(6, 24 * 9))
    return out


def _items(source: str, count: int, rng: random.Random) -> list[FlowItem]:
    key_format, project, stream = SOURCES[source]
    out = []
    for n in range(1, count + 1):
        created = AS_OF - timedelta(days=rng.uniform(2, 150))
        transitions = _history(rng, created)
        last = transitions[-1]
        links = []
        if source == "jira" and n % 4 == 0:  # blocked by Payments' work
            links.append(Link("Blocks", "inward", f"pay/api#{n // 4}"))
        if source == "jira" and n == 3:
            links.append(Link("Relates", "outward", "ELSEWHERE-1"))
        out.append(
            FlowItem(
                source=source,
                id=str(n),
                key=key_format.format(n=n),
                kind="issue",
                title=f"{source} item {n}, with a comma",
                project=project,
                flow_type=rng.choice([*FLOW_TYPES, "feature", "feature"]),
                value_stream=stream,
                stage=last.to_stage,
                state=last.to_state,
                created_at=transitions[0].at,
                updated_at=last.at,
                transitions=transitions,
                links=links,
                labels=["team-a"] if n % 2 else ["team-b", "urgent"],
            )
        )
    return out


def populate(url: str) -> Warehouse:
    """A warehouse with three sources in two value streams (one with targets), links across
    them, one tombstoned item, metrics as of AS_OF and the value stream tables written."""
    warehouse = Warehouse(url)
    rng = random.Random(7)
    for source, count in (("jira", 30), ("github", 18), ("gitlab", 14)):
        items = _items(source, count, rng)
        page = Page(raws=[], items=items, cursor=Cursor(watermark=AS_OF))
        warehouse.commit_page(source=source, stream="s", run_id="r", page=page, now=AS_OF)
    present = {str(n) for n in range(1, 19)} - {DELETED[1]}
    assert warehouse.reconcile(DELETED[0], present, AS_OF) == (1, 0)
    update_metrics(warehouse, as_of=AS_OF)
    write_stream_tables(warehouse, STREAMS)
    return warehouse


@pytest.fixture
def warehouse(warehouse_url: str) -> Iterator[Warehouse]:
    w = populate(warehouse_url)
    yield w
    w.close()


@pytest.fixture
def client(warehouse: Warehouse) -> TestClient:
    return TestClient(create_app(warehouse, clock=lambda: AS_OF))


def _view(warehouse: Warehouse, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows of a view read with plain SQL, values as JSON would carry them."""
    with warehouse.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]
    return [{k: _plain(k, v) for k, v in row.items()} for row in rows]


_INSTANTS = {
    "period_start", "period_end", "as_of", "created_at", "updated_at", "work_start",
    "work_end", "deleted_at",
}  # fmt: skip


def _plain(column: str, value: Any) -> Any:
    """A view's value (SQLite text/0-1, PostgreSQL native) as the API's JSON has it."""
    if value is None:
        return None
    if column in _INSTANTS:
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
        return parsed.astimezone(UTC).isoformat()
    if column == "day":
        return value.isoformat() if isinstance(value, date) else value
    if column in ("deleted", "blocking", "cross_value_stream"):
        return bool(value)
    return value


def _json_rows(response: Any, key: str) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    rows: list[dict[str, Any]] = response.json()[key]
    return rows


def _csv(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


# -- metrics ------------------------------------------------------------------------------


def test_metrics_equal_the_view(client: TestClient, warehouse: Warehouse) -> None:
    for kind in ("week", "month"):
        api = _json_rows(client.get("/api/v1/metrics", params={"period": kind}), "metrics")
        view = _view(
            warehouse,
            "SELECT * FROM flow_metrics WHERE period_kind = :k",
            k=kind,
        )
        assert len(api) == len(view) > 0
        key = lambda r: (r["value_stream"], r["period_start"], r["flow_type"])  # noqa: E731
        assert sorted(api, key=key) == sorted(view, key=key)
    # the default is weeks, `all` first in each period
    rows = _json_rows(client.get("/api/v1/metrics"), "metrics")
    assert {r["period_kind"] for r in rows} == {"week"}
    assert rows[0]["flow_type"] == "all"
    assert [r["flow_type"] for r in rows[:6]] == ["all", *FLOW_TYPES]


def test_metrics_match_syncd_metrics(client: TestClient, warehouse: Warehouse) -> None:
    """The API's distribution and deviation are the CLI's (`syncd metrics`) numbers."""
    rows = stored_rows(warehouse, kind="month", value_stream="Checkout", fill=False)
    totals = {r.period_start: r.velocity for r in rows if r.flow_type == "all"}
    api = _json_rows(
        client.get("/api/v1/metrics", params={"period": "month", "value_stream": "Checkout"}),
        "metrics",
    )
    by_key = {(r["period_start"], r["flow_type"]): r for r in api}
    assert len(by_key) == len(rows)
    for row in rows:
        mine = by_key[(row.period_start.isoformat(), row.flow_type)]
        assert mine["velocity"] == row.velocity
        assert mine["load_end"] == row.load_end
        assert mine["flow_time_p85_s"] == row.flow_time.p85_s
        expected = target_fields(
            "Checkout",
            row.flow_type,
            row.distribution,
            row.velocity,
            totals[row.period_start],
            {"Checkout": TARGETS},
        )
        for name in ("distribution_share", "target_share", "deviation"):
            if expected[name] is None:
                assert mine[name] is None, name
            else:
                assert mine[name] == pytest.approx(expected[name], abs=1e-12), name


def test_metrics_filters(client: TestClient, warehouse: Warehouse) -> None:
    params = {"period": "week", "value_stream": "Payments", "flow_type": "feature"}
    rows = _json_rows(client.get("/api/v1/metrics", params=params), "metrics")
    assert rows
    assert all(
        (r["value_stream"], r["flow_type"], r["period_kind"]) == ("Payments", "feature", "week")
        for r in rows
    )
    view = _view(
        warehouse,
        "SELECT * FROM flow_metrics WHERE period_kind = 'week' AND value_stream = 'Payments' "
        "AND flow_type = 'feature'",
    )
    assert len(rows) == len(view)

    # periods overlapping [from, to): the week holding `from` is in, the one starting at `to`
    # is out
    since, until = "2026-10-07T00:00:00Z", "2026-10-26"
    rows = _json_rows(
        client.get("/api/v1/metrics", params={"flow_type": "all", "from": since, "to": until}),
        "metrics",
    )
    starts = sorted({r["period_start"] for r in rows})
    assert starts == [
        "2026-10-05T00:00:00+00:00",
        "2026-10-12T00:00:00+00:00",
        "2026-10-19T00:00:00+00:00",
    ]
    assert {r["value_stream"] for r in rows} == {"Checkout", "Payments"}


# -- formats ------------------------------------------------------------------------------


def test_csv_by_parameter_or_accept_header(client: TestClient, warehouse: Warehouse) -> None:
    params = {"period": "month", "value_stream": "Checkout"}
    by_param = client.get("/api/v1/metrics", params={**params, "format": "csv"})
    by_accept = client.get("/api/v1/metrics", params=params, headers={"Accept": "text/csv"})
    assert by_param.text == by_accept.text
    assert by_param.headers["vary"] == "Accept"
    rows = _csv(by_param)
    header = by_param.text.split("\r\n", 1)[0].split(",")
    with warehouse.engine.connect() as conn:
        view_columns = list(conn.execute(sa.text("SELECT * FROM flow_metrics LIMIT 0")).keys())
    assert header == view_columns
    as_json = _json_rows(client.get("/api/v1/metrics", params=params), "metrics")
    assert len(rows) == len(as_json)
    for text_row, json_row in zip(rows, as_json, strict=True):
        assert text_row["period_start"] == json_row["period_start"]
        assert int(text_row["velocity"]) == json_row["velocity"]
        share = json_row["distribution_share"]
        assert text_row["distribution_share"] == ("" if share is None else repr(share))

    # the parameter wins over the header; preferences by q-value; JSON by default
    assert client.get(
        "/api/v1/metrics", params={"format": "json"}, headers={"Accept": "text/csv"}
    ).headers["content-type"] == ("application/json")
    weighed = client.get(
        "/api/v1/metrics", headers={"Accept": "application/json;q=0.5, text/csv;q=0.9"}
    )
    assert weighed.headers["content-type"].startswith("text/csv")
    assert client.get("/api/v1/metrics", headers={"Accept": "*/*"}).headers["content-type"] == (
        "application/json"
    )


def test_every_operation_answers_csv(client: TestClient) -> None:
    for path in (
        "/api/v1/metrics",
        "/api/v1/items",
        "/api/v1/value-streams",
        "/api/v1/load-daily",
        "/api/v1/dependencies",
    ):
        rows = _csv(client.get(path, params={"format": "csv"}))
        assert rows, path


# -- items --------------------------------------------------------------------------------


def test_items_page_through_everything(client: TestClient, warehouse: Warehouse) -> None:
    view = _view(warehouse, "SELECT * FROM flow_items WHERE NOT deleted ORDER BY source, item_id")
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/api/v1/items", params=params).json()
        assert len(body["items"]) <= 7
        seen += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == -(-len(view) // 7)
    assert [(r["source"], r["item_id"]) for r in seen] == [
        (r["source"], r["item_id"]) for r in view
    ]
    for mine, theirs in zip(seen, view, strict=True):
        assert mine == {**theirs, "labels": json.loads(theirs["labels"])}
    assert DELETED not in {(r["source"], r["item_id"]) for r in seen}


def test_items_filters_and_deleted(client: TestClient, warehouse: Warehouse) -> None:
    params = {"value_stream": "Checkout", "flow_type": "feature", "stage": "done", "limit": 1000}
    rows = _json_rows(client.get("/api/v1/items", params=params), "items")
    view = _view(
        warehouse,
        "SELECT * FROM flow_items WHERE value_stream = 'Checkout' AND flow_type = 'feature' "
        "AND stage = 'done' AND NOT deleted",
    )
    assert len(rows) == len(view) > 0
    rows = _json_rows(client.get("/api/v1/items", params={"source": "gitlab"}), "items")
    assert len(rows) == 14 and {r["source"] for r in rows} == {"gitlab"}

    everything = _json_rows(
        client.get("/api/v1/items", params={"include_deleted": "true", "limit": 1000}), "items"
    )
    deleted = [r for r in everything if (r["source"], r["item_id"]) == DELETED]
    assert len(deleted) == 1 and deleted[0]["deleted"] is True
    assert deleted[0]["deleted_at"] == AS_OF.isoformat()


def test_items_csv_carries_the_next_cursor(client: TestClient) -> None:
    first = client.get("/api/v1/items", params={"limit": 5, "format": "csv"})
    rows = _csv(first)
    assert len(rows) == 5
    cursor = first.headers["x-next-cursor"]
    assert 'rel="next"' in first.headers["link"] and "cursor=" in first.headers["link"]
    assert json.loads(rows[0]["labels"]) in (["team-a"], ["team-b", "urgent"])
    second = _csv(
        client.get("/api/v1/items", params={"limit": 5, "format": "csv", "cursor": cursor})
    )
    as_json = client.get("/api/v1/items", params={"limit": 10}).json()["items"]
    assert [r["key"] for r in rows + second] == [r["key"] for r in as_json]
    last = client.get("/api/v1/items", params={"limit": 1000, "format": "csv"})
    assert "x-next-cursor" not in last.headers


# -- value streams, load, dependencies ----------------------------------------------------


def test_value_streams(client: TestClient, warehouse: Warehouse) -> None:
    streams = _json_rows(client.get("/api/v1/value-streams"), "value_streams")
    by_name = {s["name"]: s for s in streams}
    assert [s["name"] for s in streams][:2] == ["Checkout", "Payments"]
    checkout = by_name["Checkout"]
    assert checkout["configured"] is True and checkout["targets"] == TARGETS
    assert by_name["Payments"]["targets"] == {}
    latest = checkout["latest"]
    assert latest["period_kind"] == "month"
    assert latest["period_start"] == "2026-11-01T00:00:00+00:00"
    view = {
        r["flow_type"]: r
        for r in _view(
            warehouse,
            "SELECT * FROM flow_metrics WHERE value_stream = 'Checkout' AND period_kind = 'month'"
            " AND period_start = (SELECT MAX(period_start) FROM flow_metrics"
            " WHERE value_stream = 'Checkout' AND period_kind = 'month')",
        )
    }
    assert latest["velocity"] == view["all"]["velocity"] > 0
    assert latest["distribution"] == {ft: view[ft]["distribution_share"] for ft in FLOW_TYPES}
    assert latest["deviation"] == {ft: view[ft]["deviation"] for ft in TARGETS}
    for ft, target in TARGETS.items():
        assert latest["deviation"][ft] == pytest.approx(latest["distribution"][ft] - target)
    assert by_name["Payments"]["latest"]["deviation"] == {}

    rows = _csv(client.get("/api/v1/value-streams", params={"period": "week", "format": "csv"}))
    assert len(rows) == 5 * len(streams)
    feature = next(r for r in rows if r["name"] == "Checkout" and r["flow_type"] == "feature")
    assert float(feature["target_share"]) == 0.6 and feature["period_kind"] == "week"


def test_load_daily_equals_the_view(client: TestClient, warehouse: Warehouse) -> None:
    params = {"value_stream": "Checkout", "flow_type": "defect", "from": "2026-09-01"}
    params["to"] = "2026-09-30"
    rows = _json_rows(client.get("/api/v1/load-daily", params=params), "load_daily")
    view = _view(
        warehouse,
        "SELECT * FROM flow_load_daily WHERE value_stream = 'Checkout' AND flow_type = 'defect'"
        " ORDER BY day",
    )
    in_range = [r for r in view if "2026-09-01" <= r["day"] <= "2026-09-30"]
    assert rows == in_range and len(rows) == 30
    all_rows = _json_rows(client.get("/api/v1/load-daily"), "load_daily")
    assert len(all_rows) == len(_view(warehouse, "SELECT day FROM flow_load_daily"))


def test_dependencies(client: TestClient, warehouse: Warehouse) -> None:
    body = client.get("/api/v1/dependencies").json()
    with warehouse.engine.connect() as conn:
        assert body == json.loads(json.dumps(dependencies.graph(conn)))
    blocking = [e for e in body["edges"] if e["blocking"]]
    assert blocking and all(e["cross_value_stream"] for e in blocking)
    assert any(n["id"] == "unresolved:ELSEWHERE-1" for n in body["nodes"])

    payments = client.get("/api/v1/dependencies", params={"value_stream": "Payments"}).json()
    assert payments["edges"] and len(payments["edges"]) < len(body["edges"])
    rows = _csv(client.get("/api/v1/dependencies", params={"format": "csv"}))
    assert len(rows) == len(body["edges"])
    assert set(rows[0]) >= {"from_key", "to_key", "blocking", "cross_value_stream"}
    assert {r["blocking"] for r in rows} <= {"true", "false"}


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/api/v1/metrics", {"flow_type": "bug"}, "flow_type"),
        ("/api/v1/metrics", {"period": "year"}, "period"),
        ("/api/v1/metrics", {"from": "last tuesday"}, "from"),
        ("/api/v1/metrics", {"to": "0.5"}, "to"),
        ("/api/v1/load-daily", {"from": "0"}, "from"),
        ("/api/v1/metrics", {"flowtype": "feature"}, "flowtype"),
        ("/api/v1/items", {"limit": "0"}, "limit"),
        ("/api/v1/items", {"limit": "1001"}, "limit"),
        ("/api/v1/items", {"cursor": "not-a-cursor"}, "cursor"),
        ("/api/v1/items", {"stage": "doing"}, "stage"),
        ("/api/v1/items", {"format": "xml"}, "format"),
        ("/api/v1/load-daily", {"to": "2026-13-01"}, "to"),
        ("/api/v1/value-streams", {"period": "fortnight"}, "period"),
        ("/dashboard", {"weeks": "0"}, "weeks"),
        ("/api/v1/load-daily", {"value_stream": ["a", "b"]}, "value_stream"),
        ("/api/v1/items", {"limit": ["5", "5"]}, "limit"),
    ],
)
def test_bad_filters_are_400_naming_the_parameter(
    tmp_path: Path, path: str, params: dict[str, str | list[str]], parameter: str
) -> None:
    warehouse = populate(f"sqlite:///{tmp_path / 'w.db'}")
    response = TestClient(create_app(warehouse)).get(path, params=params)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == 400 and body["parameter"] == parameter
    assert body["message"].startswith(f"{parameter}: ")
    warehouse.close()


def test_unknown_value_streams(client: TestClient) -> None:
    """A filter naming no value stream matches nothing; its dashboard page is a 404."""
    assert (
        _json_rows(client.get("/api/v1/metrics", params={"value_stream": "Chekout"}), "metrics")
        == []
    )
    assert client.get("/api/v1/dependencies", params={"value_stream": "Nope"}).json() == {
        "nodes": [],
        "edges": [],
    }
    page = client.get("/dashboard", params={"value_stream": "Chekout"})
    assert page.status_code == 404 and page.json()["parameter"] == "value_stream"
    assert "'Checkout'" in page.json()["message"]


def test_cursor_of_another_shape_is_refused(client: TestClient) -> None:
    forged = base64.urlsafe_b64encode(b'{"source": 1}').decode()
    response = client.get("/api/v1/items", params={"cursor": forged})
    assert response.status_code == 400 and response.json()["parameter"] == "cursor"


def test_unknown_path_is_a_json_404(client: TestClient) -> None:
    response = client.get("/api/v1/nothing")
    assert response.status_code == 404
    assert "/api/v1/" in response.json()["message"]
    assert client.get("/", follow_redirects=False).headers["location"] == "/dashboard"


# -- the bearer token ---------------------------------------------------------------------


def test_token_protects_everything_but_the_description(
    warehouse: Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    client = TestClient(create_app(warehouse, token=SecretStr(TOKEN)))
    none = client.get("/api/v1/metrics")
    assert none.status_code == 401
    assert none.headers["www-authenticate"] == 'Bearer realm="syncd"'
    assert none.json()["status"] == 401
    wrong = client.get("/api/v1/items", headers={"Authorization": "Bearer " + TOKEN[:-1]})
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    right = client.get("/api/v1/items", headers={"Authorization": "Bearer " + TOKEN})
    assert right.status_code == 200 and right.json()["items"]
    assert client.get("/api/v1/nothing").status_code == 401  # no probing without the token
    assert client.get("/api/v1/openapi.json").status_code == 200

    # the browser's way in: Basic credentials whose password is the token
    page = client.get("/dashboard")
    assert page.status_code == 401 and page.headers["www-authenticate"].startswith("Basic ")
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    page = client.get("/dashboard", headers={"Authorization": "Basic " + basic})
    assert page.status_code == 200 and "<svg" in page.text
    bad = base64.b64encode(b"anyone:guess").decode()
    assert client.get("/dashboard", headers={"Authorization": "Basic " + bad}).status_code == 401

    for response in (none, wrong):
        assert TOKEN not in response.text and TOKEN not in str(response.headers)
    assert "**" in repr(TokenGate(create_app(warehouse), SecretStr(TOKEN)))
    assert TOKEN not in repr(TokenGate(create_app(warehouse), SecretStr(TOKEN)))
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err


def test_openapi_description(warehouse: Warehouse) -> None:
    open_doc = TestClient(create_app(warehouse)).get("/api/v1/openapi.json").json()
    assert open_doc["openapi"].startswith("3.")
    paths = open_doc["paths"]
    for path in (
        "/api/v1/metrics",
        "/api/v1/items",
        "/api/v1/value-streams",
        "/api/v1/load-daily",
        "/api/v1/dependencies",
        "/dashboard",
    ):
        responses = paths[path]["get"]["responses"]
        assert "400" in responses and "422" not in responses, path
        if path.startswith("/api/"):
            assert set(responses["200"]["content"]) == {"application/json", "text/csv"}
    assert "security" not in open_doc
    params = {p["name"] for p in paths["/api/v1/metrics"]["get"]["parameters"]}
    assert params == {"value_stream", "flow_type", "period", "from", "to", "format"}

    closed = TestClient(create_app(warehouse, token=SecretStr(TOKEN)))
    doc = closed.get("/api/v1/openapi.json").json()
    assert doc["security"] == [{"bearer": []}]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "401" in doc["paths"]["/api/v1/items"]["get"]["responses"]


# -- schemathesis against the app's own description ---------------------------------------


#: schemathesis needs the app when the module is collected: it is made then over a warehouse
#: that is not opened until `api_app` fills it (one per module run)
_FUZZ_DIR = Path(tempfile.gettempdir()) / f"syncd-api-fuzz-{os.getpid()}"
_FUZZ_WAREHOUSE = Warehouse(f"sqlite:///{_FUZZ_DIR / 'w.db'}", create=False)
_FUZZ_APP = create_app(_FUZZ_WAREHOUSE, token=SecretStr(TOKEN), clock=lambda: AS_OF)
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", _FUZZ_APP)


@pytest.fixture(scope="module")
def api_app() -> Iterator[Any]:
    _FUZZ_DIR.mkdir(exist_ok=True)
    populate(_FUZZ_WAREHOUSE.url).close()
    yield _FUZZ_APP
    _FUZZ_WAREHOUSE.close()
    shutil.rmtree(_FUZZ_DIR, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_operations_conform_to_their_description(case: Any, api_app: Any) -> None:
    """Every operation: no server error; status, content type, headers and body as
    described, with the token; without it, a 401 (also described)."""
    if case.query and "cursor" in case.query:
        # a cursor is opaque: made-up ones are refused (400, tested above); page from a real one
        case.query["cursor"] = encode_cursor(*DELETED)
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})
    assert case.call().status_code == 401


# -- serving: `syncd serve` and `[api] enabled` in `syncd run` ------------------------------


def _config(tmp_path: Path, url: str, api: str) -> Path:
    path = tmp_path / "syncd.toml"
    path.write_text(
        f'[warehouse]\nurl = "{url}"\n[daemon]\nlisten = "off"\n[api]\n{api}\n', encoding="utf-8"
    )
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_the_daemon_serves_the_api_when_enabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncd.daemon import Daemon

    url = f"sqlite:///{tmp_path / 'w.db'}"
    warehouse = populate(url)
    port = _free_port()
    monkeypatch.setenv("SYNCD_TEST_API_TOKEN", TOKEN)
    api = f'enabled = true\nlisten = "127.0.0.1:{port}"\ntoken_env = "SYNCD_TEST_API_TOKEN"'
    config = load_config(_config(tmp_path, url, api))
    daemon = Daemon(config, warehouse)
    runner = threading.Thread(target=daemon.serve, kwargs={"install_signals": False})
    runner.start()
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(400):  # until the daemon's thread has bound the socket
            try:
                refused = httpx.get(f"{base}/api/v1/value-streams", timeout=10)
                break
            except httpx.ConnectError:
                daemon.stopping.wait(0.05)
        assert refused.status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        answer = httpx.get(f"{base}/api/v1/value-streams", headers=auth, timeout=10)
        assert answer.status_code == 200
        assert answer.json()["value_streams"][0]["name"] == "Checkout"
    finally:
        daemon.stopping.set()
        runner.join(60)
    assert not runner.is_alive()
    with pytest.raises(httpx.ConnectError):  # stopped with the daemon
        httpx.get(f"{base}/api/v1/value-streams", timeout=10)
    warehouse.close()


def test_api_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    both = 'token_env = "X"\ntoken_file = "t"'
    with pytest.raises(ConfigError, match="token_env or token_file, not both"):
        load_config(_config(tmp_path, url, both))
    with pytest.raises(ConfigError, match=r"api\.listen"):
        load_config(_config(tmp_path, url, 'listen = "8080"'))

    empty = tmp_path / "token"
    empty.write_text("\n", encoding="utf-8")
    config = _config(tmp_path, url, f'token_file = "{empty}"')
    assert cli(["serve", "-c", str(config)])[0] == 2
    assert "api.token_file: the API token is empty" in capsys.readouterr().err

    config = _config(tmp_path, url, "")
    assert cli(["serve", "-c", str(config), "--listen", "nowhere"])[0] == 2
    assert "--listen" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli(["serve", "-c", str(config), "--listen", f"127.0.0.1:{port}"])[0] == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
