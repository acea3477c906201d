"""HTTP/2 floods from one hostile client, raw frames over a real socket, under both inbound
servers: the proxy stays up, keeps serving a well-behaved client, leaves the pool alone,
and the upstream (the demo origin's request log) never sees the hostile input.

Measured before: under hypercorn, 101 streams of a rapid reset reached the upstream before
the connection closed; granian (hyper) answered it with GOAWAY(ENHANCE_YOUR_CALM) after 20
streams with nothing upstream."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import struct
from collections.abc import AsyncIterator, Callable

import hpack
import pytest

from cwndproxy.lab.origin import DemoOrigin
from cwndproxy.proxy.inbound import BURST_STREAMS, MAX_FORWARDED, REFUSE_RESETS
from cwndproxy.service import ProxyService
from tests.conftest import ProxyFactory, proxy_config, raw_http1_status

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0x0,
    0x1,
    0x3,
    0x4,
    0x6,
    0x7,
    0x8,
    0x9,
)
END_STREAM, END_HEADERS = 0x1, 0x4
CANCEL = 0x8
SERVERS = ["granian", "hypercorn"]


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream_id)
        + payload
    )


class RawH2:
    """A client that writes whatever frames it likes and records what comes back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = hpack.Encoder()
        self.frames: list[tuple[int, int, int, bytes]] = []
        self.closed = asyncio.Event()
        self.changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, port: int) -> AsyncIterator[RawH2]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        client.send(PREFACE + frame(SETTINGS, 0, 0))
        try:
            yield client
        finally:
            client._task.cancel()
            writer.close()

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    def header_block(
        self, path: str = "/echo", extra: list[tuple[str, str]] | None = None
    ) -> bytes:
        """A GET's header block (HPACK), with ``extra`` fields after the pseudo-headers."""
        fields = [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", "x")]
        return self.encoder.encode(fields + (extra or []))

    def request(self, stream_id: int, path: str = "/echo", flags: int = END_STREAM) -> bytes:
        return frame(HEADERS, flags | END_HEADERS, stream_id, self.header_block(path))

    async def _read(self) -> None:
        buf = b""
        try:
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 9:
                    length = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + length:
                        break
                    kind, flags = buf[3], buf[4]
                    sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    self.frames.append((kind, flags, sid, buf[9 : 9 + length]))
                    buf = buf[9 + length :]
                self.changed.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            self.changed.set()

    def goaway_code(self) -> int | None:
        for kind, _, _, payload in self.frames:
            if kind == GOAWAY:
                return int.from_bytes(payload[4:8], "big")
        return None

    async def wait_for(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``done()`` holds, re-checked at every frame and at the close."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not done() and not self.closed.is_set():
                    self.changed.clear()
                    await self.changed.wait()
        return done()

    async def ended(self, timeout: float) -> bool:
        """Whether the server sent GOAWAY or closed within ``timeout``."""
        return await self.wait_for(
            lambda: self.goaway_code() is not None or self.closed.is_set(), timeout
        )


async def canary(port: int) -> int:
    """One well-behaved HTTP/1.1 request on its own connection: its status."""
    return await raw_http1_status(port, b"GET /echo?canary HTTP/1.1\r\nHost: x\r\n\r\n")


def pool_sessions(proxy: ProxyService) -> list[object]:
    return [slot.session for slot in proxy.pool.slots]


def rss_mb() -> float:
    # ru_maxrss is the peak in KiB on Linux: a flood that made memory spike shows here.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.asynccontextmanager
async def proxy_under(
    make_proxy: ProxyFactory, origin: DemoOrigin, server: str
) -> AsyncIterator[ProxyService]:
    config = proxy_config(origin.port)
    config.server.inbound_server = server
    async with make_proxy(config) as proxy:
        sessions = pool_sessions(proxy)
        yield proxy
        # Whatever the flood did, a well-behaved client is served, and the pool kept every
        # session it had.
        assert await canary(config.server.port) == 200
        assert pool_sessions(proxy) == sessions
        assert all(s.reconnects == 0 for s in proxy.pool.slots)


@pytest.mark.parametrize("server", SERVERS)
async def test_rapid_reset_never_reaches_the_upstream(
    origin: DemoOrigin, make_proxy: ProxyFactory, server: str
) -> None:
    """CVE-2023-44487: HEADERS and RST_STREAM at once, a thousand times. A stream the client
    reset before the proxy forwarded it must not be sent upstream."""
    async with proxy_under(make_proxy, origin, server) as proxy:
        async with RawH2.connect(proxy.config.server.port) as client:
            for i in range(1000):
                sid = 2 * i + 1
                client.send(client.request(sid, "/slow?delay_ms=2000"))
                client.send(frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL)))
                if i % 50 == 49:
                    await client.drain()
                    if client.closed.is_set():
                        break
            await client.drain()
            await client.ended(2.0)
        await asyncio.sleep(0.5)
        reached = [r for r in origin.request_log if r.target.startswith("/slow")]
        # hypercorn reports a reset at once: at most the first streams of the burst, before
        # it counts as one, are forwarded. granian delivered it 165-280 ms late under a flood
        # (one instrumented run), so up to MAX_FORWARDED streams are in flight before the
        # first reset is seen; they are cancelled as the resets arrive, and once
        # REFUSE_RESETS of them are known the connection gets 429s. Measured: 0-100
        # (granian), 0 (hypercorn); before the fix: 15-917 (granian) and 200 (hypercorn)
        # of 1,000 reached the origin.
        bound = MAX_FORWARDED + REFUSE_RESETS if server == "granian" else BURST_STREAMS
        print(f"\n{server}: {len(reached)} of 1000 reset streams reached the upstream")
        assert len(reached) <= bound, f"{len(reached)} reset streams reached the upstream"


