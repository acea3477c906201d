"""One HTTP/2 client connection to the upstream: many streams over one TCP connection.

The session is the unit the pool manages and the warm-up engine will drive: it exposes its
state, traffic counters (per traffic kind), the measured PING RTT and its socket (for
TCP_INFO).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import h2.config
import h2.errors
import h2.events as ev
import h2.exceptions

from cwndproxy.deadlines import deadlines
from cwndproxy.http2.endpoint import FlowControlAborted, H2Endpoint
from cwndproxy.http2.hpack_decoder import CachingDecoder
from cwndproxy.http2.hpack_encoder import StatelessEncoder
from cwndproxy.http2.lean_client import LeanClientConnection
from cwndproxy.upstream.counters import TrafficCounters, TrafficKind
from cwndproxy.upstream.credit import InboundCredit
from cwndproxy.upstream.tcpinfo import SocketLike

Headers = list[tuple[bytes, bytes]]

DEFAULT_STREAM_WINDOW = 16 * 1024 * 1024
DEFAULT_CONNECTION_WINDOW = 64 * 1024 * 1024
DEFAULT_MAX_FRAME = 1024 * 1024
# A read hands the consumer up to this much at once: nginx sends 8-16 KiB DATA frames, and
# forwarding each as its own ASGI message would cost more CPU than the bytes themselves.
MAX_READ_CHUNK = 1024 * 1024
# Idle PING RTTs within this many seconds count towards InboundCredit.rtt_factor.
IDLE_RTT_WINDOW = 2.0


class UpstreamError(Exception):
    """A stream failed. ``unprocessed`` is True when the upstream guarantees it did not
    process the request (REFUSED_STREAM, or a stream above GOAWAY's last_stream_id), so a
    retry is safe for any method (RFC 9113 section 8.7)."""

    def __init__(self, message: str, *, unprocessed: bool = False) -> None:
        super().__init__(message)
        self.unprocessed = unprocessed


class SessionClosed(UpstreamError):
    """The session cannot open new streams (closed or draining)."""


class StreamTimeout(UpstreamError):
    """The upstream did not answer in time."""


class SessionState(enum.Enum):
    OPEN = "open"
    DRAINING = "draining"  # GOAWAY received or sent: no new streams
    CLOSED = "closed"


@dataclass
class SessionSettings:
    stream_window: int = DEFAULT_STREAM_WINDOW
    connection_window: int = DEFAULT_CONNECTION_WINDOW
    max_frame_size: int = DEFAULT_MAX_FRAME
    # Meter the connection window (upstream/credit.py) so that the upstream's first flight
    # after idle is bounded by ``limit_burst``; connection_window is then unused.
    metered_window: bool = False
    # The HTTP/2 client codec: "h2" (the library), or "lean" (http2/lean_client.py,
    # experimental: fewer Python steps per frame).
    codec: str = "h2"


@dataclass
class Response:
    status: int
    headers: Headers


@dataclass
class _RxChunk:
    data: bytes
    flow_controlled: int


class UpstreamStream:
    """A request/response exchange on a session.

    Received DATA is buffered here and acknowledged to the peer (WINDOW_UPDATE) only when
    the consumer reads it, so a slow client slows its own stream down (per-stream
    backpressure) while memory stays bounded by the stream window.
    """

    def __init__(self, session: H2Session, stream_id: int, kind: TrafficKind) -> None:
        self.session = session
        self.stream_id = stream_id
        self.kind = kind
        loop = asyncio.get_running_loop()
        self.response: asyncio.Future[Response] = loop.create_future()
        self.trailers: Headers | None = None
        self._chunks: collections.deque[_RxChunk] = collections.deque()
        self._data_ready = asyncio.Event()
        self._ended = False
        self.error: UpstreamError | None = None
        self.local_closed = False
        self.remote_closed = False
        self.bytes_sent = 0
        self.bytes_received = 0
        # What the response's first round trip carried: the bytes that arrived within
        # ``flight_window`` (the session's minimum RTT) of the first DATA. A sender with
        # window W sends W at once and waits an RTT for ACKs, so this reads min(W, BDP) of
        # the *server's* window where we can see it. The warm-up engine uses it to verify
        # that a held window is still there.
        self.flight_window: float | None = session.min_rtt
        self.first_data_at: float | None = None
        self.last_data_at: float | None = None
        self.first_rtt_bytes = 0
        # (arrival time, bytes so far) of the latest DATA: the rate of the response's last
        # round trips tells the window it ended with.
        self.arrivals: collections.deque[tuple[float, int]] = collections.deque(maxlen=512)
        # The response body's length when the upstream announced it (content-length).
        self.expected_body: int | None = None

    @property
    def closed(self) -> bool:
        return (self.local_closed and self.remote_closed) or self.error is not None

    @property
    def body_complete(self) -> bool:
        """The response body ended cleanly and all of it has been read."""
        return self._ended and not self._chunks and self.error is None

    async def receive_response(self, timeout: float | None = None) -> Response:
        # Awaited directly, not through asyncio.shield: a cancelled wait cancels the
        # future, and the session never sets a result on a future that is done.
        if timeout is None:
            return await self.response
        watch = deadlines()
        task = watch.arm(timeout)
        try:
            return await self.response
        except asyncio.CancelledError:
            if watch.expired(task):
                raise StreamTimeout(f"no response headers within {timeout:.1f}s") from None
            raise
        finally:
            watch.disarm(task)

    async def read(self, max_bytes: int = MAX_READ_CHUNK) -> bytes:
        """Return the next piece of body, b"" at the end. Raises the stream's error."""
        while not self._chunks:
            if self.error is not None:
                raise self.error
            if self._ended:
                return b""
            self._data_ready.clear()
            await self._data_ready.wait()
        parts: list[bytes] = []
        size = 0
        acked = 0
        while self._chunks and size < max_bytes:
            chunk = self._chunks.popleft()
            parts.append(chunk.data)
            size += len(chunk.data)
            acked += chunk.flow_controlled
        self.session._acknowledge(self.stream_id, acked)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def read_up_to(self, limit: int) -> int:
        """Consume and discard the body until ``limit`` bytes or its end; the count."""
        got = 0
        while got < limit:
            data = await self.read()
            if not data:
                break
            got += len(data)
        return got

    async def iter_body(self) -> AsyncIterator[bytes]:
        while True:
            data = await self.read()
            if not data:
                return
            yield data

    async def send(self, data: bytes, end_stream: bool = False) -> None:
        await self.session._send_body(self, data, end_stream)

    async def end(self, trailers: Headers | None = None) -> None:
        await self.session._end_body(self, trailers)

    def cancel(self, error_code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """Reset the stream (RST_STREAM, CANCEL by default). Data already in flight from the
        server still arrives and is discarded; h2 returns its connection window for us."""
        self.session._reset(self, error_code)

    # -- called by the session -----------------------------------------------------------
    def _push(self, data: bytes, flow_controlled: int) -> None:
        self._chunks.append(_RxChunk(data, flow_controlled))
        self.bytes_received += len(data)
        if self.flight_window is not None and data:
            now = time.monotonic()
            if self.first_data_at is None:
                self.first_data_at = now
            self.last_data_at = now
            self.arrivals.append((now, self.bytes_received))
            if now - self.first_data_at <= self.flight_window:
                self.first_rtt_bytes += len(data)
        self._data_ready.set()

    def _end(self) -> None:
        self._ended = True
        self.remote_closed = True
        self._data_ready.set()
        if not self.response.done():
            self._set_error(UpstreamError("stream ended without response headers"))

    def _set_error(self, error: UpstreamError) -> None:
        if self.error is None and not self._ended:
            self.error = error
        if not self.response.done():
            self.response.set_exception(error)
            # Mark retrieved: nobody may be awaiting the headers of a cancelled stream.
            self.response.exception()
        self._data_ready.set()


class H2Session(H2Endpoint):
    """The HTTP/2 client side of one upstream TCP connection."""

    def __init__(
        self,
        *,
        authority: str,
        scheme: str,
        settings: SessionSettings | None = None,
        on_close: Callable[[H2Session], None] | None = None,
        rtt_probe_interval: float = 1.0,
    ) -> None:
        self.settings = settings or SessionSettings()
        config = h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_inbound_headers=True
        )
        metered = self.settings.metered_window
        super().__init__(
            config,
            stream_window=self.settings.stream_window,
            # Metered: no upfront grant; the credit policy grants as data flows.
            connection_window=65535 if metered else self.settings.connection_window,
            max_frame_size=self.settings.max_frame_size,
            # A client should not be pushed to; this also keeps streams ours alone.
            max_concurrent_streams=None,
            connection=LeanClientConnection(config) if self.settings.codec == "lean" else None,
        )
        # Request headers without HPACK's dynamic table, their encodings cached
        # (http2/hpack_encoder.py: the per-request cost, and what it costs in bytes).
        self.conn.encoder = StatelessEncoder()  # type: ignore[assignment]
        # Response header blocks decoded once while the dynamic table stays as it was
        # (http2/hpack_decoder.py).
        decoder = CachingDecoder()
        decoder.max_header_list_size = self.conn.decoder.max_header_list_size
        self.conn.decoder = decoder
        self.credit: InboundCredit | None = None
        self._idle_rtts: collections.deque[tuple[float, float]] = collections.deque()
        if metered:
            # h2 keeps the connection-level receive window in this (private) attribute; the
            # replacement has the same interface (tests/unit/http2/test_h2_internals.py).
            self.credit = InboundCredit(buffer_allowance=self.settings.connection_window)
            self.conn._inbound_flow_control_window_manager = self.credit
        self._credit_retry: asyncio.TimerHandle | None = None
        self.authority = authority
        self.scheme = scheme
        self.state = SessionState.OPEN
        self.streams: dict[int, UpstreamStream] = {}
        self.counters = TrafficCounters()
        self.created_at = time.monotonic()
        self.goaway_last_stream_id: int | None = None
        self.goaway_error_code: int | None = None
        self.goaway_at_open_stream = False
        self.close_reason: str | None = None
        self.rtt: float | None = None
        # The smallest PING RTT seen: the path's RTT without queueing (PINGs timed during a
        # transfer also measure the queue it builds).
        self.min_rtt: float | None = None
        self._on_close = on_close
        # Until the peer's SETTINGS arrive we may not know its stream limit: assume 1, the
        # only value no server can refuse (RFC 9113 leaves it unlimited until said
        # otherwise, but a server may already have lowered it in SETTINGS still in flight).
        self._peer_max_streams = 1
        self._peer_max_header_list: int | None = None
        self._started = False
        self._early_data: list[bytes] = []
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._pings: dict[bytes, tuple[float, asyncio.Future[float]]] = {}
        self._rtt_probe_interval = rtt_probe_interval
        self._ping_task: asyncio.Task[None] | None = None
        self.closed = asyncio.get_running_loop().create_future()
        # Set once the session stops taking new streams: GOAWAY either way, or closed.
        self.unusable = asyncio.Event()
        # Real (client) streams: the warm-up engine pauses while any is active.
        self.real_active = 0
        # When a stream last opened or closed (monotonic): how long the upstream has seen
        # this connection idle.
        self.last_stream_at = time.monotonic()
        self.real_idle = asyncio.Event()
        self.real_idle.set()
        self.stream_listeners: list[Callable[[UpstreamStream, bool], None]] = []
        # Streams this session opened, and how many the upstream takes per connection when
        # known (nginx: keepalive_requests; the pool learns it from repeated GOAWAYs). At the
        # budget the session retires itself with its own GOAWAY, so no stream is sent that
        # the upstream would refuse; near it, ``budget_near`` lets the pool dial ahead.
        self.streams_opened = 0
        # Streams waiting for a slot (MAX_CONCURRENT_STREAMS) to send their HEADERS.
        self.opening: collections.Counter[TrafficKind] = collections.Counter()
        self.stream_budget: int | None = None
        self._budget_headroom = 0
        self.budget_near = asyncio.Event()
        self.retired = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Begin HTTP/2 on an established (and, for TLS, ALPN-checked) connection."""
        self.start_h2()
        self._started = True
        if self._early_data:
            # The server's SETTINGS can arrive before start() (uvloop schedules callbacks so
            # that this happens): process it only now, after our preface went out, or h2
            # would answer with a SETTINGS ACK ahead of the preface.
            early, self._early_data = b"".join(self._early_data), []
            self.data_received(early)
        # The PING disables the no-SETTINGS-yet guess as soon as the peer answers anything.
        self.conn.ping(os.urandom(8))
        self.flush()
        if self._rtt_probe_interval > 0:
            self._ping_task = asyncio.get_running_loop().create_task(self._probe_rtt())

    @property
    def socket(self) -> SocketLike | None:
        """The TCP socket (asyncio hands out a TransportSocket wrapper), for TCP_INFO."""
        sock = self.extra_info("socket")
        return sock if hasattr(sock, "getsockopt") else None

    @property
    def is_usable(self) -> bool:
        return self.state is SessionState.OPEN and not self.is_connection_lost

    @property
    def active_streams(self) -> int:
        return len(self.streams)

    def active_streams_of(self, kind: TrafficKind) -> int:
        return sum(1 for s in self.streams.values() if s.kind is kind)

    @property
    def peer_max_concurrent_streams(self) -> int:
        return self._peer_max_streams

    @property
    def peer_max_header_list_size(self) -> int | None:
        """The upstream's SETTINGS_MAX_HEADER_LIST_SIZE (None: unlimited or not said)."""
        return self._peer_max_header_list

    @property
    def free_stream_slots(self) -> int:
        # Counted from our own stream table, not h2's count of open streams, which walks
        # every stream h2 holds at each call (O(streams), asked several times per request:
        # ~5% of a small request's CPU with 50 streams in flight). The two agree: a stream
        # leaves our table when h2 closed it (both ends done, reset by either side), or
        # when the session stopped taking streams anyway (GOAWAY, connection lost); the
        # session tests check the equality after each kind of ending.
        return max(0, self.peer_max_concurrent_streams - len(self.streams))

    @property
    def budget_left(self) -> int | None:
        """Streams the budget still allows beyond those already waiting (None: no budget)."""
        if self.stream_budget is None:
            return None
        return max(0, self.stream_budget - self.streams_opened - self.opening.total())

    def selection_counts(self) -> tuple[int, int]:
        """Stream slots free for one more request (the peer's limit and the stream budget,
        less the streams waiting to open), and the real streams open or opening: what the
        pool's choice reads of every session at every request, in one call."""
        opening = self.opening
        free = self.free_stream_slots - opening.total()
        budget_left = self.budget_left  # (already less the streams waiting to open)
        if budget_left is not None:
            free = min(free, budget_left)
        return max(0, free), self.real_active + opening[TrafficKind.REAL]

    @property
    def recycled(self) -> bool:
        """The session ended gracefully: the upstream sent GOAWAY with NO_ERROR (nginx does
        so after keepalive_requests streams and on reload), or we retired it at its stream
        budget. A normal event, not a failure."""
        return self.retired or self.goaway_error_code == h2.errors.ErrorCodes.NO_ERROR

    @property
    def accepted_streams(self) -> int | None:
        """How many of our streams the upstream took before its GOAWAY (client streams are
        odd: 1, 3, 5, ...), or None without a GOAWAY."""
        last = self.goaway_last_stream_id
        return None if last is None else (last + 1) // 2

    def set_stream_budget(self, budget: int | None, headroom: int) -> None:
        """Open at most ``budget`` streams; flag ``budget_near`` ``headroom`` streams before."""
        self.stream_budget = budget
        self._check_budget(headroom)

    def _check_budget(self, headroom: int | None = None) -> None:
        budget = self.stream_budget
        if budget is None:
            return
        if headroom is None:
            headroom = self._budget_headroom
        self._budget_headroom = headroom
        if self.streams_opened >= max(1, budget - headroom):
            self.budget_near.set()
        if self.streams_opened >= budget:
            self.retire(f"retired after {self.streams_opened} streams (the upstream's limit)")

    def retire(self, reason: str) -> None:
        """Take no new streams, let active ones finish, then close: a graceful end of our
        own choosing (GOAWAY NO_ERROR), not a failure."""
        if self.state is not SessionState.OPEN or self.is_connection_lost:
            return
        self.retired = True
        self.close_reason = reason
        self.goaway()

    def goaway(self, error_code: int = h2.errors.ErrorCodes.NO_ERROR) -> None:
        """Tell the upstream we are going away; existing streams may finish."""
        if self.state is SessionState.CLOSED or self.is_connection_lost:
            return
        if self.state is SessionState.OPEN:
            self.state = SessionState.DRAINING
            self.unusable.set()
            self.close_reason = self.close_reason or "local GOAWAY"
            self.conn.send_goaway(error_code=error_code)
            self.flush()
            self._fail_slot_waiters(SessionClosed("session is draining", unprocessed=True))
        self._maybe_finish_drain()

    async def aclose(self, grace: float = 0.0) -> None:
        """GOAWAY, give active streams ``grace`` seconds, then close the socket."""
        self.goaway()
        if grace > 0 and self.streams:
            try:
                async with asyncio.timeout(grace):
                    await asyncio.shield(self.closed)
            except TimeoutError:
                pass
        self.abort("closed by proxy")
        await asyncio.shield(self.closed)

    def abort(self, reason: str) -> None:
        self.close_reason = self.close_reason or reason
        if self.link is not None and not self.is_connection_lost:
            self.close_connection()
        elif not self.closed.done():
            self._finish(None)

    # -- the byte stream ---------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if not self._started:
            self._early_data.append(data)
            return
        super().data_received(data)
        if self.credit is not None:
            # A grant may have been held back by pacing while these bytes were parsed with
            # no event of ours to follow: DATA on a stream already reset (a cancelled
            # dummy fetch) is acknowledged inside the codec. Without a retry the server,
            # its credit used up, sends nothing more: the connection stalls for good
            # (tests/chaos/test_lossy_link.py caught it).
            self._schedule_credit_retry()
        self._wake_slot_waiters()

    def on_protocol_error(self, exc: h2.exceptions.ProtocolError) -> None:
        # A protocol error must fail every pending stream, never leave them hanging.
        self.close_reason = f"protocol error from upstream: {exc}"
        self._fail_all(UpstreamError(self.close_reason))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        if self.state is SessionState.CLOSED:
            return
        self.state = SessionState.CLOSED
        self.unusable.set()
        if self.close_reason is None:
            self.close_reason = (
                f"connection lost: {exc}" if exc else "connection closed by upstream"
            )
        self._fail_all(UpstreamError(self.close_reason))
        if self._ping_task is not None:
            self._ping_task.cancel()
        for _, fut in self._pings.values():
            if not fut.done():
                fut.set_exception(SessionClosed(self.close_reason))
                fut.exception()
        self._pings.clear()
        if self._credit_retry is not None:
            self._credit_retry.cancel()
            self._credit_retry = None
        if not self.closed.done():
            self.closed.set_result(None)
        if self._on_close is not None:
            self._on_close(self)

    def _fail_all(self, error: UpstreamError) -> None:
        for stream in list(self.streams.values()):
            self._drop(stream.stream_id)
            stream._set_error(error)
        self._fail_slot_waiters(SessionClosed(str(error), unprocessed=False))
        self._fail_window_waiters(None)

    # -- event handling ----------------------------------------------------------------------
    def handle_event(self, event: ev.Event) -> None:
        if self.handle_window_events(event):
            return
        if isinstance(event, ev.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:
                # Data for a stream we already abandoned: give the window back at once.
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                return
            stream._push(event.data, event.flow_controlled_length)
            self.counters.add_rx(stream.kind, len(event.data))
            if event.stream_ended is not None:
                self._on_remote_end(stream)  # updates the credit (once, not twice)
            elif self.credit is not None:
                self._update_credit()
        elif isinstance(event, ev.ResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None and not stream.response.done():
                status = _status_of(event.headers)
                if status is None:
                    self._reset(stream, h2.errors.ErrorCodes.PROTOCOL_ERROR)
                    stream.error = UpstreamError("upstream response has no valid :status")
                    return
                headers = [(k, v) for k, v in event.headers if not k.startswith(b":")]
                stream.expected_body = _content_length(headers)
                stream.response.set_result(Response(status, headers))
            if event.stream_ended is not None and stream is not None:
                self._on_remote_end(stream)
        elif isinstance(event, ev.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.trailers = list(event.headers)
                if event.stream_ended is not None:
                    self._on_remote_end(stream)
        elif isinstance(event, ev.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                self._on_remote_end(stream)
        elif isinstance(event, ev.StreamReset):
            stream = self._drop(event.stream_id)
            if stream is not None:
                refused = event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                name = _error_name(event.error_code)
                stream._set_error(
                    UpstreamError(f"upstream reset the stream ({name})", unprocessed=refused)
                )
                self._fail_window_waiters(event.stream_id)
        elif isinstance(event, ev.RemoteSettingsChanged):
            # handle_window_events above already woke senders for a new initial window.
            # Kept here, not read from h2's Settings mapping at each request (a lookup
            # through a deque per key, twice per request).
            remote = self.conn.remote_settings
            self._peer_max_streams = int(remote.max_concurrent_streams)
            header_list = remote.max_header_list_size
            self._peer_max_header_list = int(header_list) if header_list is not None else None
        elif isinstance(event, ev.PingAckReceived):
            self._on_ping_ack(event.ping_data)
        elif isinstance(event, ev.ConnectionTerminated):
            self._on_goaway(event.error_code, event.last_stream_id)
        # InformationalResponseReceived (1xx), SettingsAcknowledged, PingReceived (h2 answers
        # it itself), PriorityUpdated: nothing to do.

    def _drop(self, stream_id: int) -> UpstreamStream | None:
        """Forget a stream; the one place streams leave, so listeners see every end."""
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self._notify(stream, opened=False)
            if self.credit is not None:
                self._update_credit()
        return stream

    # -- metered connection window ------------------------------------------------------
    def limit_burst(self, size: int) -> None:
        """Bound what the upstream may send at once after idle to ``size`` bytes (metered
        sessions only): the credit it holds while no response body arrives."""
        if self.credit is None:
            return
        self.credit.burst_limit = size
        self._update_credit()
        self.flush()

    def _update_credit(self) -> None:
        """Tell the credit policy whether bodies are arriving and how much is left, and
        grant at once when it is short (e.g. the first DATA after idle: the upstream then
        gets the rest of its credit one RTT later, not one consumed read later)."""
        credit = self.credit
        assert credit is not None
        receiving = [s for s in self.streams.values() if s.bytes_received and not s.remote_closed]
        credit.active = bool(receiving)
        remaining: int | None = 0
        for s in receiving:
            if s.expected_body is None or remaining is None:
                remaining = None
            else:
                remaining += max(0, s.expected_body - s.bytes_received)
        credit.remaining = remaining
        increment = credit.grant()
        if increment and not self.is_connection_lost:
            # Written with the batch that data_received (or the caller) flushes.
            self.conn.increment_flow_control_window(increment)
        self._schedule_credit_retry()

    def _schedule_credit_retry(self) -> None:
        """Come back for a grant that the credit's pacing holds back: no DATA may arrive to
        prompt it (the server may have used all its credit while we stalled)."""
        assert self.credit is not None
        if not self.credit.held_back or self._credit_retry is not None:
            return  # (held_back is False on nearly every DATA frame: cheap to ask first)
        if self.is_connection_lost:
            return
        delay = self.credit.retry_in()
        if delay is not None:
            self._credit_retry = asyncio.get_running_loop().call_later(
                max(delay, 0.001), self._retry_credit
            )

    def _retry_credit(self) -> None:
        self._credit_retry = None
        if self.state is SessionState.CLOSED or self.is_connection_lost:
            return
        self._update_credit()
        self.flush()

    def _notify(self, stream: UpstreamStream, *, opened: bool) -> None:
        self.last_stream_at = time.monotonic()
        if stream.kind is TrafficKind.REAL:
            self.real_active += 1 if opened else -1
            if self.real_active == 0:
                self.real_idle.set()
            else:
                self.real_idle.clear()
        for listener in self.stream_listeners:
            listener(stream, opened)

    def _on_remote_end(self, stream: UpstreamStream) -> None:
        stream._end()
        if stream.local_closed:
            self._forget(stream)
        elif self.credit is not None:
            self._update_credit()

    def _forget(self, stream: UpstreamStream) -> None:
        self._drop(stream.stream_id)
        self._fail_window_waiters(stream.stream_id)
        self._wake_slot_waiters()
        self._maybe_finish_drain()

    def _on_goaway(self, error_code: int | None, last_stream_id: int | None) -> None:
        if self.state is SessionState.OPEN:
            self.state = SessionState.DRAINING
        self.unusable.set()
        self.goaway_last_stream_id = last_stream_id
        self.goaway_error_code = error_code
        # nginx's keepalive_requests GOAWAY comes with the HEADERS of the last stream it
        # takes, so that stream is still open; an idle timeout's GOAWAY finds none.
        self.goaway_at_open_stream = last_stream_id is not None and last_stream_id in self.streams
        name = _error_name(error_code)
        if not self.retired:  # our reason stays: nginx answers our last stream with its own
            self.close_reason = f"upstream sent GOAWAY ({name}, last_stream_id={last_stream_id})"
        last = last_stream_id if last_stream_id is not None else 0
        for sid, stream in list(self.streams.items()):
            if sid > last:
                # Streams above last_stream_id were never processed: safe to retry anywhere.
                self._drop(sid)
                stream._set_error(
                    UpstreamError(
                        f"stream {sid} refused by GOAWAY (last_stream_id={last})", unprocessed=True
                    )
                )
        self._fail_slot_waiters(SessionClosed("upstream sent GOAWAY", unprocessed=True))
        self._maybe_finish_drain()

    def _maybe_finish_drain(self) -> None:
        if self.state is SessionState.DRAINING and not self.streams:
            self.close_connection()

    # -- streams -------------------------------------------------------------------------
    async def open_stream(
        self,
        method: str,
        path: str,
        headers: Headers,
        *,
        end_stream: bool,
        kind: TrafficKind = TrafficKind.REAL,
        authority: str | None = None,
    ) -> UpstreamStream:
        """Send a request's HEADERS, waiting for a stream slot under the peer's
        MAX_CONCURRENT_STREAMS. Regular headers must be lower-case and free of hop-by-hop
        fields (the forwarding layer does that)."""
        # Counted while waiting, so that the pool spreads a burst of requests over its
        # sessions instead of queueing them all on the one that looked least busy.
        self.opening[kind] += 1
        try:
            await self._acquire_slot()
        finally:
            self.opening[kind] -= 1
        pseudo: Headers = [
            (b":method", method.encode()),
            (b":scheme", self.scheme.encode()),
            (b":authority", (authority or self.authority).encode()),
            (b":path", path.encode()),
        ]
        stream_id = self.conn.get_next_available_stream_id()
        stream = UpstreamStream(self, stream_id, kind)
        self.streams[stream_id] = stream
        self._notify(stream, opened=True)
        try:
            self.conn.send_headers(stream_id, pseudo + headers, end_stream=end_stream)
        except (h2.exceptions.ProtocolError, ValueError) as exc:
            self._drop(stream_id)
            raise UpstreamError(f"cannot send request headers: {exc}") from exc
        if end_stream:
            stream.local_closed = True
        if kind is TrafficKind.REAL:
            self.counters.requests += 1
        self.streams_opened += 1
        self.flush_soon()
        # After the HEADERS went out: the last stream the budget allows still runs.
        self._check_budget()
        return stream

    async def _acquire_slot(self) -> None:
        woken = False
        while True:
            # Checked again after every wait: the session may have been retired or got a
            # GOAWAY between the wake-up and now, and a stream sent then would be refused.
            if not self.is_usable:
                raise SessionClosed(
                    f"session not usable: {self.close_reason or self.state.value}",
                    unprocessed=True,
                )
            # A woken waiter goes first; a newcomer queues behind the waiters.
            if (woken or not self._slot_waiters) and self.free_stream_slots > 0:
                return
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._slot_waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._slot_waiters:
                    self._slot_waiters.remove(fut)
            woken = True

    def _wake_slot_waiters(self) -> None:
        free = self.free_stream_slots
        while free > 0 and self._slot_waiters:
            fut = self._slot_waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                free -= 1

    def _fail_slot_waiters(self, error: UpstreamError) -> None:
        while self._slot_waiters:
            fut = self._slot_waiters.popleft()
            if not fut.done():
                fut.set_exception(error)

    async def _send_body(self, stream: UpstreamStream, data: bytes, end_stream: bool) -> None:
        if stream.error is not None:
            raise stream.error
        try:
            await self.send_data(stream.stream_id, data, end_stream)
        except FlowControlAborted:
            raise stream.error or UpstreamError("stream closed while sending body") from None
        stream.bytes_sent += len(data)
        self.counters.add_tx(stream.kind, len(data))
        if end_stream:
            self._on_local_end(stream)

    async def _end_body(self, stream: UpstreamStream, trailers: Headers | None) -> None:
        if stream.error is not None:
            raise stream.error
        if stream.local_closed:
            return
        try:
            if trailers:
                self.conn.send_headers(stream.stream_id, trailers, end_stream=True)
            else:
                self.conn.end_stream(stream.stream_id)
        except h2.exceptions.StreamClosedError as exc:
            raise stream.error or UpstreamError("stream closed before end of body") from exc
        self.flush()
        self._on_local_end(stream)

    def _on_local_end(self, stream: UpstreamStream) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            self._forget(stream)

    def _reset(self, stream: UpstreamStream, error_code: int) -> None:
        if self._drop(stream.stream_id) is None:
            return
        stream._set_error(UpstreamError(f"stream cancelled ({_error_name(error_code)})"))
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self.conn.reset_stream(stream.stream_id, error_code=error_code)
        self.flush()
        self._fail_window_waiters(stream.stream_id)
        self._wake_slot_waiters()
        self._maybe_finish_drain()

    def _acknowledge(self, stream_id: int, size: int) -> None:
        if size <= 0 or self.is_connection_lost:
            return
        try:
            self.conn.acknowledge_received_data(size, stream_id)
        except h2.exceptions.ProtocolError:
            return
        if self.credit is not None:
            self._schedule_credit_retry()
        self.flush_soon()

    # -- RTT -----------------------------------------------------------------------------
    async def ping(self, timeout: float = 5.0) -> float:
        """Send a PING and return the round-trip time in seconds."""
        if not self.is_usable and self.state is not SessionState.DRAINING:
            raise SessionClosed("session closed")
        payload = os.urandom(8)
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[payload] = (time.perf_counter(), fut)
        self.conn.ping(payload)
        self.flush()
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._pings.pop(payload, None)

    def _on_ping_ack(self, payload: bytes) -> None:
        entry = self._pings.pop(payload, None)
        if entry is None:
            return  # the start-up PING, or one that timed out
        sent, fut = entry
        rtt = time.perf_counter() - sent
        self.rtt = rtt
        if self.min_rtt is None or rtt < self.min_rtt:
            self.min_rtt = rtt
            if self.credit is not None:
                self.credit.min_rtt = rtt
        if self.credit is not None and self.min_rtt > 0:
            self._idle_rtt_sample(rtt)
        if not fut.done():
            fut.set_result(rtt)

    def _idle_rtt_sample(self, rtt: float) -> None:
        """Track the queue other traffic keeps (InboundCredit.rtt_factor): the smallest RTT
        of the PINGs answered while this connection carried no response over the last
        seconds. A minimum, over seconds: another flow's one-second transfer passes (and
        must not inflate the next transfer's credit); a bulk flow's standing queue stays."""
        assert self.credit is not None and self.min_rtt is not None
        now = time.monotonic()
        if not self.credit.active:
            self._idle_rtts.append((now, rtt))
        while self._idle_rtts and self._idle_rtts[0][0] < now - IDLE_RTT_WINDOW:
            self._idle_rtts.popleft()
        if self._idle_rtts:
            self.credit.rtt_factor = min(r for _, r in self._idle_rtts) / self.min_rtt

    async def _probe_rtt(self) -> None:
        # PING costs the peer a few bytes; it also keeps NAT and firewall state alive.
        while self.is_usable:
            with contextlib.suppress(TimeoutError, UpstreamError):
                await self.ping(timeout=max(5.0, 4 * self._rtt_probe_interval))
            await asyncio.sleep(self._rtt_probe_interval)


def _content_length(headers: Headers) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _status_of(headers: Headers) -> int | None:
    for name, value in headers:
        if name == b":status":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _error_name(code: int | None) -> str:
    if code is None:
        return "unknown"
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return f"error {code}"
