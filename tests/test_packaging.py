"""The service packaging: Dockerfile (hadolint), compose file, systemd unit, example configs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from syncd.config import load_config

REPO = Path(__file__).resolve().parents[1]


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint is missing: it comes with the test extras"
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_hadolint(), str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_daemon_as_non_root_with_a_healthcheck() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    instructions = [line.split()[0] for line in text.splitlines() if line and line[0].isupper()]
    assert instructions.count("USER") == 1 and "USER 10001" in text
    assert "HEALTHCHECK" in instructions and "/healthz" in text
    assert 'ENTRYPOINT ["syncd"]' in text and 'CMD ["run", "-c", "/etc/syncd/syncd.toml"]' in text


def test_compose_runs_syncd_on_postgresql_with_its_config(monkeypatch: object) -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"warehouse", "syncd"}
    syncd = services["syncd"]
    assert syncd["depends_on"]["warehouse"]["condition"] == "service_healthy"
    mounted = syncd["volumes"][0].split(":")[0]
    config = load_config(REPO / mounted)
    assert config.warehouse.url_env == "SYNCD_WAREHOUSE_URL"
    assert config.daemon.listen == "0.0.0.0:9464"
    secret_files = {s["file"] for s in compose["secrets"].values()}
    assert all(f.startswith("secrets/") for f in secret_files)
    assert "/secrets/" in (REPO / ".gitignore").read_text(encoding="utf-8").split()


def test_systemd_unit_runs_the_daemon() -> None:
    unit = (REPO / "deploy" / "syncd.service").read_text(encoding="utf-8")
    assert "ExecStart=/opt/syncd/bin/syncd run -c /etc/syncd/syncd.toml" in unit
    assert "User=syncd" in unit and "EnvironmentFile=/etc/syncd/secrets.env" in unit
