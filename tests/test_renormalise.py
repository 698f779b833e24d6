"""Re-normalising from stored raw pages, end to end against the simulators, on SQLite and
PostgreSQL: a changed mapping rebuilds every item without a single request and leaves the
warehouse a fresh sync with that mapping makes (items, transitions, links, metric facts and
rows); a narrowed scope tombstones what left; a widened scope, pruned raw pages or raw pages
of another version of an item cost a resync of that source only."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from syncd.config import Config, legacy_fingerprint, load_config
from syncd.daemon import Daemon
from syncd.metrics.incremental import update_metrics
from syncd.renormalise import CONFIG_KEY, RESYNC_KEY, assess, config_record
from syncd.simulator.github import GitHubSimulator
from syncd.simulator.gitlab import GitLabSimulator
from syncd.simulator.jira import JiraSimulator
from syncd.warehouse.store import ITEMS, LINKS, RAW, Warehouse
from tests.helpers import cli, run_sync

ANCHOR = datetime(2026, 5, 4, tzinfo=UTC)
CHANGED = ANCHOR + timedelta(hours=1)  # when the simulators' mutations happen
EARLY, LATE = ANCHOR + timedelta(hours=12), ANCHOR + timedelta(days=2)  # metric as-of times
EMAIL, TOKEN = "bot@example.com", "renormalise-token-5e4d3c2b1a"
SOURCE = "src"

#: what a fresh sync and a re-normalised warehouse must hold alike
TABLES = (
    "items",
    "transitions",
    "item_links",
    "metric_items",
    "metric_segments",
    "metric_runs",
    "metric_days",
    "metric_rows",
)
#: columns saying when a row was written, not what it holds: an item's sync time, a metric
#: row's as-of time (rows an incremental update did not touch keep theirs)
_WHEN_WRITTEN = frozenset({"synced_at", "as_of"})


@dataclass(frozen=True)
class Flavour:
    """One tracker as a sync meets it: its simulator, the source's keys (scope and paging,
    `{url}` for the simulator), the mapping it starts with and the one it changes to."""

    name: str
    simulator: Callable[[], AbstractContextManager[Any]]
    source: str
    mapping: str
    remap: str
    #: raw pages the sync must have stored for the test to cover its paths: (URL, params)
    covers: tuple[Callable[[str, dict[str, Any]], bool], ...]
    scenario: Callable[[Any], None] = field(default=lambda sim: None)


def _jira(**options: Any) -> Callable[[], JiraSimulator]:
    def start() -> JiraSimulator:
        email = None if options.get("deployment") == "datacenter" else EMAIL
        return JiraSimulator(
            items=36,
            seed=11,
            anchor=ANCHOR,
            email=email,
            token=TOKEN,
            projects=("DEMO", "OPS"),
            **options,
        )

    return start


JIRA_SOURCE = (
    'kind = "jira"\nurl = "{url}"\nemail_env = "R_EMAIL"\ntoken_env = "R_TOKEN"\n'
    'jql = "project = DEMO"\npage_size = 8\nbatch_size = 8\nchangelog_page_size = 15\n'
)
JIRA_MAPPING = '[sources.stages]\n"Ready for QA" = "waiting"\n'
JIRA_REMAP = (
    'canceled_resolutions = ["Duplicate"]\n'
    '[sources.stages]\n"In Progress" = "waiting"\n"Blocked" = "active"\n'
    '[[sources.flow_types]]\nflow_type = "debt"\nissue_types = ["Bug", "Task"]\n'
    '[[sources.flow_types]]\nflow_type = "feature"\nlabels = ["backend"]\n'
)


def _github(graphql: bool) -> Callable[[], GitHubSimulator]:
    def start() -> GitHubSimulator:
        return GitHubSimulator(
            repos=("acme/web", "acme/api"),
            issues=10,
            pulls=10,
            seed=5,
            anchor=ANCHOR,
            token=TOKEN,
            graphql=graphql,
        )

    return start


def _github_scenario(sim: GitHubSimulator) -> None:
    """An issue whose timeline takes two pages (GraphQL `after:`, REST `page=2`), and a pull
    request that closes an issue."""
    busy = sim.add_issue("acme/web", created=ANCHOR - timedelta(days=30), labels=("bug",))
    for n in range(60):
        at = ANCHOR - timedelta(days=29) + timedelta(hours=n)
        sim.label("acme/web", busy, "in progress", at)
        sim.unlabel("acme/web", busy, "in progress", at + timedelta(minutes=30))
    pull = sim.add_pull("acme/web", created=ANCHOR - timedelta(days=3), body=f"Closes #{busy}")
    sim.request_review("acme/web", pull, "cy", ANCHOR - timedelta(days=2))


GITHUB_SOURCE = (
    'kind = "github"\nurl = "{url}"\ntoken_env = "R_TOKEN"\nrepos = ["acme/web", "acme/api"]\n'
    "per_page = 7\nbatch_size = 5\n"
)
GITHUB_REMAP = (
    'waiting_labels = ["in progress"]\nactive_labels = ["bug"]\n'
    '[sources.stages]\n"review requested" = "active"\n"assigned" = "waiting"\n'
    '[[sources.flow_types]]\nflow_type = "risk"\nlabels = ["enhancement"]\n'
)


def _gitlab() -> GitLabSimulator:
    return GitLabSimulator(
        projects=("acme/web", "acme/api"),
        issues=10,
        merge_requests=10,
        seed=7,
        anchor=ANCHOR,
        token=TOKEN,
    )


def _gitlab_scenario(sim: GitLabSimulator) -> None:
    """Blocking links; a merge request with more than 100 system notes (a second GraphQL
    page); one whose reviewer note shares its second with a label event (read over REST)."""
    start = ANCHOR - timedelta(days=20)
    blocker = sim.add_issue("acme/web", created=start, labels=("type::bug",))
    blocked = sim.add_issue("acme/web", created=start + timedelta(hours=1))
    sim.link_issues(
        "acme/web", blocker, "acme/web", blocked, "blocks", at=start + timedelta(hours=2)
    )
    busy = sim.add_merge_request("acme/web", created=start, draft=True)
    for n in range(105):
        sim.set_draft("acme/web", busy, n % 2 == 1, start + timedelta(hours=3, minutes=n))
    sim.add_reviewer("acme/web", busy, "ana", start + timedelta(days=1))
    tight = sim.add_merge_request("acme/web", created=start)
    at = start + timedelta(hours=5, milliseconds=200)
    sim.add_label("acme/web", "merge_request", tight, "workflow::review", at)
    sim.add_reviewer("acme/web", tight, "bo", at + timedelta(milliseconds=500))


GITLAB_SOURCE = (
    'kind = "gitlab"\nurl = "{url}"\ntoken_env = "R_TOKEN"\nprojects = ["acme/web", "acme/api"]\n'
    "per_page = 7\ngraphql_batch_size = 4\nwork_item_status = true\n"
)
GITLAB_REMAP = (
    'canceled_labels = ["type::bug"]\n'
    '[sources.label_stages]\n"workflow::in review" = "waiting"\n"workflow::blocked" = "active"\n'
    '[sources.stages]\n"in review" = "active"\n"opened" = "active"\n'
    '[[sources.flow_types]]\nflow_type = "risk"\nlabels = ["type::feature"]\n'
)

FLAVOURS = {
    f.name: f
    for f in (
        Flavour(
            "jira-cloud",
            _jira(),
            JIRA_SOURCE,
            JIRA_MAPPING,
            JIRA_REMAP,
            # histories of one batch over several bulkfetch pages
            (lambda url, params: url.endswith("/bulkfetch") and "nextPageToken" in params,),
        ),
        Flavour(
            "jira-cloud-changelog",
            _jira(bulkfetch=False),
            JIRA_SOURCE,
            JIRA_MAPPING,
            JIRA_REMAP,
            (lambda url, params: url.endswith("/changelog"),),
        ),
        Flavour(
            "jira-datacenter",
            _jira(deployment="datacenter", embedded_changelog_limit=3),
            JIRA_SOURCE.replace('email_env = "R_EMAIL"\n', ""),
            JIRA_MAPPING,
            JIRA_REMAP,
            # a truncated embedded changelog, completed with the issue's own
            (lambda url, params: "/rest/api/2/issue/" in url,),
        ),
        Flavour(
            "github-graphql",
            _github(True),
            GITHUB_SOURCE,
            "",
            GITHUB_REMAP,
            (lambda url, params: 'after: "' in str(params.get("query")),),
            _github_scenario,
        ),
        Flavour(
            "github-rest",
            _github(False),
            GITHUB_SOURCE,
            "",
            GITHUB_REMAP,
            (lambda url, params: url.endswith("/timeline") and "page" in params,),
            _github_scenario,
        ),
        Flavour(
            "gitlab-graphql",
            _gitlab,
            GITLAB_SOURCE,
            "",
            GITLAB_REMAP,
            # a second page of one item's notes; the REST notes read when a second is shared
            (
                lambda url, params: bool((params.get("variables") or {}).get("after")),
                lambda url, params: url.endswith("/notes"),
            ),
            _gitlab_scenario,
        ),
        Flavour(
            "gitlab-rest",
            _gitlab,
            GITLAB_SOURCE + "graphql = false\n",
            "",
            GITLAB_REMAP,
            (lambda url, params: url.endswith("/links"),),
            _gitlab_scenario,
        ),
    )
}


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R_EMAIL", EMAIL)
    monkeypatch.setenv("R_TOKEN", TOKEN)


def write(
    tmp_path: Path,
    name: str,
    sim: Any,
    url: str,
    flavour: Flavour,
    mapping: str,
    *,
    source: str | None = None,
    top: str = "",
) -> Config:
    """A config with the flavour's source (or `source`) and `mapping`, which goes last (its
    tables must follow the source's plain keys); `top` goes before the source."""
    keys = (source or flavour.source).format(url=sim.base_url)
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[warehouse]\nurl = "{url}"\n{top}[[sources]]\nname = "{SOURCE}"\n{keys}{mapping}\n',
        encoding="utf-8",
    )
    return load_config(path)


