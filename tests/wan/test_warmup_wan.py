"""WAN smoke test of the warm-up engine (root only): with the default strategy the origin's
window is held through an idle period at almost no cost; with `off` it collapses. 40 ms,
20 Mbit/s, generous margins; assertions on the origin's kernel state (ss), never on times."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from cwndproxy.lab.testbed import netns, origins
from cwndproxy.lab.testbed.observer import KernelSample
from tests.conftest import proxy_argv_for_testbed

pytestmark = pytest.mark.usefixtures("testbed_available")

RTT = 0.040
RATE = 20e6
BDP_PACKETS = RATE * RTT / 8 / 1448  # ~69
IDLE = 5.0


def run_arm(strategy: str | None) -> tuple[list[KernelSample], float, float]:
    """Proxy (pool of 1) in the client namespace; two real fetches, then IDLE seconds of
    no requests, then another fetch. Returns the origin-side samples and the idle period's
    bounds."""
    with netns.Testbed(netns.LinkSpec(RTT, RATE)) as tb:
        info = origins.start_nginx(tb, blob_size=4_000_000)
        observer = tb.observer(origins.TLS_PORT, 0.02)
        argv = proxy_argv_for_testbed(info, pool_size=1, bandwidth_mbps=20)
        if strategy is not None:
            argv += ["--strategy", strategy]
        proxy = tb.start_proxy(argv)
        try:
            url = f"http://127.0.0.1:8080{info.blob_path}"
            time.sleep(3.0)  # connect and grow
            for _ in range(2):  # real traffic grows the window in every arm
                tb.run("c", ["curl", "-s", "-o", "/dev/null", "-r", "0-999999", url])
            quiet_from = time.monotonic() - observer.started_at
            time.sleep(IDLE)
            quiet_to = time.monotonic() - observer.started_at
            tb.run("c", ["curl", "-s", "-o", "/dev/null", "-r", "0-999999", url])
            time.sleep(0.3)
        finally:
            proxy.send_signal(2)
            proxy.wait(timeout=20)
            samples = observer.stop()
    return samples, quiet_from, quiet_to


def _moved(samples: list[KernelSample], a: float, b: float) -> int:
    """Bytes the origin sent (acked) between two times, over its connections."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for s in samples:
        if a <= s.at <= b and s.bytes_acked is not None:
            first.setdefault(s.peer, s.bytes_acked)
            last[s.peer] = s.bytes_acked
    return sum(last[p] - first[p] for p in last)


def test_the_default_holds_the_origin_window_cheaply_and_off_loses_it() -> None:
    held, q0, q1 = run_arm(None)
    quiet = [s for s in held if q0 + 0.5 <= s.at <= q1 and s.cwnd]
    assert quiet, "no samples in the idle period"
    # The origin was never idle for an RTO (~240 ms here) and kept its window.
    assert max(s.lastsnd_ms or 0 for s in quiet) < 240
    before = [s for s in quiet if s.at >= q1 - 0.5]
    assert min(s.effective_cwnd() or 0 for s in before) >= 0.5 * BDP_PACKETS
    # PINGs only while idle: far below 5% of the path (a burst strategy needs ~25%).
    idle_bps = _moved(held, q0 + 0.5, q1) * 8 / (q1 - q0 - 0.5)
    assert idle_bps < 0.05 * RATE

    off, q0, q1 = run_arm("off")
    quiet = [s for s in off if q0 + 0.5 <= s.at <= q1]
    # off's RTT PINGs come once a second, every one after an idle RTO: each send restarts.
    before = [s for s in quiet if s.at >= q1 - 0.5 and s.cwnd]
    assert before and min(s.effective_cwnd() or 10**9 for s in before) <= 0.5 * BDP_PACKETS


def test_demo_across_an_emulated_wan() -> None:
    """`cwnd-proxy demo --wan` as a user runs it: banner, a fetch through the proxy in the
    client namespace, Ctrl-C, and the testbed is gone afterwards."""
    import re
    import signal

    before = {s.name for s in netns.list_states()}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cwndproxy",
            "demo",
            "--wan",
            "40ms,20mbit",
            "--no-tui",
            "--pool-size",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = ""
        deadline = time.monotonic() + 120
        while "direct, reused after" not in banner:
            assert time.monotonic() < deadline and proc.poll() is None, banner
            banner += proc.stdout.readline()
        # The comparison it ran itself: three times, each with its ratio to ideal.
        for row in ("through the warm proxy", "direct, new connection", "direct, reused after"):
            assert re.search(rf"{row}.*\d+\.\d\d s  \(\d+\.\d\dx ideal\)", banner), banner
        m = re.search(r"ip netns exec (\S+) curl", banner)
        assert m, banner
        ns = m.group(1)
        # Every command the banner prints works as printed (once the proxy listens again).
        commands = [
            line.split(":", 1)[1].strip() for line in banner.splitlines() if "ip netns exec" in line
        ]
        assert len(commands) == 2, banner
        for command in commands:
            for _ in range(50):
                r = subprocess.run(command, shell=True, capture_output=True, text=True)
                if re.fullmatch(r"\d+\.\d+s\n", r.stdout):
                    break
                time.sleep(0.2)
            assert re.fullmatch(r"\d+\.\d+s\n", r.stdout), (command, r.stdout, r.stderr)
        url = "http://127.0.0.1:8080/cwnd/blob?size=400000"
        out = ""
        for _ in range(50):  # the proxy needs a moment to listen
            r = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    url,
                ],
                capture_output=True,
                text=True,
            )
            out = r.stdout
            if out == "200":
                break
            time.sleep(0.2)
        assert out == "200"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert {s.name for s in netns.list_states()} == before


def test_on_a_lossy_path_auto_renews_loss_cut_sessions_when_asked(tmp_path: Path) -> None:
    """40 ms, 20 Mbit/s, 5% random loss: a 200 KB fetch leaves the origin's window far below
    what a new connection's slow start delivers sooner (11-14 KB of a 100 KB target in a
    trial run). With --renew-lossy-sessions auto then replaces the session by a fresh
    connection, as its log says; in that run after every one of the four fetches."""
    log = tmp_path / "proxy.log"
    with netns.Testbed(netns.LinkSpec(RTT, RATE, loss=0.05)) as tb:
        info = origins.start_nginx(tb, blob_size=4_000_000)
        argv = proxy_argv_for_testbed(info, pool_size=1, bandwidth_mbps=20)
        proxy = tb.start_proxy([*argv, "--renew-lossy-sessions"], log=log)
        try:
            url = f"http://127.0.0.1:8080{info.blob_path}"
            time.sleep(3.0)  # connect and grow
            for _ in range(4):
                done = tb.run("c", ["curl", "-s", "-o", "/dev/null", "-r", "0-199999", url])
                assert done.returncode == 0
                time.sleep(1.5)
        finally:
            proxy.send_signal(2)
            proxy.wait(timeout=20)
    text = log.read_text()
    assert text.count("renewed: loss cut its window to") >= 2, text
