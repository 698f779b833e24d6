"""`syncd run` as real processes: kill -9 at random points, SIGTERM, two daemons on one
warehouse, and no token in anything a failing run writes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from syncd.metrics.incremental import stored_rows, update_metrics
from syncd.simulator.jira import JiraSimulator
from syncd.warehouse.store import CURSORS, RAW, RUNS, Warehouse, engine_url
from tests.helpers import cli, jira_toml
from tests.test_cli_commands import _snapshot

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = datetime(2026, 5, 1, tzinfo=UTC)
EMAIL, TOKEN = "ops@example.com", "proc-token-1a2b3c4d5e"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "P_EMAIL": EMAIL, "P_TOKEN": TOKEN}


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P_EMAIL", EMAIL)
    monkeypatch.setenv("P_TOKEN", TOKEN)


def write_config(
    tmp_path: Path, url: str, warehouse_url: str, *, name: str = "syncd.toml", extra: str = ""
) -> str:
    path = jira_toml(
        tmp_path / name,
        url,
        warehouse_url,
        email_env="P_EMAIL",
        token_env="P_TOKEN",
        top='[daemon]\nlisten = "127.0.0.1:0"\njitter = "0s"',
        source=f"page_size = 50\nbatch_size = 50\n{extra}",
    )
    return str(path)


def syncd(*args: str, stderr: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "syncd.cli", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def _scalar(url: str, query: sa.Select[tuple[int]]) -> int:
    engine = sa.create_engine(engine_url(url))
    try:
        with engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):
        return 0  # the schema is not there yet
    finally:
        engine.dispose()


def pages_of_running_run(url: str) -> int:
    """Raw pages committed by the newest running run."""
    running = (
        sa.select(RUNS.c.run_id)
        .where(RUNS.c.status == "running")
        .order_by(RUNS.c.started_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    return _scalar(url, sa.select(sa.func.count()).select_from(RAW).where(RAW.c.run_id == running))


def wait_for(predicate: object, proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 120
    while not predicate():  # type: ignore[operator]
        assert proc.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


def final_state(url: str, as_of: datetime) -> tuple[object, ...]:
    """Items, transitions, cursor completeness and every stored metric row at `as_of`."""
    items, transitions = _snapshot(url)
    warehouse = Warehouse(url)
    try:
        update_metrics(warehouse, as_of=as_of)
        rows = [
            json.dumps(r.to_json(), sort_keys=True)
            for kind in ("day", "week", "month", "quarter")
            for r in stored_rows(warehouse, kind=kind)
        ]
        with warehouse.engine.connect() as conn:
            cursors = sorted(
                (stream, json.loads(state or "{}").get("next") is None)
                for stream, state in conn.execute(sa.select(CURSORS.c.stream, CURSORS.c.state))
            )
    finally:
        warehouse.close()
    return items, transitions, cursors, rows


def assert_same_state(got: tuple[object, ...], expected: tuple[object, ...]) -> None:
    """Equal final states, or a message naming the first records that differ."""
    for name, mine, theirs in zip(
        ("items", "transitions", "cursors", "metric rows"), got, expected, strict=True
    ):
        extra = sorted(set(mine) - set(theirs))[:3]  # type: ignore[call-overload]
        missing = sorted(set(theirs) - set(mine))[:3]  # type: ignore[call-overload]
        assert mine == theirs, f"{name} differ: only here {extra}; only in reference {missing}"


@pytest.mark.parametrize("seed", [1])
def test_kill_9_at_random_points_then_restart_equals_an_uninterrupted_run(
    tmp_path: Path, warehouse_url: str, seed: int
) -> None:
    rng = random.Random(seed)
    killed = 0
    with JiraSimulator(items=1200, seed=8, anchor=ANCHOR, email=EMAIL, token=TOKEN) as sim:
        config = write_config(tmp_path, sim.base_url, warehouse_url)
        for round_ in range(8):
            sim.mutate(rng.randint(1, 40))
            full = round_ % 2 == 0
            if full:
                # stopped at a random request of the ~50 a full sync makes, and killed while
                # it waits: the point is the same however fast the machine runs the sync
                with sim.held_after(rng.randint(2, 40)):
                    proc = syncd("run", "--once", "-c", config, "--full")
                    wait_for(lambda: sim.stalled, proc, "the chosen request")
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
            else:
                proc = syncd("run", "--once", "-c", config)
                time.sleep(rng.uniform(0.3, 1.5))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            killed += proc.returncode == -signal.SIGKILL
        assert killed >= 4
        # the first run resumes the cut-off pass, which cannot see changes to the records it
        # had passed before the kill; the pass after it starts after the last change
        for _ in range(2):
            finish = syncd("run", "--once", "-c", config)
            out, _ = finish.communicate(timeout=300)
            assert finish.returncode == 0, out

        reference = f"sqlite:///{tmp_path / 'reference.db'}"
        other = write_config(tmp_path, sim.base_url, reference, name="ref.toml")
        code, out = cli(["sync", "-c", other])
        assert code == 0, out
    as_of = datetime.now(UTC) + timedelta(days=1)
    assert_same_state(final_state(warehouse_url, as_of), final_state(reference, as_of))
    statuses = [r["status"] for r in Warehouse(warehouse_url).runs("jira")]
    assert statuses[-2:] == ["ok", "ok"] and statuses.count("interrupted") >= 4


def test_sigterm_commits_nothing_half_done_and_exits_0(tmp_path: Path, warehouse_url: str) -> None:
    with JiraSimulator(items=1500, seed=4, anchor=ANCHOR, email=EMAIL, token=TOKEN) as sim:
        config = write_config(tmp_path, sim.base_url, warehouse_url)
        proc = syncd("--log-level", "info", "run", "-c", config, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        address = None
        for line in proc.stderr:
            event = json.loads(line)
            if event["event"] == "service.listening":
                address = event["address"]
                break
        assert address, "the status endpoint did not start"
        drain = threading.Thread(target=proc.stderr.read, daemon=True)
        drain.start()
        assert httpx.get(f"http://{address}/healthz").status_code == 200
        wait_for(lambda: pages_of_running_run(warehouse_url) >= 6, proc, "six pages")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0  # the bound: exit 0 within 10 s
        runs = Warehouse(warehouse_url).runs("jira")
        assert [r["status"] for r in runs] == ["interrupted"]

        finish = syncd("run", "--once", "-c", config)
        out, _ = finish.communicate(timeout=300)
        assert finish.returncode == 0, out
        reference = f"sqlite:///{tmp_path / 'reference.db'}"
        code, out = cli(["sync", "-c", write_config(tmp_path, sim.base_url, reference, name="r")])
        assert code == 0, out
    as_of = datetime.now(UTC) + timedelta(days=1)
    assert final_state(warehouse_url, as_of) == final_state(reference, as_of)


def test_two_daemons_never_sync_one_source_at_once(tmp_path: Path, warehouse_url: str) -> None:
    with JiraSimulator(items=1500, seed=6, anchor=ANCHOR, email=EMAIL, token=TOKEN) as sim:
        config = write_config(tmp_path, sim.base_url, warehouse_url)
        first = syncd("run", "--once", "-c", config)
        wait_for(lambda: pages_of_running_run(warehouse_url) >= 2, first, "the first run")
        # the tracker stalls: the first run stays in the middle of its sync, however slow
        # the second process is to start (before, a loaded machine let the first finish)
        with sim.held():
            second = syncd("run", "--once", "-c", config, stderr=subprocess.PIPE)
            out2, err2 = second.communicate(timeout=120)
        out1, _ = first.communicate(timeout=300)
    assert second.returncode == 0, out2 + err2
    assert "jira: skipped — another syncd is syncing it" in out2
    assert first.returncode == 0 and "jira: ok — 1500 items" in out1, out1
    assert [r["status"] for r in Warehouse(warehouse_url).runs("jira")] == ["ok"]


class _Echo(BaseHTTPRequestHandler):
    """A hostile tracker: answers every request with a fixed status and echoes the request's
    credentials back in its body and headers."""

    status = 500

    def do_GET(self) -> None:
        leak = f"{self.headers.get('Authorization')} {self.headers.get('PRIVATE-TOKEN')}"
        body = json.dumps({"message": f"failed for {leak}", "errorMessages": [leak]}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Echo", leak)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echo_servers() -> Iterator[dict[int, str]]:
    servers = {}
    for status in (401, 403, 500):
        handler = type(f"Echo{status}", (_Echo,), {"status": status})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[status] = server
    yield {status: f"http://127.0.0.1:{s.server_address[1]}" for status, s in servers.items()}
    for server in servers.values():
        server.shutdown()
        server.server_close()


def test_no_token_in_any_log_line_error_or_row_of_failing_runs(
    tmp_path: Path, echo_servers: dict[int, str]
) -> None:
    sources = []
    for status, url in echo_servers.items():
        for kind, scope in (
            ("jira", 'jql = "project = X"\nemail_env = "P_EMAIL"'),
            ("github", 'repos = ["acme/web"]'),
            ("gitlab", 'projects = ["acme/api"]'),
        ):
            sources.append(
                f'[[sources]]\nname = "{kind}-{status}"\nkind = "{kind}"\nurl = "{url}"\n'
                f'token_env = "P_TOKEN"\n{scope}\n'
            )
    sources.append(  # nothing listens there
        '[[sources]]\nname = "nowhere"\nkind = "gitlab"\nurl = "http://127.0.0.1:1"\n'
        'token_env = "P_TOKEN"\nprojects = ["a/b"]\n'
    )
    db = tmp_path / "w.db"
    path = tmp_path / "s.toml"
    path.write_text(
        f'[warehouse]\nurl = "sqlite:///{db}"\n[http]\nmax_attempts = 2\n'
        f'backoff_initial = "10ms"\nbackoff_max = "20ms"\n' + "\n".join(sources),
        encoding="utf-8",
    )
    import base64

    secrets = [TOKEN, base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode()]
    for args in (
        ["--log-level", "debug", "run", "--once", "-c", str(path)],
        ["--log-level", "debug", "check", "-c", str(path)],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "syncd.cli", *args],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 1
        everything = proc.stdout + proc.stderr
        assert "401" in everything and "403" in everything and "500" in everything
        assert "nowhere" in everything
        for secret in secrets:
            assert secret not in everything
    warehouse = Warehouse(f"sqlite:///{db}")
    with warehouse.engine.connect() as conn:
        dump = json.dumps([list(r) for r in conn.execute(sa.select(RUNS))], default=str)
        dump += json.dumps([list(r) for r in conn.execute(sa.select(RAW))], default=str)
    assert "failed for" in dump or "FAILED" in dump or "answered" in dump
    for secret in secrets:
        assert secret not in dump
