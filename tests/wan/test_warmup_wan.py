"""WAN smoke test of the warm-up engine (root only): with `burst` the origin's window is
held through idle periods; with `off` it collapses. 40 ms, 20 Mbit/s, generous margins;
assertions on the origin's kernel state, not on times."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from cwndproxy.testbed import netns, origins
from cwndproxy.testbed.observer import KernelSample
from tests.wan.test_testbed import REASON

pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

RTT = 0.040
RATE = 20e6
BDP_PACKETS = RATE * RTT / 8 / 1448  # ~69


def run_arm(strategy: str) -> tuple[list[KernelSample], float, float]:
    """Proxy (pool of 1) in the client namespace; a real fetch, then 2.5 s of no requests,
    then another fetch. Returns the origin-side samples and the quiet period's bounds."""
    with netns.Testbed(netns.LinkSpec(RTT, RATE)) as tb:
        info = origins.start_nginx(tb, blob_size=4_000_000)
        observer = tb.observer(origins.TLS_PORT, 0.02)
        proxy = tb.popen(
            "c",
            [
                sys.executable,
                "-m",
                "cwndproxy",
                "run",
                "--no-tui",
                "--listen",
                "127.0.0.1:8080",
                "--upstream",
                info.tls_url,
                "--ca-file",
                info.ca_file,
                "--pool-size",
                "1",
                "--bandwidth-mbps",
                "20",
                "--strategy",
                strategy,
                "--download-path",
                info.blob_path,
            ],
            register="proxy",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            tb.wait_listening("c", 8080)
            url = f"http://127.0.0.1:8080{info.blob_path}"
            time.sleep(4.0)  # ramp
            for _ in range(2):  # real traffic grows the window in every arm
                tb.run("c", ["curl", "-s", "-o", "/dev/null", "-r", "0-999999", url])
            quiet_from = time.monotonic() - observer.started_at
            time.sleep(2.5)
            quiet_to = time.monotonic() - observer.started_at
            tb.run("c", ["curl", "-s", "-o", "/dev/null", "-r", "0-999999", url])
            time.sleep(0.3)
        finally:
            proxy.send_signal(2)
            proxy.wait(timeout=20)
            samples = observer.stop()
    return samples, quiet_from, quiet_to


def test_burst_holds_the_origin_window_and_off_loses_it() -> None:
    burst, q0, q1 = run_arm("burst")
    held = [s for s in burst if q0 + 0.5 <= s.at <= q1 and s.cwnd]
    assert held, "no samples in the quiet period"
    # The server was never idle for an RTO (~240 ms here), and kept its window.
    assert max(s.lastsnd_ms or 0 for s in held) < 240
    assert min(s.cwnd for s in held if s.cwnd) >= 0.5 * BDP_PACKETS

    off, q0, q1 = run_arm("off")
    quiet = [s for s in off if q0 + 0.5 <= s.at <= q1]
    assert max(s.lastsnd_ms or 0 for s in quiet) > 1000, "off sends nothing while idle"
    after = [s for s in off if s.at > q1 and (s.lastsnd_ms or 10**9) < 100 and s.cwnd]
    assert after, "no sample of the fetch after the idle period"
    # Restarted from the initial window: the first sample of the next fetch is small.
    assert after[0].cwnd is not None and after[0].cwnd <= 0.5 * BDP_PACKETS


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
        deadline = time.monotonic() + 30
        while "through the proxy" not in banner:
            assert time.monotonic() < deadline, banner
            banner += proc.stdout.readline()
        m = re.search(r"ip netns exec (\S+) curl", banner)
        assert m, banner
        ns = m.group(1)
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
