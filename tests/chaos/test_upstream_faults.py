"""The upstream misbehaves; the clients see exactly what they must and nothing more.

- A stream reset before its answer: a clean 502 to that client (after the one retry a GET
  gets); a reset or a crash mid-response: that client's body is cut short (never a clean
  end); every other client is served, and a stream reset costs no pooled session.
- The upstream killed and restarted under steady load: requests fail only while no session
  is ready; from the first ready session on, not one GET fails. The time until every
  session is back is printed (run with ``-s``)."""

from __future__ import annotations

import asyncio
import time

from cwndproxy.lab.origin import DemoOrigin
from cwndproxy.lab.ports import free_port
from tests.conftest import (
    ProxyFactory,
    proxy_config,
    raw_http1_status,
    require_tool,
    run,
)

LOAD_WORKERS = 8
OUTAGE = 2.0


async def curl(url: str) -> tuple[int, str]:
    """curl's exit code (18: the body was cut short) and the HTTP status it saw."""
    result = await run(
        require_tool("curl"), "-s", "-o", "/dev/null", "-w", "%{http_code}", url, timeout=30
    )
    return result.code, result.stdout.decode()


async def test_resets_and_crashes_reach_only_their_own_client(
    origin: DemoOrigin, make_proxy: ProxyFactory
) -> None:
    config = proxy_config(origin.port, pool_size=2)
    async with make_proxy(config) as proxy:
        base = f"http://127.0.0.1:{config.server.port}"
        slow = asyncio.create_task(curl(f"{base}/slow?delay_ms=1500"))
        await asyncio.sleep(0.3)  # the slow request holds one session
        # A reset before any answer: 502, on both tries.
        assert await curl(f"{base}/reset") == (0, "502")
        # A reset mid-body: the client gets the start, then an incomplete body.
        code, status = await curl(f"{base}/reset?after=100000")
        assert status == "200" and code == 18, (code, status)
        assert all(s.reconnects == 0 for s in proxy.pool.slots), "a stream reset cost a session"
        # A crash mid-body (GOAWAY INTERNAL_ERROR, connection closed): the same for that
        # client; the slow request on the other session still completes.
        code, status = await curl(f"{base}/goaway?after=100000")
        assert status == "200" and code == 18, (code, status)
        assert await slow == (0, "200")
        async with asyncio.timeout(10):
            while proxy.pool.ready_count < 2:  # noqa: ASYNC110 - the pool's own state
                await asyncio.sleep(0.05)
        assert await curl(f"{base}/echo") == (0, "200")


async def _get(port: int) -> int:
    return await raw_http1_status(
        port,
        b"GET /cwnd/blob?size=2000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        read_body=True,
    )


async def test_upstream_killed_and_restarted_under_load(make_proxy: ProxyFactory) -> None:
    port = free_port()
    first = DemoOrigin("127.0.0.1", port)
    await first.start()
    config = proxy_config(port, pool_size=4)
    results: list[tuple[float, int]] = []
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            started = time.monotonic()
            status = await _get(config.server.port)
            results.append((started, status))
            if status != 200:
                await asyncio.sleep(0.01)

    async with make_proxy(config) as proxy:
        workers = [asyncio.create_task(worker()) for _ in range(LOAD_WORKERS)]
        await asyncio.sleep(1.0)
        first.close_connections()
        await first.stop()
        await asyncio.sleep(OUTAGE)
        second = DemoOrigin("127.0.0.1", port)
        await second.start()
        restarted = time.monotonic()
        try:
            async with asyncio.timeout(15):
                while proxy.pool.ready_count == 0:  # noqa: ASYNC110 - the pool's own state
                    await asyncio.sleep(0.005)
                back = time.monotonic()
                while proxy.pool.ready_count < 4:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
                all_back = time.monotonic()
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.gather(*workers)
        finally:
            await second.stop()
    failed_after = [(t, s) for t, s in results if t >= back and s != 200]
    during = [s for t, s in results if restarted - OUTAGE <= t < back]
    print(
        f"\n{len(results)} GETs; during the outage {sum(s != 200 for s in during)} of "
        f"{len(during)} failed; first session back {back - restarted:.2f} s after the "
        f"restart, all 4 back after {all_back - restarted:.2f} s; "
        f"{len(failed_after)} failed after that"
    )
    assert failed_after == [], f"{len(failed_after)} GETs failed with a session ready"
    assert sum(1 for t, s in results if t >= all_back and s == 200) > 50
