#!/usr/bin/env python3
"""Set up and run syncd on a fresh machine that has only Python 3.11+ and git.

    python3 dev.py demo     create .venv, install syncd, run the demo
    python3 dev.py test     create .venv, install syncd with test tools, make sure a
                            PostgreSQL server and Chromium are installed (apt-get when
                            `initdb` or /usr/bin/chromium is missing), run the whole test
                            suite on SQLite and PostgreSQL
Extra arguments after `test` go to pytest.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def ensure_venv(extras: str) -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"syncd needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not PY.exists():
        say(f"creating {VENV}")
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    stamp = VENV / f".installed-{extras or 'base'}"
    if stamp.exists() and stamp.read_text() == digest:
        return
    say("installing syncd and its dependencies into .venv")
    subprocess.run([str(PY), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    target = f".[{extras}]" if extras else "."
    subprocess.run([str(PY), "-m", "pip", "install", "--quiet", "-e", target], check=True, cwd=ROOT)
    stamp.write_text(digest)


def has_postgres() -> bool:
    return bool(shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def apt_install(package: str, why: str) -> None:
    """Install a Debian package with apt-get (through `sudo -n` when not root)."""
    apt = shutil.which("apt-get")
    if not apt:
        sys.exit(f"{why} and apt-get is not available: install {package} and run again")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    say(f"installing {package} with apt-get ({why})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, apt, "-qq", "update"], check=True, env=env)
    subprocess.run(
        [*sudo, apt, "-qq", "install", "-y", "--no-install-recommends", package],
        check=True,
        env=env,
    )


def ensure_postgres() -> None:
    if has_postgres() or os.environ.get("SYNCD_TEST_PG_URL"):
        return
    apt_install("postgresql", "the PostgreSQL server (initdb) is missing")
    if not has_postgres():
        sys.exit("apt-get installed postgresql but initdb is still not found")


CHROMIUM = Path("/usr/bin/chromium")


def ensure_chromium() -> None:
    """The dashboard's browser test (tests/test_dashboard.py) runs Debian's Chromium."""
    if CHROMIUM.exists():
        return
    apt_install("chromium", f"{CHROMIUM} is missing")
    if not CHROMIUM.exists():
        sys.exit(f"apt-get installed chromium but {CHROMIUM} is still not found")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    os.chdir(ROOT)
    if command == "demo":
        ensure_venv("")
        return subprocess.run([str(PY), "-m", "syncd.demo", *rest]).returncode
    ensure_venv("test")
    ensure_postgres()
    ensure_chromium()
    env = {**os.environ, "SYNCD_TEST_PG": "required", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([str(PY), "-m", "pytest", *rest], env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
