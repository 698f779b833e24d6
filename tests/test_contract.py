"""The connector contract suite: the same guarantees, proven for every registered connector
against its simulator — pagination ends, a re-run is idempotent, an interrupted stream resumes
without loss or duplicates, changes are picked up, and no secret shows in a repr.

A connector joins by adding a harness to HARNESSES; a registered connector without one fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from syncd.config import Config, HttpConfig, load_config
from syncd.export import iter_items, iter_transitions
from syncd.http import HttpClient
from syncd.registry import installed_kinds
from syncd.sync import make_connector, sync_all
from syncd.warehouse.store import Warehouse

ANCHOR = datetime(2026, 3, 1, tzinfo=UTC)
SECRET = "contract-secret-0a1b2c3d4e"


@dataclass
class Running:
    """A simulator serving one source: the TOML of that source, how many items it holds, and
    a way to make `n` of them change."""

    source_toml: str
    items: int
    mutate: Callable[[int], int]


Harness = Callable[[dict[str, str]], AbstractContextManager[Running]]


@contextmanager
def jira(env: dict[str, str]) -> Iterator[Running]:
    from syncd.simulator.jira import JiraSimulator

    env.update(CONTRACT_EMAIL="c@example.com", CONTRACT_TOKEN=SECRET)
    with JiraSimulator(
        items=45, seed=13, anchor=ANCHOR, email="c@example.com", token=SECRET
    ) as sim:
        yield Running(
            source_toml=f'kind = "jira"\nurl = "{sim.base_url}"\nemail_env = "CONTRACT_EMAIL"\n'
            f'token_env = "CONTRACT_TOKEN"\njql = "project = DEMO"\n'
            f"page_size = 10\nbatch_size = 10\n",
            items=45,
            mutate=lambda n: len(sim.mutate(n)),
        )


@contextmanager
def github(env: dict[str, str]) -> Iterator[Running]:
    from syncd.simulator.github import GitHubSimulator

    env.update(CONTRACT_TOKEN=SECRET)
    with GitHubSimulator(
        repos=("acme/web",), issues=25, pulls=20, seed=13, anchor=ANCHOR, token=SECRET
    ) as sim:
        yield Running(
            source_toml=f'kind = "github"\nurl = "{sim.base_url}"\n'
            f'token_env = "CONTRACT_TOKEN"\nrepos = ["acme/web"]\n'
            f"per_page = 10\nbatch_size = 10\n",
            items=45,
            mutate=lambda n: len(sim.mutate(n)),
        )


@contextmanager
def gitlab(env: dict[str, str]) -> Iterator[Running]:
    from syncd.simulator.gitlab import GitLabSimulator

    env.update(CONTRACT_TOKEN=SECRET)
    with GitLabSimulator(
        projects=("acme/web",), issues=25, merge_requests=20, seed=13, anchor=ANCHOR, token=SECRET
    ) as sim:
        yield Running(
            source_toml=f'kind = "gitlab"\nurl = "{sim.base_url}"\n'
            f'token_env = "CONTRACT_TOKEN"\nprojects = ["acme/web"]\n'
            f"per_page = 10\n",
            items=45,
            mutate=lambda n: len(sim.mutate(n)),
        )


HARNESSES: dict[str, Harness] = {"jira": jira, "github": github, "gitlab": gitlab}


def _config(tmp_path: Path, running: Running, warehouse_url: str, name: str) -> Config:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[warehouse]\nurl = "{warehouse_url}"\n[[sources]]\nname = "src"\n{running.source_toml}',
        encoding="utf-8",
    )
    return load_config(path)


def _sync(config: Config, warehouse: Warehouse, **kw: Any) -> Any:
    with HttpClient(
        HttpConfig(backoff_initial=0.01, backoff_max=0.02), sleep=lambda s: None
    ) as http:
        [result] = sync_all(config, warehouse, http, **kw)
    return result


def _snapshot(warehouse: Warehouse) -> tuple[str, str]:
    items = [{k: v for k, v in i.items()} for i in iter_items(warehouse)]
    return (
        json.dumps(items, sort_keys=True),
        json.dumps(list(iter_transitions(warehouse)), sort_keys=True),
    )


def test_every_registered_connector_has_a_harness() -> None:
    assert set(installed_kinds()) <= set(HARNESSES), (
        "add a harness to tests/test_contract.py for every connector"
    )


@pytest.fixture(params=sorted(HARNESSES))
def running(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    env: dict[str, str] = {}
    with HARNESSES[request.param](env) as sim:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield sim


def test_first_sync_pages_to_the_end(running: Running, tmp_path: Path, warehouse_url: str) -> None:
    config = _config(tmp_path, running, warehouse_url, "a")
    warehouse = Warehouse(warehouse_url)
    result = _sync(config, warehouse)
    assert result.ok, result.error
    assert result.items == running.items and result.pages > 1
    assert len(list(iter_items(warehouse))) == running.items
    for stream in make_connector(config.sources[0], HttpClient()).streams():
        cursor = warehouse.get_cursor("src", stream)
        assert cursor is not None and cursor.watermark is not None


def test_rerun_is_idempotent(running: Running, tmp_path: Path, warehouse_url: str) -> None:
    config = _config(tmp_path, running, warehouse_url, "a")
    warehouse = Warehouse(warehouse_url)
    _sync(config, warehouse)
    before = _snapshot(warehouse)
    again = _sync(config, warehouse)
    assert again.ok and again.items == 0
    assert _snapshot(warehouse) == before


def test_changes_are_picked_up(running: Running, tmp_path: Path, warehouse_url: str) -> None:
    config = _config(tmp_path, running, warehouse_url, "a")
    warehouse = Warehouse(warehouse_url)
    _sync(config, warehouse)
    changed = running.mutate(4)
    result = _sync(config, warehouse)
    assert result.ok and changed <= result.items < running.items
    reference = Warehouse(f"sqlite:///{tmp_path / 'fresh.db'}")
    _sync(_config(tmp_path, running, f"sqlite:///{tmp_path / 'fresh.db'}", "b"), reference)
    assert _snapshot(warehouse) == _snapshot(reference)


def test_interrupted_stream_resumes_without_loss_or_duplicates(
    running: Running, tmp_path: Path, warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, running, warehouse_url, "a")
    warehouse = Warehouse(warehouse_url)
    original = Warehouse.commit_page
    calls = {"n": 0}

    def crash_on_second(self: Warehouse, **kw: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, **kw)

    monkeypatch.setattr(Warehouse, "commit_page", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        _sync(config, warehouse)
    monkeypatch.setattr(Warehouse, "commit_page", original)
    first = len(list(iter_items(warehouse)))
    assert 0 < first < running.items
    resumed = _sync(config, warehouse)
    assert resumed.ok and resumed.items == running.items - first
    reference = Warehouse(f"sqlite:///{tmp_path / 'fresh.db'}")
    _sync(_config(tmp_path, running, f"sqlite:///{tmp_path / 'fresh.db'}", "b"), reference)
    assert _snapshot(warehouse) == _snapshot(reference)


def test_no_secret_in_reprs(running: Running, tmp_path: Path) -> None:
    config = _config(tmp_path, running, f"sqlite:///{tmp_path / 'w.db'}", "a")
    http = HttpClient()
    connector = make_connector(config.sources[0], http)
    for thing in (connector, config, config.sources[0], http, vars(connector)):
        assert SECRET not in repr(thing)
