"""One ``h2.H2Connection`` and what every endpoint of ours does around it, without I/O.

Shared by the upstream client session and the demo origin. It writes what h2 wants sent
(one ``Link.write`` per batch of events), honours write backpressure (``pause_writing``),
sends DATA within the peer's flow-control windows, and turns a peer's protocol error into
GOAWAY and a close. It reaches its connection only through a ``Link`` of callables, so unit
tests feed it bytes (``data_received``) and read what it sends from a list; the asyncio edge
is ``EndpointProtocol`` (http2/asyncio_edge.py). Protocol decisions stay in h2 and in the
subclasses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events as ev
import h2.exceptions
import h2.settings
import hyperframe.frame
from h2.errors import _error_code_from_int

from cwndproxy.http2.framebuffer import ZeroCopyFrameBuffer


def _no_extra_info(name: str) -> Any:
    return None


@dataclass(frozen=True)
class Link:
    """How an endpoint reaches its byte stream: asyncio's transport in production, plain
    callables in tests."""

    write: Callable[[bytes], None]
    close: Callable[[], None]
    abort: Callable[[], None]
    # Transport details by asyncio's names ("socket", "ssl_object", "sockname").
    extra_info: Callable[[str], Any] = _no_extra_info


class GracefulH2Connection(h2.connection.H2Connection):
    """h2's connection with GOAWAY as RFC 9113 section 6.8 means it.

    h2 moves its connection state machine to CLOSED the moment a GOAWAY is sent or received
    (python-hyper/h2 issue 1181), after which every frame, including the rest of a response
    on a stream at or below last_stream_id, is a ProtocolError. nginx sends GOAWAY after
    ``keepalive_requests`` (1000) streams and on reload, so in-flight streams must be able
    to finish. Here GOAWAY only raises the event (or emits the frame); refusing new streams
    after it is the session's job.
    """

    goaway_last_stream_id: int | None = None
    goaway_received = False
    # Streams h2 may hold before open_outbound_streams walks them again (see there).
    _outbound_walk_at = 0

    @property
    def open_outbound_streams(self) -> int:
        """h2's count of our open streams, or an upper bound of it while that bound is
        below the peer's limit and the next walk.

        h2 asks this at every new stream's send_headers, only to refuse one more than the
        peer's MAX_CONCURRENT_STREAMS, and computes it by walking every stream it holds
        (pruning closed ones on the way): with 100 streams in flight that walk was ~8% of a
        small request's CPU on the client side. ``len(self.streams)`` counts the open ones
        and the closed ones not pruned yet, so while it stays below the limit h2's check
        gives the same answer with it. The real walk runs when the bound nears the limit,
        or once the table has doubled since the last walk (plus 16): amortized O(1) per
        stream, and the closed streams h2 keeps stay within twice the open ones. For the
        exact number, ``count_open_outbound_streams``.
        """
        held = len(self.streams)
        if held < self._outbound_walk_at and held < self.remote_settings.max_concurrent_streams:
            return held
        count = self.count_open_outbound_streams()
        self._outbound_walk_at = 2 * len(self.streams) + 16
        return count

    def count_open_outbound_streams(self) -> int:
        """The exact number of our open streams (h2's walk, pruning closed ones)."""
        return self._open_streams(int(self.config.client_side))

    def _receive_goaway_frame(
        self, frame: hyperframe.frame.GoAwayFrame
    ) -> tuple[list[hyperframe.frame.Frame], list[ev.Event]]:
        self.goaway_received = True
        event = ev.ConnectionTerminated()
        event.error_code = _error_code_from_int(frame.error_code)
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]

    def send_goaway(self, error_code: int = 0, last_stream_id: int | None = None) -> None:
        """Announce GOAWAY but keep the connection open for streams already under way."""
        if last_stream_id is None:
            last_stream_id = self.highest_inbound_stream_id
        self.goaway_last_stream_id = last_stream_id
        frame = hyperframe.frame.GoAwayFrame(
            stream_id=0, last_stream_id=last_stream_id, error_code=error_code
        )
        self._prepare_for_sending([frame])


class FlowControlAborted(Exception):
    """The stream or connection went away while we waited for flow-control window."""


