"""The demo origin: a small HTTP/2 server (h2c prior knowledge and TLS with ALPN h2).

Endpoints:
- ``POST|PUT /cwnd/sink``: reads and discards the body; 204 with ``x-received-bytes`` and
  ``x-received-sha256``.
- ``GET|HEAD /cwnd/blob?size=N``: N deterministic bytes (see ``blob_bytes``), with ``Range``
  support (206, 416).
- ``/echo``: streams the request body back, with the method and path in headers.
- ``/headers``: the request's method, path, authority and headers as JSON.
- ``/status/N``: an empty response with status N (``?retry-after=S`` adds Retry-After).
- ``/trailers``: a small body followed by trailers (grpc-status, x-checksum).
- ``/slow?delay_ms=D``: answers after D ms.
- ``/reset``: resets the stream (RST_STREAM INTERNAL_ERROR) without answering; with
  ``?after=N``, after the headers and N bytes of body.
- ``/goaway``: answers 200, then sends GOAWAY (a graceful server restart); with
  ``?after=N``, a crash instead: headers and N bytes, GOAWAY(INTERNAL_ERROR), close.

It is our own h2 server rather than a generic ASGI one because the warm-up work needs full
control: large receive windows for the upload sink (hypercorn acknowledges with 64 KiB
windows, a 5 Mbit/s cap at 100 ms RTT), a configurable MAX_CONCURRENT_STREAMS, and faults.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.errors
import h2.events as ev
import h2.exceptions

from cwndproxy.http2.asyncio_edge import EndpointProtocol
from cwndproxy.http2.endpoint import FlowControlAborted, H2Endpoint, Link
from cwndproxy.urls import format_url

log = logging.getLogger(__name__)

DEFAULT_BLOB_SIZE = 64 * 1024 * 1024
MAX_BLOB_SIZE = 1 << 40
SEND_CHUNK = 256 * 1024

# The blob is a fixed pseudo-random block repeated; the block length is prime so that the
# pattern does not line up with frame or record sizes.
_BLOCK_LEN = 65521


def _make_block() -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < _BLOCK_LEN:
        out += hashlib.sha256(b"cwnd-warm-up-proxy blob %d" % counter).digest()
        counter += 1
    return bytes(out[:_BLOCK_LEN])


_BLOCK = _make_block()
_BLOCK2 = _BLOCK + _BLOCK


def blob_bytes(start: int, end: int) -> bytes:
    """The blob's bytes in [start, end). Every byte depends only on its offset."""
    parts: list[bytes] = []
    pos = start
    while pos < end:
        off = pos % _BLOCK_LEN
        n = min(end - pos, _BLOCK_LEN)
        parts.append(_BLOCK2[off : off + n])
        pos += n
    return b"".join(parts)


