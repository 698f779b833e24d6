"""Value streams: config validation, first-match assignment, JQL scopes asked of Jira, and
reassignment of stored items when the value stream configuration changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncd.config import load_config
from syncd.contract import Cursor, Page
from syncd.domain import FlowItem, Stage, Transition
from syncd.errors import ConfigError
from syncd.metrics.incremental import compute_in_memory, stored_rows, update_metrics
from syncd.simulator.jira import JiraSimulator
from syncd.streams import ValueStreamConfig, ValueStreams, target_fields, with_targets
from syncd.warehouse.store import ITEMS, STREAMS, TARGETS, Warehouse
from tests.helpers import cli, jira_toml, run_sync

ANCHOR = datetime(2026, 6, 1, tzinfo=UTC)
EMAIL, TOKEN = "bot@example.com", "sim-token-streams"


def _streams(*defs: dict[str, object], fallbacks: dict[str, str] | None = None) -> ValueStreams:
    return ValueStreams(
        [ValueStreamConfig.model_validate(d) for d in defs], fallbacks or {"jira": "jira"}
    )


def _item(item_id: str, project: str, labels: list[str], source: str = "jira") -> FlowItem:
    at = datetime(2026, 1, 5, tzinfo=UTC)
    return FlowItem(
        source=source,
        id=item_id,
        key=f"{project}-{item_id}",
        kind="issue",
        title="t",
        project=project,
        flow_type="feature",
        value_stream=source,
        stage=Stage.NEW,
        state="To Do",
        created_at=at,
        updated_at=at,
        transitions=[Transition(at, None, "To Do", None, Stage.NEW)],
        labels=labels,
    )


# -- assignment rules -------------------------------------------------------------------------


def test_first_configured_stream_wins_and_unclaimed_items_fall_back() -> None:
    streams = _streams(
        {"name": "Payments", "scopes": [{"source": "jira", "labels": ["payments"]}]},
        {"name": "Shop", "scopes": [{"source": "jira", "projects": ["shop"]}]},
        {"name": "Web", "scopes": [{"source": "gh", "projects": ["acme/web"]}]},
        fallbacks={"jira": "Legacy", "gh": "gh"},
    )
    # both Payments and Shop claim it: config order decides
    assert streams.stream_of("jira", "SHOP", ["Payments"]) == "Payments"
    assert streams.stream_of("jira", "SHOP", ["ui"]) == "Shop"
    assert streams.stream_of("jira", "OPS", []) == "Legacy"  # the source's value_stream
    assert streams.stream_of("gh", "Acme/Web", []) == "Web"  # case-insensitive
    assert streams.stream_of("gh", "acme/api", []) == "gh"  # the source's name
    assert streams.stream_of("other", "acme/web", []) == "other"  # scopes name their source


def test_keys_of_one_scope_must_all_match() -> None:
    streams = _streams(
        {"name": "Risky", "scopes": [{"source": "jira", "projects": ["OPS"], "labels": ["sec"]}]}
    )
    assert streams.stream_of("jira", "OPS", ["sec", "x"]) == "Risky"
    assert streams.stream_of("jira", "OPS", ["x"]) == "jira"
    assert streams.stream_of("jira", "WEB", ["sec"]) == "jira"


class _Matcher:
    """A JqlMatcher answering from a fixed set, counting calls."""

    def __init__(self, hits: set[str]) -> None:
        self.hits = hits
        self.calls: list[tuple[str, list[str] | None]] = []

    def matching(self, jql: str, ids: list[str] | None) -> set[str]:
        self.calls.append((jql, None if ids is None else list(ids)))
        return set(self.hits if ids is None else self.hits & set(ids))


def test_jql_scopes_are_asked_once_per_page_and_query() -> None:
    streams = _streams(
        {"name": "Hot", "scopes": [{"source": "jira", "jql": "priority = Highest"}]},
        {"name": "Rest", "scopes": [{"source": "jira"}]},
    )
    matcher = _Matcher({"2"})
    items = [_item("1", "SHOP", []), _item("2", "SHOP", []), _item("3", "SHOP", [])]
    out = streams.assign("jira", items, matcher)
    assert [i.value_stream for i in out] == ["Rest", "Hot", "Rest"]
    assert matcher.calls == [("priority = Highest", ["1", "2", "3"])]
    # without a matcher (e.g. a connector that is not Jira) no item matches a JQL scope
    assert [i.value_stream for i in streams.assign("jira", items, None)] == ["Rest"] * 3


def test_fingerprint_follows_assignment_rules_not_targets() -> None:
    base = {"name": "A", "scopes": [{"source": "jira", "projects": ["X"]}]}
    one = _streams(base)
    assert (
        one.fingerprint() == _streams({**base, "target_distribution": {"debt": 0.2}}).fingerprint()
    )
    assert one.fingerprint() != _streams({**base, "name": "B"}).fingerprint()
    assert one.fingerprint() != _streams(base, fallbacks={"jira": "Other"}).fingerprint()


# -- config -----------------------------------------------------------------------------------


def test_config_errors_name_every_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        """
[[sources]]
name = "gh"
kind = "github"
url = "https://api.github.com"
repos = ["acme/web"]

