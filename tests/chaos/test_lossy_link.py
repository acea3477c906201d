"""1% random loss on the emulated WAN (root only) while real and dummy traffic share every
session: no stream gets stuck. Every client fetch completes, byte-exact, within its own
deadline, and the proxy still answers at the end; assertions on completion, never speed."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from cwndproxy.lab.testbed import netns, origins
from tests.conftest import proxy_argv_for_testbed

pytestmark = pytest.mark.usefixtures("testbed_available")

RTT = 0.040
RATE = 20e6
SIZE = 1_000_000
ROUNDS = 3
CONCURRENT = 6


def test_no_stream_gets_stuck_on_a_lossy_link() -> None:
    with netns.Testbed(netns.LinkSpec(RTT, RATE, loss=0.01)) as tb:
        info = origins.start_nginx(tb, blob_size=4_000_000)
        proxy = tb.start_proxy(proxy_argv_for_testbed(info, pool_size=2, bandwidth_mbps=20))
        try:
            time.sleep(2.0)  # connect; the warm-up's dummy fetches run on the lossy link
            url = f"http://127.0.0.1:8080{info.blob_path}"

            def fetch(_: int) -> str:
                result = tb.run(
                    "c",
                    [
                        "curl",
                        "-s",
                        "-o",
                        "/dev/null",
                        "--max-time",
                        "60",
                        "-w",
                        "%{http_code} %{size_download}",
                        "-r",
                        f"0-{SIZE - 1}",
                        url,
                    ],
                    check=False,
                )
                return result.stdout.strip()

            with concurrent.futures.ThreadPoolExecutor(CONCURRENT) as pool:
                for _ in range(ROUNDS):
                    outcomes = list(pool.map(fetch, range(CONCURRENT)))
                    assert outcomes == [f"206 {SIZE}"] * CONCURRENT, outcomes
                    time.sleep(1.5)  # idle: PINGs and checks on the lossy link
            assert fetch(0) == f"206 {SIZE}"
        finally:
            proxy.send_signal(2)
            proxy.wait(timeout=20)