def run(config: Config, warehouse: Warehouse) -> Any:
    """One daemon pass over the source, as `syncd sync` does it."""
    daemon = Daemon(config, warehouse)
    try:
        [result] = daemon.run_once()
    finally:
        daemon.stop()
    assert result is not None and result.status == "ok", result
    return result


def renormalise(config: Config, warehouse: Warehouse) -> Any:
    daemon = Daemon(config, warehouse)
    try:
        result = daemon.renormalise(config.source(SOURCE))
    finally:
        daemon.stop()
    assert result is not None
    return result


def synced_twice(tmp_path: Path, sim: Any, url: str, flavour: Flavour) -> Warehouse:
    """The old mapping's warehouse: a first sync, changes in the tracker, a second sync (so
    raw pages of two runs describe the items), and metric rows as of EARLY."""
    flavour.scenario(sim)
    warehouse = Warehouse(url)
    old = write(tmp_path, "old", sim, url, flavour, flavour.mapping)
    run(old, warehouse)
    assert sim.mutate(6, at=CHANGED)
    assert run(old, warehouse).items >= 1
    update_metrics(warehouse, as_of=EARLY)
    return warehouse


def fresh(
    tmp_path: Path,
    sim: Any,
    flavour: Flavour,
    mapping: str,
    *,
    source: str | None = None,
    top: str = "",
) -> Warehouse:
    """What a first sync with `mapping` makes of the tracker as it is now (SQLite)."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    warehouse = Warehouse(url)
    config = write(tmp_path, "fresh", sim, url, flavour, mapping, source=source, top=top)
    [result] = run_sync(config, warehouse)
    assert result.ok, result.error
    update_metrics(warehouse, as_of=LATE)
    return warehouse


def snapshot(warehouse: Warehouse, *, live: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """TABLES in a stable order; with `live`, items, transitions and links of tombstoned
    items left out."""
    gone: set[str] = set()
    out: dict[str, list[tuple[Any, ...]]] = {}
    with warehouse.engine.connect() as conn:
        if live:
            query = sa.select(ITEMS.c.item_id).where(ITEMS.c.deleted_at.is_not(None))
            gone = set(conn.execute(query).scalars())
        for name in TABLES:
            table = SQLModel.metadata.tables[name]
            columns = [c for c in table.columns if c.name not in _WHEN_WRITTEN]
            order = list(table.primary_key.columns)
            rows = conn.execute(sa.select(*columns).order_by(*order)).all()
            keyed = "item_id" in table.columns and name in ("items", "transitions", "item_links")
            out[name] = [tuple(r) for r in rows if not (keyed and r._mapping["item_id"] in gone)]
    return out


def assert_same(ours: Warehouse, theirs: Warehouse, *, live: bool = False) -> None:
    mine, other = snapshot(ours, live=live), snapshot(theirs, live=live)
    assert mine["items"] and mine["transitions"] and mine["metric_rows"]
    for name in TABLES:
        assert mine[name] == other[name], name


def stored(warehouse: Warehouse, column: str) -> dict[str, Any]:
    with warehouse.engine.connect() as conn:
        rows = conn.execute(sa.select(ITEMS.c.key, ITEMS.c[column]))
        return {r.key: r[1] for r in rows}


# -- a changed mapping -----------------------------------------------------------------


@pytest.mark.parametrize("name", list(FLAVOURS))
def test_a_changed_mapping_is_rebuilt_from_raw_pages_without_requests(
    tmp_path: Path, warehouse_url: str, name: str
) -> None:
    flavour = FLAVOURS[name]
    with flavour.simulator() as sim:
        warehouse = synced_twice(tmp_path, sim, warehouse_url, flavour)
        with warehouse.engine.connect() as conn:
            raws = conn.execute(sa.select(RAW.c.url, RAW.c.params)).all()
        for covered in flavour.covers:
            assert any(covered(r.url, json.loads(r.params)) for r in raws)
        before = stored(warehouse, "flow_type"), stored(warehouse, "stage")
        new = write(tmp_path, "new", sim, warehouse_url, flavour, flavour.remap)
        sim.reset_requests()
        result = renormalise(new, warehouse)
        assert sim.requests == []  # not one request to the tracker
        assert result.status == "ok", result.reason
        assert result.items > 0 and result.skipped == 0 and result.tombstoned == 0
        update_metrics(warehouse, as_of=LATE)
        assert (stored(warehouse, "flow_type"), stored(warehouse, "stage")) != before
        assert_same(warehouse, fresh(tmp_path, sim, flavour, flavour.remap))
        again = renormalise(new, warehouse)  # nothing left to change
        assert again.status == "ok" and again.items == 0 and again.unchanged > 0
        assert warehouse.get_meta(CONFIG_KEY + SOURCE) == config_record(new.source(SOURCE))
        warehouse.close()


@pytest.mark.parametrize("name", ["jira-cloud", "github-graphql", "gitlab-graphql"])
def test_the_daemon_renormalises_between_two_runs(
    tmp_path: Path, warehouse_url: str, name: str
) -> None:
    flavour = FLAVOURS[name]
    with flavour.simulator() as sim:
        warehouse = synced_twice(tmp_path, sim, warehouse_url, flavour)
        old = write(tmp_path, "old", sim, warehouse_url, flavour, flavour.mapping)
        run(old, warehouse)  # settles the cursors on the steady-state question
        sim.reset_requests()
        assert run(old, warehouse).items == 0
        unchanged_run = sorted((r.method, r.path) for r in sim.requests)
        new = write(tmp_path, "new", sim, warehouse_url, flavour, flavour.remap)
        sim.reset_requests()
        result = run(new, warehouse)
        # re-normalised before the run: the run itself is the usual no-change one
        assert result.items == 0
        assert sorted((r.method, r.path) for r in sim.requests) == unchanged_run
        assert warehouse.get_meta(RESYNC_KEY + SOURCE) is None
        update_metrics(warehouse, as_of=LATE)
        assert_same(warehouse, fresh(tmp_path, sim, flavour, flavour.remap))
        warehouse.close()


def test_a_renormalise_cut_short_is_done_again_by_the_next_run(
    tmp_path: Path, warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    flavour = FLAVOURS["jira-cloud"]
    with flavour.simulator() as sim:
        warehouse = synced_twice(tmp_path, sim, warehouse_url, flavour)
        recorded = warehouse.get_meta(CONFIG_KEY + SOURCE)
        before = stored(warehouse, "flow_type")
        new = write(tmp_path, "new", sim, warehouse_url, flavour, flavour.remap)
        monkeypatch.setattr("syncd.renormalise.BATCH", 4)
        original = Warehouse._write_items
        calls = {"n": 0}

        def crashing(self: Warehouse, *args: Any, **kw: Any) -> None:
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt  # like a kill between two batches
            original(self, *args, **kw)

        monkeypatch.setattr(Warehouse, "_write_items", crashing)
        with pytest.raises(KeyboardInterrupt):
            renormalise(new, warehouse)
        monkeypatch.setattr(Warehouse, "_write_items", original)
        assert stored(warehouse, "flow_type") != before  # a first batch was written...
        assert warehouse.get_meta(CONFIG_KEY + SOURCE) == recorded  # ...the change still shows
        sim.reset_requests()
        assert run(new, warehouse).items == 0
        assert not any("bulkfetch" in r.path for r in sim.requests)  # nothing refetched
        update_metrics(warehouse, as_of=LATE)
        assert_same(warehouse, fresh(tmp_path, sim, flavour, flavour.remap))
        warehouse.close()


def test_tombstoned_items_are_remapped_and_stay_tombstoned(
    tmp_path: Path, warehouse_url: str
) -> None:
    flavour = FLAVOURS["jira-cloud"]
    with flavour.simulator() as sim:
        warehouse = synced_twice(tmp_path, sim, warehouse_url, flavour)
        with warehouse.engine.connect() as conn:
            links = conn.execute(sa.select(LINKS.c.item_id, LINKS.c.target_key)).all()
        linked = {r.target_key for r in links} | {
            k for k, i in stored(warehouse, "item_id").items() if i in {r.item_id for r in links}
        }
        # a deleted issue's links vanish from the others without changing them (an incremental
        # sync cannot see that either): one without links keeps the comparison about mapping
        bug = min(
            k
            for k, ft in stored(warehouse, "flow_type").items()
            if ft == "defect" and k not in linked
        )
        sim.delete_issue(bug)
        old = write(tmp_path, "old", sim, warehouse_url, flavour, flavour.mapping)
        daemon = Daemon(old, warehouse)
        reconciled = daemon.reconcile(old.source(SOURCE))
        daemon.stop()
        assert reconciled is not None and reconciled.tombstoned == 1
        deleted_at = stored(warehouse, "deleted_at")[bug]
        new = write(tmp_path, "new", sim, warehouse_url, flavour, flavour.remap)
        sim.reset_requests()
        assert renormalise(new, warehouse).status == "ok" and sim.requests == []
        assert stored(warehouse, "deleted_at")[bug] == deleted_at
        assert stored(warehouse, "flow_type")[bug] == "debt"  # Bug → debt in the new mapping
        update_metrics(warehouse, as_of=LATE)
        assert_same(warehouse, fresh(tmp_path, sim, flavour, flavour.remap), live=True)
        warehouse.close()


# -- scope ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "narrowed", "left"),
    [
        ("github-graphql", 'repos = ["acme/web"]', "acme/api"),
        ("gitlab-graphql", 'projects = ["acme/web"]\nwork_item_status = false', "acme/api"),
    ],
)
def test_a_narrowed_scope_tombstones_what_left_and_remaps_the_rest(
    tmp_path: Path, warehouse_url: str, name: str, narrowed: str, left: str
) -> None:
    flavour = FLAVOURS[name]
    scope_key = narrowed.split(" =", 1)[0]
    source = "\n".join(
        line for line in flavour.source.splitlines() if not line.startswith(scope_key)
    )
    source = source.replace("work_item_status = true", "") + f"\n{narrowed}\n"
    with flavour.simulator() as sim:
        warehouse = synced_twice(tmp_path, sim, warehouse_url, flavour)
        projects = stored(warehouse, "project")
        gone = sorted(k for k, p in projects.items() if p == left)
        new = write(tmp_path, "new", sim, warehouse_url, flavour, flavour.remap, source=source)
        sim.reset_requests()
        result = renormalise(new, warehouse)
        assert sim.requests == []
        assert result.status == "ok" and result.tombstoned == len(gone) > 0
        deleted = stored(warehouse, "deleted_at")
        assert sorted(k for k, at in deleted.items() if at is not None) == gone
        update_metrics(warehouse, as_of=LATE)
        reference = fresh(tmp_path, sim, flavour, flavour.remap, source=source)
        assert_same(warehouse, reference, live=True)
        sim.reset_requests()
        assert run(new, warehouse).items == 0  # the next run is an ordinary one
        assert all(left not in r.path for r in sim.requests)
        warehouse.close()


@pytest.mark.parametrize(
    ("name", "widened"),
    [
        ("github-graphql", ('repos = ["acme/web"]', 'repos = ["acme/web", "acme/api"]')),
        ("jira-cloud", ('jql = "project = DEMO"', 'jql = "project in (DEMO, OPS)"')),
    ],
)
def test_a_widened_scope_resyncs_the_source(
    tmp_path: Path, warehouse_url: str, name: str, widened: tuple[str, str]
) -> None:
    flavour = FLAVOURS[name]
    narrow_source = flavour.source.replace(
        'repos = ["acme/web", "acme/api"]', 'repos = ["acme/web"]'
    )
    wide_source = narrow_source.replace(*widened)
    with flavour.simulator() as sim:
        warehouse = Warehouse(warehouse_url)
        old = write(tmp_path, "old", sim, warehouse_url, flavour, "", source=narrow_source)
        before = run(old, warehouse).items
        new = write(tmp_path, "new", sim, warehouse_url, flavour, "", source=wide_source)
        assert assess(warehouse.get_meta(CONFIG_KEY + SOURCE), new.source(SOURCE)).action == (
            "resync"
        )
        result = run(new, warehouse)
        reference = fresh(tmp_path, sim, flavour, "", source=wide_source)
        everything = len(stored(reference, "key"))
        assert everything > before
        assert result.items == everything  # every item fetched again, the old ones too
        assert warehouse.get_meta(RESYNC_KEY + SOURCE) is None  # resynced and reconciled
        update_metrics(warehouse, as_of=LATE)
        assert_same(warehouse, reference)
        warehouse.close()


# -- raw pages that cannot serve ----------------------------------------------------------


@pytest.mark.parametrize("pruned", ["all", "first-run"])
def test_missing_raw_pages_resync_the_source(
    tmp_path: Path, warehouse_url: str, pruned: str
) -> None:
    flavour = FLAVOURS["jira-cloud"]
    with flavour.simulator() as sim:
        warehouse = synced_twice(tmp_path, sim, warehouse_url, flavour)
        first_run = warehouse.runs(SOURCE)[0]["run_id"]
        with warehouse.begin() as conn:
            query = RAW.delete().where(RAW.c.source == SOURCE)
            if pruned == "first-run":  # what raw_retention_days does to old pages
                query = query.where(RAW.c.run_id == first_run)
            conn.execute(query)
        new = write(tmp_path, "new", sim, warehouse_url, flavour, flavour.remap)
        sim.reset_requests()
        result = renormalise(new, warehouse)
        assert result.status == "resync" and "no raw pages" in str(result.reason)
        assert sim.requests == []  # deciding needs no request either
        assert warehouse.get_meta(RESYNC_KEY + SOURCE) is not None
        everything = len(stored(warehouse, "key"))
        assert run(new, warehouse).items == everything  # the resync
        update_metrics(warehouse, as_of=LATE)
        assert_same(warehouse, fresh(tmp_path, sim, flavour, flavour.remap))
        warehouse.close()


def test_raw_pages_of_another_version_resync_the_source(tmp_path: Path, warehouse_url: str) -> None:
    """Raw pages older than the stored item (its newer pages lost) do not describe it."""
    flavour = FLAVOURS["jira-cloud"]
    with flavour.simulator() as sim:
        warehouse = synced_twice(tmp_path, sim, warehouse_url, flavour)
        second_run = warehouse.runs(SOURCE)[1]["run_id"]
        with warehouse.begin() as conn:
            conn.execute(RAW.delete().where(RAW.c.run_id == second_run))
        new = write(tmp_path, "new", sim, warehouse_url, flavour, flavour.remap)
        result = renormalise(new, warehouse)
        assert result.status == "resync" and "describe it as updated at" in str(result.reason)
        warehouse.close()


def test_the_cli_renormalises_and_names_what_it_cannot(tmp_path: Path, warehouse_url: str) -> None:
    flavour = FLAVOURS["jira-cloud"]
    with flavour.simulator() as sim:
        warehouse = synced_twice(tmp_path, sim, warehouse_url, flavour)
        new = write(tmp_path, "new", sim, warehouse_url, flavour, flavour.remap)
        sim.reset_requests()
        code, out = cli(["renormalise", "-c", str(new.path), "--source", SOURCE])
        assert code == 0, out
        assert out.startswith(f"{SOURCE}: ok — ") and "no tracker requests" in out
        assert "metrics: incremental update" in out and sim.requests == []
        with warehouse.begin() as conn:
            conn.execute(RAW.delete())
        code, out = cli(["renormalise", "-c", str(new.path)])
        assert code == 1 and f"{SOURCE}: RESYNC NEEDED" in out and "no raw pages" in out
        assert warehouse.get_meta(RESYNC_KEY + SOURCE) is not None
        warehouse.close()


# -- what a change costs ------------------------------------------------------------------


def _source(tmp_path: Path, keys: str) -> Any:
    path = tmp_path / "assess.toml"
    path.write_text(f'[[sources]]\nname = "{SOURCE}"\n{keys}\n', encoding="utf-8")
    return load_config(path).source(SOURCE)


JIRA = 'kind = "jira"\nurl = "https://acme.atlassian.net"\njql = "project = DEMO"\n'
GITHUB = 'kind = "github"\nrepos = ["acme/web", "acme/api"]\norgs = ["tools"]\n'
GITLAB = 'kind = "gitlab"\ngroups = ["grp"]\nprojects = ["other/x"]\nwork_item_status = true\n'


@pytest.mark.parametrize(
    ("before", "after", "action"),
    [
        (JIRA, JIRA + "page_size = 50\nevery = '5m'", "none"),  # operational keys
        (JIRA, JIRA + 'value_stream = "Shop"', "none"),  # moved by the value streams
        (JIRA, JIRA + '[sources.stages]\n"Blocked" = "waiting"', "renormalise"),
        (JIRA, JIRA + 'canceled_resolutions = ["Declined"]', "renormalise"),
        (JIRA, JIRA.replace("DEMO", "SHOP"), "resync"),
        (JIRA, JIRA.replace("acme", "other"), "resync"),
        (GITHUB, GITHUB.replace(', "acme/api"', ""), "renormalise"),
        # an organisation replaced by one of its repositories
        (GITHUB, 'kind = "github"\nrepos = ["acme/web", "acme/api", "tools/cli"]', "renormalise"),
        (GITHUB, GITHUB + 'waiting_labels = ["parked"]', "renormalise"),
        (GITHUB, GITHUB.replace('"acme/api"', '"acme/api", "acme/docs"'), "resync"),
        (GITHUB, GITHUB + "include_archived = true", "resync"),
        (GITLAB, GITLAB.replace('["grp"]', '["grp/sub"]'), "renormalise"),
        (GITLAB, GITLAB.replace("true", "false"), "renormalise"),
        (GITLAB.replace("true", "false"), GITLAB, "resync"),
        (GITLAB, GITLAB.replace('["grp"]', '["grp", "more"]'), "resync"),
    ],
)
def test_what_a_change_of_configuration_costs(
    tmp_path: Path, before: str, after: str, action: str
) -> None:
    old, new = _source(tmp_path, before), _source(tmp_path, after)
    change = assess(config_record(old), new)
    assert change.action == action, change.reason
    assert assess(config_record(new), new).action == "none"


def test_a_narrowing_says_which_projects_left(tmp_path: Path) -> None:
    github = assess(
        config_record(_source(tmp_path, GITHUB)),
        _source(tmp_path, 'kind = "github"\nrepos = ["acme/web", "tools/cli"]'),
    )
    assert github.action == "renormalise" and github.left is not None
    assert [github.left(p) for p in ("acme/web", "ACME/API", "tools/cli", "tools/x", "z/y")] == [
        False,
        True,
        False,
        True,
        False,  # never held by name or organisation: not ours to decide
    ]
    gitlab = assess(
        config_record(_source(tmp_path, GITLAB)),
        _source(tmp_path, GITLAB.replace('["grp"]', '["grp/sub"]').replace('["other/x"]', "[]")),
    )
    assert gitlab.action == "renormalise" and gitlab.left is not None
    assert [gitlab.left(p) for p in ("grp/sub/a", "grp/b", "other/x", "shared/y")] == [
        False,
        True,
        True,
        False,  # shared into the group, not under its path: the reconciliation decides
    ]


def test_a_record_of_the_older_form_is_recognised(tmp_path: Path) -> None:
    source = _source(tmp_path, JIRA)
    # the same configuration, but items an older syncd wrote: rebuilt where raw pages allow
    assert assess(legacy_fingerprint(source), source).action == "upgrade"
    record = json.loads(config_record(source))
    del record["parser"]
    assert assess(json.dumps(record, sort_keys=True), source).action == "upgrade"
    assert assess(config_record(source), source).action == "none"
    changed = _source(tmp_path, JIRA + '[sources.stages]\n"Blocked" = "waiting"')
    assert assess(legacy_fingerprint(source), changed).action == "resync"
    assert assess(None, source).action == "none"
    assert json.loads(config_record(source))["scope"]["jql"] == "project = DEMO"


@pytest.mark.parametrize(
    ("name", "streams"),
    [
        # a scope by project: assigned again from the rebuilt items
        ("github-graphql", '{ source = "src", projects = ["acme/api"] }'),
        # a JQL scope only Jira can evaluate: the stored assignment is kept, nothing is asked
        ("jira-cloud", '{ source = "src", jql = "key in (DEMO-1, DEMO-3)" }'),
    ],
)
def test_value_streams_survive_a_renormalise_without_requests(
    tmp_path: Path, warehouse_url: str, name: str, streams: str
) -> None:
    flavour = FLAVOURS[name]
    top = f'[[value_streams]]\nname = "Picked"\nscopes = [{streams}]\n'
    with flavour.simulator() as sim:
        warehouse = Warehouse(warehouse_url)
        old = write(tmp_path, "old", sim, warehouse_url, flavour, flavour.mapping, top=top)
        run(old, warehouse)
        picked = {k for k, vs in stored(warehouse, "value_stream").items() if vs == "Picked"}
        assert picked
        new = write(tmp_path, "new", sim, warehouse_url, flavour, flavour.remap, top=top)
        sim.reset_requests()
        result = renormalise(new, warehouse)
        assert result.status == "ok" and result.items > 0 and sim.requests == []
        assert {k for k, vs in stored(warehouse, "value_stream").items() if vs == "Picked"} == (
            picked
        )
        update_metrics(warehouse, as_of=LATE)
        assert_same(warehouse, fresh(tmp_path, sim, flavour, flavour.remap, top=top))
        warehouse.close()


def _older_syncd(warehouse: Warehouse, source: Any) -> None:
    """Make the warehouse look written by the previous release: no labels kept, and the
    configuration recorded in its older form."""
    with warehouse.begin() as conn:
        conn.execute(ITEMS.update().values(labels="[]"))
        warehouse.set_meta(conn, CONFIG_KEY + SOURCE, legacy_fingerprint(source))


def test_items_of_an_older_syncd_get_their_labels_from_the_raw_pages(
    tmp_path: Path, warehouse_url: str
) -> None:
    flavour = FLAVOURS["jira-cloud"]
    with flavour.simulator() as sim:
        warehouse = synced_twice(tmp_path, sim, warehouse_url, flavour)
        labels = stored(warehouse, "labels")
        assert any(json.loads(v) for v in labels.values())
        old = write(tmp_path, "old", sim, warehouse_url, flavour, flavour.mapping)
        _older_syncd(warehouse, old.source(SOURCE))
        sim.reset_requests()
        run(old, warehouse)  # upgraded before the run, from the raw pages
        assert stored(warehouse, "labels") == labels
        assert not any("changelog" in r.path for r in sim.requests)  # nothing refetched
        assert warehouse.get_meta(RESYNC_KEY + SOURCE) is None
        assert warehouse.get_meta(CONFIG_KEY + SOURCE) == config_record(old.source(SOURCE))
        warehouse.close()


def test_an_upgrade_without_raw_pages_keeps_the_items_and_does_not_resync(
    tmp_path: Path, warehouse_url: str
) -> None:
    flavour = FLAVOURS["jira-cloud"]
    with flavour.simulator() as sim:
        warehouse = synced_twice(tmp_path, sim, warehouse_url, flavour)
        old = write(tmp_path, "old", sim, warehouse_url, flavour, flavour.mapping)
        _older_syncd(warehouse, old.source(SOURCE))
        with warehouse.begin() as conn:
            conn.execute(RAW.delete().where(RAW.c.source == SOURCE))
        sim.reset_requests()
        assert run(old, warehouse).items == 0  # the usual no-change run, no resync
        assert warehouse.get_meta(RESYNC_KEY + SOURCE) is None
        assert warehouse.get_meta(CONFIG_KEY + SOURCE) == config_record(old.source(SOURCE))
        assert all(v == "[]" for v in stored(warehouse, "labels").values())
        warehouse.close()
