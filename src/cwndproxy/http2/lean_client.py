"""A lean HTTP/2 client connection: the part of h2's ``H2Connection`` that H2Session uses,
with fewer Python steps per frame. The default codec (``pool.http2_codec: lean``; ``h2``
selects the library itself).

Why: a small request's cost through the proxy is bound by its event-loop thread, and the
upstream client is the largest part of it (docs/BENCHMARKS.md, "Per-request cost": h2
over asyncio TLS costs ~195 us per request alone; a hand-written GET loop on the same
transport, ~27 us). h2 builds a frame object (hyperframe), runs two state machines and
creates events for every frame; this module parses frames with ``struct`` and keeps a
stream's state in a few fields.

What stays h2's, by reuse, not copy: the events (h2.events, so the session handles both
codecs alike), the errors (h2.exceptions, with their HTTP/2 error codes, and h2.errors'
mapping of a received code to ErrorCodes), settings
(h2.settings: validation, acknowledgement), inbound flow-control windows
(h2.windows.WindowManager, which the metered credit subclasses), header normalization
and validation (h2's functions, with the fast paths of http2/header_checks.py) and header
block decoding (h2.connection._decode_headers, HPACK errors mapped as h2 maps them).

What this module decides itself, following RFC 9113 and h2 4.4's behaviour (the
differential tests in tests/unit/http2/test_lean_client.py feed both the same bytes):
frame parsing and size limits, stream states, outbound flow control, CONTINUATION (at
most 64 per block, as h2), frames on closed streams (DATA: its connection window comes
back and RST_STREAM(STREAM_CLOSED) is sent; HEADERS: RST_STREAM on a stream closed by a
reset, a connection error otherwise; after an HPACK decode either way, so the dynamic
table stays in step), and connection errors (GOAWAY with the error's code, then raise).

Differences from h2, on purpose: it is a client only; it announces SETTINGS_ENABLE_PUSH
0 and treats PUSH_PROMISE as a connection error (RFC 9113 section 8.4: a proxy has no use
for pushed streams, and h2 would accept them); PRIORITY information is ignored (RFC 9113
deprecates it; h2 reports it as events nobody here reads); it never pads.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from typing import Any

import h2.config
import h2.errors
import h2.events as ev
import h2.exceptions as h2x
import h2.settings
import h2.stream
import h2.utilities
import h2.windows
import hpack
from h2.connection import _decode_headers
from h2.errors import _error_code_from_int

ErrorCodes = h2.errors.ErrorCodes
SettingCodes = h2.settings.SettingCodes

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME = struct.Struct(">HBBBL")  # 24-bit length (16 + 8), type, flags, stream id
_SETTING = struct.Struct(">HL")
_UINT32 = struct.Struct(">L")
_GOAWAY = struct.Struct(">LL")

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

MAX_WINDOW = 2**31 - 1
# h2's limit on CONTINUATION frames per header block (h2.frame_buffer.CONTINUATION_BACKLOG).
CONTINUATION_BACKLOG = 64
# Closed streams remembered for how they closed (reset or end): frames still in flight
# for them are answered as RFC 9113 section 5.1 says. Older ones count as ended.
CLOSED_REMEMBERED = 1000


class _Stream:
    __slots__ = (
        "expected_length",
        "head_request",
        "inbound",
        "local_closed",
        "outbound_window",
        "received_length",
        "remote_closed",
        "response_received",
        "stream_id",
    )

    def __init__(self, stream_id: int, outbound_window: int, inbound_window: int) -> None:
        self.stream_id = stream_id
        self.outbound_window = outbound_window
        self.inbound = h2.windows.WindowManager(max_window_size=inbound_window)
        self.local_closed = False
        self.remote_closed = False
        self.response_received = False
        self.head_request = False
        self.expected_length: int | None = None
        self.received_length = 0


class LeanClientConnection:
    """H2Connection's client API as H2Session and H2Endpoint use it (see module doc)."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        if not config.client_side:
            raise ValueError("LeanClientConnection is a client only")
        self.config = config
        self.encoder: Any = hpack.Encoder()
        self.decoder: Any = hpack.Decoder()
        self.local_settings = h2.settings.Settings(client=True)
        self.remote_settings = h2.settings.Settings(client=False)
        self.max_outbound_frame_size = self.remote_settings.max_frame_size
        self.max_inbound_frame_size = self.local_settings.max_frame_size
        self._inbound_flow_control_window_manager = h2.windows.WindowManager(
            max_window_size=self.local_settings.initial_window_size
        )
        self.outbound_flow_control_window = self.remote_settings.initial_window_size
        self.streams: dict[int, _Stream] = {}
        self._closed: OrderedDict[int, bool] = OrderedDict()  # stream id: closed by reset
        self.highest_outbound_stream_id = 0
        self.goaway_last_stream_id: int | None = None
        self.goaway_received = False
        self._out: list[bytes | memoryview] = []
        # The start of a frame that has not fully arrived: its pieces, their size, and how
        # many bytes complete what is known of it (its header, or header and payload).
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._partial_need = 0
        # A header block in progress: (stream id, END_STREAM, fragments).
        self._block: tuple[int, bool, list[bytes]] | None = None

    # -- output --------------------------------------------------------------------------
    def data_to_send(self, amount: int | None = None) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        if amount is not None and len(data) > amount:
            self._out.append(data[amount:])
            return data[:amount]
        return data

    def clear_outbound_data_buffer(self) -> None:
        self._out.clear()

    def _frame(
        self, kind: int, flags: int, stream_id: int, payload: bytes | memoryview = b""
    ) -> None:
        # Header and payload apart: data_to_send joins all once, so a DATA payload is
        # copied once, not also into header + payload.
        size = len(payload)
        self._out.append(_FRAME.pack(size >> 8, size & 0xFF, kind, flags, stream_id))
        if size:
            self._out.append(payload)

    # -- connection-level sends ----------------------------------------------------------
    def initiate_connection(self) -> None:
        settings = dict(self.local_settings.items())
        settings[SettingCodes.ENABLE_PUSH] = 0
        self.local_settings.update({SettingCodes.ENABLE_PUSH: 0})
        self._out.append(PREFACE)
        self._frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in settings.items()))

    def update_settings(self, new_settings: dict[int, int]) -> None:
        self.local_settings.update(new_settings)
        self._frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in new_settings.items()))

    def ping(self, opaque_data: bytes) -> None:
        if not isinstance(opaque_data, bytes) or len(opaque_data) != 8:
            raise ValueError(f"Invalid value for ping data: {opaque_data!r}")
        self._frame(PING, 0, 0, opaque_data)

    def send_goaway(self, error_code: int = 0, last_stream_id: int | None = None) -> None:
        """GOAWAY; the connection stays open for streams already under way (as
        GracefulH2Connection)."""
        if last_stream_id is None:
            last_stream_id = 0  # a client never accepts streams
        self.goaway_last_stream_id = last_stream_id
        self._frame(GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, error_code))

    def increment_flow_control_window(self, increment: int, stream_id: int | None = None) -> None:
        if not 1 <= increment <= MAX_WINDOW:
            raise ValueError(f"Flow control increment must be between 1 and {MAX_WINDOW}")
        if stream_id:
            stream = self._stream(stream_id)
            stream.inbound.window_opened(increment)
        else:
            self._inbound_flow_control_window_manager.window_opened(increment)
        self._frame(WINDOW_UPDATE, 0, stream_id or 0, _UINT32.pack(increment))

    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None:
        if acknowledged_size < 0:
            raise ValueError(f"Cannot acknowledge negative data sizes: {acknowledged_size}")
        increment = self._inbound_flow_control_window_manager.process_bytes(acknowledged_size)
        if increment:
            self._frame(WINDOW_UPDATE, 0, 0, _UINT32.pack(increment))
        stream = self.streams.get(stream_id)
        if stream is not None and not stream.remote_closed:
            increment = stream.inbound.process_bytes(acknowledged_size)
            if increment:
                self._frame(WINDOW_UPDATE, 0, stream_id, _UINT32.pack(increment))

    # -- streams -------------------------------------------------------------------------
    def get_next_available_stream_id(self) -> int:
        next_id = self.highest_outbound_stream_id + 2 if self.highest_outbound_stream_id else 1
        if next_id > MAX_WINDOW:
            raise h2x.NoAvailableStreamIDError("Exhausted allowed stream IDs")
        return next_id

    @property
    def open_outbound_streams(self) -> int:
        return len(self.streams)

    def count_open_outbound_streams(self) -> int:
        return len(self.streams)

    def _stream(self, stream_id: int) -> _Stream:
        """An open stream, or h2's error for one that is not (closed, or never opened)."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            return stream
        if stream_id > self.highest_outbound_stream_id or stream_id % 2 == 0:
            raise h2x.NoSuchStreamError(stream_id)
        raise h2x.StreamClosedError(stream_id)

    def send_headers(
        self, stream_id: int, headers: Any, end_stream: bool = False, **priority: Any
    ) -> None:
        if priority and any(v is not None for v in priority.values()):
            raise h2x.ProtocolError("this client sends no priority information")
        stream = self.streams.get(stream_id)
        trailers = stream is not None
        if stream is None:
            if stream_id % 2 == 0:
                raise h2x.ProtocolError("Invalid stream ID for peer.")
            if stream_id <= self.highest_outbound_stream_id:
                raise h2x.StreamIDTooLowError(stream_id, self.highest_outbound_stream_id)
            limit = self.remote_settings.max_concurrent_streams
            if len(self.streams) + 1 > limit:
                raise h2x.TooManyStreamsError(
                    f"Max outbound streams is {limit}, {len(self.streams)} open"
                )
        elif stream.local_closed:
            raise h2x.StreamClosedError(stream_id)
        elif not end_stream:
            raise h2x.ProtocolError("Trailers must have END_STREAM set.")
        flags = h2.utilities.HeaderValidationFlags(
            is_client=True, is_trailer=trailers, is_response_header=False, is_push_promise=False
        )
        # h2's own steps, looked up in h2.stream where http2/header_checks.py installs its
        # fast paths.
        steps: Any = h2.stream
        fields: Any = steps.utf8_encode_headers(headers)
        if self.config.normalize_outbound_headers:
            fields = steps.normalize_outbound_headers(
                fields, flags, self.config.split_outbound_cookies
            )
        if self.config.validate_outbound_headers:
            fields = steps.validate_outbound_headers(fields, flags)
        if stream is None:
            fields = list(fields)
            head = h2.utilities.extract_method_header(fields) == b"HEAD"
        block = self.encoder.encode(fields)
        if stream is None:
            stream = _Stream(
                stream_id,
                self.remote_settings.initial_window_size,
                self.local_settings.initial_window_size,
            )
            stream.head_request = head
            self.streams[stream_id] = stream
            self.highest_outbound_stream_id = stream_id
        size = self.max_outbound_frame_size
        first, rest = block[:size], block[size:]
        flags_byte = (END_STREAM if end_stream else 0) | (0 if rest else END_HEADERS)
        self._frame(HEADERS, flags_byte, stream_id, first)
        while rest:
            piece, rest = rest[:size], rest[size:]
            self._frame(CONTINUATION, 0 if rest else END_HEADERS, stream_id, piece)
        if end_stream:
            self._close_local(stream)

    def send_data(
        self, stream_id: int, data: bytes | memoryview, end_stream: bool = False, **_: Any
    ) -> None:
        stream = self._stream(stream_id)
        if stream.local_closed:
            raise h2x.StreamClosedError(stream_id)
        size = len(data)
        if size > self.local_flow_control_window(stream_id):
            raise h2x.FlowControlError(
                f"Cannot send {size} bytes, flow control window is "
                f"{self.local_flow_control_window(stream_id)}"
            )
        if size > self.max_outbound_frame_size:
            raise h2x.FrameTooLargeError(
                f"Cannot send frame size {size}, max frame size is {self.max_outbound_frame_size}"
            )
        self.outbound_flow_control_window -= size
        stream.outbound_window -= size
        if isinstance(data, memoryview) and not isinstance(data.obj, bytes):
            data = bytes(data)  # a view of a mutable buffer: its owner may reuse it
        self._frame(DATA, END_STREAM if end_stream else 0, stream_id, data)
        if end_stream:
            self._close_local(stream)

    def end_stream(self, stream_id: int) -> None:
        stream = self._stream(stream_id)
        if stream.local_closed:
            raise h2x.StreamClosedError(stream_id)
        self._frame(DATA, END_STREAM, stream_id)
        self._close_local(stream)

    def reset_stream(self, stream_id: int, error_code: int = 0) -> None:
        self._stream(stream_id)
        self._frame(RST_STREAM, 0, stream_id, _UINT32.pack(error_code))
        self._forget(stream_id, reset=True)

    def local_flow_control_window(self, stream_id: int) -> int:
        stream = self._stream(stream_id)
        return min(self.outbound_flow_control_window, stream.outbound_window)

    def _close_local(self, stream: _Stream) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            self._forget(stream.stream_id, reset=False)

    def _forget(self, stream_id: int, *, reset: bool) -> None:
        self.streams.pop(stream_id, None)
        self._closed[stream_id] = reset
        if len(self._closed) > CLOSED_REMEMBERED:
            self._closed.popitem(last=False)

    # -- input ---------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[ev.Event]:
        """The events for ``data``. A connection error queues GOAWAY with its code and
        raises (h2's ProtocolError family), as h2 does."""
        events: list[ev.Event] = []
        if type(data) is not bytes:
            # Payloads are slices of what arrives: of a view or a reusable buffer they
            # would change under the session's feet.
            data = bytes(data)
        try:
            self._receive(data, events)
        except h2x.ProtocolError as exc:
            self._frame(GOAWAY, 0, 0, _GOAWAY.pack(0, int(exc.error_code)))
            raise
        return events

    def _receive(self, data: bytes, events: list[ev.Event]) -> None:
        # A frame that spans reads is joined once, when all of it is here: joining at each
        # read would copy a 1 MiB DATA frame arriving in 64 KiB reads 16 times over.
        if self._partial:
            self._partial.append(data)
            self._partial_size += len(data)
            if self._partial_size < self._partial_need:
                return
            buf = b"".join(self._partial)
            self._partial.clear()
            self._partial_size = 0
        else:
            buf = data
        pos, end = 0, len(buf)
        limit = self.max_inbound_frame_size
        while end - pos >= 9:
            high, low, kind, flags, stream_id = _FRAME.unpack_from(buf, pos)
            length = (high << 8) | low
            if length > limit:
                raise h2x.FrameTooLargeError(
                    f"Received overlong frame: length {length}, max {limit}"
                )
            if end - pos - 9 < length:
                self._keep_partial(buf, pos, 9 + length)
                return
            payload = buf[pos + 9 : pos + 9 + length]
            pos += 9 + length
            stream_id &= 0x7FFFFFFF
            if self._block is not None and kind != CONTINUATION:
                raise h2x.ProtocolError("Invalid frame during header block (expected CONTINUATION)")
            handler = _HANDLERS.get(kind)
            if handler is not None:  # unknown frame types are ignored (RFC 9113 4.1)
                handler(self, flags, stream_id, payload, events)
        if pos < end:
            self._keep_partial(buf, pos, 9)

    def _keep_partial(self, buf: bytes, pos: int, need: int) -> None:
        """Keep the start of a frame (from ``pos``) until ``need`` bytes of it are here."""
        rest = buf[pos:]
        self._partial = [rest]
        self._partial_size = len(rest)
        self._partial_need = need

    # One method per frame type: (flags, stream id, payload, events).
    def _on_data(self, flags: int, stream_id: int, payload: bytes, events: list[ev.Event]) -> None:
        if stream_id == 0:
            raise h2x.ProtocolError("DATA frame on stream 0")
        flow = len(payload)
        data = _unpad(flags, payload) if flags & PADDED else payload
        self._inbound_flow_control_window_manager.window_consumed(flow)
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            if stream is None and (
                stream_id % 2 == 0 or stream_id > self.highest_outbound_stream_id
            ):
                raise h2x.ProtocolError(f"DATA on stream {stream_id}, which was never opened")
            # A closed stream (or half-closed by the peer): its window comes back at once,
            # and the peer is told the stream is closed (h2's _handle_data_on_closed_stream).
            increment = self._inbound_flow_control_window_manager.process_bytes(flow)
            if increment:
                self._frame(WINDOW_UPDATE, 0, 0, _UINT32.pack(increment))
            self._frame(RST_STREAM, 0, stream_id, _UINT32.pack(ErrorCodes.STREAM_CLOSED))
            return
        if not stream.response_received:
            raise h2x.ProtocolError("DATA before response headers")
        stream.inbound.window_consumed(flow)
        stream.received_length += len(data)
        expected = stream.expected_length
        end = bool(flags & END_STREAM)
        if expected is not None and (
            stream.received_length > expected or (end and stream.received_length != expected)
        ):
            raise h2x.InvalidBodyLengthError(expected, stream.received_length)
        event = ev.DataReceived(stream_id=stream_id, data=data, flow_controlled_length=flow)
        events.append(event)
        if end:
            event.stream_ended = self._end_remote(stream, events)

    def _on_headers(
        self, flags: int, stream_id: int, payload: bytes, events: list[ev.Event]
    ) -> None:
        if stream_id == 0:
            raise h2x.ProtocolError("HEADERS frame on stream 0")
        fragment = _unpad(flags, payload) if flags & PADDED else payload
        if flags & PRIORITY_FLAG:
            if len(fragment) < 5:
                raise h2x.ProtocolError("HEADERS priority field cut short")
            fragment = fragment[5:]
        if flags & END_HEADERS:
            self._on_header_block(stream_id, bool(flags & END_STREAM), fragment, events)
        else:
            self._block = (stream_id, bool(flags & END_STREAM), [fragment])

    def _on_continuation(
        self, flags: int, stream_id: int, payload: bytes, events: list[ev.Event]
    ) -> None:
        block = self._block
        if block is None or block[0] != stream_id:
            raise h2x.ProtocolError("CONTINUATION without a header block in progress")
        block[2].append(payload)
        if len(block[2]) > CONTINUATION_BACKLOG + 1:
            raise h2x.ProtocolError("Too many continuation frames received.")
        if flags & END_HEADERS:
            self._block = None
            self._on_header_block(stream_id, block[1], b"".join(block[2]), events)

    def _on_header_block(
        self, stream_id: int, end: bool, block: bytes, events: list[ev.Event]
    ) -> None:
        # Decoded whatever becomes of the stream: the peer's HPACK table changed with it.
        headers = _decode_headers(self.decoder, block)
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            if stream_id % 2 == 0 or stream_id > self.highest_outbound_stream_id:
                raise h2x.ProtocolError(f"HEADERS on stream {stream_id}, which we never opened")
            if stream is None and self._closed.get(stream_id):
                # Closed by a reset: a stream error (h2 answers with RST_STREAM).
                self._frame(RST_STREAM, 0, stream_id, _UINT32.pack(ErrorCodes.STREAM_CLOSED))
                return
            raise h2x.StreamClosedError(stream_id)
        informational = h2.utilities.is_informational_response(headers)
        if informational and end:
            raise h2x.ProtocolError("Cannot set END_STREAM on informational responses")
        trailers = stream.response_received and not informational
        if trailers and not end:
            raise h2x.ProtocolError("Trailers must have END_STREAM set")
        event: Any
        if informational:
            event = ev.InformationalResponseReceived(stream_id=stream_id)
        elif trailers:
            event = ev.TrailersReceived(stream_id=stream_id)
        else:
            event = ev.ResponseReceived(stream_id=stream_id)
            stream.response_received = True
        _initialize_content_length(stream, headers)
        flags = h2.utilities.HeaderValidationFlags(
            is_client=True,
            is_trailer=trailers,
            is_response_header=not trailers,
            is_push_promise=False,
        )
        steps: Any = h2.stream
        if self.config.normalize_inbound_headers:
            headers = steps.normalize_inbound_headers(headers, flags)
        if self.config.validate_inbound_headers:
            headers = steps.validate_headers(headers, flags)
        event.headers = list(headers)
        events.append(event)
        if end:
            event.stream_ended = self._end_remote(stream, events)

    def _end_remote(self, stream: _Stream, events: list[ev.Event]) -> ev.StreamEnded:
        ended = ev.StreamEnded(stream_id=stream.stream_id)
        events.append(ended)
        stream.remote_closed = True
        if stream.local_closed:
            self._forget(stream.stream_id, reset=False)
        return ended

    def _on_rst_stream(
        self, flags: int, stream_id: int, payload: bytes, events: list[ev.Event]
    ) -> None:
        if len(payload) != 4:
            raise h2x.FrameTooLargeError("RST_STREAM must be 4 bytes")
        if stream_id == 0:
            raise h2x.ProtocolError("RST_STREAM on stream 0")
        if stream_id not in self.streams:
            return  # closed already, or never opened: nothing to do (as h2)
        self._forget(stream_id, reset=True)
        code = _error_code_from_int(_UINT32.unpack(payload)[0])
        events.append(ev.StreamReset(stream_id=stream_id, error_code=code, remote_reset=True))

    def _on_settings(
        self, flags: int, stream_id: int, payload: bytes, events: list[ev.Event]
    ) -> None:
        if stream_id != 0:
            raise h2x.ProtocolError("SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise h2x.FrameTooLargeError("SETTINGS ACK with a payload")
            changes = self.local_settings.acknowledge()
            self._apply_local(changes)
            acked = ev.SettingsAcknowledged()
            acked.changed_settings = changes
            events.append(acked)
            return
        if len(payload) % 6:
            raise h2x.FrameTooLargeError("SETTINGS payload not a multiple of 6 bytes")
        new: dict[int, int] = {}
        for offset in range(0, len(payload), 6):
            code, value = _SETTING.unpack_from(payload, offset)
            new[code] = value
        self.remote_settings.update(new)
        events.append(ev.RemoteSettingsChanged.from_settings(self.remote_settings, new))
        changes = self.remote_settings.acknowledge()
        if SettingCodes.INITIAL_WINDOW_SIZE in changes:
            change = changes[SettingCodes.INITIAL_WINDOW_SIZE]
            delta = change.new_value - (change.original_value or 0)
            for stream in self.streams.values():
                stream.outbound_window = h2.utilities.guard_increment_window(
                    stream.outbound_window, delta
                )
        if SettingCodes.HEADER_TABLE_SIZE in changes:
            self.encoder.header_table_size = changes[SettingCodes.HEADER_TABLE_SIZE].new_value
        if SettingCodes.MAX_FRAME_SIZE in changes:
            self.max_outbound_frame_size = changes[SettingCodes.MAX_FRAME_SIZE].new_value
        self._frame(SETTINGS, ACK, 0)

    def _apply_local(self, changes: dict[Any, Any]) -> None:
        if SettingCodes.HEADER_TABLE_SIZE in changes:
            self.decoder.max_allowed_table_size = changes[SettingCodes.HEADER_TABLE_SIZE].new_value
        if SettingCodes.MAX_HEADER_LIST_SIZE in changes:
            value = changes[SettingCodes.MAX_HEADER_LIST_SIZE].new_value
            self.decoder.max_header_list_size = value
        if SettingCodes.MAX_FRAME_SIZE in changes:
            self.max_inbound_frame_size = changes[SettingCodes.MAX_FRAME_SIZE].new_value
        if SettingCodes.INITIAL_WINDOW_SIZE in changes:
            size = changes[SettingCodes.INITIAL_WINDOW_SIZE].new_value
            for stream in self.streams.values():
                stream.inbound.max_window_size = size

    def _on_push_promise(
        self, flags: int, stream_id: int, payload: bytes, events: list[ev.Event]
    ) -> None:
        raise h2x.ProtocolError("Received pushed stream")  # ENABLE_PUSH is 0

    def _on_ping(self, flags: int, stream_id: int, payload: bytes, events: list[ev.Event]) -> None:
        if len(payload) != 8:
            raise h2x.FrameTooLargeError("PING must be 8 bytes")
        if stream_id != 0:
            raise h2x.ProtocolError("PING on a stream")
        if flags & ACK:
            events.append(ev.PingAckReceived(ping_data=payload))
        else:
            self._frame(PING, ACK, 0, payload)
            events.append(ev.PingReceived(ping_data=payload))

    def _on_goaway(
        self, flags: int, stream_id: int, payload: bytes, events: list[ev.Event]
    ) -> None:
        if stream_id != 0:
            raise h2x.ProtocolError("GOAWAY on a stream")
        if len(payload) < 8:
            raise h2x.FrameTooLargeError("GOAWAY shorter than 8 bytes")
        last, code = _GOAWAY.unpack_from(payload)
        self.goaway_received = True
        event = ev.ConnectionTerminated()
        event.error_code = _error_code_from_int(code)
        event.last_stream_id = last & 0x7FFFFFFF
        event.additional_data = payload[8:] or None
        events.append(event)

    def _on_window_update(
        self, flags: int, stream_id: int, payload: bytes, events: list[ev.Event]
    ) -> None:
        if len(payload) != 4:
            raise h2x.FrameTooLargeError("WINDOW_UPDATE must be 4 bytes")
        increment = _UINT32.unpack(payload)[0] & 0x7FFFFFFF
        if not increment:
            raise h2x.ProtocolError("WINDOW_UPDATE increment must be between 1 to 2^31-1")
        if stream_id == 0:
            self.outbound_flow_control_window = h2.utilities.guard_increment_window(
                self.outbound_flow_control_window, increment
            )
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                return  # a closed stream's window no longer matters
            try:
                stream.outbound_window = h2.utilities.guard_increment_window(
                    stream.outbound_window, increment
                )
            except h2x.FlowControlError:
                # A stream error (RFC 9113 section 6.9.1): that stream is reset.
                self._frame(RST_STREAM, 0, stream_id, _UINT32.pack(ErrorCodes.FLOW_CONTROL_ERROR))
                self._forget(stream_id, reset=True)
                events.append(
                    ev.StreamReset(
                        stream_id=stream_id,
                        error_code=ErrorCodes.FLOW_CONTROL_ERROR,
                        remote_reset=False,
                    )
                )
                return
        events.append(ev.WindowUpdated(stream_id=stream_id, delta=increment))

    def _on_priority(
        self, flags: int, stream_id: int, payload: bytes, events: list[ev.Event]
    ) -> None:
        if len(payload) != 5:
            raise h2x.FrameTooLargeError("PRIORITY must be 5 bytes")
        if stream_id == 0:
            raise h2x.ProtocolError("PRIORITY on stream 0")


_HANDLERS = {
    DATA: LeanClientConnection._on_data,
    HEADERS: LeanClientConnection._on_headers,
    PRIORITY: LeanClientConnection._on_priority,
    RST_STREAM: LeanClientConnection._on_rst_stream,
    SETTINGS: LeanClientConnection._on_settings,
    PUSH_PROMISE: LeanClientConnection._on_push_promise,
    PING: LeanClientConnection._on_ping,
    GOAWAY: LeanClientConnection._on_goaway,
    WINDOW_UPDATE: LeanClientConnection._on_window_update,
    CONTINUATION: LeanClientConnection._on_continuation,
}


def _unpad(flags: int, payload: bytes) -> bytes:
    if not payload:
        raise h2x.ProtocolError("Padded frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise h2x.ProtocolError("Padding is too long.")
    return payload[1 : len(payload) - pad]


def _initialize_content_length(stream: _Stream, headers: Any) -> None:
    """h2's H2Stream._initialize_content_length: a HEAD response has no body whatever its
    content-length says; otherwise the first content-length field sets the body's length."""
    if stream.head_request:
        stream.expected_length = 0
        return
    for name, value in headers:
        if name == b"content-length":
            try:
                stream.expected_length = int(value, 10)
            except ValueError:
                raise h2x.ProtocolError(f"Invalid content-length header: {value!r}") from None
            return
