"""`syncd export` items, transitions and metrics as jsonl, csv and parquet, on SQLite and
PostgreSQL: a Jira simulator world with two value streams (one with targets) and a tombstoned
item, synced and exported through the CLI, then checked against the SQL views it reads and
against `syncd metrics --format json`."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from syncd import export as export_module
from syncd.export import ITEMS, KINDS, METRICS, TRANSITIONS, ExportKind, iso, write_parquet
from syncd.metrics.periods import PERIOD_KINDS, period_end
from syncd.simulator.jira import JiraSimulator
from syncd.warehouse.store import Warehouse
from tests.helpers import cli, jira_toml

ANCHOR = datetime(2026, 6, 1, tzinfo=UTC)
EMAIL, TOKEN = "bot@example.com", "sim-token-export"
TARGETS = {"feature": 0.6, "defect": 0.3, "debt": 0.1}
FORMATS = ("jsonl", "csv", "parquet")


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_EMAIL", EMAIL)
    monkeypatch.setenv("SIM_TOKEN", TOKEN)


@pytest.fixture
def sim() -> Iterator[JiraSimulator]:
    with JiraSimulator(
        items=40, seed=5, anchor=ANCHOR, email=EMAIL, token=TOKEN, projects=("SHOP", "CORE")
    ) as s:
        yield s


@pytest.fixture
def world(sim: JiraSimulator, tmp_path: Path, warehouse_url: str) -> tuple[str, str]:
    """The synced config (`Checkout` = project SHOP with targets, everything else in the
    source's own value stream) with one item tombstoned; returns (config path, its key)."""
    streams = """
[[value_streams]]
name = "Checkout"
scopes = [{ source = "jira", projects = ["SHOP"] }]
target_distribution = { feature = 0.6, defect = 0.3, debt = 0.1 }
"""
    path = jira_toml(
        tmp_path / "syncd.toml",
        sim.base_url,
        warehouse_url,
        email_env="SIM_EMAIL",
        token_env="SIM_TOKEN",
        jql="project in (SHOP, CORE)",
        source=f"page_size = 20\n{streams}",
    )
    code, out = cli(["sync", "-c", str(path)])
    assert code == 0, out
    gone = sorted(sim.keys)[0]
    sim.delete_issue(gone)
    code, out = cli(["reconcile", "-c", str(path)])
    assert code == 0 and "1 tombstoned" in out, out
    return str(path), gone


def export(config: str, what: str, fmt: str, *args: str, output: Path | None = None) -> Any:
    """`syncd export` through the CLI: jsonl as records, csv as rows of text, parquet as a
    pyarrow Table (written to `output`)."""
    argv = ["export", what, "-c", config, "--format", fmt, *args]
    if fmt == "parquet":
        assert output is not None
        code, out = cli([*argv, "--output", str(output)])
        assert code == 0 and out == ""
        return pq.read_table(output)
    code, out = cli(argv)
    assert code == 0
    if fmt == "jsonl":
        return [json.loads(line) for line in out.splitlines()]
    return list(csv.reader(io.StringIO(out)))


def warehouse_of(config: str) -> Warehouse:
    from syncd.config import load_config

    return Warehouse(load_config(config).warehouse.resolved_url())


def view_rows(config: str, view: str) -> list[dict[str, Any]]:
    """Every row of a view as the database returns it, instants made aware UTC datetimes
    (SQLite returns the text the warehouse stores) and SQLite's 0/1 made booleans."""
    warehouse = warehouse_of(config)
    with warehouse.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {view}"))]
    warehouse.close()
    for row in rows:
        for name, value in row.items():
            if isinstance(value, str) and name in _INSTANTS:
                row[name] = datetime.fromisoformat(value).replace(tzinfo=UTC)
            elif isinstance(value, datetime):
                row[name] = value.astimezone(UTC)
    return rows


_INSTANTS = {
    "created_at",
    "updated_at",
    "work_start",
    "work_end",
    "deleted_at",
    "at",
    "period_start",
    "period_end",
    "as_of",
}


def as_jsonl(table: pa.Table) -> list[dict[str, Any]]:
    """A Parquet table's rows as the jsonl export writes them."""
    return [
        {k: iso(v) if isinstance(v, datetime) else v for k, v in row.items()}
        for row in table.to_pylist()
    ]


def csv_text(value: Any) -> str:
    return "" if value is None else str(value)


def assert_typed(table: pa.Table, kind: ExportKind) -> None:
    """The file's schema is the kind's typed schema: names, types, nullability, metadata."""
    assert table.schema.equals(kind.arrow_schema(), check_metadata=True)
    for field in table.schema:
        if not field.nullable:
            assert table.column(field.name).null_count == 0


# -- items and transitions -------------------------------------------------------------------


@pytest.mark.parametrize("what", ["items", "transitions"])
def test_items_and_transitions_round_trip_in_every_format(
    world: tuple[str, str], tmp_path: Path, what: str
) -> None:
    config, gone = world
    kind = KINDS[what]
    records = export(config, what, "jsonl")
    table = export(config, what, "parquet", output=tmp_path / f"{what}.parquet")
    rows = export(config, what, "csv")

    assert len(records) > 40 if what == "transitions" else len(records) == 40
    assert_typed(table, kind)
    assert as_jsonl(table) == records
    assert rows[0] == list(kind.columns)
    assert rows[1:] == [[csv_text(r[c]) for c in kind.columns] for r in records]

    # the values are the view's, under the export's names (items: `id` is the view's item_id)
    view = {"items": "flow_items", "transitions": "flow_transitions"}[what]
    expected = [{f.name: row[f.source] for f in kind.fields} for row in view_rows(config, view)]
    order = ("source", "key", "at") if what == "transitions" else ("source", "key")
    assert table.to_pylist() == sorted(expected, key=lambda r: tuple(r[k] for k in order))

    keys = {r["key"] for r in records}
    if what == "items":
        deleted = [r for r in records if r["deleted_at"] is not None]
        assert [r["key"] for r in deleted] == [gone]  # kept, flagged
        assert table.schema.field("flow_time_s").type == pa.float64()
        assert any(r["flow_time_s"] is not None for r in records)
    else:
        assert gone not in keys  # a tombstoned item's history counts nowhere
        assert table.schema.field("at").type == pa.timestamp("us", tz="UTC")


def test_items_filters(world: tuple[str, str]) -> None:
    config, _ = world
    everything = export(config, "items", "jsonl")
    checkout = export(config, "items", "jsonl", "--value-stream", "Checkout")
    assert 0 < len(checkout) < len(everything)
    assert checkout == [r for r in everything if r["value_stream"] == "Checkout"]

    defects = export(config, "items", "jsonl", "--flow-type", "defect")
    assert 0 < len(defects) < len(everything)
    assert defects == [r for r in everything if r["flow_type"] == "defect"]

    stamps = sorted(r["updated_at"] for r in everything)
    since, until = stamps[len(stamps) // 4], stamps[3 * len(stamps) // 4]
    window = export(config, "items", "jsonl", "--since", since, "--until", until)
    tombstoned = [r for r in everything if r["deleted_at"] is not None]
    assert window == [
        r
        for r in everything
        if since <= r["updated_at"] < until or since <= (r["deleted_at"] or "") < until
    ]
    assert 0 < len(window) < len(everything)
    # the tombstone is recent (the reconcile ran now): a window from now on still shows it
    now = iso(datetime.now(UTC) - timedelta(hours=1))
    assert now is not None
    assert export(config, "items", "jsonl", "--since", now) == tombstoned


def test_transitions_filters(world: tuple[str, str]) -> None:
    config, _ = world
    everything = export(config, "transitions", "jsonl")
    stamps = sorted(r["at"] for r in everything)
    since, until = stamps[len(stamps) // 3], stamps[2 * len(stamps) // 3]
    window = export(config, "transitions", "jsonl", "--since", since, "--until", until)
    assert window == [r for r in everything if since <= r["at"] < until]
    assert 0 < len(window) < len(everything)

    items = {r["key"]: r for r in export(config, "items", "jsonl")}
    features = export(config, "transitions", "jsonl", "--flow-type", "feature")
    assert features == [r for r in everything if items[r["key"]]["flow_type"] == "feature"]
    assert 0 < len(features) < len(everything)


# -- metrics -------------------------------------------------------------------------------


def expected_metric_rows(records: list[dict[str, Any]], as_of: str) -> list[dict[str, Any]]:
    """`syncd metrics --format json` records as the metrics export's rows. The load share
    is the `all` row's load distribution, which the json shows once per bucket."""
    whole = {(r["value_stream"], r["period_start"]): r for r in records if r["flow_type"] == "all"}
    out = []
    for r in records:
        start = datetime.fromisoformat(r["period_start"]).replace(tzinfo=UTC)
        bucket = whole[(r["value_stream"], r["period_start"])]
        if r["flow_type"] == "all":
            load_share = 1.0 if r["load_end"] else None
        else:
            loads = bucket["load_distribution"]
            load_share = None if loads is None else loads[r["flow_type"]]
        out.append(
            {
                "value_stream": r["value_stream"],
                "flow_type": r["flow_type"],
                "period_kind": r["period"],
                "period_start": iso(start),
                "period_end": iso(period_end(r["period"], start)),
                "as_of": as_of,
                "velocity": r["velocity"],
                **{f"flow_time_{k}": v for k, v in r["flow_time"].items()},
                "efficiency": r["efficiency"],
                "efficiency_mean": r["efficiency_mean"],
                "load_end": r["load_end"],
                "load_avg": r["load_avg"],
                **{f"age_{k}": v for k, v in r["age"].items()},
                "distribution_share": r["distribution_share"],
                "load_share": load_share,
                "target_share": r["target_share"],
                "deviation": r["deviation"],
            }
        )
    return out


def _empty(row: dict[str, Any]) -> bool:
    return (
        row["velocity"] == 0
        and row["load_end"] == 0
        and row["flow_time_count"] == 0
        and row["age_count"] == 0
        and not row["load_avg"]
    )


@pytest.mark.parametrize("period", PERIOD_KINDS)
def test_metrics_export_equals_syncd_metrics_json(
    world: tuple[str, str], tmp_path: Path, period: str
) -> None:
    config, _ = world
    code, out = cli(["metrics", "-c", config, "--period", period, "--format", "json"])
    assert code == 0
    warehouse = warehouse_of(config)
    as_of_text = warehouse.get_meta("metrics_as_of")
    warehouse.close()
    assert as_of_text is not None
    as_of = iso(datetime.fromisoformat(as_of_text))
    assert as_of is not None
    expected = expected_metric_rows(json.loads(out), as_of)

    records = export(config, "metrics", "jsonl", "--period", period)
    table = export(config, "metrics", "parquet", "--period", period, output=tmp_path / "m.pq")
    rows = export(config, "metrics", "csv", "--period", period)
    assert_typed(table, METRICS)
    assert as_jsonl(table) == records
    assert rows[0] == list(METRICS.columns) == list(expected[0])
    assert rows[1:] == [[csv_text(r[c]) for c in METRICS.columns] for r in records]

    # the same rows in the same order; `syncd metrics` adds the periods no item touches
    # between a value stream's first period and now, as empty rows, which the view does not
    exported = {(r["value_stream"], r["period_start"], r["flow_type"]) for r in records}
    assert records == [
        r for r in expected if (r["value_stream"], r["period_start"], r["flow_type"]) in exported
    ]
    assert all(_empty(r) for r in expected if r not in records)
    assert {r["value_stream"] for r in records} == {"Checkout", "jira"}

    # investment shares: actual vs target where the value stream has targets
    for r in records:
        if r["value_stream"] == "Checkout" and r["flow_type"] in TARGETS:
            assert r["target_share"] == TARGETS[r["flow_type"]]
        else:
            assert r["target_share"] is None and r["deviation"] is None
    with_deviation = [r for r in records if r["deviation"] is not None]
    assert with_deviation and all(
        r["deviation"] == r["distribution_share"] - r["target_share"] for r in with_deviation
    )
    shares: dict[tuple[str, str], float] = {}
    for r in records:
        if r["flow_type"] != "all" and r["distribution_share"] is not None:
            key = (r["value_stream"], r["period_start"])
            shares[key] = shares.get(key, 0.0) + r["distribution_share"]
    assert shares and all(math.isclose(s, 1.0) for s in shares.values())


def test_metrics_export_is_the_view(world: tuple[str, str], tmp_path: Path) -> None:
    config, _ = world
    table = export(config, "metrics", "parquet", output=tmp_path / "metrics.parquet")
    view = view_rows(config, "flow_metrics")
    assert set(view[0]) == set(METRICS.columns)  # the export has every column of the view
    got = table.to_pylist()
    key = ("value_stream", "period_kind", "period_start", "flow_type")
    assert len(got) == len(view) > 0
    assert sorted(got, key=lambda r: tuple(r[k] for k in key)) == sorted(
        ({c: r[c] for c in METRICS.columns} for r in view), key=lambda r: tuple(r[k] for k in key)
    )
    assert {r["period_kind"] for r in got} == set(PERIOD_KINDS)
    # ordered by value stream, period kind (day → quarter), period start, `all` first
    order = [
        (r["value_stream"], PERIOD_KINDS.index(r["period_kind"]), r["period_start"]) for r in got
    ]
    assert order == sorted(order)
    assert got[0]["flow_type"] == "all"


def test_metrics_filters(world: tuple[str, str]) -> None:
    config, _ = world
    everything = export(config, "metrics", "jsonl")
    cases: list[tuple[list[str], Any]] = [
        (["--value-stream", "Checkout"], lambda r: r["value_stream"] == "Checkout"),
        (["--flow-type", "all"], lambda r: r["flow_type"] == "all"),
        (["--period", "month"], lambda r: r["period_kind"] == "month"),
        (
            ["--period", "week", "--flow-type", "defect", "--value-stream", "jira"],
            lambda r: (
                (r["period_kind"], r["flow_type"], r["value_stream"]) == ("week", "defect", "jira")
            ),
        ),
        (
            ["--since", "2026-03-01", "--until", "2026-05-01T00:00:00Z"],
            lambda r: "2026-03-01T00:00:00Z" <= r["period_start"] < "2026-05-01T00:00:00Z",
        ),
    ]
    for args, keep in cases:
        got = export(config, "metrics", "jsonl", *args)
        assert 0 < len(got) < len(everything), args
        assert got == [r for r in everything if keep(r)], args


def test_filters_that_do_not_apply_are_usage_errors(
    world: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = world
    for argv in (
        ["export", "items", "-c", config, "--period", "week"],
        ["export", "transitions", "-c", config, "--flow-type", "all"],
        ["export", "metrics", "-c", config, "--since", "2026-05-01", "--until", "2026-04-01"],
    ):
        code, out = cli(argv)
        assert (code, out) == (2, "")
        assert capsys.readouterr().err.startswith("syncd: export: ")


# -- parquet output ----------------------------------------------------------------------------


def test_parquet_to_stdout_or_a_terminal_is_refused(
    world: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = world
    for extra in ([], ["--output", "-"]):
        code, out = cli(["export", "items", "-c", config, "--format", "parquet", *extra])
        assert (code, out) == (2, "")
        err = capsys.readouterr().err
        assert "parquet" in err and "--output FILE" in err
    leader, follower = os.openpty()
    try:
        terminal = os.ttyname(follower)
        code, out = cli(["export", "metrics", "-c", config, "--format", "parquet", "-o", terminal])
        assert (code, out) == (2, "")
        assert f"{terminal} is a terminal" in capsys.readouterr().err
    finally:
        os.close(leader)
        os.close(follower)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, out = cli(["export", "items", "-c", config, "--format", "parquet", "-o", str(fifo)])
    assert (code, out) == (2, "")
    assert f"{fifo} is not one" in capsys.readouterr().err
    for fmt in FORMATS:
        code, out = cli(["export", "items", "-c", config, "--format", fmt, "-o", str(tmp_path)])
        assert (code, out) == (2, "")
        assert f"{tmp_path} is a directory" in capsys.readouterr().err
        missing = tmp_path / "no" / "such" / f"dir.{fmt}"
        code, out = cli(["export", "items", "-c", config, "--format", fmt, "-o", str(missing)])
        assert (code, out) == (1, "")
        assert capsys.readouterr().err.startswith(f"syncd: export: cannot write {missing}: ")
    # jsonl and csv still stream to stdout
    code, out = cli(["export", "items", "-c", config, "--format", "csv"])
    assert code == 0 and out.startswith("source,key,id,")


def test_parquet_file_message_and_replacement(
    world: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = world
    target = tmp_path / "items.parquet"
    target.write_bytes(b"an older export")
    code, out = cli(["export", "items", "-c", config, "--format", "parquet", "-o", str(target)])
    assert (code, out) == (0, "")
    assert capsys.readouterr().err == f"40 items written to {target}\n"
    assert pq.read_table(target).num_rows == 40
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failed_parquet_export_keeps_the_previous_file(
    world: tuple[str, str], tmp_path: Path
) -> None:
    config, _ = world
    target = tmp_path / "metrics.parquet"
    target.write_bytes(b"the previous export")
    warehouse = warehouse_of(config)
    with warehouse.begin() as conn:
        conn.execute(sa.text("DROP VIEW flow_metrics"))
    warehouse.close()
    with pytest.raises(sa.exc.DBAPIError):
        cli(["export", "metrics", "-c", config, "--format", "parquet", "-o", str(target)])
    assert target.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".partial") == []


@pytest.mark.parametrize("batch_rows", [2, 3, 2000])
def test_parquet_row_groups_are_full_whatever_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_rows: int
) -> None:
    monkeypatch.setattr(export_module, "BATCH_ROWS", batch_rows)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        ("src", f"K-{n}", start + timedelta(minutes=n), None, "To Do", None, "new")
        for n in range(23)
    ]
    path = tmp_path / "t.parquet"
    assert write_parquet(TRANSITIONS, iter(rows), path, group_rows=5) == 23
    metadata = pq.ParquetFile(path).metadata
    groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert groups == [5, 5, 5, 5, 3]
    table = pq.read_table(path)
    assert [tuple(r.values()) for r in table.to_pylist()] == rows
    with pytest.raises(ValueError, match="group_rows"):
        write_parquet(TRANSITIONS, iter(rows), path, group_rows=0)


def test_an_empty_warehouse_gives_empty_files_with_the_schema(
    tmp_path: Path, warehouse_url: str
) -> None:
    path = tmp_path / "syncd.toml"
    path.write_text(f'[warehouse]\nurl = "{warehouse_url}"\n', encoding="utf-8")
    config = str(path)
    for what, kind in KINDS.items():
        table = export(config, what, "parquet", output=tmp_path / f"{what}.parquet")
        assert table.num_rows == 0
        assert_typed(table, kind)
        assert export(config, what, "jsonl") == []
        assert export(config, what, "csv") == [list(kind.columns)]


def test_the_export_columns_are_the_views(tmp_path: Path, warehouse_url: str) -> None:
    """Each export reads existing view columns; the metrics export has all of its view's."""
    warehouse = Warehouse(warehouse_url)
    inspector = sa.inspect(warehouse.engine)
    for kind in (ITEMS, TRANSITIONS, METRICS):
        view = [c["name"] for c in inspector.get_columns(kind.view)]
        assert {f.source for f in kind.fields} <= set(view)
        if kind is METRICS:
            assert list(kind.columns) == view
    warehouse.close()