[[value_streams]]
name = "A"
scopes = [{ source = "nope" }, { source = "gh", jql = "project = X" }]
target_distribution = { feature = 0.7, defect = 0.4 }

[[value_streams]]
name = "B"
scopes = [{ source = "gh" }]
target_distribution = { features = 0.5 }

[[value_streams]]
name = "B"
scopes = [{ source = "gh", projects = ["acme/web"] }]
""",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "value_streams.0.target_distribution" in text.replace("[0]", ".0") or (
        "value_streams[0].target_distribution" in text
    )
    assert "shares sum to 1.1" in text
    assert "unknown flow type 'features'" in text
    # the source checks need valid streams: they run on a file whose streams parse
    path.write_text(
        path.read_text(encoding="utf-8")
        .replace("defect = 0.4", "defect = 0.2")
        .replace("features", "feature"),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "value_streams[0].scopes[0].source: no source named 'nope' (configured: gh)" in text
    assert "value_streams[0].scopes[1].jql: JQL needs a Jira source; 'gh' is github" in text
    assert "value_streams[2].name: duplicate value stream 'B'" in text


# -- targets ----------------------------------------------------------------------------------


def test_target_fields_are_actual_minus_target_in_share_points() -> None:
    targets = {"VS": {"feature": 0.6, "defect": 0.2, "debt": 0.2}}
    dist = {"feature": 0.5, "defect": 0.25, "risk": 0.25}
    whole = target_fields("VS", "all", dist, 4, 4, targets)
    assert whole["target_distribution"] == targets["VS"]
    deviation = whole["distribution_deviation"]
    assert isinstance(deviation, dict)
    assert deviation == pytest.approx({"feature": -0.1, "defect": 0.05, "debt": -0.2})
    feature = target_fields("VS", "feature", None, 2, 4, targets)
    assert feature["distribution_share"] == 0.5 and feature["deviation"] == pytest.approx(-0.1)
    risk = target_fields("VS", "risk", None, 1, 4, targets)
    assert risk["target_share"] is None and risk["deviation"] is None  # no target for risk
    empty = target_fields("VS", "feature", None, 0, 0, targets)
    assert empty["distribution_share"] is None and empty["deviation"] is None
    assert target_fields("Other", "all", dist, 4, 4, targets)["target_distribution"] is None


# -- end to end with the Jira simulator ---------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[JiraSimulator]:
    with JiraSimulator(items=60, seed=11, anchor=ANCHOR, email=EMAIL, token=TOKEN) as s:
        yield s


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_EMAIL", EMAIL)
    monkeypatch.setenv("SIM_TOKEN", TOKEN)


def _config(tmp_path: Path, url: str, warehouse_url: str, streams: str) -> Path:
    return jira_toml(
        tmp_path / "syncd.toml",
        url,
        warehouse_url,
        email_env="SIM_EMAIL",
        token_env="SIM_TOKEN",
        source=f"page_size = 20\nbatch_size = 20\n{streams}",
    )


def _assigned(warehouse: Warehouse) -> dict[str, str]:
    with warehouse.engine.connect() as conn:
        return dict(conn.execute(sa.select(ITEMS.c.key, ITEMS.c.value_stream)).all())


def _labels(warehouse: Warehouse) -> dict[str, list[str]]:
    with warehouse.engine.connect() as conn:
        rows = conn.execute(sa.select(ITEMS.c.key, ITEMS.c.labels)).all()
    return {key: json.loads(text) for key, text in rows}


def test_jira_jql_and_label_scopes_end_to_end_and_reassignment(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str
) -> None:
    hot = sorted(sim.keys)[:7]
    streams = f"""