class H2Endpoint:
    """One side of an HTTP/2 connection (the upstream session or the demo origin); the
    subclass handles h2's events in ``handle_event``."""

    def __init__(
        self,
        config: h2.config.H2Configuration,
        *,
        stream_window: int,
        connection_window: int,
        max_frame_size: int,
        max_concurrent_streams: int | None = None,
        connection: Any = None,
    ) -> None:
        # h2's connection (our graceful subclass), or one with the part of its interface
        # used here and by the session: the lean client (http2/lean_client.py).
        if connection is None:
            connection = GracefulH2Connection(config=config)
            connection.incoming_buffer = ZeroCopyFrameBuffer(server=not config.client_side)
        self.conn: GracefulH2Connection = connection
        self.link: Link | None = None
        self._closing = False
        self._stream_window = stream_window
        self._connection_window = connection_window
        self._max_frame_size = max_frame_size
        self._max_concurrent_streams = max_concurrent_streams
        self._writable = asyncio.Event()
        self._writable.set()
        # Waiters for flow-control window, per stream id; 0 is the connection window.
        self._window_waiters: dict[int, list[asyncio.Future[None]]] = {}
        self.connected = asyncio.Event()
        self.is_connection_lost = False
        self._flush_due = False

    # -- the byte stream -----------------------------------------------------------------
    def attach(self, link: Link) -> None:
        """The connection is established; bytes go out through ``link`` from now on."""
        self.link = link
        self.connected.set()

    def data_received(self, data: bytes) -> None:
        """Bytes from the peer."""
        events = self.receive_events(data)
        if events is None:
            return
        for event in events:
            self.handle_event(event)
        self.flush()

    def handle_event(self, event: ev.Event) -> None:
        """One h2 event of the bytes just received (the subclass's protocol)."""
        raise NotImplementedError

    def receive_events(self, data: bytes) -> list[ev.Event] | None:
        """h2's events for ``data``; None after a protocol error, which h2 has answered
        with GOAWAY: that is sent, ``on_protocol_error`` runs, and the connection closes."""
        try:
            return self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.flush()
            self.on_protocol_error(exc)
            self.close_connection()
            return None

    def on_protocol_error(self, exc: h2.exceptions.ProtocolError) -> None:
        """The peer broke the protocol (the connection closes next)."""

    def close_connection(self) -> None:
        """Close after what was written is sent."""
        if self.link is not None and not self._closing:
            self._closing = True
            self.link.close()

    def abort_connection(self) -> None:
        """Close at once, dropping what is not sent yet."""
        if self.link is not None:
            self._closing = True
            self.link.abort()

    def extra_info(self, name: str) -> Any:
        if self.link is None or self.is_connection_lost:
            return None
        return self.link.extra_info(name)

    def start_h2(self) -> None:
        """Send our preface and SETTINGS with large windows and frames.

        The default 65,535-byte stream window caps a stream at about 5 Mbit/s at 100 ms
        RTT, so windows must be several BDPs for cwnd, not flow control, to be the limit.
        """
        settings: dict[h2.settings.SettingCodes, int] = {
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self._stream_window,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: self._max_frame_size,
        }
        if self._max_concurrent_streams is not None:
            settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = self._max_concurrent_streams
        self.conn.local_settings = h2.settings.Settings(
            client=self.conn.config.client_side, initial_values=settings
        )
        # h2 caches the inbound frame limit at construction and only refreshes it when our
        # SETTINGS are acknowledged; set it now so an early large frame is not rejected.
        self.conn.max_inbound_frame_size = self._max_frame_size
        self.conn.initiate_connection()
        extra = self._connection_window - 65535
        if extra > 0:
            # The connection window can only be raised with WINDOW_UPDATE, not SETTINGS.
            self.conn.increment_flow_control_window(extra)
        self.flush()

    def flush(self) -> None:
        self._flush_due = False
        if self.link is None or self._closing or self.is_connection_lost:
            return  # keep the bytes in h2 until there is a connection to write them to
        data = self.conn.data_to_send()
        if data:
            self.link.write(data)

    def flush_soon(self) -> None:
        """Write what h2 holds once this turn of the event loop is over: the HEADERS of
        all requests opened in one turn leave in one write (one TLS record, one send()),
        not one each. For what must leave at once (a PING timed for the RTT), flush()."""
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush_if_due)

    def _flush_if_due(self) -> None:
        if self._flush_due:
            self.flush()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        """The byte stream is gone (closed by either side, or broken)."""
        self.is_connection_lost = True
        self._writable.set()
        self._fail_window_waiters(None)

    # -- flow control --------------------------------------------------------------------
    def _wake_window_waiters(self, stream_id: int) -> None:
        """Wake waiters for one stream, or for all streams when the connection window grew."""
        ids = list(self._window_waiters) if stream_id == 0 else [stream_id]
        for sid in ids:
            for fut in self._window_waiters.pop(sid, []):
                if not fut.done():
                    fut.set_result(None)

    def _fail_window_waiters(self, stream_id: int | None) -> None:
        if not self._window_waiters:
            return  # the common case: called at every stream's end
        ids = list(self._window_waiters) if stream_id is None else [stream_id]
        for sid in ids:
            for fut in self._window_waiters.pop(sid, []):
                if not fut.done():
                    fut.set_exception(FlowControlAborted(f"stream {sid} closed"))

    async def _wait_for_window(self, stream_id: int) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._window_waiters.setdefault(stream_id, []).append(fut)
        await fut

    def _sendable(self, stream_id: int) -> int:
        return min(
            self.conn.local_flow_control_window(stream_id),
            self.conn.max_outbound_frame_size,
        )

    async def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Send ``data`` on a stream, waiting for flow-control window and transport space."""
        view = memoryview(data)
        while True:
            if self.is_connection_lost:
                raise FlowControlAborted("connection lost")
            if not self._writable.is_set():
                await self._writable.wait()
                continue
            if not view:
                if end_stream:
                    self.conn.end_stream(stream_id)
                    self.flush()
                return
            try:
                room = self._sendable(stream_id)
            except h2.exceptions.StreamClosedError as exc:
                raise FlowControlAborted(f"stream {stream_id} closed") from exc
            if room <= 0:
                await self._wait_for_window(stream_id)
                continue
            chunk, view = view[:room], view[room:]
            try:
                self.conn.send_data(stream_id, chunk, end_stream=end_stream and not view)
            except h2.exceptions.StreamClosedError as exc:
                raise FlowControlAborted(f"stream {stream_id} closed") from exc
            self.flush()
            if not view:
                return

    def handle_window_events(self, event: Any) -> bool:
        """Wake senders on WINDOW_UPDATE and on SETTINGS that change the initial window."""
        if isinstance(event, ev.WindowUpdated):
            self._wake_window_waiters(event.stream_id)
            return True
        if isinstance(event, ev.RemoteSettingsChanged):
            self._wake_window_waiters(0)
            return False
        return False