@pytest.mark.parametrize("server", SERVERS)
async def test_continuation_flood_is_cut_off(
    origin: DemoOrigin, make_proxy: ProxyFactory, server: str
) -> None:
    """CVE-2024-27316: a header block that never ends, in endless CONTINUATION frames."""
    async with proxy_under(make_proxy, origin, server) as proxy:
        before = rss_mb()
        async with RawH2.connect(proxy.config.server.port) as client:
            # The same block, but without END_HEADERS: a header block that never ends.
            client.send(frame(HEADERS, END_STREAM, 1, client.header_block()))
            filler = b"\x40\x05x-pad\x05aaaaa" * 100  # literal headers, 1.3 kB a frame
            for i in range(20_000):  # 26 MB of header block at most
                client.send(frame(CONTINUATION, 0, 1, filler))
                if i % 100 == 99:
                    await client.drain()
                    if client.closed.is_set():
                        break
            assert await client.ended(10.0), "the server kept reading an endless header block"
        assert rss_mb() - before < 100
        assert origin.request_log == []


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("kind", ["SETTINGS", "PING"])
async def test_control_frame_flood_leaves_the_proxy_serving(
    origin: DemoOrigin, make_proxy: ProxyFactory, server: str, kind: str
) -> None:
    """200,000 SETTINGS or PING frames that each demand an answer, never reading the
    answers: the server must stop reading or hang up, not queue answers without bound."""
    async with proxy_under(make_proxy, origin, server) as proxy:
        before = rss_mb()
        one = frame(SETTINGS, 0, 0) if kind == "SETTINGS" else frame(PING, 0, 0, b"\0" * 8)
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.config.server.port)
        try:
            writer.write(PREFACE + frame(SETTINGS, 0, 0))
            batch = one * 1000
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(20):
                    for _ in range(200):
                        writer.write(batch)
                        await writer.drain()
            # Meanwhile and after, everyone else is served.
            assert await canary(proxy.config.server.port) == 200
        finally:
            writer.close()
        assert rss_mb() - before < 100
        assert [r.target for r in origin.request_log] == ["/echo?canary"]


@pytest.mark.parametrize("server", SERVERS)
async def test_window_update_overflow_is_a_flow_control_error(
    origin: DemoOrigin, make_proxy: ProxyFactory, server: str
) -> None:
    """A connection window pushed past 2^31-1 is FLOW_CONTROL_ERROR (RFC 9113 6.9.1)."""
    async with proxy_under(make_proxy, origin, server) as proxy:
        async with RawH2.connect(proxy.config.server.port) as client:
            increment = struct.pack(">I", 0x7FFFFFFF)
            client.send(frame(WINDOW_UPDATE, 0, 0, increment) * 2)
            await client.drain()
            assert await client.ended(5.0)
            code = client.goaway_code()
            assert code in (None, 0x3), f"GOAWAY {code}"  # 0x3 = FLOW_CONTROL_ERROR
        assert origin.request_log == []


@pytest.mark.parametrize("server", SERVERS)
async def test_ten_thousand_headers_over_h2_stay_out_of_the_upstream(
    origin: DemoOrigin, make_proxy: ProxyFactory, server: str
) -> None:
    async with proxy_under(make_proxy, origin, server) as proxy:
        async with RawH2.connect(proxy.config.server.port) as client:
            block = client.header_block(extra=[(f"x-h{i}", "v") for i in range(10_000)])
            chunks = [block[i : i + 16384] for i in range(0, len(block), 16384)]
            client.send(frame(HEADERS, END_STREAM, 1, chunks[0]))
            for i, chunk in enumerate(chunks[1:], 1):
                client.send(
                    frame(CONTINUATION, END_HEADERS if i == len(chunks) - 1 else 0, 1, chunk)
                )
            await client.drain()
            await client.wait_for(
                lambda: any(
                    k in (HEADERS, RST_STREAM, GOAWAY) and sid in (0, 1)
                    for k, _, sid, _ in client.frames
                ),
                5.0,
            )
            answers = [
                (k, sid) for k, _, sid, _ in client.frames if k in (HEADERS, RST_STREAM, GOAWAY)
            ]
            assert answers or client.closed.is_set(), "no answer to 10,000 headers"
        assert origin.request_log == []
