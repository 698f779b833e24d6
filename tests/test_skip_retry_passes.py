"""`[sync] skip_retry_passes`: how many listing passes a record that cannot be parsed holds
its stream's watermark back before it is given up (the default, 3, is
`syncd.records.MAX_PASSES`). Traffic goes through httpx.MockTransport to the Jira simulator's
in-process handler, which breaks one issue's creation time on the way."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from syncd.config import Config, HttpConfig, load_config
from syncd.errors import ConfigError
from syncd.http import HttpClient
from syncd.records import MAX_PASSES
from syncd.simulator.jira import JiraSimulator
from syncd.sync import SourceResult, sync_all
from syncd.warehouse.store import Warehouse

ANCHOR = datetime(2026, 4, 1, tzinfo=UTC)
BROKEN = "DEMO-4"


def write(tmp_path: Path, warehouse_url: str, sync: str) -> Path:
    path = tmp_path / "syncd.toml"
    path.write_text(
        f'[warehouse]\nurl = "{warehouse_url}"\n[sync]\n{sync}\n[[sources]]\nname = "j"\n'
        'kind = "jira"\nurl = "http://jira.invalid"\ndeployment = "cloud"\n'
        'jql = "project = DEMO"\n',
        encoding="utf-8",
    )
    return path


def broken_transport(sim: JiraSimulator) -> httpx.MockTransport:
    """The simulator, with BROKEN's creation time unreadable in every search answer."""

    def handler(request: httpx.Request) -> httpx.Response:
        status, headers, body = sim.handle(
            request.method, request.url.raw_path.decode(), dict(request.headers), request.content
        )
        if request.url.path.endswith("/search/jql"):
            page = json.loads(body)
            for issue in page["issues"]:
                if issue["key"] == BROKEN:
                    issue["fields"]["created"] = "some day"
            body = json.dumps(page).encode()
        return httpx.Response(status, headers=headers, content=body)

    return httpx.MockTransport(handler)


def sync(config: Config, warehouse: Warehouse, sim: JiraSimulator) -> SourceResult:
    with HttpClient(HttpConfig(), transport=broken_transport(sim), sleep=lambda s: None) as http:
        [result] = sync_all(config, warehouse, http)
    return result


def test_the_key_is_validated_and_defaults_to_max_passes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    assert load_config(write(tmp_path, url, "")).sync.skip_retry_passes == MAX_PASSES == 3
    assert load_config(write(tmp_path, url, "skip_retry_passes = 7")).sync.skip_retry_passes == 7
    for bad in ("0", "101", '"twice"'):
        with pytest.raises(ConfigError) as caught:
            load_config(write(tmp_path, url, f"skip_retry_passes = {bad}"))
        assert "sync.skip_retry_passes" in str(caught.value)


@pytest.mark.parametrize("passes", [1, 2])
def test_a_broken_record_is_given_up_after_the_configured_passes(
    tmp_path: Path, warehouse_url: str, passes: int
) -> None:
    sim = JiraSimulator(items=12, seed=8, anchor=ANCHOR)
    config = load_config(write(tmp_path, warehouse_url, f"skip_retry_passes = {passes}"))
    warehouse = Warehouse(warehouse_url)
    for done in range(1, passes + 1):
        result = sync(config, warehouse, sim)
        assert result.ok and result.skipped == 1
        cursor = warehouse.get_cursor("j", "issues")
        assert cursor is not None
        hold = cursor.state["skip_hold"]
        if done < passes:  # still held: the next run lists the same span again
            assert cursor.watermark is None and hold["strikes"] == {BROKEN: done}
        else:  # given up: the watermark moves on and the key is remembered
            assert cursor.watermark is not None and hold == {"given_up": [BROKEN]}
    warehouse.close()
