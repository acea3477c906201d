"""What operators install: the systemd unit passes systemd-analyze, the Dockerfile runs the
proxy itself as PID 1 (exec form, SIGTERM), and the license matches pyproject.toml.

No Docker engine runs on this machine, so the image is not built here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (ROOT / "contrib" / "cwnd-proxy.service").read_text()
    # verify checks that ExecStart's program exists: point it at this checkout's command.
    command = Path(sys.executable).parent / "cwnd-proxy"
    assert command.exists()
    unit = unit.replace("/opt/cwnd-proxy/.venv/bin/cwnd-proxy", str(command))
    path = tmp_path / "cwnd-proxy.service"
    path.write_text(unit)
    result = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    # Unknown keys and bad values are warnings with exit code 0: any line naming the unit.
    problems = [line for line in result.stderr.splitlines() if path.name in line]
    assert result.returncode == 0 and problems == [], result.stderr


def test_the_dockerfile_runs_the_proxy_as_pid_1() -> None:
    text = (ROOT / "Dockerfile").read_text()
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    assert entry is not None, "ENTRYPOINT must be in exec form (JSON): no shell as PID 1"
    assert json.loads(entry[1]) == ["cwnd-proxy"]
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd is not None and json.loads(cmd[1])[:2] == ["run", "--no-tui"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "cwnd-proxy" in scripts
    assert "STOPSIGNAL SIGTERM" in text


def test_the_license_file_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
