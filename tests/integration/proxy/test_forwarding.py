"""The proxy end to end: real sockets, real TLS, the demo origin upstream, curl as client."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import ssl
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import psutil
import pytest

from cwndproxy.lab.origin import DemoOrigin, blob_bytes
from cwndproxy.lab.ports import free_port
from cwndproxy.pool.slot import SlotState
from cwndproxy.proxy.app import ForwardingApp
from cwndproxy.service import ProxyService
from tests.conftest import (
    Certs,
    ProxyFactory,
    h2load_report,
    proxy_config,
    require_tool,
    run,
    wait_for,
)

MiB = 1024 * 1024


def curl() -> str:
    return require_tool("curl")


async def fetch(url: str, *extra: str) -> tuple[int, str, bytes]:
    """GET with curl; returns (status, http_version, body)."""
    result = await run(
        curl(), "-s", "-S", "-o", "-", "-w", "\n%{http_code} %{http_version}", *extra, url
    )
    assert result.code == 0, result.stderr.decode()
    body, _, tail = result.stdout.rpartition(b"\n")
    status, version = tail.decode().split()
    return int(status), version, body


def upstream_connections(port: int) -> set[tuple[str, int]]:
    """Established TCP connections of this process to the upstream port (proxy side)."""
    conns = psutil.Process(os.getpid()).net_connections(kind="tcp")
    return {
        (c.laddr.ip, c.laddr.port)
        for c in conns
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    }


async def test_http1_h2c_and_tls_clients_through_the_proxy(
    origin: DemoOrigin, make_proxy: ProxyFactory, certs: Certs
) -> None:
    config = proxy_config(origin.port)
    config.server.inbound_tls = True
    config.server.tls_cert_file = certs.cert_file
    config.server.tls_key_file = certs.key_file
    async with make_proxy(config) as proxy:
        url = f"https://localhost:{config.server.port}/cwnd/blob?size=100000"
        expected = blob_bytes(0, 100000)
        status, version, body = await fetch(url, "--cacert", certs.ca_file, "--http2")
        assert (status, version, body) == (200, "2", expected)
        status, version, body = await fetch(url, "--cacert", certs.ca_file, "--http1.1")
        assert (status, version, body) == (200, "1.1", expected)
        assert proxy.pool.totals().real_rx == 2 * 100000

    config = proxy_config(origin.port)
    async with make_proxy(config):
        url = f"http://127.0.0.1:{config.server.port}/cwnd/blob?size=5000"
        assert await fetch(url, "--http2-prior-knowledge") == (200, "2", blob_bytes(0, 5000))
        assert await fetch(url, "--http1.1") == (200, "1.1", blob_bytes(0, 5000))


def assert_reported(body: bytes, caplog: pytest.LogCaptureFixture, *details: str) -> None:
    """A failure's details reach the log, under the request id the client's body carries;
    the body itself tells no upstream address, TLS error or stream id."""
    m = re.search(rb"request id ([0-9a-f]{12})", body)
    assert m, body
    request_id = m.group(1).decode()
    lines = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
    assert lines, f"no log line for request {request_id}"
    for detail in details:
        assert any(detail in line for line in lines), (detail, lines)
        assert detail.encode() not in body
    assert b"127.0.0.1:" not in body and not re.search(rb"\bstream\b", body)


async def test_tls_upstream_verification(
    tls_origin: DemoOrigin, make_proxy: ProxyFactory, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    config = proxy_config(tls_origin.port, tls=True, ca_file=certs.ca_file)
    async with make_proxy(config) as proxy:
        assert proxy.pool.ready_count == 2
        status, _, body = await fetch(f"http://127.0.0.1:{config.server.port}/cwnd/blob?size=10")
        assert status == 200 and body == blob_bytes(0, 10)

    # Without the private CA the certificate is not trusted: 502 that says so.
    config = proxy_config(tls_origin.port, tls=True)
    config.pool.reconnect_min_ms = config.pool.reconnect_max_ms = 1000
    async with make_proxy(config) as proxy:
        assert proxy.pool.ready_count == 0
        status, _, body = await fetch(f"http://127.0.0.1:{config.server.port}/")
        assert status == 502
        assert_reported(body, caplog, "not trusted", "--ca-file")

    config = proxy_config(tls_origin.port, tls=True)
    config.target.tls_insecure_skip_verify = True
    async with make_proxy(config) as proxy:
        assert proxy.pool.ready_count == 2


async def test_upstream_without_h2_alpn_is_a_clear_error(
    make_proxy: ProxyFactory, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs.cert_file, certs.key_file)
    ctx.set_alpn_protocols(["http/1.1"])

    async def http1_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(http1_only, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        config = proxy_config(port, tls=True, ca_file=certs.ca_file)
        config.pool.reconnect_min_ms = config.pool.reconnect_max_ms = 1000
        async with make_proxy(config) as proxy:
            assert proxy.pool.ready_count == 0
            errors = [s.last_error or "" for s in proxy.pool.slots]
            assert all("did not select HTTP/2 by ALPN (got nothing)" in e for e in errors)
            status, _, body = await fetch(f"http://127.0.0.1:{config.server.port}/")
            assert status == 502
            assert_reported(body, caplog, "ALPN")
    finally:
        server.close()
        await server.wait_closed()


async def test_exactly_pool_size_distinct_upstream_connections(
    origin: DemoOrigin, make_proxy: ProxyFactory
) -> None:
    config = proxy_config(origin.port, pool_size=4)
    async with make_proxy(config):
        await wait_for(lambda: len(upstream_connections(origin.port)) == 4)
        # Requests reuse the pool: still exactly 4 connections afterwards.
        url = f"http://127.0.0.1:{config.server.port}/cwnd/blob?size=1000"
        for _ in range(8):
            assert (await fetch(url))[0] == 200
        assert len(upstream_connections(origin.port)) == 4
        assert origin.stats.connections == 4


@pytest.mark.slow
async def test_64mib_download_and_upload_are_byte_identical(
    origin: DemoOrigin, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    size = 64 * MiB
    config = proxy_config(origin.port)
    async with make_proxy(config) as proxy:
        base = f"http://127.0.0.1:{config.server.port}"
        out = tmp_path / "down.bin"
        result = await run(
            curl(),
            "-s",
            "-S",
            "--http2-prior-knowledge",
            "-o",
            str(out),
            f"{base}/cwnd/blob?size={size}",
        )
        assert result.code == 0, result.stderr
        expected = hashlib.sha256(blob_bytes(0, size)).hexdigest()
        assert hashlib.sha256(out.read_bytes()).hexdigest() == expected

        payload = tmp_path / "up.bin"
        payload.write_bytes(os.urandom(size))
        result = await run(
            curl(),
            "-s",
            "-S",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--http1.1",
            "--data-binary",
            f"@{payload}",
            f"{base}/cwnd/sink",
        )
        assert result.code == 0, result.stderr
        headers = result.stdout.decode().lower()
        assert f"x-received-bytes: {size}" in headers
        assert f"x-received-sha256: {hashlib.sha256(payload.read_bytes()).hexdigest()}" in headers
        totals = proxy.pool.totals()
        assert totals.real_rx >= size and totals.real_tx == size


async def test_h2load_through_the_proxy_has_no_errors(
    origin: DemoOrigin, make_proxy: ProxyFactory
) -> None:
    config = proxy_config(origin.port, pool_size=4)
    async with make_proxy(config):
        path = "/cwnd/blob?size=1024"
        text = await h2load_report(config.server.port, 5000, clients=10, path=path, timeout=240)
        assert "5000 succeeded, 0 failed, 0 errored" in text, text
        assert "status codes: 5000 2xx" in text, text


async def test_pool_reconnects_after_origin_restart(make_proxy: ProxyFactory) -> None:
    port = free_port()
    first = DemoOrigin("127.0.0.1", port)
    await first.start()
    config = proxy_config(port)
    async with make_proxy(config) as proxy:
        url = f"http://127.0.0.1:{config.server.port}/cwnd/blob?size=100"
        assert (await fetch(url))[0] == 200
        first.close_connections()
        await first.stop()
        await wait_for(lambda: proxy.pool.ready_count == 0)
        status, _, body = await fetch(url)
        assert status == 502 and b"unavailable" in body

        second = DemoOrigin("127.0.0.1", port)
        await second.start()
        try:
            await wait_for(lambda: proxy.pool.ready_count == 2, timeout=10)
            assert (await fetch(url))[0] == 200
            assert all(slot.reconnects >= 1 for slot in proxy.pool.slots)
        finally:
            await second.stop()


async def test_absolute_form_request_never_leaves_the_configured_upstream(
    origin: DemoOrigin, make_proxy: ProxyFactory
) -> None:
    config = proxy_config(origin.port)
    async with make_proxy(config):
        reader, writer = await asyncio.open_connection("127.0.0.1", config.server.port)
        writer.write(
            b"GET http://evil.example/headers HTTP/1.1\r\nHost: evil.example\r\n"
            b"Connection: close\r\n\r\n"
        )
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        if b"transfer-encoding: chunked" in head.lower():
            body = body.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
        seen = json.loads(body)
        # It reached our origin, addressed to the upstream's own authority.
        assert seen["authority"] == f"127.0.0.1:{origin.port}"
        assert seen["path"] == "/headers"
        assert origin.stats.requests == 1


async def test_hop_by_hop_headers_are_stripped_and_client_recorded(
    origin: DemoOrigin, make_proxy: ProxyFactory
) -> None:
    config = proxy_config(origin.port)
    async with make_proxy(config):
        status, _, body = await fetch(
            f"http://127.0.0.1:{config.server.port}/headers",
            "--http1.1",
            "-H",
            "Connection: keep-alive, X-Hop",
            "-H",
            "X-Hop: secret",
            "-H",
            "Keep-Alive: timeout=5",
            "-H",
            "X-End: kept",
            "-H",
            "TE: trailers",
        )
        assert status == 200
        headers = dict(json.loads(body)["headers"])
        assert "x-hop" not in headers and "keep-alive" not in headers
        assert "connection" not in headers
        assert headers["x-end"] == "kept"
        assert headers["te"] == "trailers"
        assert headers["x-forwarded-for"] == "127.0.0.1"
        assert headers["forwarded"].startswith("for=127.0.0.1;proto=http")


async def test_post_is_never_retried_but_get_is_once(
    origin: DemoOrigin, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    config = proxy_config(origin.port)
    async with make_proxy(config) as proxy:
        url = f"http://127.0.0.1:{config.server.port}/reset"
        status, _, body = await fetch(url, "-X", "POST", "-d", "x")
        assert status == 502
        assert_reported(body, caplog, "INTERNAL_ERROR")
        assert origin.stats.requests == 1, "a POST must reach the upstream exactly once"

        status, _, _ = await fetch(url)
        assert status == 502
        assert origin.stats.requests == 3, "a GET is retried once, on another session"
        assert proxy.pool.totals().retries == 1


async def test_response_timeout_is_504(
    origin: DemoOrigin, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    config = proxy_config(origin.port)
    config.target.response_timeout_ms = 300
    async with make_proxy(config):
        base = f"http://127.0.0.1:{config.server.port}"
        status, _, body = await fetch(f"{base}/slow?delay_ms=3000", "-X", "POST")
        assert status == 504
        assert_reported(body, caplog, "no response headers within")
        assert (await fetch(f"{base}/slow?delay_ms=10"))[0] == 200


async def test_goaway_drains_and_the_pool_replaces_the_session(
    origin: DemoOrigin, make_proxy: ProxyFactory
) -> None:
    config = proxy_config(origin.port, pool_size=1)
    async with make_proxy(config) as proxy:
        base = f"http://127.0.0.1:{config.server.port}"
        status, _, body = await fetch(f"{base}/goaway")
        assert (status, body) == (200, b"goodbye\n")
        await wait_for(
            lambda: (
                proxy.pool.slots[0].reconnects == 1 and proxy.pool.slots[0].state is SlotState.READY
            )
        )
        assert "GOAWAY" in (proxy.pool.slots[0].last_close_reason or "")
        assert (await fetch(f"{base}/cwnd/blob?size=10"))[0] == 200
        await wait_for(lambda: len(upstream_connections(origin.port)) == 1)


async def test_client_disconnect_cancels_the_upstream_stream(
    origin: DemoOrigin, make_proxy: ProxyFactory
) -> None:
    config = proxy_config(origin.port, pool_size=1)
    async with make_proxy(config) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", config.server.port)
        writer.write(b"GET /cwnd/blob?size=1000000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readexactly(1024 * 1024)
        session = proxy.pool.slots[0].session
        assert session is not None and session.active_streams == 1
        writer.close()
        await wait_for(lambda: session.active_streams == 0)
        await wait_for(lambda: not any(p.requests for p in origin.protocols))
        assert origin.stats.bytes_sent < 200 * MiB


async def test_upstream_down_is_502_with_reason(
    make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    config = proxy_config(free_port())
    config.pool.reconnect_min_ms = config.pool.reconnect_max_ms = 1000
    async with make_proxy(config) as proxy:
        assert proxy.pool.ready_count == 0
        status, _, body = await fetch(f"http://127.0.0.1:{config.server.port}/x")
        assert status == 502
        assert_reported(body, caplog, "cannot connect")


async def test_graceful_shutdown_finishes_in_flight_requests(origin: DemoOrigin) -> None:
    config = proxy_config(origin.port)
    service = ProxyService(config)
    await service.start(wait_ready=5)
    request = asyncio.create_task(fetch(f"http://127.0.0.1:{config.server.port}/slow?delay_ms=700"))
    await wait_for(lambda: service.app.in_flight == 1)
    await service.stop()
    assert (await request)[0] == 200
    assert service.pool.ready_count == 0
    assert not upstream_connections(origin.port)


async def test_trailers_pass_through_where_the_server_supports_them(
    origin: DemoOrigin, make_proxy: ProxyFactory
) -> None:
    # granian has no ASGI trailers extension; drive the app as a server that has one.
    config = proxy_config(origin.port)
    async with make_proxy(config) as proxy:
        app: ForwardingApp = proxy.app
        sent: list[MutableMapping[str, Any]] = []
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict[str, object]:
            if messages:
                return messages.pop()
            await asyncio.sleep(3600)
            raise AssertionError

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": "/trailers",
            "raw_path": b"/trailers",
            "query_string": b"",
            "headers": [(b"host", b"proxy.test"), (b"te", b"trailers")],
            "http_version": "1.1",
            "scheme": "http",
            "client": ("127.0.0.1", 5555),
            "extensions": {"http.response.trailers": {}},
        }
        await app(scope, receive, send)
        assert sent[0]["type"] == "http.response.start" and sent[0]["trailers"] is True
        assert sent[-1]["type"] == "http.response.trailers"
        assert (b"grpc-status", b"0") in sent[-1]["headers"]


async def test_trailers_end_to_end_on_the_hypercorn_inbound_server(
    origin: DemoOrigin, make_proxy: ProxyFactory
) -> None:
    """gRPC needs trailers: with --inbound-server hypercorn they cross the proxy (checked
    with our own h2 client, which exposes trailers; granian drops them)."""
    from cwndproxy.upstream.dial import UpstreamTarget, dial

    config = proxy_config(origin.port)
    config.server.inbound_server = "hypercorn"
    async with make_proxy(config):
        client = await dial(
            UpstreamTarget("127.0.0.1", config.server.port, tls=False), rtt_probe_interval=0
        )
        try:
            stream = await client.open_stream(
                "GET", "/trailers", [(b"te", b"trailers")], end_stream=True
            )
            response = await stream.receive_response(timeout=10)
            body = b"".join([chunk async for chunk in stream.iter_body()])
            assert response.status == 200 and body == b"trailers follow\n"
            assert stream.trailers is not None
            assert (b"grpc-status", b"0") in stream.trailers
            # Ordinary traffic works on hypercorn too: HTTP/1.1 with curl.
            status, version, blob = await fetch(
                f"http://127.0.0.1:{config.server.port}/cwnd/blob?size=100000", "--http1.1"
            )
            assert (status, version, blob) == (200, "1.1", blob_bytes(0, 100000))
        finally:
            await client.aclose()


@pytest.mark.parametrize("fmt", ["human", "json"])
async def test_access_log_has_one_line_per_client_request(
    origin: DemoOrigin, make_proxy: ProxyFactory, tmp_path: Path, fmt: str
) -> None:
    log_file = tmp_path / "access.log"
    config = proxy_config(origin.port)
    config.server.access_log = str(log_file)
    config.ui.log_format = fmt
    async with make_proxy(config):
        base = f"http://127.0.0.1:{config.server.port}"
        assert (await fetch(f"{base}/cwnd/blob?size=5000"))[0] == 200
        assert (await fetch(f"{base}/reset"))[0] == 502
    lines = log_file.read_text().splitlines()
    assert len(lines) == 2, lines
    if fmt == "json":
        ok, failed = (json.loads(line) for line in lines)
        assert ok["method"] == "GET" and ok["path"] == "/cwnd/blob?size=5000"
        assert ok["status"] == 200 and ok["bytes_out"] == 5000 and ok["retries"] == 0
        assert ok["upstream_headers_s"] is not None and ok["session"] in (0, 1)
        assert failed["status"] == 502 and failed["retries"] == 1
        assert failed["upstream_headers_s"] is None
    else:
        assert re.search(
            r'127\.0\.0\.1 "GET /cwnd/blob\?size=5000 HTTP/1\.1" 200 in=0 out=5000 ', lines[0]
        )
        assert re.search(
            r'"GET /reset HTTP/1\.1" 502 .* upstream=- session=\d retries=1$', lines[1]
        )