_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """A single byte range as [start, end), or None if unsatisfiable or malformed."""
    m = _RANGE_RE.match(value.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if m.group(1):
        start = int(m.group(1))
        end = int(m.group(2)) + 1 if m.group(2) else size
    else:
        suffix = int(m.group(2))
        start, end = max(0, size - suffix), size
    end = min(end, size)
    if start >= size or start >= end:
        return None
    return start, end


Headers = list[tuple[bytes, bytes]]


@dataclass
class OriginStats:
    connections: int = 0
    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


class _Request:
    def __init__(self, stream_id: int, headers: Headers) -> None:
        self.stream_id = stream_id
        self.headers = headers
        pseudo = {k.decode(): v.decode() for k, v in headers if k.startswith(b":")}
        self.method = pseudo.get(":method", "GET")
        self.target = pseudo.get(":path", "/")
        self.authority = pseudo.get(":authority", "")
        split = urlsplit(self.target)
        self.path = split.path
        self.query = parse_qs(split.query)
        self.body: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False
        # How the request (body) ended, as the origin saw it: "open", "complete" (END_STREAM)
        # or "reset" (RST_STREAM): tests assert on this, not only on status codes.
        self.ended = "open"
        self.body_bytes = 0

    def header(self, name: bytes) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("latin-1")
        return None

    def qint(self, name: str, default: int) -> int:
        try:
            return int(self.query[name][0])
        except (KeyError, ValueError, IndexError):
            return default


class OriginProtocol(H2Endpoint):
    def __init__(
        self,
        server: DemoOrigin,
    ) -> None:
        config = h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=True
        )
        super().__init__(
            config,
            stream_window=server.stream_window,
            connection_window=server.connection_window,
            max_frame_size=server.max_frame_size,
            max_concurrent_streams=server.max_concurrent_streams,
        )
        self.server = server
        self.requests: dict[int, _Request] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def attach(self, link: Link) -> None:
        super().attach(link)
        ssl_object = link.extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            # Only HTTP/2 is spoken here; a client without h2 gets the socket closed.
            self.close_connection()
            return
        self.server.stats.connections += 1
        self.server.protocols.add(self)
        self.start_h2()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.server.protocols.discard(self)
        for req in self.requests.values():
            req.closed = True
            req.body.put_nowait(None)
        for task in self.tasks:
            task.cancel()

    def on_protocol_error(self, exc: h2.exceptions.ProtocolError) -> None:
        log.info("closing a client connection after a protocol error: %s", exc)

    def handle_event(self, event: ev.Event) -> None:
        if self.handle_window_events(event):
            return
        if isinstance(event, ev.RequestReceived):
            last = self.conn.goaway_last_stream_id
            if last is not None and event.stream_id > last:
                # Raced our GOAWAY: refused, so the client may retry it elsewhere.
                self.conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                return
            req = _Request(event.stream_id, list(event.headers))
            self.requests[event.stream_id] = req
            self.server.stats.requests += 1
            self.server.request_log.append(req)
            if event.stream_ended is not None:
                req.ended = "complete"
                req.body.put_nowait(None)
            task = asyncio.get_running_loop().create_task(self._run(req))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif isinstance(event, ev.DataReceived):
            data_req = self.requests.get(event.stream_id)
            self.server.stats.bytes_received += len(event.data)
            if data_req is None:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                return
            # Handlers consume at once (sink) or forward (echo, which is bounded by the
            # client's own window); acknowledging on receipt keeps the sink at line rate.
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            data_req.body_bytes += len(event.data)
            data_req.body.put_nowait(event.data)
            if event.stream_ended is not None:
                data_req.ended = "complete"
                data_req.body.put_nowait(None)
        elif isinstance(event, ev.StreamEnded):
            ended = self.requests.get(event.stream_id)
            if ended is not None:
                ended.ended = "complete"
                ended.body.put_nowait(None)
        elif isinstance(event, ev.StreamReset):
            reset = self.requests.pop(event.stream_id, None)
            if reset is not None:
                reset.closed = True
                if reset.ended == "open":
                    reset.ended = "reset"
                reset.body.put_nowait(None)
            self._fail_window_waiters(event.stream_id)

    async def _run(self, req: _Request) -> None:
        try:
            handler = self.server.route(req)
            await handler(self, req)
        except (FlowControlAborted, h2.exceptions.StreamClosedError):
            pass  # the client went away
        except h2.exceptions.ProtocolError:
            pass
        finally:
            self.requests.pop(req.stream_id, None)
            if self.conn.goaway_last_stream_id is not None and not self.requests:
                # Graceful close after our GOAWAY: the last stream is done.
                self.close_connection()

    # -- response helpers ----------------------------------------------------------------
    def respond(self, req: _Request, status: int, headers: Headers, end_stream: bool) -> None:
        if req.closed:
            raise FlowControlAborted("stream reset by client")
        self.conn.send_headers(
            req.stream_id,
            [(b":status", str(status).encode()), (b"server", b"cwnd-demo-origin"), *headers],
            end_stream=end_stream,
        )
        self.flush()

    async def send_body(self, req: _Request, data: bytes, end_stream: bool) -> None:
        if req.closed:
            raise FlowControlAborted("stream reset by client")
        await self.send_data(req.stream_id, data, end_stream)
        self.server.stats.bytes_sent += len(data)

    async def read_body(self, req: _Request) -> bytes | None:
        return await req.body.get()


