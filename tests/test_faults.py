"""Fault injection end to end: what the simulators send for each kind of fault (seeded, never
on `/_sim/`), what the HTTP layer makes of each, and syncs under faults that lose nothing —
for Jira, GitHub and GitLab alike, through the simulators on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from connectors.github.connector import github_classifier
from syncd.config import Config, HttpConfig, load_config
from syncd.errors import MalformedPage, RateLimited, ServerError, TransportError
from syncd.export import iter_items, iter_transitions
from syncd.http import HttpClient, default_classifier
from syncd.records import HOLD_KEY
from syncd.simulator.common import Simulator
from syncd.simulator.faults import KINDS, FaultPlan
from syncd.simulator.github import GitHubSimulator
from syncd.simulator.gitlab import GitLabSimulator
from syncd.simulator.jira import JiraSimulator
from syncd.sync import SourceResult, sync_source
from syncd.warehouse.store import CURSORS, LINKS, Warehouse

ANCHOR = datetime(2026, 4, 1, tzinfo=UTC)
SECRET = "faults-secret-9f8e7d6c5b"
SEARCH = "/rest/api/3/search/jql"
QUERY = {"jql": "project = DEMO", "fields": ["created", "updated", "status"], "maxResults": 5}


# ---------------------------------------------------------------------- plans


def test_a_fraction_spreads_over_every_kind_the_simulator_has() -> None:
    jira = JiraSimulator(items=3, seed=1, anchor=ANCHOR)
    jira.inject_faults("0.12")
    assert jira.faults is not None
    rates = jira.faults.snapshot()["rates"]
    assert set(rates) == set(KINDS) - {"403-secondary"}  # Jira has no secondary limit
    assert sum(rates.values()) == pytest.approx(0.12)
    github = GitHubSimulator(repos=("acme/web",), issues=2, pulls=2, seed=1, anchor=ANCHOR)
    github.inject_faults("0.13")
    assert github.faults is not None and set(github.faults.snapshot()["rates"]) == set(KINDS)


def test_rates_by_kind_and_bad_plans() -> None:
    plan = FaultPlan.parse("429=0.02, 500=0.03,reset=0.01", seed=4)
    assert dict(plan.rates) == {"429": 0.02, "500": 0.03, "reset": 0.01} and plan.seed == 4
    for spec, why in [
        ("lots", "expected a fraction"),
        ("1.5", "[0, 1]"),
        ("418=0.1", "unknown fault kind '418'"),
        ("500=0.7,502=0.6", "more than 1"),
        ("500=0.1,500=0.2", "given twice"),
        ("500", "[0, 1]"),
        ("500:0.1", "expected a fraction"),
    ]:
        with pytest.raises(ValueError, match=why.replace("[", r"\[").replace("]", r"\]")):
            FaultPlan.parse(spec)
    with pytest.raises(ValueError, match="cannot inject 403-secondary"):
        JiraSimulator(items=3, seed=1, anchor=ANCHOR).inject_faults("403-secondary=0.1")


# ---------------------------------------------------------------------- on the wire


@pytest.fixture
def jira() -> Iterator[JiraSimulator]:
    with JiraSimulator(items=12, seed=5, anchor=ANCHOR, token=SECRET, email="f@example.com") as sim:
        yield sim


def _client(sim: Simulator, timeout: float = 5.0) -> httpx.Client:
    return httpx.Client(
        base_url=sim.base_url, timeout=timeout, auth=httpx.BasicAuth("f@example.com", SECRET)
    )


def _search(client: httpx.Client) -> httpx.Response:
    return client.post(SEARCH, json=QUERY)


def test_each_kind_on_the_wire(jira: JiraSimulator) -> None:
    with _client(jira) as client:
        clean = _search(client)
    assert clean.status_code == 200
    answers: dict[str, Any] = {}
    for kind in KINDS:
        if kind == "403-secondary":
            continue
        jira.inject_faults(FaultPlan(rates={kind: 1.0}, retry_after=2, hold=1.0))
        with _client(jira, timeout=0.3) as client:
            try:
                answers[kind] = _search(client)
            except httpx.HTTPError as error:
                answers[kind] = error
    assert answers["429"].status_code == 429 and answers["429"].headers["retry-after"] == "2"
    assert answers["429"].json()["errorMessages"]  # the tracker's own error shape
    bare = answers["429-bare"]
    assert bare.status_code == 429 and "retry-after" not in bare.headers
    assert answers["500"].status_code == 500 and answers["500"].json()["errorMessages"]
    for status in ("502", "503", "504"):
        assert answers[status].status_code == int(status)
        assert answers[status].headers["content-type"].startswith("text/html")
    assert isinstance(answers["timeout"], httpx.TimeoutException)
    assert isinstance(answers["reset"], httpx.TransportError)
    assert isinstance(answers["truncated"], httpx.RemoteProtocolError)
    assert "complete message body" in str(answers["truncated"])
    html = answers["html"]
    assert html.status_code == 200 and html.text.lstrip().startswith("<html>")
    malformed = answers["malformed"]
    assert malformed.status_code == 200 and clean.content.startswith(malformed.content)
    assert len(malformed.content) < len(clean.content)
    with pytest.raises(ValueError):
        malformed.json()
    broken, whole = answers["missing-field"].json()["issues"], clean.json()["issues"]
    assert [i["key"] for i in broken] == [i["key"] for i in whole]
    missing = [i["key"] for i in broken if "created" not in i["fields"]]
    assert len(missing) == 1  # one record lost its creation time, nothing else changed
    for issue in broken:
        issue["fields"].setdefault("created", None)
    assert len([i for i, j in zip(broken, whole, strict=True) if i != j]) == 1
    assert jira.faults is not None and jira.faults.counts() == {"missing-field": 1}


def test_github_secondary_limit_has_githubs_shape() -> None:
    with GitHubSimulator(repos=("acme/web",), issues=3, pulls=3, seed=2, anchor=ANCHOR) as sim:
        sim.inject_faults(FaultPlan(rates={"403-secondary": 1.0}, retry_after=3))
        answer = httpx.get(f"{sim.base_url}/repos/acme/web/issues", timeout=5)
    assert answer.status_code == 403 and answer.headers["retry-after"] == "3"
    body = answer.json()
    assert body["message"].startswith("You have exceeded a secondary rate limit.")
    assert body["documentation_url"].endswith("#about-secondary-rate-limits")
    assert (
        "x-ratelimit-remaining" not in answer.headers
        or answer.headers["x-ratelimit-remaining"] != "0"
    )  # a secondary limit, not the primary budget


def test_control_endpoints_are_never_faulted_and_count_the_faults(jira: JiraSimulator) -> None:
    with _client(jira, timeout=5) as client:
        jira.inject_faults("reset=1")
        for _ in range(3):
            with pytest.raises(httpx.TransportError):
                _search(client)
        stats = client.get("/_sim/stats")
        assert stats.status_code == 200 and stats.json()["faults"] == {"reset": 3}
        assert stats.json()["requests"] == 0  # faults answered without the tracker
        assert client.post("/_sim/mutate?count=1").status_code == 200
        snapshot = client.get("/_sim/faults").json()
        assert snapshot["injected"] == {"reset": 3} and snapshot["requests"] == 3
        assert client.post("/_sim/faults?spec=off").json()["plan"] is None
        assert _search(client).status_code == 200
        answer = client.post("/_sim/faults?spec=500%3D1&seed=9").json()
        assert answer["plan"]["rates"] == {"500": 1.0} and answer["plan"]["seed"] == 9
        assert _search(client).status_code == 500
        assert client.post("/_sim/faults?spec=nonsense").status_code == 400


def _outcomes(seed: int) -> list[str]:
    with JiraSimulator(items=12, seed=5, anchor=ANCHOR) as sim:
        sim.inject_faults(FaultPlan(total=0.5, seed=seed, hold=0.5))
        out = []
        with httpx.Client(base_url=sim.base_url, timeout=0.2) as client:
            for _ in range(30):
                try:
                    answer = _search(client)
                    body = answer.content.replace(sim.base_url.encode(), b"")  # ports differ
                    out.append(f"{answer.status_code}:{body.hex()}")
                except httpx.HTTPError as error:
                    out.append(type(error).__name__)
        assert sim.faults is not None
        out.append(json.dumps(sim.faults.counts()))
    return out


def test_faults_are_deterministic_given_the_seed_and_request_order() -> None:
    first, again, other = _outcomes(7), _outcomes(7), _outcomes(8)
    assert first == again
    assert first != other
    assert sum(json.loads(first[-1]).values()) >= 5  # about half of 30 requests faulted


# ---------------------------------------------------------------------- the HTTP layer

#: what the HTTP layer raises (and retries) for each fault kind
RETRIED_AS: dict[str, type[Exception]] = {
    "429": RateLimited,
    "429-bare": RateLimited,
    "403-secondary": RateLimited,
    "500": ServerError,
    "502": ServerError,
    "503": ServerError,
    "504": ServerError,
    "timeout": TransportError,
    "reset": TransportError,
    "truncated": TransportError,
    "html": MalformedPage,
    "malformed": MalformedPage,
}


@contextmanager
def _fault_target(kind: str) -> Iterator[tuple[Simulator, str, str, Any]]:
    """A simulator able to inject `kind`, a URL path, the method and its classifier (with
    a GitHub simulator, the path says so: `_call` then sends a bearer token)."""
    if kind == "403-secondary":
        with GitHubSimulator(
            repos=("acme/web",), issues=3, pulls=3, seed=2, anchor=ANCHOR, token=SECRET
        ) as github:
            yield github, "/repos/acme/web/issues", "GET", github_classifier
    else:
        with JiraSimulator(
            items=12, seed=5, anchor=ANCHOR, token=SECRET, email="f@example.com"
        ) as sim:
            yield sim, SEARCH, "POST", default_classifier


def _http(sleep: Callable[[float], None], **config: Any) -> HttpClient:
    http = HttpClient(
        HttpConfig(
            timeout=timedelta(milliseconds=250),
            backoff_initial=timedelta(milliseconds=10),
            backoff_max=timedelta(milliseconds=50),
            **config,
        ),
        sleep=sleep,
    )
    http.register_secret(SECRET)
    return http


def _call(http: HttpClient, sim: Simulator, path: str, method: str, classify: Any) -> Any:
    github = path.startswith("/repos/")
    return http.json(
        method,
        f"{sim.base_url}{path}?token={SECRET}",
        json_body=QUERY if method == "POST" else None,
        headers={"Authorization": f"Bearer {SECRET}"} if github else None,
        auth=None if github else httpx.BasicAuth("f@example.com", SECRET),
        classify=classify,
    )


@pytest.mark.parametrize("kind", sorted(RETRIED_AS))
def test_a_fault_once_is_retried_and_survived(kind: str) -> None:
    with _fault_target(kind) as (sim, path, method, classify):
        with _http(lambda s: None) as clean:
            expected = _call(clean, sim, path, method, classify)
        sim.inject_faults(FaultPlan(rates={kind: 1.0}, retry_after=2, hold=1.0))
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:  # the retry's wait: the fault has passed by then
            sleeps.append(seconds)
            sim.inject_faults(None)

        with _http(sleep, max_attempts=2) as http:
            assert _call(http, sim, path, method, classify) == expected
            assert http.stats.retries == 1
            assert dict(http.stats.retried) == {RETRIED_AS[kind].__name__: 1}
            assert http.stats.rate_limit_waits == (1 if RETRIED_AS[kind] is RateLimited else 0)
    if kind in ("429", "403-secondary"):
        assert 2.0 <= sleeps[0] <= 2.2  # the Retry-After the fault asked for
    else:
        assert len(sleeps) == 1 and sleeps[0] <= 0.05  # the configured backoff


@pytest.mark.parametrize("kind", sorted(RETRIED_AS))
def test_a_persistent_fault_fails_cleanly_naming_the_url_never_a_secret(kind: str) -> None:
    with _fault_target(kind) as (sim, path, method, classify):
        sim.inject_faults(FaultPlan(rates={kind: 1.0}, retry_after=0, hold=1.0))
        sleeps: list[float] = []
        with _http(sleeps.append, max_attempts=2) as http, pytest.raises(RETRIED_AS[kind]) as err:
            _call(http, sim, path, method, classify)
        assert sim.faults is not None
        injected = sim.faults.counts()[kind]
    attempts = 2 * (4 if RETRIED_AS[kind] is RateLimited else 1)
    assert injected == attempts and len(sleeps) == attempts - 1
    message = str(err.value)
    assert path in message and SECRET not in message and SECRET not in repr(err.value)
    assert "<html" not in message.lower()
    if kind in ("html", "malformed"):
        assert "not JSON" in message and method in message


def test_a_record_missing_a_field_is_not_an_http_error(jira: JiraSimulator) -> None:
    jira.inject_faults("missing-field=1")
    with _http(lambda s: None) as http:
        body = _call(http, jira, SEARCH, "POST", None)
        assert http.stats.retries == 0
    assert len([i for i in body["issues"] if "created" not in i["fields"]]) == 1


# ---------------------------------------------------------------------- syncs under faults


@dataclass
class Tracker:
    """A simulator factory and the TOML of a source reading it."""

    make: Callable[[], Simulator]
    source: str


TRACKERS: dict[str, Tracker] = {
    "jira": Tracker(
        lambda: JiraSimulator(items=80, seed=21, anchor=ANCHOR, token=SECRET, email="f@x.org"),
        'kind = "jira"\nemail_env = "FAULTS_EMAIL"\njql = "project = DEMO"\ndeployment = "cloud"\n'
        "page_size = 5\nbatch_size = 5\n",
    ),
    "github": Tracker(
        lambda: GitHubSimulator(
            repos=("acme/web",), issues=40, pulls=40, seed=21, anchor=ANCHOR, token=SECRET
        ),
        'kind = "github"\nrepos = ["acme/web"]\nper_page = 5\nbatch_size = 5\n',
    ),
    "gitlab": Tracker(
        lambda: GitLabSimulator(
            projects=("acme/web",),
            issues=40,
            merge_requests=40,
            seed=21,
            anchor=ANCHOR,
            token=SECRET,
        ),
        'kind = "gitlab"\nprojects = ["acme/web"]\nper_page = 5\nconcurrency = 1\n',
    ),
}


@pytest.fixture(params=sorted(TRACKERS))
def tracker(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Simulator]]:
    monkeypatch.setenv("FAULTS_TOKEN", SECRET)
    monkeypatch.setenv("FAULTS_EMAIL", "f@x.org")
    with TRACKERS[request.param].make() as sim:
        yield request.param, sim


def _config(folder: Path, name: str, sim: Simulator, warehouse_url: str) -> Config:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "syncd.toml"
    path.write_text(
        f'[warehouse]\nurl = "{warehouse_url}"\n'
        '[http]\ntimeout = "250ms"\nbackoff_initial = "10ms"\nbackoff_max = "50ms"\n'
        "max_attempts = 4\n"
        f'[[sources]]\nname = "src"\nurl = "{sim.base_url}"\ntoken_env = "FAULTS_TOKEN"\n'
        + TRACKERS[name].source,
        encoding="utf-8",
    )
    return load_config(path)


def _sync(config: Config, warehouse: Warehouse, **kw: Any) -> tuple[SourceResult, dict[str, Any]]:
    """One run of the source; waits are recorded, not slept."""
    sleeps: list[float] = []
    with HttpClient(config.http, sleep=sleeps.append) as http:
        result = sync_source(config, config.sources[0], warehouse, http, **kw)
        return result, {**http.stats.snapshot(), "sleeps": len(sleeps)}


def _snapshot(warehouse: Warehouse) -> dict[str, Any]:
    """Everything a sync stores about the tracker's items (not when it stored them)."""
    with warehouse.engine.connect() as conn:
        links = sorted(
            tuple(str(v) for v in row)
            for row in conn.execute(
                sa.select(LINKS.c.item_id, LINKS.c.link_type, LINKS.c.direction, LINKS.c.target_key)
            )
        )
    return {
        "items": list(iter_items(warehouse)),
        "transitions": list(iter_transitions(warehouse)),
        "links": links,
    }