[[value_streams]]
name = "Hot"
scopes = [{{ source = "jira", jql = "key in ({", ".join(hot)})" }}]
target_distribution = {{ feature = 0.5, defect = 0.3, debt = 0.2 }}

[[value_streams]]
name = "Labelled"
scopes = [{{ source = "jira", labels = ["{_a_label(sim)}"] }}]
"""
    path = _config(tmp_path, sim.base_url, warehouse_url, streams)
    config = load_config(path)
    warehouse = Warehouse(warehouse_url)
    [result] = run_sync(config, warehouse)
    assert result.ok, result.error
    pages = -(-60 // 20)
    id_queries = [r for r in sim.requests if "key in" in json.dumps(r.body or {})]
    assert len(id_queries) == pages  # one ids-only question per page of changed issues

    label = _a_label(sim)
    labels = _labels(warehouse)
    expected = {
        key: "Hot" if key in hot else ("Labelled" if label in labels[key] else "jira")
        for key in sim.keys
    }
    assert _assigned(warehouse) == expected
    assert {k for k, v in labels.items() if v} and all(
        labels[k] == sim.issue_labels(k) for k in sim.keys
    )

    # the value streams are rewritten by `syncd metrics`, with their targets
    code, out = cli(["metrics", "-c", str(path), "--format", "json", "--period", "month"])
    assert code == 0
    rows = json.loads(out)
    hot_all = [r for r in rows if r["value_stream"] == "Hot" and r["flow_type"] == "all"]
    assert hot_all and all(r["target_distribution"] for r in hot_all)
    with warehouse.engine.connect() as conn:
        names = conn.execute(
            sa.select(STREAMS.c.name, STREAMS.c.configured).order_by(STREAMS.c.position)
        ).all()
        shares = dict(
            conn.execute(
                sa.select(TARGETS.c.flow_type, TARGETS.c.share).where(
                    TARGETS.c.value_stream == "Hot"
                )
            ).all()
        )
    assert [tuple(n) for n in names][:2] == [("Hot", True), ("Labelled", True)]
    assert shares == {"feature": 0.5, "defect": 0.3, "debt": 0.2}

    # swap the order: items in both move to the first; one ids listing per JQL scope, no
    # issue is fetched again
    swapped = streams.split("[[value_streams]]")
    path.write_text(
        path.read_text(encoding="utf-8").replace(
            streams, "[[value_streams]]" + swapped[2] + "[[value_streams]]" + swapped[1]
        ),
        encoding="utf-8",
    )
    before = len(sim.requests)
    [result] = run_sync(load_config(path), warehouse)
    assert result.ok, result.error
    expected = {
        key: "Labelled" if label in labels[key] else ("Hot" if key in hot else "jira")
        for key in sim.keys
    }
    assert _assigned(warehouse) == expected
    new = sim.requests[before:]
    assert not any("changelog" in r.path for r in new)
    assert sum("key in" in json.dumps(r.body or {}) for r in new) == 1

    # stored metric rows follow the moved items: equal to a full recompute
    as_of = ANCHOR + timedelta(days=1)
    update_metrics(warehouse, as_of=as_of)
    for stream in ("Hot", "Labelled", "jira"):
        stored = [r.to_json() for r in stored_rows(warehouse, kind="month", value_stream=stream)]
        full = [
            r.to_json()
            for r in compute_in_memory(warehouse, kind="month", as_of=as_of, value_stream=stream)
        ]
        assert stored == full, stream


def _a_label(sim: JiraSimulator) -> str:
    """The label most issues of the simulator carry (so the scope claims several)."""
    counts: dict[str, int] = {}
    for key in sim.keys:
        for label in sim.issue_labels(key):
            counts[label] = counts.get(label, 0) + 1
    return max(sorted(counts), key=lambda name: counts[name])


def _commit(warehouse: Warehouse, items: list[FlowItem], now: datetime) -> None:
    page = Page(items=items, cursor=Cursor(None, {}), raws=[])
    warehouse.commit_page(source="jira", stream="issues", run_id="r", page=page, now=now)


def test_tombstoned_items_move_without_coming_back(tmp_path: Path, warehouse_url: str) -> None:
    warehouse = Warehouse(warehouse_url)
    items = [_item("1", "SHOP", ["a"]), _item("2", "SHOP", ["b"])]
    _commit(warehouse, items, ANCHOR)
    warehouse.reconcile("jira", {"1"}, ANCHOR)
    streams = _streams({"name": "Shop", "scopes": [{"source": "jira", "projects": ["SHOP"]}]})
    from syncd.streams import reassign_source

    assert reassign_source(warehouse, streams, "jira", None) == 2
    assert reassign_source(warehouse, streams, "jira", None) is None  # nothing changed since
    with warehouse.engine.connect() as conn:
        rows = conn.execute(
            sa.select(ITEMS.c.item_id, ITEMS.c.value_stream, ITEMS.c.deleted_at, ITEMS.c.synced_at)
        ).all()
    by = {r.item_id: r for r in rows}
    assert by["1"].value_stream == by["2"].value_stream == "Shop"
    assert by["2"].deleted_at is not None and by["1"].deleted_at is None
    assert by["1"].synced_at == ANCHOR  # moved, not synced: a resync still refetches it


def test_metrics_records_carry_targets(tmp_path: Path) -> None:
    # with_targets on rows of two flow types: the per-type share is its part of the velocity
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    at = datetime(2026, 3, 2, tzinfo=UTC)
    finished = []
    for n, flow_type in enumerate(["feature", "feature", "defect", "debt"]):
        item = _item(str(n), "SHOP", [])
        item.flow_type = flow_type
        item.transitions = [
            Transition(at, None, "To Do", None, Stage.NEW),
            Transition(at + timedelta(days=1), "To Do", "In Progress", Stage.NEW, Stage.ACTIVE),
            Transition(at + timedelta(days=3), "In Progress", "Done", Stage.ACTIVE, Stage.DONE),
        ]
        item.stage, item.value_stream = Stage.DONE, "Shop"
        finished.append(item)
    _commit(warehouse, finished, at)
    rows = compute_in_memory(warehouse, kind="month", as_of=at + timedelta(days=10))
    records = with_targets(rows, {"Shop": {"feature": 0.6, "defect": 0.3, "debt": 0.1}})
    by = {r["flow_type"]: r for r in records if r["period_start"] == "2026-03-01"}
    assert by["feature"]["distribution_share"] == 0.5
    assert by["feature"]["deviation"] == pytest.approx(-0.1)
    assert by["defect"]["deviation"] == pytest.approx(-0.05)
    assert by["debt"]["deviation"] == pytest.approx(0.15)
    assert by["risk"]["distribution_share"] == 0.0 and by["risk"]["target_share"] is None
    assert by["all"]["distribution_deviation"] == pytest.approx(
        {"feature": -0.1, "defect": -0.05, "debt": 0.15}
    )