Handler = Callable[[OriginProtocol, _Request], Awaitable[None]]


async def _sink(p: OriginProtocol, req: _Request) -> None:
    digest = hashlib.sha256()
    total = 0
    while (chunk := await p.read_body(req)) is not None:
        digest.update(chunk)
        total += len(chunk)
    p.respond(
        req,
        204,
        [
            (b"x-received-bytes", str(total).encode()),
            (b"x-received-sha256", digest.hexdigest().encode()),
        ],
        end_stream=True,
    )


async def _blob(p: OriginProtocol, req: _Request) -> None:
    size = req.qint("size", p.server.blob_size)
    if size < 0 or size > MAX_BLOB_SIZE:
        p.respond(req, 400, [(b"content-type", b"text/plain")], end_stream=False)
        await p.send_body(req, b"size out of range\n", end_stream=True)
        return
    start, end, status = 0, size, 200
    headers: Headers = [
        (b"content-type", b"application/octet-stream"),
        (b"accept-ranges", b"bytes"),
        (b"etag", f'"blob-{size}"'.encode()),
    ]
    range_value = req.header(b"range")
    # Multi-range requests get the whole entity, which RFC 9110 section 14.2 allows.
    if range_value is not None and p.server.supports_range and "," not in range_value:
        parsed = parse_range(range_value, size)
        if parsed is None:
            p.respond(req, 416, [(b"content-range", f"bytes */{size}".encode())], True)
            return
        start, end = parsed
        status = 206
        headers.append((b"content-range", f"bytes {start}-{end - 1}/{size}".encode()))
    headers.append((b"content-length", str(end - start).encode()))
    if req.method == "HEAD" or end == start:
        p.respond(req, status, headers, end_stream=True)
        return
    p.respond(req, status, headers, end_stream=False)
    pos = start
    while pos < end:
        n = min(SEND_CHUNK, end - pos)
        await p.send_body(req, blob_bytes(pos, pos + n), end_stream=pos + n >= end)
        pos += n


async def _echo(p: OriginProtocol, req: _Request) -> None:
    headers: Headers = [
        (b"x-echo-method", req.method.encode()),
        (b"x-echo-path", req.target.encode()),
    ]
    ctype = req.header(b"content-type")
    if ctype:
        headers.append((b"content-type", ctype.encode("latin-1")))
    p.respond(req, 200, headers, end_stream=False)
    while (chunk := await p.read_body(req)) is not None:
        await p.send_body(req, chunk, end_stream=False)
    await p.send_body(req, b"", end_stream=True)


async def _headers(p: OriginProtocol, req: _Request) -> None:
    while await p.read_body(req) is not None:
        pass
    body = json.dumps(
        {
            "method": req.method,
            "path": req.target,
            "authority": req.authority,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in req.headers],
        }
    ).encode()
    p.respond(req, 200, [(b"content-type", b"application/json")], end_stream=False)
    await p.send_body(req, body, end_stream=True)


async def _status(p: OriginProtocol, req: _Request) -> None:
    while await p.read_body(req) is not None:
        pass
    try:
        code = int(req.path.rsplit("/", 1)[1])
    except ValueError:
        code = 400
    if not 200 <= code <= 599:
        code = 400
    headers: Headers = []
    retry_after = req.qint("retry-after", -1)
    if retry_after >= 0:
        headers.append((b"retry-after", str(retry_after).encode()))
    p.respond(req, code, headers, end_stream=True)


async def _trailers(p: OriginProtocol, req: _Request) -> None:
    while await p.read_body(req) is not None:
        pass
    body = b"trailers follow\n"
    p.respond(req, 200, [(b"content-type", b"text/plain"), (b"trailer", b"grpc-status")], False)
    await p.send_body(req, body, end_stream=False)
    digest = hashlib.sha256(body).hexdigest().encode()
    p.conn.send_headers(
        req.stream_id, [(b"grpc-status", b"0"), (b"x-checksum", digest)], end_stream=True
    )
    p.flush()


