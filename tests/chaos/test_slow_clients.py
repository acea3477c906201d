"""Idle and slow clients must not lock anyone out (the chaos suite; CWND_CHAOS=long, i.e.
`make chaos`, runs the issue's full scale: 1,000 idle keep-alive clients and 500 slowloris
connections, plus 200 that send nothing; CI runs a smaller crowd).

Measured before: 128 idle HTTP/1.1 keep-alive clients were enough for the next client to
time out (granian's backpressure default), and slowloris connections were closed only
after 30-90 s."""

from __future__ import annotations

import asyncio
import os

import pytest

from cwndproxy.lab.origin import DemoOrigin
from tests.conftest import ProxyFactory, proxy_config, raw_http1_status

LONG = os.environ.get("CWND_CHAOS") == "long"
IDLE = 1000 if LONG else 300
SLOWLORIS = 500 if LONG else 100
SILENT = 200 if LONG else 150
CANARY_SECONDS = 20.0 if LONG else 6.0
HEADER_TIMEOUT_MS = 3000


async def _idle_client(port: int, ready: asyncio.Event, stop: asyncio.Event) -> None:
    """One request, then the keep-alive connection just stays open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await reader.readline()
        ready.set()
        await stop.wait()
    finally:
        writer.close()


async def _lingering(
    port: int, stop: asyncio.Event, closed: list[bool], *, head: bytes = b"", trickle: bytes = b""
) -> None:
    """Sends ``head`` (a request head never finished), then ``trickle`` once a second, and
    notes whether the server hung up. Slowloris: a partial head and a byte a second; a silent
    connection: nothing at all."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        while not stop.is_set():
            writer.write(trickle)
            await writer.drain()
            try:
                async with asyncio.timeout(1.0):
                    if not await reader.read(1024):
                        closed.append(True)
                        return
            except TimeoutError:
                pass
    except (ConnectionError, OSError):
        closed.append(True)
    finally:
        writer.close()


async def _canary(port: int) -> bool:
    try:
        request = b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        return await raw_http1_status(port, request, timeout=3.0) == 200
    except (TimeoutError, OSError, AssertionError):
        return False


@pytest.mark.parametrize("server", ["granian", "hypercorn"])
async def test_a_crowd_of_idle_and_slowloris_clients_locks_nobody_out(
    origin: DemoOrigin, make_proxy: ProxyFactory, server: str
) -> None:
    config = proxy_config(origin.port)
    config.server.inbound_server = server
    config.server.read_timeout_ms = HEADER_TIMEOUT_MS
    async with make_proxy(config):
        port = config.server.port
        stop = asyncio.Event()
        readies = [asyncio.Event() for _ in range(IDLE)]
        closed: list[bool] = []
        crowd = [asyncio.create_task(_idle_client(port, r, stop)) for r in readies]
        crowd += [
            asyncio.create_task(
                _lingering(
                    port, stop, closed, head=b"GET /echo HTTP/1.1\r\nHost: x\r\n", trickle=b"X"
                )
            )
            for _ in range(SLOWLORIS)
        ]
        silent_closed: list[bool] = []
        crowd += [asyncio.create_task(_lingering(port, stop, silent_closed)) for _ in range(SILENT)]
        try:
            async with asyncio.timeout(30):
                for ready in readies:
                    await ready.wait()
            answered = 0
            tries = 0
            loop = asyncio.get_running_loop()
            end = loop.time() + CANARY_SECONDS
            while loop.time() < end:
                tries += 1
                answered += await _canary(port)
                await asyncio.sleep(0.25)
            print(
                f"\n{server}: {IDLE} idle, {SLOWLORIS} slowloris, {SILENT} silent; canary "
                f"{answered} of {tries}; slowloris closed {len(closed)}, silent closed "
                f"{len(silent_closed)}"
            )
            assert answered == tries, f"canary answered {answered} of {tries}"
            # The header deadline ended the slowloris connections (~3 s, not 30-90 s):
            # hyper's header read timeout under granian; under hypercorn its keep-alive
            # timeout, which runs while no request is complete (not its read_timeout: that
            # one cut long downloads, see proxy/server.py).
            assert len(closed) >= 0.9 * SLOWLORIS, f"{len(closed)} of {SLOWLORIS} closed"
            if server == "hypercorn":
                # The same timeout closes connections that send nothing at all.
                assert len(silent_closed) >= 0.9 * SILENT, f"{len(silent_closed)} closed"
            # Under granian, silent connections (not one byte sent) are NOT closed: hyper
            # starts its header deadline at the first byte and granian has no first-byte
            # timeout. They hold one of server.max_connections each; that cap (10,000, not
            # granian's default 128, which let 128 of them lock everyone out) is what keeps
            # the canary answered. A known limit, in the README.
        finally:
            stop.set()
            await asyncio.gather(*crowd, return_exceptions=True)