def _holds(warehouse: Warehouse) -> list[str]:
    """Streams whose cursor is mid-listing or holds its watermark for skipped records."""
    with warehouse.engine.connect() as conn:
        rows = conn.execute(sa.select(CURSORS.c.stream, CURSORS.c.state)).all()
    out = []
    for stream, state in rows:
        decoded = json.loads(state)
        if decoded.get(HOLD_KEY) or decoded.get("token") or decoded.get("next"):
            out.append(stream)
    return out


def _until_settled(config: Config, warehouse: Warehouse, limit: int = 12) -> list[SourceResult]:
    """Runs of the source until one succeeds with no stream held or mid-listing."""
    results = []
    for _ in range(limit):
        result, _stats = _sync(config, warehouse)
        results.append(result)
        if result.ok and not _holds(warehouse):
            return results
    raise AssertionError(f"not settled after {limit} runs: {[r.error for r in results]}")


def test_a_seeded_ten_percent_fault_sync_ends_with_the_fault_free_warehouse(
    tracker: tuple[str, Simulator], tmp_path: Path, warehouse_url: str
) -> None:
    name, sim = tracker
    reference_url = f"sqlite:///{tmp_path / 'a.db'}"
    clean = _config(tmp_path / "a", name, sim, reference_url)
    faulty = _config(tmp_path / "b", name, sim, warehouse_url)
    a, b = Warehouse(reference_url), Warehouse(warehouse_url)
    injected: dict[str, int] = {}
    for round_ in range(2):
        sim.inject_faults(None)
        first, _ = _sync(clean, a)
        assert first.ok, first.error
        sim.inject_faults(FaultPlan(total=0.1, seed=round_ + 1, retry_after=1, hold=1.0))
        runs = _until_settled(faulty, b)
        assert sim.faults is not None
        for kind, n in sim.faults.counts().items():
            injected[kind] = injected.get(kind, 0) + n
        assert runs[-1].ok
        assert _snapshot(b) == _snapshot(a)
        sim.inject_faults(None)
        sim.mutate(6)
    assert sum(injected.values()) >= 3, injected  # seeded: the same faults every time


