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


def _nth_search(
    n: int, replacement: Callable[[bytes], tuple[int, bytes]], *, times: int = 1
) -> Fault:
    """Replace the answer to search requests n, n+1, … n+times-1 (retries included)."""
    seen = {"search": 0}

    def fault(
        request: httpx.Request, status: int, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if request.url.path.endswith("/search/jql"):
            seen["search"] += 1
            if n <= seen["search"] < n + times:
                new_status, new_body = replacement(body)
                return new_status, {"content-type": "text/html"}, new_body
        return status, headers, body

    return fault


def test_malformed_page_fails_the_run_keeps_the_cursor_and_the_next_run_completes(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str
) -> None:
    cfg = config(tmp_path, warehouse_url)
    warehouse = Warehouse(warehouse_url)
    html = _nth_search(
        2, lambda body: (200, b"<html><body>Service maintenance</body></html>"), times=3
    )
    result = sync(cfg, warehouse, transport(sim, html))
    assert not result.ok and result.error is not None
    assert "not JSON" in result.error and "/rest/api/3/search/jql" in result.error
    assert result.retries == 2  # max_attempts = 3: the page was asked for three times
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
    cut = _nth_search(1, lambda body: (200, body[: len(body) // 2]), times=3)
    result = sync(cfg, warehouse, transport(sim, cut))
    assert not result.ok and "not JSON" in (result.error or "")
    assert list(iter_items(warehouse)) == []
    assert warehouse.get_cursor("j", "issues") is None
    assert sync(cfg, warehouse, transport(sim)).ok


def test_a_body_that_is_not_json_once_is_retried_and_nothing_is_lost(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str
) -> None:
    cfg = config(tmp_path, warehouse_url)
    warehouse = Warehouse(warehouse_url)
    html = _nth_search(2, lambda body: (200, b"<html><body>Sign in</body></html>"), times=2)
    result = sync(cfg, warehouse, transport(sim, html))
    assert result.ok and result.retries == 2 and result.items == 60
    assert len(list(iter_items(warehouse))) == 60


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


def _break_created(keys: set[str]) -> Fault:
    """Give the issues named in `keys` (read at every request) an unreadable `created`."""

    def fault(
        request: httpx.Request, status: int, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if request.url.path.endswith("/search/jql") and keys:
            page: dict[str, Any] = json.loads(body)
            for issue in page["issues"]:
                if issue["key"] in keys:
                    issue["fields"]["created"] = "last tuesday"
            body = json.dumps(page).encode()
        return status, headers, body

    return fault


def _reference(sim: JiraSimulator, tmp_path: Path) -> tuple[Warehouse, list[dict[str, Any]]]:
    """The same world synced without faults into a warehouse of its own."""
    folder = tmp_path / "reference"
    folder.mkdir()
    url = f"sqlite:///{folder / 'reference.db'}"
    warehouse = Warehouse(url)
    assert sync(config(folder, url), warehouse, transport(sim)).ok
    return warehouse, list(iter_items(warehouse))


def test_a_skipped_record_holds_the_watermark_until_a_later_run_parses_it(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str
) -> None:
    cfg = config(tmp_path, warehouse_url)
    warehouse = Warehouse(warehouse_url)
    broken = {"DEMO-7"}

    first = sync(cfg, warehouse, transport(sim, _break_created(broken)))
    assert first.ok and first.skipped == 1 and first.items == 59
    cursor = warehouse.get_cursor("j", "issues")
    assert cursor is not None and cursor.watermark is None  # held where the pass started
    assert cursor.state["skip_hold"]["strikes"] == {"DEMO-7": 1}

    second = sync(cfg, warehouse, transport(sim, _break_created(broken)))
    assert second.ok and second.skipped == 1 and second.items == 0  # listed and tried again
    cursor = warehouse.get_cursor("j", "issues")
    assert cursor is not None and cursor.watermark is None
    assert cursor.state["skip_hold"]["strikes"] == {"DEMO-7": 2}

    broken.clear()
    third = sync(cfg, warehouse, transport(sim, _break_created(broken)))
    assert third.ok and third.skipped == 0 and third.items == 1
    reference, items = _reference(sim, tmp_path)
    assert list(iter_items(warehouse)) == items and len(items) == 60
    cursor, expected = warehouse.get_cursor("j", "issues"), reference.get_cursor("j", "issues")
    assert cursor is not None and expected is not None
    assert cursor.watermark == expected.watermark is not None
    assert "skip_hold" not in cursor.state


def test_a_record_broken_for_good_is_given_up_after_three_passes_and_named(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from syncd.logs import configure

    _, items = _reference(sim, tmp_path)
    newest = max(items, key=lambda item: str(item["updated_at"]))["key"]  # the lookback lists it
    cfg = config(tmp_path, warehouse_url)
    warehouse = Warehouse(warehouse_url)
    broken = {newest}
    configure("info", json_lines=True)
    try:
        results = [sync(cfg, warehouse, transport(sim, _break_created(broken))) for _ in range(3)]
        events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
        given_up = warehouse.get_cursor("j", "issues")
        fourth = sync(cfg, warehouse, transport(sim, _break_created(broken)))
        after_fourth = warehouse.get_cursor("j", "issues")
    finally:
        configure("warning")
    assert [(r.ok, r.skipped) for r in results] == [(True, 1)] * 3
    [event] = [e for e in events if e["event"] == "sync.skipped_given_up"]
    assert event["keys"] == [newest] and event["source"] == "j" and event["stream"] == "issues"
    assert given_up is not None and given_up.watermark is not None  # the watermark moved on
    assert given_up.state["skip_hold"] == {"given_up": [newest]}
    # still broken and listed again by the lookback: skipped, but no new hold
    assert fourth.ok and fourth.skipped == 1
    assert after_fourth is not None and after_fourth.watermark == given_up.watermark
    assert after_fourth.state["skip_hold"] == {"given_up": [newest]}

    broken.clear()  # fixed (the tracker answers it whole again): parsed and forgotten
    fifth = sync(cfg, warehouse, transport(sim, _break_created(broken)))
    assert fifth.ok and fifth.items == 1 and fifth.skipped == 0
    cursor = warehouse.get_cursor("j", "issues")
    assert cursor is not None and "skip_hold" not in cursor.state
    assert list(iter_items(warehouse)) == items


def test_a_skip_survives_a_run_that_fails_later_in_the_same_pass(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str
) -> None:
    cfg = config(tmp_path, warehouse_url)
    warehouse = Warehouse(warehouse_url)
    broken_first_page = _break_created({"DEMO-3"})
    html_later = _nth_search(2, lambda body: (200, b"<html>maintenance</html>"), times=3)

    def both(
        request: httpx.Request, status: int, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        return html_later(request, *broken_first_page(request, status, headers, body))

    failed = sync(cfg, warehouse, transport(sim, both))
    assert not failed.ok and failed.skipped == 1 and failed.items == 19
    cursor = warehouse.get_cursor("j", "issues")
    assert cursor is not None and cursor.state.get("token")  # mid-listing, after page 1
    assert cursor.state["skip_hold"]["current"] == ["DEMO-3"]

    resumed = sync(cfg, warehouse, transport(sim))  # pages 2 and 3 only: DEMO-3 not among them
    assert resumed.ok and resumed.items == 40 and resumed.skipped == 0
    cursor = warehouse.get_cursor("j", "issues")
    assert cursor is not None and cursor.watermark is None  # the pass skipped DEMO-3: held
    assert cursor.state["skip_hold"]["strikes"] == {"DEMO-3": 1}

    again = sync(cfg, warehouse, transport(sim))
    assert again.ok and again.items == 1
    _, items = _reference(sim, tmp_path)
    assert list(iter_items(warehouse)) == items
    cursor = warehouse.get_cursor("j", "issues")
    assert cursor is not None and cursor.watermark is not None and "skip_hold" not in cursor.state
