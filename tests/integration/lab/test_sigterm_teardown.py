"""A test run stopped with SIGTERM still tears its fixtures down (tests/conftest.py), so a
testbed (namespaces, link process, nginx, state file) does not outlive a killed run."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[3]

SLEEPER = """
import pathlib
import time

import pytest


@pytest.fixture
def resource():
    yield
    pathlib.Path({marker!r}).write_text("torn down")


def test_sleeps(resource):
    pathlib.Path({started!r}).write_text("started")
    time.sleep(60)
"""


async def test_sigterm_runs_fixture_teardown(tmp_path: Path) -> None:
    marker, started = tmp_path / "marker", tmp_path / "started"
    test_file = tmp_path / "test_sleeper.py"
    test_file.write_text(SLEEPER.format(marker=str(marker), started=str(started)))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "tests.conftest",  # the hook under test, as the suite loads it
        str(test_file),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await wait_for(started.exists, timeout=60)
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert marker.read_text() == "torn down", out.decode()
    assert proc.returncode == 2, out.decode()  # pytest's "interrupted"
    assert b"stopped by signal 15" in out
