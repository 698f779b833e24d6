"""The CLI as users run it: check, secrets in output, kill -9 mid-sync, the simulator, the demo."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncd.cli import main
from syncd.simulator.jira import JiraSimulator
from syncd.warehouse.store import ITEMS, Warehouse
from tests.helpers import cli as run

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = datetime(2026, 5, 1, tzinfo=UTC)
EMAIL, TOKEN = "ops@example.com", "cli-token-5a4b3c2d1e"


def write_config(
    tmp_path: Path,
    url: str,
    warehouse_url: str,
    extra: str = "",
    *,
    http: str = "",
    name: str = "syncd.toml",
    email: bool = True,
) -> str:
    path = tmp_path / name
    path.write_text(
        f"""
[warehouse]
url = "{warehouse_url}"
{http}
[[sources]]
name = "jira"
kind = "jira"
url = "{url}"
{'email_env = "CLI_EMAIL"' if email else ""}
token_env = "CLI_TOKEN"
jql = "project = DEMO"
{extra}
""",
        encoding="utf-8",
    )
    return str(path)


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLI_EMAIL", EMAIL)
    monkeypatch.setenv("CLI_TOKEN", TOKEN)


@pytest.fixture
def sim() -> Iterator[JiraSimulator]:
    with JiraSimulator(items=40, seed=9, anchor=ANCHOR, email=EMAIL, token=TOKEN) as s:
        yield s


def test_check_reports_each_problem_on_one_line(
    sim: JiraSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, sim.base_url, f"sqlite:///{tmp_path / 'w.db'}")
    code, out = run(["check", "-c", config])
    assert code == 0, out
    assert "authenticated" in out and "JQL scope accepted" in out and "cloud" in out
    monkeypatch.setenv("CLI_TOKEN", "not-the-token-0000")
    code, out = run(["check", "-c", config])
    assert code == 1
    [fail] = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert "401" in fail and "token" in fail and "not-the-token-0000" not in out


def test_check_names_a_bad_jql(sim: JiraSimulator, tmp_path: Path) -> None:
    config = write_config(tmp_path, sim.base_url, f"sqlite:///{tmp_path / 'w.db'}")
    Path(config).write_text(
        Path(config).read_text().replace("project = DEMO", "project = = DEMO"),
        encoding="utf-8",
    )
    code, out = run(["check", "-c", config])
    assert code == 1 and "JQL scope refused" in out and "400" in out


def test_unreachable_tracker_fails_the_source_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path,
        "http://127.0.0.1:9",
        f"sqlite:///{tmp_path / 'w.db'}",
        'deployment = "cloud"',
        http='[http]\nmax_attempts = 2\nbackoff_initial = "10ms"\nbackoff_max = "20ms"',
    )
    code, out = run(["sync", "-c", config])
    assert code == 1
    assert "jira: FAILED" in out and "127.0.0.1:9" in out
    assert TOKEN not in out + capsys.readouterr().err


def test_no_secret_in_any_output_of_failing_runs(
    sim: JiraSimulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_config(tmp_path, sim.base_url, f"sqlite:///{tmp_path / 'w.db'}")
    wrong = "wrong-secret-77665544"
    monkeypatch.setenv("CLI_TOKEN", wrong)
    assert main(["--log-level", "debug", "sync", "-c", config]) == 1
    assert main(["--log-level", "debug", "check", "-c", config]) == 1
    captured = capsys.readouterr()
    everything = captured.out + captured.err
    assert "sync.failed" in everything and "401" in everything
    assert wrong not in everything and TOKEN not in everything
    rows = Warehouse(f"sqlite:///{tmp_path / 'w.db'}").runs()
    assert rows and all(wrong not in (r["error"] or "") for r in rows)


def _count(url: str) -> int:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(ITEMS)).scalar() or 0)
    except sa.exc.OperationalError:
        return 0
    except sa.exc.ProgrammingError:
        return 0
    finally:
        engine.dispose()


def _snapshot(url: str) -> tuple[list[str], list[str]]:
    buffers = []
    for what in ("items", "transitions"):
        out = io.StringIO()
        from syncd.export import iter_items, iter_transitions

        warehouse = Warehouse(url)
        records = iter_items(warehouse) if what == "items" else iter_transitions(warehouse)
        for record in records:
            out.write(json.dumps(record, sort_keys=True) + "\n")
        warehouse.close()
        buffers.append(out.getvalue().splitlines())
    return buffers[0], buffers[1]


@pytest.mark.parametrize("kill_after", [1, 700])
def test_kill_9_mid_sync_then_rerun_equals_an_uninterrupted_sync(
    tmp_path: Path, warehouse_url: str, kill_after: int
) -> None:
    with JiraSimulator(items=2000, seed=21, anchor=ANCHOR, email=EMAIL, token=TOKEN) as sim:
        extra = "page_size = 50\nbatch_size = 50"
        config = write_config(tmp_path, sim.base_url, warehouse_url, extra)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncd.cli", "sync", "-c", config],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while _count(warehouse_url) < kill_after and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with sim.held():  # no further page can arrive: on a loaded machine the sync could
            at_kill = _count(warehouse_url)  # otherwise finish before the kill
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the sync finished before it could be killed"
        assert at_kill < 2000

        rerun = subprocess.run(
            [sys.executable, "-m", "syncd.cli", "sync", "-c", config],
            env=env,
            capture_output=True,
            text=True,
        )
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr

        reference = f"sqlite:///{tmp_path / 'reference.db'}"
        other = write_config(tmp_path, sim.base_url, reference, extra, name="ref.toml")
        assert main(["sync", "-c", other]) == 0
    assert _snapshot(warehouse_url) == _snapshot(reference)
    runs = Warehouse(warehouse_url).runs("jira")
    assert [r["status"] for r in runs] == ["interrupted", "ok"]


def test_simulate_command_serves_until_terminated(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd.cli", "simulate", "jira", "--port", "0", "--items", "5"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "simulator: jira cloud on http://127.0.0.1:" in line and "5 issues" in line
        import httpx

        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        statuses = httpx.get(f"{url}/rest/api/3/status", timeout=10).json()
        assert any(s["statusCategory"]["key"] == "indeterminate" for s in statuses)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from syncd.demo import run as demo

    assert demo(["--items", "120", "--dir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "demo-jira: ok — 120 items" in out
    assert "velocity" in out and "Demo" in out
    assert out.count("demo-jira: ok") == 2
    assert out.count("demo-github: ok") == 2 and out.count("demo-gitlab: ok") == 2
    # value streams that span the trackers, with their deviation from the target split
    checkout = [line for line in out.splitlines() if line.startswith("Checkout ")]
    assert checkout and all("feature " in line for line in checkout)
    assert any(line.startswith("Platform ") for line in out.splitlines())


def test_check_and_sync_on_data_center_with_a_bearer_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLI_EMAIL")
    with JiraSimulator(items=12, seed=2, anchor=ANCHOR, token=TOKEN, deployment="datacenter") as s:
        config = write_config(tmp_path, s.base_url, f"sqlite:///{tmp_path / 'w.db'}", email=False)
        code, out = run(["check", "-c", config])
        assert code == 0, out
        assert "datacenter" in out and "JQL scope accepted" in out
        code, out = run(["sync", "-c", config])
        assert code == 0 and "jira: ok — 12 items" in out
        assert all(r.path.startswith("/rest/api/2/") for r in s.requests)
