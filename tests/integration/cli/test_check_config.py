"""``cwnd-proxy check-config`` and configuration errors, as an operator meets them: the real
command in a subprocess, its exit code and its output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cwndproxy", *args], capture_output=True, text=True, timeout=60
    )


def test_bad_config_exits_2_with_message_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[target]\nhost = "origin.example"\n[pool]\nwarm_up_direction = "upload"\n'
        'strategy = "burst"\n'
    )
    result = _cli("check-config", str(path))
    assert result.returncode == 2
    assert 'pool.warm_up_direction = "upload" needs pool.warm_up_upload_path' in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_prints_effective_config(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(
        '[target]\nhost = "origin.example"\n[pool]\npool_size = 2\nbandwidth_mbps = 50\n'
        'strategy = "off"\nwarm_up_headers = { authorization = "Bearer s3cret" }\n'
    )
    result = _cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "pool_size = 2" in result.stdout
    assert "per_connection_target_bps = 50000000" in result.stdout
    assert "# derived: max_frame_size = 16384" in result.stdout  # 50 Mbit/s x 2 ms < 16 KiB
    # Credentials in warm-up headers are not printed.
    assert 'warm_up_headers = { "authorization" = "<redacted>" }' in result.stdout
    assert "s3cret" not in result.stdout


def test_run_without_upstream_is_a_clear_error() -> None:
    result = _cli("run")
    assert result.returncode == 2
    assert "needs --upstream" in result.stderr


def test_check_config_names_a_missing_upstream(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("[pool]\npool_size = 2\n")
    result = _cli("check-config", str(path))
    assert result.returncode == 2
    assert "target.host is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_reference_prints_the_reference() -> None:
    from cwndproxy.config.reference import markdown

    assert _cli("check-config", "--reference").stdout == markdown()
