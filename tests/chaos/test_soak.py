"""Load through the proxy to nginx with warm-up on, while nginx recycles its connections
(GOAWAY NO_ERROR after keepalive_requests streams: its default 1,000, and 100): not one
request may fail, the pool never backs off, and memory stays flat. ``make chaos`` runs
the issue's scale, 200,000 requests from 20 clients x 10 streams; CI runs 4,000.
Figures are printed (run with ``-s``)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.conftest import ProxyFactory, h2load_report, proxy_to_recycling_nginx, rss_mb

LONG = os.environ.get("CWND_CHAOS") == "long"
REQUESTS = 200_000 if LONG else 4_000


@pytest.mark.timeout(1500 if LONG else 300)
@pytest.mark.parametrize("keepalive_requests", [1000, 100])
@pytest.mark.parametrize("h1", [False, True], ids=["h2c", "http1"])
async def test_soak_through_recycling_nginx_fails_nothing(
    tmp_path: Path, make_proxy: ProxyFactory, keepalive_requests: int, h1: bool
) -> None:
    async with proxy_to_recycling_nginx(tmp_path, make_proxy, keepalive_requests) as proxy:
        rss_before = rss_mb()
        started = time.monotonic()
        text = await h2load_report(proxy.config.server.port, REQUESTS, h1=h1, timeout=1500)
        took = time.monotonic() - started
        slots = proxy.pool.slots
        totals = proxy.pool.totals()
        summary = re.search(r"requests: .*", text)
        print(
            f"\n{REQUESTS} requests, keepalive_requests {keepalive_requests}, "
            f"{'HTTP/1.1' if h1 else 'h2c'}: {REQUESTS / took:.0f} req/s; "
            f"{summary[0] if summary else text[-300:]}; "
            f"upstream retries {totals.retries}, reconnects "
            f"{sum(s.reconnects for s in slots)} (retired ahead "
            f"{sum(s.retirements for s in slots)}), back-offs "
            f"{sum(s.backoffs for s in slots)}; RSS {rss_before:.0f} -> {rss_mb():.0f} MB"
        )
        assert f"{REQUESTS} succeeded, 0 failed, 0 errored" in text, text
        assert sum(s.backoffs for s in slots) == 0
        assert proxy.pool.ready_count == 4