def test_a_page_that_cannot_be_parsed_fails_the_run_keeps_the_cursor_and_the_next_run_continues(
    tracker: tuple[str, Simulator], tmp_path: Path, warehouse_url: str
) -> None:
    name, sim = tracker
    config = _config(tmp_path / "b", name, sim, warehouse_url)
    warehouse = Warehouse(warehouse_url)
    committed: list[Any] = []

    def after_page(result: SourceResult) -> None:
        if result.pages == 1:  # the first page is in: from now on every body is broken
            committed.append((_cursors(warehouse), len(list(iter_items(warehouse)))))
            sim.inject_faults(FaultPlan(rates={"malformed": 1.0}))

    failed, stats = _sync(config, warehouse, progress=after_page)
    assert not failed.ok and failed.error is not None
    assert "not JSON" in failed.error and sim.base_url.split("//")[1] in failed.error
    assert SECRET not in failed.error
    assert stats["retried"] == {"MalformedPage": 3}  # max_attempts = 4
    [(cursors, stored)] = committed
    assert _cursors(warehouse) == cursors  # the failed page moved no cursor
    assert len(list(iter_items(warehouse))) == stored > 0

    sim.inject_faults(None)
    again, _ = _sync(config, warehouse)
    assert again.ok and again.items + stored == len(list(iter_items(warehouse)))
    reference_url = f"sqlite:///{tmp_path / 'a.db'}"
    reference = Warehouse(reference_url)
    assert _sync(_config(tmp_path / "a", name, sim, reference_url), reference)[0].ok
    assert _snapshot(warehouse) == _snapshot(reference)


