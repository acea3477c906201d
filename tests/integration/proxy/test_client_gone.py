"""A client that leaves mid-request: its upload is cut short upstream (RST_STREAM), never
ended as if complete and never replayed, over HTTP/1.1 and over h2, for PUT and POST.
Asserted on the origin's own request log."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import pytest

from cwndproxy.lab.origin import DemoOrigin
from tests.conftest import ProxyFactory, proxy_config, wait_for

BODY = 2_000_000
SENT = 300_000


async def _send_then_leave(port: int, data: bytes, arrived: Callable[[], bool]) -> None:
    """Send ``data`` on a new connection; once ``arrived()`` holds, leave abruptly."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    await wait_for(arrived)
    writer.transport.abort()


def _h2_request(headers: list[tuple[str, str]], *, body: int = 0) -> bytes:
    """A client preface and one request; ``body`` bytes of it in 15 kB DATA frames (within
    the initial window, in default-size frames), END_STREAM with the HEADERS without."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, headers, end_stream=body == 0)
    for _ in range(body // 15_000):
        conn.send_data(1, bytes(15_000))
    return conn.data_to_send()


async def _h1_client_leaves(port: int, method: str, started: Callable[[], bool]) -> None:
    head = f"{method} /cwnd/sink HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\n\r\n"
    # Once the upload reached the origin, the client leaves mid-body.
    await _send_then_leave(port, head.encode() + bytes(SENT), started)


async def _h2_client_leaves(port: int, method: str, started: Callable[[], bool]) -> None:
    headers = [(":method", method), (":scheme", "http"), (":authority", "x")]
    headers += [(":path", "/cwnd/sink"), ("content-length", str(BODY))]
    await _send_then_leave(port, _h2_request(headers, body=60_000), started)


@pytest.mark.parametrize("method", ["PUT", "POST"])
@pytest.mark.parametrize("client", ["h1", "h2"])
async def test_a_client_that_leaves_mid_upload_is_never_replayed(
    origin: DemoOrigin, make_proxy: ProxyFactory, method: str, client: str
) -> None:
    config = proxy_config(origin.port)
    async with make_proxy(config) as proxy:
        leave = _h1_client_leaves if client == "h1" else _h2_client_leaves
        await leave(config.server.port, method, lambda: _sinks_started(origin) == 1)
        await wait_for(lambda: proxy.app.in_flight == 0)
        await asyncio.sleep(0.5)  # a replay, if any, would have reached the origin by now
        sinks = [r for r in origin.request_log if r.path == "/cwnd/sink"]
        assert len(sinks) == 1, [(r.method, r.ended, r.body_bytes) for r in sinks]
        assert sinks[0].ended == "reset", "a cut-short body must not end as if complete"
        assert sinks[0].body_bytes < BODY
        assert all(s.reconnects == 0 for s in proxy.pool.slots)


async def _h1_get_then_leave(port: int, target: str, arrived: Callable[[], bool]) -> None:
    # No Content-Length, no Transfer-Encoding: a request without a body (RFC 9112 section
    # 6.3), whose one empty body message the app does not fetch.
    await _send_then_leave(port, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), arrived)


async def _h2_get_then_leave(port: int, target: str, arrived: Callable[[], bool]) -> None:
    headers = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", target)]
    await _send_then_leave(port, _h2_request(headers), arrived)


@pytest.mark.parametrize("client", ["h1", "h2"])
async def test_a_client_that_leaves_a_slow_get_stops_the_upstream_stream(
    origin: DemoOrigin, make_proxy: ProxyFactory, client: str
) -> None:
    """The app watches a running request for its client leaving (ClientWatch); for an
    HTTP/1.1 GET it first skips the empty body message it never fetched."""
    config = proxy_config(origin.port)
    async with make_proxy(config) as proxy:

        def slow() -> list[Any]:
            return [r for r in origin.request_log if r.path == "/slow"]

        leave = _h1_get_then_leave if client == "h1" else _h2_get_then_leave
        await leave(config.server.port, "/slow?delay_ms=30000", lambda: len(slow()) == 1)
        # The origin answers only after 30 s: a stream closed well before that was reset
        # by the proxy once it saw the client leave.
        await wait_for(lambda: slow()[0].closed, timeout=5.0)
        await wait_for(lambda: proxy.app.in_flight == 0)
        assert all(s.reconnects == 0 for s in proxy.pool.slots)


async def test_no_task_exception_is_left_unretrieved(
    origin: DemoOrigin, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    config = proxy_config(origin.port)
    async with make_proxy(config) as proxy:
        for n in range(1, 4):
            started = lambda n=n: _sinks_started(origin) == n  # noqa: E731
            await _h1_client_leaves(config.server.port, "PUT", started)
        await wait_for(lambda: proxy.app.in_flight == 0)
        await asyncio.sleep(0.2)
    import gc

    gc.collect()  # asyncio reports unretrieved task exceptions when the task is collected
    await asyncio.sleep(0)
    assert "exception was never retrieved" not in caplog.text


def test_the_helpers_talk_to_a_real_listener() -> None:
    """The raw clients above must reach a listening socket (guards the test itself)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        asyncio.run(_h1_client_leaves(port, "PUT", lambda: True))
        conn, _ = server.accept()
        with conn:
            assert conn.recv(64).startswith(b"PUT /cwnd/sink")


def _sinks_started(origin: DemoOrigin) -> int:
    """Uploads the origin has begun to receive."""
    return sum(1 for r in origin.request_log if r.path == "/cwnd/sink" and r.body_bytes > 0)
