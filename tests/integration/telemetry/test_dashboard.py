"""The dashboard as a person sees it (tmux), the exporter as Prometheus scrapes it, and the
headless output."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cwndproxy.lab.origin import DemoOrigin
from cwndproxy.lab.ports import free_port
from cwndproxy.telemetry.dashboard import log_line, render, snapshot, status_fields
from cwndproxy.telemetry.logs import JsonFormatter
from tests.conftest import ProxyFactory, proxy_config, require_tool, run, wait_for

ROOT = Path(__file__).resolve().parents[3]


def _fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def get(url: str) -> tuple[int, bytes]:
    return await asyncio.to_thread(_fetch, url)


async def test_metrics_parse_and_healthz_follows_the_upstream(make_proxy: ProxyFactory) -> None:
    port = free_port()
    origin = DemoOrigin("127.0.0.1", port)
    await origin.start()
    config = proxy_config(port)
    config.server.admin = f"127.0.0.1:{free_port()}"
    async with make_proxy(config) as proxy:
        assert proxy.admin is not None
        base = f"http://127.0.0.1:{proxy.admin.port}"
        status, body = await get(f"{base}/healthz")
        assert status == 200 and json.loads(body)["ready_sessions"] == 2
        # Read-only endpoints: other methods get 405 with Allow; HEAD gets no body.
        for path in ("/metrics", "/healthz"):
            result = await run(
                require_tool("curl"), "-s", "-i", "-X", "POST", "-d", "x", f"{base}{path}"
            )
            assert result.stdout.startswith(b"HTTP/1.1 405"), result.stdout[:80]
            assert b"Allow: GET, HEAD" in result.stdout
        result = await run(require_tool("curl"), "-s", "-I", f"{base}/healthz")
        assert result.stdout.startswith(b"HTTP/1.1 200") and result.stdout.endswith(b"\r\n\r\n")
        result = await run(
            require_tool("curl"),
            "-s",
            "-o",
            "/dev/null",
            f"http://127.0.0.1:{config.server.port}/cwnd/blob?size=123456",
        )
        assert result.code == 0
        status, body = await get(f"{base}/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        rx = sum(
            s.value
            for s in families["cwnd_proxy_upstream_bytes"].samples
            if s.labels.get("kind") == "real"
            and s.labels.get("direction") == "rx"
            and s.name.endswith("_total")
        )
        assert rx == 123456
        assert {s.labels["session"] for s in families["cwnd_proxy_session_state"].samples} == {
            "0",
            "1",
        }
        ready = families["cwnd_proxy_sessions_ready"].samples[0].value
        assert ready == 2
        # Client requests and upstream attempts are counted apart: a GET the upstream
        # resets is one client request (a 502) and two upstream attempts (one retry).
        result = await run(
            require_tool("curl"), "-s", f"http://127.0.0.1:{config.server.port}/reset"
        )
        assert result.code == 0
        status, body = await get(f"{base}/metrics")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}

        def value(family: str, name: str, **labels: str) -> float:
            return sum(
                s.value
                for s in families[family].samples
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
            )

        client = "cwnd_proxy_client_requests"
        assert value(client, f"{client}_total", code="2xx") == 1
        assert value(client, f"{client}_total", code="5xx") == 1
        upstream = "cwnd_proxy_upstream_requests"
        assert value(upstream, f"{upstream}_total") == 3
        assert value("cwnd_proxy_upstream_errors", "cwnd_proxy_upstream_errors_total") == 2
        duration = "cwnd_proxy_client_request_duration_seconds"
        assert value(duration, f"{duration}_count") == 2
        assert value(duration, f"{duration}_bucket", le="+Inf") == 2
        headers = "cwnd_proxy_client_response_headers_seconds"
        assert value(headers, f"{headers}_count") == 2
        assert value("cwnd_proxy_build_info", "cwnd_proxy_build_info", strategy="off") == 1
        assert "process_resident_memory_bytes" in families
        assert not any(name.endswith("bits_per_second") for name in families)

        origin.close_connections()
        await origin.stop()
        async with asyncio.timeout(10):
            while (await get(f"{base}/healthz"))[0] != 503:  # noqa: ASYNC110 - polls HTTP
                await asyncio.sleep(0.1)
        origin = DemoOrigin("127.0.0.1", port)
        await origin.start()
        async with asyncio.timeout(15):
            while (await get(f"{base}/healthz"))[0] != 200:  # noqa: ASYNC110 - polls HTTP
                await asyncio.sleep(0.1)
    await origin.stop()


async def test_snapshot_render_and_headless_lines(
    make_proxy: ProxyFactory, origin: DemoOrigin
) -> None:
    config = proxy_config(origin.port)
    config.pool.strategy = "burst"
    config.pool.warm_up_download_path = "/cwnd/blob?size=100000000"
    config.pool.per_connection_dwell_ms = 300
    async with make_proxy(config) as proxy:
        # Both sessions warm and holding, with dummy data received: what the view shows.
        await wait_for(
            lambda: (
                all(
                    slot.controller is not None and slot.controller.state_name == "holding"
                    for slot in proxy.pool.slots
                )
                and proxy.pool.totals().dummy_rx > 0
            )
        )
        snap = snapshot(proxy.telemetry)
        assert len(snap.rows) == 2
        assert all(r.rtt_kernel_ms is not None for r in snap.rows), "TCP_INFO is read"
        unit = r"[\d.]+(B|kB|MB|GB)"
        assert all(re.fullmatch(rf"{unit}/{unit}", r.window) for r in snap.rows), snap.rows
        assert snap.totals["dummy_rx"] > 0
        line = log_line(snap)
        assert "ready 2/2" in line and "dummy" in line
        # The periodic status as --log-format json writes it.
        record = logging.LogRecord("cwndproxy", logging.INFO, "", 0, "status", None, None)
        record.fields = status_fields(snap)
        data = json.loads(JsonFormatter().format(record))
        assert data["rows"][0]["index"] == 0 and "ts" in data and "history_real" not in data
        from rich.console import Console

        console = Console(width=80, record=True, file=io.StringIO())
        console.print(render(snap))
        text = console.export_text()
        assert "state" in text and text.count("holding") >= 2, text


def capture(session: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True
    ).stdout


def test_dashboard_in_tmux_shows_sessions_real_and_dummy_traffic(tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux not installed (make test installs it)")
    curl = require_tool("curl")
    port = free_port()
    name = f"cwnd-test-{port}"
    cmd = f"cd {ROOT} && {sys.executable} -m cwndproxy demo --listen 127.0.0.1:{port}"
    subprocess.run(["tmux", "new", "-d", "-s", name, "-x", "80", "-y", "34", cmd], check=True)
    try:
        deadline = time.monotonic() + 30
        while "holding" not in capture(name):
            assert time.monotonic() < deadline, capture(name)
            time.sleep(0.3)
        screen_holding = capture(name)
        # A slow client on a large object keeps the upstream stream open (its window fills).
        fetch = subprocess.Popen(
            [
                curl,
                "-s",
                "-o",
                "/dev/null",
                "--limit-rate",
                "20M",
                f"http://127.0.0.1:{port}/cwnd/blob?size=400000000",
            ]
        )
        try:
            time.sleep(2.5)
            screen_serving = capture(name)
        finally:
            fetch.terminate()
            fetch.wait(timeout=30)
        (tmp_path / "screen.txt").write_text(screen_serving)
        rows = [line for line in screen_holding.splitlines() if re.match(r"^\d\s+\w+", line)]
        assert len(rows) == 4, screen_holding
        assert "holding" in screen_holding
        # Dummy traffic is visible while holding: dummy rx is not zero on the rows.
        assert re.search(r"\s0B/\d+(\.\d+)?(kB|MB)\s", screen_holding), screen_holding
        # The header fits 80 columns: its second line starts a line of its own.
        assert re.search(r"^download / auto, target ", screen_holding, re.M), screen_holding
        assert "serving" in screen_serving, screen_serving
        real = re.search(r"real (\S+)/(\S+)", screen_serving)
        assert real and real.group(2) != "0B", screen_serving
    finally:
        subprocess.run(["tmux", "send-keys", "-t", name, "C-c"], check=False)
        time.sleep(1.5)
        subprocess.run(["tmux", "kill-session", "-t", name], check=False, stderr=subprocess.DEVNULL)