def _cursors(warehouse: Warehouse) -> dict[str, Any]:
    with warehouse.engine.connect() as conn:
        rows = conn.execute(sa.select(CURSORS.c.stream, CURSORS.c.watermark, CURSORS.c.state))
        return {stream: (watermark, state) for stream, watermark, state in rows}


def test_records_skipped_for_a_missing_field_are_fetched_again_by_the_next_run(
    tracker: tuple[str, Simulator],
    tmp_path: Path,
    warehouse_url: str,
) -> None:
    name, sim = tracker
    config = _config(tmp_path / "b", name, sim, warehouse_url)
    warehouse = Warehouse(warehouse_url)
    sim.inject_faults(FaultPlan(rates={"missing-field": 1.0}, seed=3))
    broken, _ = _sync(config, warehouse)
    assert broken.ok and broken.skipped > 0
    held = _holds(warehouse)
    assert held  # the watermark waits for the skipped records
    with warehouse.engine.connect() as conn:
        for stream, watermark, state in conn.execute(
            sa.select(CURSORS.c.stream, CURSORS.c.watermark, CURSORS.c.state)
        ):
            hold = json.loads(state).get(HOLD_KEY)
            if stream in held:
                assert watermark is None and hold["strikes"]  # first sync: held at the start

    sim.inject_faults(None)
    again, _ = _sync(config, warehouse)
    assert again.ok and again.skipped == 0 and again.items >= broken.skipped
    assert not _holds(warehouse)
    reference_url = f"sqlite:///{tmp_path / 'a.db'}"
    reference = Warehouse(reference_url)
    assert _sync(_config(tmp_path / "a", name, sim, reference_url), reference)[0].ok
    assert _snapshot(warehouse) == _snapshot(reference)
    assert _cursors(warehouse).keys() == _cursors(reference).keys()
    for stream, (watermark, _state) in _cursors(reference).items():
        assert _cursors(warehouse)[stream][0] == watermark  # the hold released to the same place


# ---------------------------------------------------------------------- the command line


SMALL_GITLAB = ("--issues", "3", "--merge-requests", "3", "--faults", "500=1", "--fault-seed", "4")


def test_simulate_faults_option_serves_faults_and_prints_them_when_stopped() -> None:
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd.cli", "simulate", "gitlab", "--port", "0", *SMALL_GITLAB],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        base = banner.split(" on ", 1)[1].split(" ", 1)[0]
        for _ in range(2):
            answer = httpx.get(f"{base}/api/v4/projects/acme%2Fweb/issues", timeout=10)
            assert answer.status_code == 500
        assert httpx.get(f"{base}/_sim/stats", timeout=10).json()["faults"] == {"500": 2}
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert out.strip().splitlines()[-1] == "simulator: 2 faults injected in 2 API requests (500=2)"


def test_simulate_refuses_a_bad_fault_plan(capsys: pytest.CaptureFixture[str]) -> None:
    from syncd.simulator.jira import main

    assert main(["--items", "1", "--faults", "403-secondary=0.1"]) == 2
    assert "cannot inject 403-secondary" in capsys.readouterr().err
    assert main(["--items", "1", "--faults", "sometimes"]) == 2
    assert "expected a fraction" in capsys.readouterr().err
