"""The ASGI forwarding app: every inbound request goes to the one configured upstream over
a pooled HTTP/2 session, bodies streamed both ways with backpressure. When a failed attempt
is tried again is the retry rule's (retry.py); what a client's connection may cost, the
inbound connection's (inbound.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from cwndproxy.deadlines import deadlines
from cwndproxy.pool.pool import NoSessionAvailable, Pool
from cwndproxy.pool.slot import PoolSlot
from cwndproxy.proxy.answer import Answer
from cwndproxy.proxy.asgi import Message, Receive, Scope, Send
from cwndproxy.proxy.body import BadRequestBody, ClientGone, RequestBody
from cwndproxy.proxy.headers import (
    downstream_response_headers,
    is_idempotent,
    upstream_request_headers,
)
from cwndproxy.proxy.inbound import (
    INBOUND_TRACKED,
    InboundConnection,
)
from cwndproxy.proxy.request_rules import (
    HeaderLimits,
    RequestRejected,
    check_request,
    header_list_size,
)
from cwndproxy.proxy.retry import MAX_ATTEMPTS, should_retry
from cwndproxy.proxy.stats import ClientRequestStats
from cwndproxy.proxy.watch import ClientWatch, WatchStarts
from cwndproxy.upstream.counters import TrafficKind
from cwndproxy.upstream.session import (
    H2Session,
    Response,
    StreamTimeout,
    UpstreamError,
    UpstreamStream,
)

log = logging.getLogger(__name__)


@dataclass
class ForwardingSettings:
    response_timeout: float = 60.0
    write_timeout: float = 30.0
    acquire_timeout: float = 5.0
    preserve_host: bool = False
    limits: HeaderLimits = field(default_factory=HeaderLimits)
    # One line per client request when set (server.access_log); its handler decides the
    # format and where it goes.
    access_log: logging.Logger | None = None


class ForwardingApp:
    def __init__(self, pool: Pool, settings: ForwardingSettings | None = None) -> None:
        self.pool = pool
        self.settings = settings or ForwardingSettings()
        self.in_flight = 0
        self.client_stats = ClientRequestStats()
        # Requests in progress per inbound connection (client and server address pair).
        self._inbound: dict[tuple[Any, Any], InboundConnection] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        # Requests whose client is watched for leaving once they ran WATCH_DELAY.
        self.watch_starts = WatchStarts()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            elif scope["type"] == "websocket":
                await _refuse_websocket(scope, receive, send)
            return
        self.in_flight += 1
        self._idle.clear()
        inbound = self._inbound_of(scope)
        inbound.active += 1
        inbound.requests += 1
        started = time.monotonic()
        answer = Answer(send, started)
        try:
            await self._handle(scope, receive, answer, inbound)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()
            inbound.active -= 1
            inbound.finished += 1
            duration = time.monotonic() - started
            self.client_stats.record(answer.status, answer.first_byte, duration)
            if self.settings.access_log is not None:
                answer.log_to(self.settings.access_log, scope, duration)

    def _inbound_of(self, scope: Scope) -> InboundConnection:
        key = _connection_key(scope)
        inbound = self._inbound.pop(key, None) or InboundConnection()
        self._inbound[key] = inbound  # most recent last
        if len(self._inbound) > INBOUND_TRACKED:
            # Forget the least recent idle connection (bounded memory whatever the clients).
            for old_key, old in self._inbound.items():
                if old.active == 0 and old_key != key:
                    del self._inbound[old_key]
                    break
        return inbound

    async def _handle(
        self, scope: Scope, receive: Receive, answer: Answer, connection: InboundConnection
    ) -> None:
        send = answer.send
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        inbound: list[tuple[bytes, bytes]] = list(scope["headers"])
        try:
            framed_empty = check_request(
                method,
                raw_path + (b"?" + scope["query_string"] if scope.get("query_string") else b""),
                inbound,
                str(scope.get("http_version", "1.1")),
                self.settings.limits,
            )
        except RequestRejected as exc:
            # Answered here: such a request must not cost a pooled session (see
            # request_rules). The request body, if any, is not read, and the connection is
            # closed after the answer: what follows a request with doubtful framing must not
            # be parsed as the next request (RFC 9112 section 6.3).
            await _error(send, exc.status, exc.reason, close=True)
            return
        # Only origin-form targets are forwarded. An absolute-form URI naming another host
        # must not turn this reverse proxy into an open one: the upstream is fixed.
        if not raw_path.startswith(b"/"):
            await _error(send, 400, "request target must be a path (origin-form)")
            return
        path = raw_path.decode("latin-1")
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        client = scope.get("client")
        client_ip = client[0] if client else None
        authority, headers = upstream_request_headers(
            inbound,
            client_ip=client_ip,
            inbound_scheme=scope.get("scheme", "http"),
            upstream_authority=self.pool.target.authority,
            preserve_host=self.settings.preserve_host,
        )
        trailers_ok = "http.response.trailers" in (scope.get("extensions") or {})
        h2 = scope.get("http_version") == "2"
        try:
            if framed_empty and not h2:
                # HTTP/1.x without Content-Length or Transfer-Encoding has no body (RFC 9112
                # section 6.3): the server's one empty message is not fetched. Each ASGI
                # receive is a round trip to granian's thread (~18 us of this thread's
                # CPU, cProfile); the watch skips that message when it asks for the next.
                first: Message = _EMPTY_BODY
            else:
                # The first piece of body is read before any upstream stream opens: a body
                # the server cannot parse from the start (a bad chunk size) never reaches
                # upstream.
                first = await receive()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await _error(send, 400, f"malformed request body: {exc}", close=True)
            return
        body = RequestBody(receive, first)
        if body.disconnected:
            # granian reports a body its parser refuses (a bad chunk size) as a disconnect
            # and answers 500 itself when the app does not answer: a client still there
            # gets the 400 it earned; a client really gone gets nothing either way.
            await _error(send, 400, "request body malformed or cut short", close=True)
            return
        watch: ClientWatch | None = None
        if h2 and connection.refused:
            await _error(send, 429, "too many streams reset by this connection")
            return
        if body.complete:
            # A connection opening streams in a burst (or resetting many) is watched from
            # the start: that is where a rapid reset would be; any other request only once
            # it has run for WATCH_DELAY.
            suspect = h2 and connection.suspect
            watch = ClientWatch(receive, body, later=None if suspect else self.watch_starts)
            # (A watch that waits for its delay has seen nothing yet: no coroutine to ask.)
            if h2 and watch.started and await watch.left_before_forwarding(burst=suspect):
                connection.early_resets += 1
                await watch.aclose()
                return
        counted = False
        try:
            if h2:
                counted = connection.take_forward_slot() or await connection.forward_slot(
                    watch.left if watch else asyncio.Event()
                )
                if not counted:
                    return  # the client left while waiting (counted below as an early reset)
                if connection.refused:  # found out while this request waited
                    await _error(send, 429, "too many streams reset by this connection")
                    return
            await self._forward(
                ClientRequest(method, path, authority, headers, body, watch, answer),
                receive,
                trailers_ok,
            )
        finally:
            if counted:
                connection.forward_done()
            answer.bytes_in = body.size
            if watch is not None:
                if watch.has_left and answer.status is None:
                    connection.early_resets += 1
                if not watch.close_unstarted():
                    await watch.aclose()

    async def _forward(self, request: ClientRequest, receive: Receive, trailers_ok: bool) -> None:
        method, path, headers, body = request.method, request.path, request.headers, request.body
        answer = request.answer
        send = answer.send
        # Sessions, not slots, that had a go: a slot whose session was replaced (GOAWAY) is
        # a fresh connection and a fine place for the retry.
        tried: set[H2Session] = set()
        slots = self.pool.slots
        max_attempts = max(MAX_ATTEMPTS, len(slots) + 1)
        attempt = 0
        # Re-picks of a session that stopped taking streams between the pick and our
        # HEADERS (retired, GOAWAY): nothing was sent, so they are no attempt, but bounded.
        repicks = 0
        while attempt < max_attempts:
            exclude = _NONE_EXCLUDED
            if tried:
                exclude = frozenset(s.index for s in slots if s.session in tried)
                if len(exclude) >= len(slots):
                    exclude = _NONE_EXCLUDED  # every session had a go: any ready one may serve
            try:
                # A ready session is nearly always there: taken without a coroutine.
                ready = self.pool.ready_session(exclude)
                slot, session = ready or await self.pool.acquire(
                    self.settings.acquire_timeout, exclude=exclude
                )
            except NoSessionAvailable as exc:
                if attempt == 0 or not exclude:
                    await _fail(send, 502, "upstream unavailable", exc, method, path)
                    return
                # The retry found no other session: try any ready one, including the first.
                try:
                    slot, session = await self.pool.acquire(self.settings.acquire_timeout)
                except NoSessionAvailable as exc2:
                    await _fail(send, 502, "upstream unavailable", exc2, method, path)
                    return
            tried.add(session)
            answer.session = slot.index
            answer.attempts += 1
            limit = session.peer_max_header_list_size
            if limit is not None and header_list_size(headers) + 4 * 32 + len(path) > limit:
                # The upstream said how much it takes: more would be refused, at best for
                # this stream, at worst for the whole connection.
                await _error(send, 431, f"headers larger than the upstream accepts ({limit})")
                return
            exchange = _Exchange(self, slot, session, request)
            try:
                await exchange.run(send, receive, trailers_ok)
                return
            except ClientGone:
                return
            except BadRequestBody as exc:
                if not exchange.response_started:
                    await _error(send, 400, f"malformed request body: {exc}", close=True)
                return
            except UpstreamError as exc:
                if body.client_gone():
                    return  # the client is gone: nobody to answer, and nothing to replay
                if exchange.stream is None and exc.unprocessed and repicks < len(slots):
                    repicks += 1
                    continue
                retry = should_retry(
                    attempt,
                    max_attempts=max_attempts,
                    unprocessed=exc.unprocessed,
                    idempotent=is_idempotent(method),
                    response_started=exchange.response_started,
                    body_held=body.complete and body.replayable,
                )
                slot_counters = session.counters
                slot_counters.errors += 1
                if retry:
                    slot_counters.retries += 1
                    log.info("retrying %s %s on another session: %s", method, path, exc)
                    attempt += 1
                    continue
                if exchange.response_started:
                    # Headers already went out: the only honest signal left is to cut the
                    # response short, so the client sees a truncated body, not a clean end.
                    log.warning("%s %s failed mid-response: %s", method, path, exc)
                    raise
                if isinstance(exc, StreamTimeout):
                    await _fail(send, 504, "upstream did not answer in time", exc, method, path)
                else:
                    await _fail(send, 502, "upstream failed the request", exc, method, path)
                return


_NONE_EXCLUDED: frozenset[int] = frozenset()
# The body of a request whose framing says it has none (read only, never changed).
_EMPTY_BODY: Message = {"type": "http.request", "body": b"", "more_body": False}


@dataclass(slots=True)
class ClientRequest:
    """One client request as the app forwards it, whichever attempt carries it."""

    method: str
    path: str
    authority: str
    headers: list[tuple[bytes, bytes]]
    body: RequestBody
    watch: ClientWatch | None
    answer: Answer


class _Exchange:
    """One attempt at forwarding one request over one session."""

    def __init__(
        self, app: ForwardingApp, slot: PoolSlot, session: H2Session, request: ClientRequest
    ) -> None:
        self.app = app
        self.request = request
        self.slot = slot
        self.session = session
        self.response_started = False
        self.stream: UpstreamStream | None = None

    async def run(self, send: Send, receive: Receive, trailers_ok: bool) -> None:
        settings = self.app.settings
        request = self.request
        stream = await self.session.open_stream(
            request.method,
            request.path,
            request.headers,
            end_stream=request.body.empty,
            kind=TrafficKind.REAL,
            authority=request.authority,
        )
        self.stream = stream
        if request.watch is not None:
            request.watch.stream = stream
        pump: asyncio.Task[None] | None = None
        watcher: ClientWatch | None = None
        try:
            if not request.body.empty:
                pump = asyncio.get_running_loop().create_task(self._pump_body(stream))
            try:
                response = await stream.receive_response(settings.response_timeout)
                request.answer.upstream_answered()
            except UpstreamError:
                if _client_left(pump):
                    # The pump reset the stream because the client left mid-body (or sent a
                    # body the server could not parse): that is the whole story, not an
                    # upstream failure to retry.
                    raise _pump_error(pump) from None
                raise
            if _client_left(pump):
                raise _pump_error(pump)
            if request.watch is None and request.body.complete and (pump is None or pump.done()):
                # A streamed body is complete now: from here on, watch for the client leaving.
                watcher = ClientWatch(receive, request.body, later=self.app.watch_starts)
                watcher.stream = stream
            await self._relay_response(send, stream, response, trailers_ok)
            if pump is not None and not pump.done():
                # The upstream answered before taking the whole body (e.g. an early 4xx).
                pump.cancel()
                stream.cancel()
        except BaseException:
            stream.cancel()
            raise
        finally:
            if watcher is not None and not watcher.close_unstarted():
                await watcher.aclose()
            if pump is not None:
                if not pump.done():
                    pump.cancel()
                # Collect every outcome: an exception nobody retrieves is logged by asyncio
                # as a bug ("Task exception was never retrieved").
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump

    async def _pump_body(self, stream: UpstreamStream) -> None:
        try:
            async for chunk in self.request.body.stream():
                await stream.send(chunk)
            await stream.end()
        except (ClientGone, BadRequestBody):
            stream.cancel()
            raise
        except UpstreamError:
            # The stream failed; the response side reports it.
            return

    async def _relay_response(
        self, send: Send, stream: UpstreamStream, response: Response, trailers_ok: bool
    ) -> None:
        write_timeout = self.app.settings.write_timeout
        headers = downstream_response_headers(response.headers)
        want_trailers = trailers_ok and any(k == b"trailer" for k, _ in headers)
        # Fetch the first piece before committing headers: if the stream fails right away,
        # the client can still get a clean 502 (or the request a retry).
        first = b""
        if self.request.method != "HEAD":
            first = await stream.read()
        start: Message = {
            "type": "http.response.start",
            "status": response.status,
            "headers": headers,
        }
        if want_trailers:
            start["trailers"] = True
        self.response_started = True
        if not want_trailers and stream.body_complete:
            # The whole body came with the first read (a small response): one message
            # with more_body False instead of the body and an empty closing one. Each ASGI
            # send is a round trip to the server's thread. One deadline covers both.
            body: Message = {"type": "http.response.body", "body": first}
            await _send_within(send, start, write_timeout, then=body)
            return
        await _send_within(send, start, write_timeout)
        chunk = first
        while chunk:
            await _send_within(
                send,
                {"type": "http.response.body", "body": chunk, "more_body": True},
                write_timeout,
            )
            chunk = await stream.read()
        await _send_within(send, {"type": "http.response.body", "body": b""}, write_timeout)
        if want_trailers:
            await _send_within(
                send,
                {
                    "type": "http.response.trailers",
                    "headers": downstream_response_headers(stream.trailers or []),
                    "more_trailers": False,
                },
                write_timeout,
            )


async def _send_within(
    send: Send, message: Message, timeout: float, *, then: Message | None = None
) -> None:
    """Send ``message`` (and ``then``, if given) to the client within ``timeout``."""
    watch = deadlines()
    task = watch.arm(timeout)
    try:
        await send(message)
        if then is not None:
            await send(then)
    except asyncio.CancelledError:
        if watch.expired(task):
            raise ClientGone(f"client did not take data for {timeout:.0f}s") from None
        raise
    except (OSError, RuntimeError) as exc:
        # Servers raise different things once the client is gone; all mean the same here.
        raise ClientGone(str(exc)) from exc
    finally:
        watch.disarm(task)


def _client_left(pump: asyncio.Task[None] | None) -> bool:
    return (
        pump is not None
        and pump.done()
        and not pump.cancelled()
        and isinstance(pump.exception(), ClientGone | BadRequestBody)
    )


def _pump_error(pump: asyncio.Task[None] | None) -> BaseException:
    """What ended the body pump: ClientGone, or BadRequestBody."""
    assert pump is not None
    exc = pump.exception()
    return exc if exc is not None else ClientGone()


def _connection_key(scope: Scope) -> tuple[Any, Any]:
    client, server = scope.get("client"), scope.get("server")
    return (tuple(client) if client else None, tuple(server) if server else None)


async def _fail(
    send: Send, status: int, category: str, exc: BaseException, method: str, path: str
) -> None:
    """An upstream failure, as the client sees it: a category and a request id, never the
    upstream's address, TLS errors or stream ids. The detail goes to the log, under the
    same id, for the operator."""
    request_id = secrets.token_hex(6)
    log.warning("request %s: %s %s -> %d: %s", request_id, method, path, status, exc)
    await _error(send, status, f"{category} (request id {request_id})", request_id=request_id)


async def _error(
    send: Send,
    status: int,
    reason: str,
    *,
    close: bool = False,
    request_id: str | None = None,
) -> None:
    body = f"{status} {_REASONS.get(status, '')}: {reason}\n".encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"x-cwnd-proxy-error", b"1"),
    ]
    if close:
        headers.append((b"connection", b"close"))
    if request_id:
        headers.append((b"x-cwnd-proxy-request-id", request_id.encode()))
    with contextlib.suppress(Exception):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """WebSocket is not proxied: a clear 501 where the server lets the app answer the
    handshake with an HTTP response (ASGI websocket.http.response), a close otherwise."""
    await receive()  # websocket.connect
    body = b"501 Not Implemented: WebSocket is not supported\n"
    with contextlib.suppress(Exception):
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": 501,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1003})


_REASONS = {
    400: "Bad Request",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
