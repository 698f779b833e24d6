"""The dashboard in a real browser: `syncd serve` on 127.0.0.1, the page loaded in headless
Debian Chromium, every chart's SVG holding data marks, and a screenshot that is not blank.

Without /usr/bin/chromium the browser tests skip, saying so, except under CI (the `CI`
environment variable), where a missing browser is a failure: .ci/run installs it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from syncd.api.app import create_app
from syncd.warehouse.store import Warehouse
from tests.test_api import AS_OF, TestClient, populate

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHARTS = {
    "velocity",
    "flow-time",
    "efficiency",
    "load",
    "distribution",
    "cfd",
    "distribution-target",
    "ageing-wip",
}


def chromium() -> Path:
    if not CHROMIUM.exists():
        reason = (
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) to "
            "run the dashboard's browser tests"
        )
        if os.environ.get("CI"):
            pytest.fail(reason + " — CI must run them (.ci/run installs it)")
        pytest.skip(reason)
    return CHROMIUM


@dataclass
class Served:
    url: str
    process: subprocess.Popen[str]
    stderr: list[str] = field(default_factory=list)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """`syncd serve` on a free port of 127.0.0.1, over a populated SQLite warehouse."""
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    populate(url).close()
    config = tmp_path / "syncd.toml"
    config.write_text(f'[warehouse]\nurl = "{url}"\n', encoding="utf-8")
    command = [sys.executable, "-m", "syncd.cli", "serve", "-c", str(config)]
    process = subprocess.Popen(
        [*command, "--listen", "127.0.0.1:0"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    first = process.stderr.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+)/", first)
    assert match, f"syncd serve did not say where it listens: {first!r}"
    served = Served(match.group(1), process, [first])
    yield served
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def _browser(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    command = [
        str(chromium()),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


class _Charts(HTMLParser):
    """Each chart's SVG: its id, role, labels, and how many data marks it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, dict[str, object]] = {}
        self.ids_with_text: dict[str, str] = {}
        self._chart: str | None = None
        self._text_of: str | None = None
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name in ("src", "href"):
            value = a.get(name) or ""
            if value.startswith(("http:", "https:", "//")):
                self.external.append(value)
        if tag in ("script", "link", "img", "iframe"):
            self.external.append(tag)
        classes = (a.get("class") or "").split()
        if tag == "svg" and "chart" in classes:
            self._chart = a.get("id") or ""
            self.charts[self._chart] = {
                "role": a.get("role"),
                "labelledby": a.get("aria-labelledby"),
                "marks": 0,
            }
        elif self._chart is not None and "mark" in classes:
            marks = self.charts[self._chart]["marks"]
            assert isinstance(marks, int)
            self.charts[self._chart]["marks"] = marks + 1
        if tag in ("title", "desc") and a.get("id"):
            self._text_of = a["id"]
            self.ids_with_text[self._text_of or ""] = ""

    def handle_data(self, data: str) -> None:
        if self._text_of is not None:
            self.ids_with_text[self._text_of] += data

    def handle_endtag(self, tag: str) -> None:
        if tag in ("title", "desc"):
            self._text_of = None
        if tag == "svg":
            self._chart = None


def _check_charts(html: str) -> None:
    page = _Charts()
    page.feed(html)
    assert set(page.charts) == CHARTS
    for chart_id, chart in page.charts.items():
        assert chart["role"] == "img", chart_id
        marks = chart["marks"]
        assert isinstance(marks, int) and marks > 0, f"{chart_id} has no data marks"
        labelled = str(chart["labelledby"]).split()
        assert labelled == [f"{chart_id}-title", f"{chart_id}-desc"]
        for label in labelled:
            assert page.ids_with_text[label].strip(), f"{label} is empty"
    assert page.external == []  # nothing the page could fetch from elsewhere


def test_the_page_has_every_chart_with_data(tmp_path: Path) -> None:
    """The server's HTML itself (no browser needed): every chart, labelled, with marks; the
    page forbids loading anything else."""
    warehouse = populate(f"sqlite:///{tmp_path / 'w.db'}")
    client = TestClient(create_app(warehouse, clock=lambda: AS_OF))
    for stream in ("Checkout", "Payments"):
        response = client.get("/dashboard", params={"value_stream": stream, "weeks": 13})
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        _check_charts(response.text)
        assert f"Value stream {stream} · metrics as of 2026-11-18 12:00 UTC" in response.text
    # the first value stream by default, with links to the others
    first = client.get("/dashboard").text
    assert '<a href="?value_stream=Checkout&amp;weeks=26" aria-current="page">' in first
    assert '<a href="?value_stream=Payments&amp;weeks=26">' in first
    # the ageing chart has a point per item in progress
    wip = client.get("/api/v1/items", params={"value_stream": "Checkout", "limit": 1000}).json()[
        "items"
    ]
    in_progress = [i for i in wip if i["stage"] in ("active", "waiting")]
    ageing = first[first.index('id="ageing-wip"') :]
    ageing = ageing[: ageing.index("</svg>")]
    assert ageing.count('<circle class="mark"') == len(in_progress) > 0
    warehouse.close()


def test_an_empty_warehouse_says_what_to_do(tmp_path: Path) -> None:
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    response = TestClient(create_app(warehouse)).get("/dashboard")
    assert response.status_code == 200 and "run <code>syncd sync" in response.text
    warehouse.close()


def test_the_browser_renders_every_chart_with_data(served: Served, tmp_path: Path) -> None:
    url = f"{served.url}/dashboard?value_stream=Checkout"
    dom = _browser("--dump-dom", url, tmp_path=tmp_path).stdout
    assert "<title>Checkout · syncd dashboard</title>" in dom
    _check_charts(dom)


def test_a_screenshot_of_the_dashboard_is_not_blank(served: Served, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "dash.png"
    _browser(
        f"--screenshot={shot}",
        "--window-size=1400,2000",
        f"{served.url}/dashboard?value_stream=Checkout&weeks=26",
        tmp_path=tmp_path,
    )
    assert shot.exists() and shot.stat().st_size > 10_000
    with Image.open(shot) as image:
        assert image.size == (1400, 2000)
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, f"only {len(colours)} colours: a blank or unstyled page"
    present = {colour for _, colour in colours}
    # solid marks of the charts: the velocity bars (green) and feature bars (blue)
    for wanted in ((0x3A, 0x9A, 0x5B), (0x2F, 0x6F, 0xD0)):
        assert any(sum(abs(a - b) for a, b in zip(c, wanted, strict=True)) <= 9 for c in present)


def test_serve_stops_on_sigterm(served: Served) -> None:
    import httpx

    response = httpx.get(f"{served.url}/api/v1/value-streams", timeout=30)
    assert response.status_code == 200
    assert [s["name"] for s in response.json()["value_streams"]][:2] == ["Checkout", "Payments"]
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0
