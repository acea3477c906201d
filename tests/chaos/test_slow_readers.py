"""Clients that read slowly or not at all, under both inbound servers: the proxy's memory
stays bounded because the upstream is flow-controlled (HTTP/2 windows opened only as the
client takes data), never buffered; a client that stops reading has its stream reset
after the write timeout. CWND_CHAOS=long (``make chaos``) reads 1 GiB at 1 MB/s, the
issue's scale; CI reads 48 MiB at 6 MB/s."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from cwndproxy.lab.origin import DemoOrigin
from cwndproxy.service import ProxyService
from tests.conftest import ProxyFactory, proxy_config, rss_mb

LONG = os.environ.get("CWND_CHAOS") == "long"
SIZE = (1 << 30) if LONG else 48 << 20
RATE = 1_000_000 if LONG else 6_000_000
MIB = 1 << 20


def upstream_received(proxy: ProxyService) -> int:
    return sum(slot.counters.real_rx for slot in proxy.pool.slots)


async def _open_get(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.create_connection(("127.0.0.1", port))
    # A small receive buffer, so that the kernel does not read ahead for the slow client.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    reader, writer = await asyncio.open_connection(sock=sock, limit=64 * 1024)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    return reader, writer


@pytest.mark.timeout(SIZE / RATE + 120)
@pytest.mark.parametrize("server", ["granian", "hypercorn"])
async def test_a_slow_reader_is_flow_controlled_not_buffered(
    origin: DemoOrigin, make_proxy: ProxyFactory, server: str
) -> None:
    config = proxy_config(origin.port, pool_size=1)
    config.server.inbound_server = server
    # A download outlasts the header deadline many times over: the client sends nothing
    # while it reads, and must not be taken for a silent one (hypercorn's read_timeout
    # did exactly that and cut the response).
    config.server.read_timeout_ms = 2000
    async with make_proxy(config) as proxy:
        base_rss = rss_mb()
        reader, writer = await _open_get(config.server.port, f"/cwnd/blob?size={SIZE}")
        read = 0
        ahead_max = 0
        rss_max = base_rss
        start = time.monotonic()
        try:
            while read < SIZE:
                chunk = await reader.read(64 * 1024)
                assert chunk, f"response ended after {read} of {SIZE} bytes"
                read += len(chunk)
                # Pace to RATE: sleep until this many bytes are due.
                delay = start + read / RATE - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if read % (4 * MIB) < len(chunk):
                    ahead_max = max(ahead_max, upstream_received(proxy) - read)
                    rss_max = max(rss_max, rss_mb())
        finally:
            writer.close()
        rate = read / (time.monotonic() - start) / 1e6
        print(
            f"\n{server}: {read / MIB:.0f} MiB read at {rate:.1f} MB/s; upstream at most "
            f"{ahead_max / MIB:.1f} MiB ahead of the client; RSS {base_rss:.0f} -> peak "
            f"{rss_max:.0f} MB"
        )
        # What the upstream sent beyond what the client took: the session's 16 MiB stream
        # window plus socket buffers, not the body.
        assert ahead_max < 40 * MIB, f"{ahead_max / MIB:.0f} MiB ahead of the client"
        assert rss_max - base_rss < 150, f"RSS grew {rss_max - base_rss:.0f} MB"


@pytest.mark.parametrize("server", ["granian", "hypercorn"])
async def test_a_client_that_never_reads_is_reset_after_the_write_timeout(
    origin: DemoOrigin, make_proxy: ProxyFactory, server: str
) -> None:
    config = proxy_config(origin.port, pool_size=1)
    config.server.inbound_server = server
    config.server.write_timeout_ms = 2000
    async with make_proxy(config) as proxy:
        session = proxy.pool.slots[0].session
        assert session is not None
        _, writer = await _open_get(config.server.port, f"/cwnd/blob?size={256 * MIB}")
        try:
            # The stream is reset upstream once a write to the client has waited 2 s.
            async with asyncio.timeout(20):
                while session.real_active:  # noqa: ASYNC110 - the session's own count
                    await asyncio.sleep(0.2)
            assert upstream_received(proxy) < 64 * MIB, "the upstream was not held back"
            # The session is fine and serves the next client at once.
            assert session.is_usable
            _, writer2 = await _open_get(config.server.port, "/cwnd/blob?size=1000")
            writer2.close()
        finally:
            writer.close()
