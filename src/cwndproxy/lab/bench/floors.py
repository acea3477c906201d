"""Floors of a small request's cost: what the layers of the proxy's request path cost alone.

Part of ``make bench-loopback`` (``--parts floors``). The small-requests part measures the
whole proxy; this part measures its layers one at a time, each in a fresh process, against
the same kind of nginx origin (1 KiB over TLS h2), rounds interleaved:

- ``front-asgi``: granian, as the proxy runs it (ASGI), with an app that answers 1 KiB
  itself: the cost of the inbound side alone. h2load over h2c, ``-c 10 -m 10``.
- ``front-rsgi``: the same app on granian's RSGI interface.
- ``session-h2``: the upstream side alone: one ``H2Session`` (h2 codec, TLS) to the
  origin, 100 requests in flight, no inbound side.
- ``session-lean``: the same with the lean codec (``pool.http2_codec = "lean"``).
- ``bound``: a hand-written HTTP/2 GET loop over the same asyncio TLS transport:
  struct-parsed frames, one cached HPACK request block, the response's ``:status`` read
  from its first byte, batched WINDOW_UPDATEs. It validates nothing and handles no error:
  **not a client**, a lower bound for any pure-Python HTTP/2 client on this event loop.

Each figure is the process's CPU time (all threads, ``/proc/self/stat``) per request. The
origin and h2load run in other processes and are not counted. The proxy's own figure, for
comparison, is the small-requests part's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cwndproxy.lab.bench.small_requests import (
    OBJECT_PATH,
    OBJECT_SIZE,
    h2load,
    process_cpu_seconds,
    small_origin,
)

FLOORS = ("front-asgi", "front-rsgi", "session-h2", "session-lean", "bound")
# The small-requests part's object: 1 KiB at /small.bin.
OBJECT = OBJECT_PATH
IN_FLIGHT = 100


# -- the inbound side alone ------------------------------------------------------------
async def _front(interface: str, requests: int) -> dict[str, float]:
    from granian.constants import HTTPModes, Interfaces
    from granian.server.embed import Server

    from cwndproxy.lab.ports import free_port, wait_listening_async

    body = b"x" * OBJECT_SIZE
    length = str(OBJECT_SIZE)

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", length.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    class Rsgi:
        def __rsgi_init__(self, loop: Any) -> None:
            pass

        def __rsgi_del__(self, loop: Any) -> None:
            pass

        async def __rsgi__(self, scope: Any, proto: Any) -> None:
            await proto()
            proto.response_bytes(200, [("content-length", length)], body)

    port = free_port()
    server = Server(
        asgi if interface == "asgi" else Rsgi(),
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGINL if interface == "asgi" else Interfaces.RSGI,
        http=HTTPModes.auto,
        log_enabled=False,
    )
    task = asyncio.get_running_loop().create_task(server.serve())
    await wait_listening_async(port)
    url = f"http://127.0.0.1:{port}{OBJECT}"
    load = ["-c", "10", "-m", "10", "-n"]
    try:
        # In a thread: this event loop serves the requests meanwhile.
        await asyncio.to_thread(h2load, url, [*load, "2000"])  # warm
        result = await asyncio.to_thread(h2load, url, [*load, str(requests)], pids=(os.getpid(),))
    finally:
        server.stop()  # type: ignore[no-untyped-call]
        with contextlib.suppress(Exception):
            await task
    if result.cpu_us_per_request is None:
        raise RuntimeError(f"no request to {url} succeeded")
    return {"cpu_us": result.cpu_us_per_request, "requests": result.succeeded}


# -- the upstream side alone -------------------------------------------------------------
async def _drive(request: Callable[[], Awaitable[bool]], requests: int) -> dict[str, float]:
    """``requests`` calls of ``request`` with IN_FLIGHT at a time; CPU per good one."""
    left = requests
    good = 0

    async def worker() -> None:
        nonlocal left, good
        while left > 0:
            left -= 1
            ok = await request()  # not "good += await ...": that reads good before the wait
            good += ok

    left = min(2000, requests)  # warm caches and windows; not counted
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    good = 0
    left = requests
    before = process_cpu_seconds(os.getpid())
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    cpu = process_cpu_seconds(os.getpid()) - before
    if good < requests:
        raise RuntimeError(f"{requests - good} of {requests} requests failed")
    return {"cpu_us": cpu / good * 1e6, "requests": good}


async def _session(codec: str, port: int, ca: str, requests: int) -> dict[str, float]:
    from cwndproxy.http2 import perf
    from cwndproxy.upstream.dial import UpstreamTarget, dial
    from cwndproxy.upstream.session import SessionSettings

    perf.apply()  # as the proxy runs
    session = await dial(
        UpstreamTarget("127.0.0.1", port, True, server_name="localhost", ca_file=ca),
        settings=SessionSettings(codec=codec),
    )

    async def request() -> bool:
        headers = [(b"user-agent", b"floor")]
        stream = await session.open_stream("GET", OBJECT, headers, end_stream=True)
        response = await stream.response
        size = 0
        while chunk := await stream.read():
            size += len(chunk)
        return response.status == 200 and size == OBJECT_SIZE

    try:
        return await _drive(request, requests)
    finally:
        await session.aclose()


_FRAME = struct.Struct(">HBBBL")  # 24-bit length, type, flags, stream id


class _LeanGets(asyncio.Protocol):
    """The lower bound's HTTP/2: GETs of one path and nothing else (see the module's doc)."""

    def __init__(self, block: bytes) -> None:
        self.block = block
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, tuple[asyncio.Future[bool], list[bytes]]] = {}
        self.next_id = 1
        self.unacked = 0
        self.rest = b""
        self.pending: list[bytes] = []
        self.flush_due = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        window = struct.pack(">HL", 4, 16 << 20)  # SETTINGS_INITIAL_WINDOW_SIZE
        transport.write(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            + _FRAME.pack(0, len(window), 4, 0, 0)
            + window
            + _FRAME.pack(0, 4, 8, 0, 0)
            + struct.pack(">L", 64 << 20)
        )

    def get(self) -> asyncio.Future[bool]:
        sid, self.next_id = self.next_id, self.next_id + 2
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self.streams[sid] = (done, [])
        self.pending.append(_FRAME.pack(0, len(self.block), 1, 0x5, sid) + self.block)
        if not self.flush_due:  # one write per loop turn, as the session does
            self.flush_due = True
            loop.call_soon(self._flush)
        return done

    def _flush(self) -> None:
        self.flush_due = False
        assert self.transport is not None
        self.transport.write(b"".join(self.pending))
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        buf = self.rest + data if self.rest else data
        pos, end, out = 0, len(buf), []
        while end - pos >= 9:
            high, low, kind, flags, sid = _FRAME.unpack_from(buf, pos)
            length = (high << 8) | low
            if end - pos - 9 < length:
                break
            body = buf[pos + 9 : pos + 9 + length]
            pos += 9 + length
            entry = self.streams.get(sid & 0x7FFFFFFF)
            if kind == 0:  # DATA
                self.unacked += length
                if entry:
                    entry[1].append(body)
            elif kind == 1 and entry:  # HEADERS: static index 8 is ":status 200"
                entry[1].append(b"" if body[:1] == b"\x88" else b"!")
            elif kind == 4 and not flags & 1:  # SETTINGS: acknowledge
                out.append(_FRAME.pack(0, 0, 4, 1, 0))
            elif kind == 6 and not flags & 1:  # PING: answer
                out.append(_FRAME.pack(0, 8, 6, 1, 0) + body)
            if flags & 1 and kind in (0, 1) and entry:  # END_STREAM
                del self.streams[sid]
                parts = entry[1]
                entry[0].set_result(parts[0] == b"" and len(b"".join(parts)) == OBJECT_SIZE)
        self.rest = buf[pos:]
        if self.unacked > 1 << 20:
            out.append(_FRAME.pack(0, 4, 8, 0, 0) + struct.pack(">L", self.unacked))
            self.unacked = 0
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def _bound(port: int, ca: str, requests: int) -> dict[str, float]:
    import hpack

    block = hpack.Encoder().encode(
        [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", OBJECT.encode()),
            (b"user-agent", b"floor"),
        ]
    )
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["h2"])
    transport, protocol = await asyncio.get_running_loop().create_connection(
        lambda: _LeanGets(block), "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    try:
        return await _drive(protocol.get, requests)
    finally:
        transport.close()


async def _one(name: str, port: int, ca: str, requests: int) -> dict[str, float]:
    if name == "front-asgi":
        return await _front("asgi", requests)
    if name == "front-rsgi":
        return await _front("rsgi", requests)
    if name == "session-h2":
        return await _session("h2", port, ca, requests)
    if name == "session-lean":
        return await _session("lean", port, ca, requests)
    if name == "bound":
        return await _bound(port, ca, requests)
    raise ValueError(f"unknown floor {name!r}")


# -- the part: every floor in a fresh process, rounds interleaved ------------------------
def run_floors(
    tmp: Path, certs: tuple[str, str, str], *, rounds: int, requests: int
) -> dict[str, Any]:
    ca = certs[0]
    samples: dict[str, list[float]] = {name: [] for name in FLOORS}
    with small_origin(tmp / "nginx-floors", certs, keepalive_requests=1_000_000) as nginx:
        for _ in range(rounds):
            for name in FLOORS:
                argv = [sys.executable, "-m", "cwndproxy.lab.bench.floors", "--one", name]
                argv += ["--port", str(nginx.tls_port), "--ca", ca, "--requests", str(requests)]
                run = subprocess.run(argv, capture_output=True, text=True, timeout=600)
                if run.returncode != 0:
                    raise RuntimeError(f"floor {name} failed:\n{run.stderr.strip()}")
                samples[name].append(json.loads(run.stdout.strip().splitlines()[-1])["cpu_us"])
    print(f"\nFloors: CPU us per small request of one layer alone, medians of {rounds} rounds")
    result: dict[str, Any] = {}
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"  {name:12s} {median:7.0f}   ({', '.join(f'{v:.0f}' for v in values)})")
        result[name] = {"median_cpu_us": median, "samples": values}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--one", choices=FLOORS, help="measure one floor (a child process)")
    parser.add_argument("--port", type=int, help="the origin's TLS port (with --one)")
    parser.add_argument("--ca", help="the origin's CA file (with --one)")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.one:
        result = asyncio.run(_one(args.one, args.port or 0, args.ca or "", args.requests))
        print(json.dumps(result))
        return 0
    from cwndproxy.lab.bench.loopback import make_certs

    with tempfile.TemporaryDirectory(prefix="cwnd-floors-") as tmp:
        started = time.monotonic()
        run_floors(Path(tmp), make_certs(Path(tmp)), rounds=args.rounds, requests=args.requests)
        print(f"  ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
