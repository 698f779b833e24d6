"""Bad input from the tracker: malformed pages, 5xx, broken records. Traffic goes through
httpx.MockTransport to the simulator's in-process handler, with faults injected on the way."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.config import Config, HttpConfig, load_config
from syncd.export import iter_items, iter_transitions
from syncd.http import HttpClient
from syncd.simulator.jira import JiraSimulator
from syncd.sync import SourceResult, sync_all
from syncd.warehouse.store import Warehouse

ANCHOR = datetime(2026, 4, 1, tzinfo=UTC)
BASE = "http://jira.invalid"

Fault = Callable[[httpx.Request, int, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]


def transport(sim: JiraSimulator, fault: Fault | None = None) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        target = request.url.raw_path.decode()
        status, headers, body = sim.handle(
            request.method, target, dict(request.headers), request.content
        )
        if fault is not None:
            status, headers, body = fault(request, status, headers, body)
        return httpx.Response(status, headers=headers, content=body)

    return httpx.MockTransport(handler)


def config(tmp_path: Path, warehouse_url: str) -> Config:
    path = tmp_path / "syncd.toml"
    path.write_text(
        f"""
[warehouse]
url = "{warehouse_url}"
[[sources]]
name = "j"
kind = "jira"
url = "{BASE}"
deployment = "cloud"
jql = "project = DEMO"
page_size = 20
batch_size = 20
""",
        encoding="utf-8",
    )
    return load_config(path)


def sync(cfg: Config, warehouse: Warehouse, t: httpx.MockTransport) -> SourceResult:
    http = HttpClient(HttpConfig(max_attempts=3), transport=t, sleep=lambda s: None)
    with http:
        [result] = sync_all(cfg, warehouse, http)
    return result


@pytest.fixture
def sim() -> JiraSimulator:
    return JiraSimulator(items=60, seed=8, anchor=ANCHOR)


def _nth_search(n: int, replacement: Callable[[bytes], tuple[int, bytes]]) -> Fault:
    seen = {"search": 0}

    def fault(
        request: httpx.Request, status: int, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if request.url.path.endswith("/search/jql"):
            seen["search"] += 1
            if seen["search"] == n:
                new_status, new_body = replacement(body)
                return new_status, {"content-type": "text/html"}, new_body
        return status, headers, body

    return fault


def test_malformed_page_fails_the_run_keeps_the_cursor_and_the_next_run_completes(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str
) -> None:
    cfg = config(tmp_path, warehouse_url)
    warehouse = Warehouse(warehouse_url)
    html = _nth_search(2, lambda body: (200, b"<html><body>Service maintenance</body></html>"))
    result = sync(cfg, warehouse, transport(sim, html))
    assert not result.ok and result.error is not None
    assert "not JSON" in result.error and "/rest/api/3/search/jql" in result.error
    assert len(list(iter_items(warehouse))) == 20  # page 1 committed, page 2 not
    cursor = warehouse.get_cursor("j", "issues")
    assert cursor is not None and cursor.watermark is None and cursor.state.get("token")

    again = sync(cfg, warehouse, transport(sim))
    assert again.ok and again.items == 40
    assert len(list(iter_items(warehouse))) == 60


def test_truncated_json_is_malformed_too(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str
) -> None:
    cfg = config(tmp_path, warehouse_url)
    warehouse = Warehouse(warehouse_url)
    cut = _nth_search(1, lambda body: (200, body[: len(body) // 2]))
    result = sync(cfg, warehouse, transport(sim, cut))
    assert not result.ok and "not JSON" in (result.error or "")
    assert list(iter_items(warehouse)) == []
    assert sync(cfg, warehouse, transport(sim)).ok


def test_server_errors_are_retried_and_persistent_ones_fail_cleanly(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str
) -> None:
    cfg = config(tmp_path, warehouse_url)
    warehouse = Warehouse(warehouse_url)
    calls = {"n": 0}

    def flaky(
        request: httpx.Request, status: int, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        calls["n"] += 1
        if calls["n"] % 3 == 0:  # every third request fails once
            return 503, {}, b"upstream unavailable"
        return status, headers, body

    result = sync(cfg, warehouse, transport(sim, flaky))
    assert result.ok and result.retries > 0 and result.items == 60

    def down(
        request: httpx.Request, status: int, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        return 500, {}, b'{"errorMessages":["Internal server error"]}'

    sim.mutate(5)
    before = list(iter_transitions(warehouse))
    cursor = warehouse.get_cursor("j", "issues")
    failed = sync(cfg, warehouse, transport(sim, down))
    assert not failed.ok and "500" in (failed.error or "") and failed.retries == 2
    assert warehouse.get_cursor("j", "issues") == cursor
    assert list(iter_transitions(warehouse)) == before
    assert sync(cfg, warehouse, transport(sim)).ok


def test_a_broken_record_is_skipped_counted_and_named(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, warehouse_url)
    warehouse = Warehouse(warehouse_url)

    def break_one(
        request: httpx.Request, status: int, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if request.url.path.endswith("/search/jql"):
            page: dict[str, Any] = json.loads(body)
            for issue in page["issues"]:
                if issue["key"] == "DEMO-7":
                    issue["fields"]["created"] = "last tuesday"
            body = json.dumps(page).encode()
        return status, headers, body

    from syncd.logs import configure

    configure("info", json_lines=True)
    result = sync(cfg, warehouse, transport(sim, break_one))
    assert result.ok and result.skipped == 1 and result.items == 59
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    [skip] = [e for e in events if e["event"] == "jira.record_skipped"]
    assert skip["key"] == "DEMO-7" and skip["source"] == "j" and "last tuesday" in skip["error"]
    assert not any(e["event"].startswith("jira.record") and e is not skip for e in events)
    configure("warning")
