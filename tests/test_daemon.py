"""`syncd run` in-process: schedules, backoff, locks, the status endpoint, stopping."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from syncd.config import Config, load_config
from syncd.daemon import Daemon, schedule_of
from syncd.errors import ConfigError
from syncd.locks import Locks
from syncd.simulator.jira import JiraSimulator
from syncd.warehouse.store import Warehouse
from tests.helpers import jira_toml

ANCHOR = datetime(2026, 5, 1, tzinfo=UTC)
EMAIL, TOKEN = "ops@example.com", "daemon-token-9f8e7d6c"


def write_config(
    tmp_path: Path,
    url: str,
    warehouse_url: str,
    *,
    daemon: str = "",
    sources: str = "",
    jql: str = "project = DEMO",
) -> Config:
    top = (
        '[http]\nbackoff_initial = "10ms"\nbackoff_max = "50ms"\nmax_attempts = 2\n'
        f'[daemon]\nlisten = "127.0.0.1:0"\njitter = "0s"\n{daemon}'
    )
    path = jira_toml(
        tmp_path / "syncd.toml",
        url,
        warehouse_url,
        email_env="D_EMAIL",
        token_env="D_TOKEN",
        jql=jql,
        top=top,
        source=f'every = "10m"\n{sources}',
    )
    return load_config(path)


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("D_EMAIL", EMAIL)
    monkeypatch.setenv("D_TOKEN", TOKEN)
    monkeypatch.setenv("D_WRONG", "not-the-daemon-token")


@pytest.fixture
def sim() -> Iterator[JiraSimulator]:
    with JiraSimulator(items=30, seed=5, anchor=ANCHOR, email=EMAIL, token=TOKEN) as s:
        yield s


BROKEN = """
[[sources]]
name = "broken"
kind = "jira"
url = "{url}"
email_env = "D_EMAIL"
token_env = "D_WRONG"
jql = "project = DEMO"
cron = "*/30 * * * *"
"""


def test_schedules_from_interval_cron_and_default(sim: JiraSimulator, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        sim.base_url,
        f"sqlite:///{tmp_path / 'w.db'}",
        sources=BROKEN.format(url=sim.base_url)
        + '[[sources]]\nname = "plain"\nkind = "jira"\nurl = "http://127.0.0.1:1"\njql = "x"\n',
    )
    now = datetime(2026, 11, 23, 10, 7, tzinfo=UTC)
    by_name = {s.name: schedule_of(s, config, now) for s in config.sources}
    assert by_name["jira"].interval == timedelta(minutes=10)
    assert by_name["broken"].interval == timedelta(minutes=30)
    assert by_name["broken"].trigger.get_next_fire_time(None, now) == now.replace(minute=30)
    assert by_name["plain"].interval == timedelta(minutes=15)  # the [daemon] default


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('every = "5m"\ncron = "* * * * *"', "give every or cron, not both"),
        ('cron = "every day"', "sources[0].cron: Value error, expected a crontab line"),
        ('every = "soon"', "sources[0].every"),
    ],
)
def test_schedule_config_errors_name_the_key(tmp_path: Path, snippet: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[sources]]\nname = "j"\nkind = "jira"\nurl = "http://127.0.0.1:1"\n'
        f'jql = "x"\n{snippet}\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert expected in str(caught.value) and str(path) in str(caught.value)


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        """
[daemon]
listen = "nowhere"
[http]
timeout = "fast"
[[sources]]
name = "a"
kind = "jira"
url = "ftp://x"
jql = "x"
[[sources]]
name = "b"
kind = "trello"
url = "http://127.0.0.1:1"
""",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    for key in ("daemon.listen", "http.timeout", "sources[0].url", "sources[1].kind"):
        assert f"{path}: {key}" in message, message


def test_backoff_doubles_per_failure_up_to_the_cap(sim: JiraSimulator, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        sim.base_url,
        f"sqlite:///{tmp_path / 'w.db'}",
        daemon='backoff_max = "100m"',
        sources=BROKEN.format(url=sim.base_url),
    )
    clock_now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    warehouse = Warehouse(config.warehouse.url)
    daemon = Daemon(config, warehouse, clock=lambda: clock_now)
    daemon.start(paused=True)
    try:
        assert daemon.scheduler is not None
        waits = []
        for _ in range(3):
            daemon._job("broken")
            job = daemon.scheduler.get_job("broken")
            waits.append(job.next_run_time - clock_now)
        assert waits == [timedelta(minutes=60), timedelta(minutes=100), timedelta(minutes=100)]
        assert daemon.failures["broken"] == 3
        daemon._job("jira")  # the healthy source is not held back by the broken one
        assert daemon.failures.get("jira") == 0
        rendered = daemon.telemetry.render().decode()
        assert 'syncd_source_consecutive_failures{source="broken"} 3.0' in rendered
        assert 'syncd_sync_runs_total{outcome="failed",source="broken"} 3.0' in rendered
        assert 'syncd_http_requests_total{source="broken",status="401"}' in rendered
    finally:
        daemon.stop()
        warehouse.close()


def test_one_process_at_a_time_per_source(warehouse_url: str, tmp_path: Path) -> None:
    first, second = Warehouse(warehouse_url), Warehouse(warehouse_url)
    try:
        with Locks(first).hold("jira") as held:
            assert held
            with Locks(second).hold("jira") as other:
                assert not other
            with Locks(second).hold("github") as unrelated:
                assert unrelated
        with Locks(second).hold("jira") as after:
            assert after
    finally:
        first.close()
        second.close()


def test_a_locked_source_is_skipped_not_failed(
    sim: JiraSimulator, tmp_path: Path, warehouse_url: str
) -> None:
    config = write_config(tmp_path, sim.base_url, warehouse_url)
    warehouse, holder = Warehouse(warehouse_url), Warehouse(warehouse_url)
    daemon = Daemon(config, warehouse)
    try:
        with Locks(holder).hold("jira"):
            assert daemon.run_once() == [None]
        assert sim.requests == []
        assert warehouse.runs("jira") == []
        [result] = daemon.run_once()
        assert result is not None and result.status == "ok" and result.items == 30
    finally:
        daemon.stop()
        warehouse.close()
        holder.close()


def test_status_endpoint_health_readiness_and_metrics(sim: JiraSimulator, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        sim.base_url,
        f"sqlite:///{tmp_path / 'w.db'}",
        sources=BROKEN.format(url=sim.base_url),
    )
    warehouse = Warehouse(config.warehouse.url)
    daemon = Daemon(config, warehouse)
    done = threading.Event()
    daemon.progress = lambda result: None
    served = threading.Thread(target=lambda: (daemon.serve(install_signals=False), done.set()))
    from syncd import service

    servers: list[service.StatusServer] = []
    original = service.StatusServer.start

    def remember(self: service.StatusServer) -> None:
        servers.append(self)
        original(self)

    service.StatusServer.start = remember  # type: ignore[method-assign]
    try:
        served.start()
        deadline = datetime.now(UTC) + timedelta(seconds=60)
        while not (servers and len(warehouse.runs()) >= 2 and _finished(warehouse)):
            assert datetime.now(UTC) < deadline, "the first runs did not finish"
            threading.Event().wait(0.05)
        base = f"http://{servers[0].address}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 503  # the broken source never succeeded
        body = ready.json()
        assert body["sources"]["jira"]["ready"] is True
        assert body["sources"]["broken"] == {
            "ready": False,
            "last_success": None,
            "interval_s": 1800.0,
        }
        metrics = httpx.get(f"{base}/metrics").text
        assert 'syncd_sync_runs_total{outcome="ok",source="jira"} 1.0' in metrics
        assert 'syncd_items_synced_total{source="jira"} 30.0' in metrics
        assert 'syncd_last_success_timestamp_seconds{source="jira"}' in metrics
        assert TOKEN not in metrics
        assert httpx.get(f"{base}/nope").status_code == 404
    finally:
        service.StatusServer.start = original  # type: ignore[method-assign]
        daemon.stopping.set()
        served.join(timeout=30)
        warehouse.close()
    assert done.is_set() and not daemon.alive


def _finished(warehouse: Warehouse) -> bool:
    return all(r["status"] != "running" for r in warehouse.runs())


def test_readiness_turns_stale_after_three_intervals(sim: JiraSimulator, tmp_path: Path) -> None:
    from syncd.service import readiness

    config = write_config(tmp_path, sim.base_url, f"sqlite:///{tmp_path / 'w.db'}")
    warehouse = Warehouse(config.warehouse.url)
    daemon = Daemon(config, warehouse)
    try:
        [result] = daemon.run_once()
        assert result is not None and result.ok
        finished = warehouse.runs("jira")[-1]["finished_at"]
        finished = finished if finished.tzinfo else finished.replace(tzinfo=UTC)
        interval = {"jira": timedelta(minutes=10)}
        assert readiness(warehouse, interval, finished + timedelta(minutes=30)).ready
        assert not readiness(warehouse, interval, finished + timedelta(minutes=31)).ready
    finally:
        daemon.stop()
        warehouse.close()


def test_stopping_abandons_the_page_in_flight_and_the_next_run_continues(
    tmp_path: Path, warehouse_url: str
) -> None:
    """The stop event is checked before every request: the page being fetched is not
    committed, its cursor stays, and the next run ends where an uninterrupted one does."""
    with JiraSimulator(items=300, seed=3, anchor=ANCHOR, email=EMAIL, token=TOKEN) as sim:
        config = write_config(
            tmp_path, sim.base_url, warehouse_url, sources="page_size = 20\nbatch_size = 20"
        )
        warehouse = Warehouse(warehouse_url)
        daemon = Daemon(config, warehouse)
        pages: list[int] = []

        def stop_after_three(result: object) -> None:
            pages.append(1)
            if len(pages) == 3:
                daemon.stopping.set()

        daemon.progress = stop_after_three
        [result] = daemon.run_once()
        assert result is not None and result.status == "interrupted" and result.pages == 3
        assert [r["status"] for r in warehouse.runs("jira")] == ["interrupted"]
        fresh = Daemon(config, warehouse)
        [again] = fresh.run_once()
        assert again is not None and again.status == "ok"
        assert again.items + result.items >= 300
        from syncd.export import iter_items

        assert len(list(iter_items(warehouse))) == 300
        fresh.stop()
        daemon.stop()
        warehouse.close()


def test_interrupt_cuts_a_retry_wait_short(tmp_path: Path) -> None:
    from syncd.config import HttpConfig
    from syncd.errors import Interrupted
    from syncd.http import HttpClient

    stop = threading.Event()
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        stop.set()  # the process is asked to stop while the tracker says wait an hour
        return httpx.Response(429, headers={"Retry-After": "3600"})

    client = HttpClient(
        HttpConfig(max_retry_after=timedelta(hours=2)),
        transport=httpx.MockTransport(handler),
        interrupt=stop,
    )
    with pytest.raises(Interrupted):
        client.request("GET", "http://127.0.0.1:9/x")
    assert calls == [1]
    with pytest.raises(Interrupted):
        client.request("GET", "http://127.0.0.1:9/x")
    assert calls == [1]  # nothing new is sent once stopping


def test_reconciliation_is_scheduled_daily_across_restarts(
    sim: JiraSimulator, tmp_path: Path
) -> None:
    config = write_config(tmp_path, sim.base_url, f"sqlite:///{tmp_path / 'w.db'}")
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    warehouse = Warehouse(config.warehouse.url)
    daemon = Daemon(config, warehouse, clock=lambda: now)
    daemon.start(paused=True)
    assert daemon.scheduler is not None
    job = daemon.scheduler.get_job("reconcile:jira")
    assert job.next_run_time == now + timedelta(days=1)
    assert daemon.run_once()[0] is not None
    result = daemon.reconcile(config.source("jira"))
    assert result is not None and result.ok and result.listed == 30
    daemon.stop()
    later = now + timedelta(hours=5)
    restarted = Daemon(config, warehouse, clock=lambda: later)
    restarted.start(paused=True)
    assert restarted.scheduler is not None
    due = restarted.scheduler.get_job("reconcile:jira").next_run_time
    assert due == now + timedelta(days=1)  # a restart does not push the daily pass back
    restarted.stop()
    warehouse.close()


def test_a_resumed_pass_keeps_the_watermark_of_its_first_start(
    tmp_path: Path, warehouse_url: str
) -> None:
    """A pass cut off mid-stream and resumed later cannot see changes to the records it had
    passed; its final watermark stays at the first start, so the next run fetches them."""
    from syncd.export import iter_items
    from syncd.http import HttpClient
    from syncd.sync import sync_source

    t0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    with JiraSimulator(items=60, seed=7, anchor=ANCHOR, email=EMAIL, token=TOKEN) as sim:
        config = write_config(
            tmp_path, sim.base_url, warehouse_url, sources="page_size = 20\nbatch_size = 20"
        )
        source = config.source("jira")
        warehouse = Warehouse(warehouse_url)
        pages: list[int] = []

        def run(at: datetime, stop_after: int = 0) -> str:
            pages.clear()
            with HttpClient(config.http) as http:
                result = sync_source(
                    config,
                    source,
                    warehouse,
                    http,
                    clock=lambda: at,
                    should_stop=lambda: bool(stop_after) and len(pages) >= stop_after,
                    progress=lambda r: pages.append(1),
                )
            return result.status

        assert run(t0, stop_after=1) == "interrupted"
        keys = sorted(sim.keys, key=lambda k: int(k.split("-")[1]))
        early, late = keys[0], keys[-1]  # passed before the cut / still ahead of it
        sim.transition(early, "Done", t0 + timedelta(minutes=30))
        sim.transition(late, "Done", t0 + timedelta(minutes=90))
        assert run(t0 + timedelta(hours=2)) == "ok"
        cursor = warehouse.get_cursor("jira", "issues")
        assert cursor is not None and cursor.watermark is not None
        assert cursor.watermark <= t0
        assert run(t0 + timedelta(hours=3)) == "ok"
        states = {r["key"]: r["state"] for r in iter_items(warehouse)}
        assert states[early] == "Done" and states[late] == "Done"
        warehouse.close()


def test_a_changed_mapping_renormalises_a_changed_scope_resyncs_then_reconciles(
    tmp_path: Path, warehouse_url: str
) -> None:
    from syncd.export import iter_items

    with JiraSimulator(items=40, seed=9, anchor=ANCHOR, email=EMAIL, token=TOKEN) as sim:
        config = write_config(tmp_path, sim.base_url, warehouse_url)
        warehouse = Warehouse(warehouse_url)
        daemon = Daemon(config, warehouse)
        [first] = daemon.run_once()
        assert first is not None and first.items == 40
        [unchanged] = daemon.run_once()
        assert unchanged is not None and unchanged.items == 0  # nothing changed: nothing redone
        stage_of = {r["key"]: (r["state"], r["stage"]) for r in iter_items(warehouse)}
        in_progress = [k for k, (state, _) in stage_of.items() if state == "In Progress"]
        assert in_progress
        daemon.stop()

        remapped = write_config(
            tmp_path,
            sim.base_url,
            warehouse_url,
            sources='[sources.stages]\n"In Progress" = "waiting"',
        )
        daemon = Daemon(remapped, warehouse)
        [again] = daemon.run_once()
        # re-normalised from the raw pages before the run: nothing fetched again
        assert again is not None and again.status == "ok" and again.items == 0
        stages = {r["key"]: r["stage"] for r in iter_items(warehouse)}
        assert all(stages[k] == "waiting" for k in in_progress)
        daemon.stop()

        rescoped = write_config(
            tmp_path,
            sim.base_url,
            warehouse_url,
            sources='[sources.stages]\n"In Progress" = "waiting"',
            jql="project = DEMO AND key NOT IN (DEMO-1, DEMO-2)",
        )
        daemon = Daemon(rescoped, warehouse)
        [resynced] = daemon.run_once()
        assert resynced is not None and resynced.status == "ok" and resynced.items == 38
        gone = {r["key"] for r in iter_items(warehouse) if r["deleted_at"] is not None}
        assert gone == {"DEMO-1", "DEMO-2"}  # reconciled once the resync completed
        [settled] = daemon.run_once()
        assert settled is not None and settled.items == 0  # the resync is over
        daemon.stop()
        warehouse.close()


def test_an_interrupted_resync_resumes_instead_of_starting_over(
    tmp_path: Path, warehouse_url: str
) -> None:
    with JiraSimulator(items=60, seed=2, anchor=ANCHOR, email=EMAIL, token=TOKEN) as sim:
        small = "page_size = 20\nbatch_size = 20"
        config = write_config(tmp_path, sim.base_url, warehouse_url, sources=small)
        warehouse = Warehouse(warehouse_url)
        daemon = Daemon(config, warehouse)
        assert daemon.run_once()[0] is not None
        daemon.stop()
        remapped = write_config(  # a scope Jira must evaluate: a resync
            tmp_path, sim.base_url, warehouse_url, sources=small, jql="project in (DEMO)"
        )
        cut = Daemon(remapped, warehouse)
        cut.progress = lambda result: cut.stopping.set()  # stop after the first page
        [interrupted] = cut.run_once()
        assert interrupted is not None and interrupted.status == "interrupted"
        assert interrupted.items == 20
        resumed = Daemon(remapped, warehouse)
        [rest] = resumed.run_once()
        assert rest is not None and rest.status == "ok" and rest.items == 40
        resumed.stop()
        warehouse.close()


def test_tls_verification_is_on_unless_turned_off_explicitly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ssl

    from syncd.config import HttpConfig
    from syncd.http import HttpClient, _tls

    assert isinstance(_tls(HttpConfig()), ssl.SSLContext)
    assert _tls(HttpConfig()).verify_mode == ssl.CERT_REQUIRED
    HttpClient(HttpConfig(verify=False)).close()
    captured = capsys.readouterr()
    assert "http.tls_verification_disabled" in captured.out + captured.err
    with pytest.raises(ValueError, match="is not a readable file"):
        HttpConfig(ca_bundle=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="choose one"):
        HttpConfig(ca_bundle=tmp_path, verify=False)