async def _slow(p: OriginProtocol, req: _Request) -> None:
    await asyncio.sleep(req.qint("delay_ms", 1000) / 1000)
    p.respond(req, 200, [(b"content-type", b"text/plain")], end_stream=False)
    await p.send_body(req, b"slow\n", end_stream=True)


async def _reset(p: OriginProtocol, req: _Request) -> None:
    after = req.qint("after", -1)
    if after >= 0:  # mid-response: headers and ``after`` bytes first
        p.respond(req, 200, [(b"content-type", b"application/octet-stream")], end_stream=False)
        await p.send_body(req, b"r" * after, end_stream=False)
    p.conn.reset_stream(req.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
    p.flush()


async def _goaway(p: OriginProtocol, req: _Request) -> None:
    after = req.qint("after", -1)
    if after >= 0:
        # A crash mid-response: headers and ``after`` bytes, then GOAWAY(INTERNAL_ERROR)
        # and the connection closed under every stream on it.
        p.respond(req, 200, [(b"content-type", b"application/octet-stream")], end_stream=False)
        await p.send_body(req, b"g" * after, end_stream=False)
        p.conn.send_goaway(
            error_code=h2.errors.ErrorCodes.INTERNAL_ERROR, last_stream_id=req.stream_id
        )
        p.flush()
        p.close_connection()
        return
    p.respond(req, 200, [(b"content-type", b"text/plain")], end_stream=False)
    await p.send_body(req, b"goodbye\n", end_stream=True)
    p.conn.send_goaway(last_stream_id=req.stream_id)
    p.flush()


async def _not_found(p: OriginProtocol, req: _Request) -> None:
    p.respond(req, 404, [(b"content-type", b"text/plain")], end_stream=False)
    await p.send_body(req, b"not found\n", end_stream=True)


async def _method_not_allowed(p: OriginProtocol, req: _Request) -> None:
    p.respond(req, 405, [(b"content-type", b"text/plain")], end_stream=False)
    await p.send_body(req, b"method not allowed\n", end_stream=True)


class DemoOrigin:
    """The demo origin server. ``await start()``, then ``port`` is the bound port."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        blob_size: int = DEFAULT_BLOB_SIZE,
        supports_range: bool = True,
        max_concurrent_streams: int = 100,
        stream_window: int = 16 * 1024 * 1024,
        connection_window: int = 64 * 1024 * 1024,
        max_frame_size: int = 1024 * 1024,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.blob_size = blob_size
        self.supports_range = supports_range
        self.max_concurrent_streams = max_concurrent_streams
        self.stream_window = stream_window
        self.connection_window = connection_window
        self.max_frame_size = max_frame_size
        self.stats = OriginStats()
        # Every request received, in order (tests: what reached the upstream, and how).
        self.request_log: list[_Request] = []
        self.protocols: set[OriginProtocol] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return format_url(self.ssl_context is not None, self.host, self.port)

    def route(self, req: _Request) -> Handler:
        path, method = req.path, req.method
        if path == "/cwnd/sink":
            return _sink if method in ("POST", "PUT") else _method_not_allowed
        if path == "/cwnd/blob":
            return _blob if method in ("GET", "HEAD") else _method_not_allowed
        routes: dict[str, Handler] = {
            "/echo": _echo,
            "/headers": _headers,
            "/trailers": _trailers,
            "/slow": _slow,
            "/reset": _reset,
            "/goaway": _goaway,
        }
        if path.startswith("/status/"):
            return _status
        return routes.get(path, _not_found)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.ssl_context is not None:
            self.ssl_context.set_alpn_protocols(["h2"])
        self._server = await loop.create_server(
            lambda: EndpointProtocol(OriginProtocol(self)),
            self.host,
            self.port,
            ssl=self.ssl_context,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def close_connections(self) -> None:
        """Drop every client connection abruptly (for reconnect tests and restarts)."""
        for proto in list(self.protocols):
            proto.abort_connection()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for proto in list(self.protocols):
                proto.conn.send_goaway()
                proto.flush()
                proto.close_connection()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> DemoOrigin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def server_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    return ctx
