"""The lean client (http2/lean_client.py) against h2's: the same bytes from a server go to
both, and both must report the same events, or fail the same way. The server is h2's own
server side in memory, or hand-made frames for what h2's server would never send."""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events as ev
import h2.exceptions
import h2.settings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cwndproxy.http2.endpoint import GracefulH2Connection
from cwndproxy.http2.framebuffer import ZeroCopyFrameBuffer
from cwndproxy.http2.lean_client import LeanClientConnection

REQUEST = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/")]
POST = [(b":method", b"POST"), *REQUEST[1:]]
HEAD = [(b":method", b"HEAD"), *REQUEST[1:]]
_FRAME = struct.Struct(">HBBBL")


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return _FRAME.pack(len(payload) >> 8, len(payload) & 0xFF, kind, flags, stream_id) + payload


def h2_client() -> GracefulH2Connection:
    conn = GracefulH2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.incoming_buffer = ZeroCopyFrameBuffer(server=False)
    return conn


def lean_client() -> LeanClientConnection:
    return LeanClientConnection(h2.config.H2Configuration(client_side=True, header_encoding=None))


class Pair:
    """One client of each kind, each with its own h2 server, driven alike."""

    def __init__(self, max_streams: int = 100) -> None:
        self.clients: list[Any] = [h2_client(), lean_client()]
        self.servers = [
            h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=False, header_encoding=None)
            )
            for _ in self.clients
        ]
        for client, server in zip(self.clients, self.servers, strict=True):
            client.initiate_connection()
            server.initiate_connection()
            server.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams})
            server.receive_data(client.data_to_send())
            client.receive_data(server.data_to_send())
            server.receive_data(client.data_to_send())

    def client_does(self, action: Callable[[Any], Any]) -> list[Any]:
        """Run ``action`` on each client; deliver its bytes; the outcomes."""
        out = []
        for client, server in zip(self.clients, self.servers, strict=True):
            out.append(_outcome(action, client))
            server.receive_data(client.data_to_send())
        return out

    def server_does(self, action: Callable[[Any], Any]) -> list[Any]:
        """Run ``action`` on each server; deliver its bytes; the clients' events."""
        results = []
        for client, server in zip(self.clients, self.servers, strict=True):
            action(server)
            data = server.data_to_send()
            results.append(_outcome(client.receive_data, data))
            server.receive_data(client.data_to_send())
        return results

    def raw(self, data: bytes) -> list[Any]:
        """The same hand-made bytes to both clients: their events, or errors."""
        return [_outcome(client.receive_data, data) for client in self.clients]


def _describe(event: Any) -> Any:
    if isinstance(event, ev.RemoteSettingsChanged | ev.SettingsAcknowledged):
        return type(event).__name__
    fields = {
        k: _describe(v) if isinstance(v, ev.Event) else v
        for k, v in sorted(vars(event).items())
        if k != "priority_updated"
    }
    if "headers" in fields:
        fields["headers"] = [(bytes(n), bytes(v)) for n, v in fields["headers"]]
    return (type(event).__name__, fields)


def _outcome(call: Callable[..., Any], *args: Any) -> Any:
    try:
        result = call(*args)
    except h2.exceptions.ProtocolError as exc:
        return ("error", type(exc).__name__, int(exc.error_code))
    except (ValueError, KeyError) as exc:
        return ("error", type(exc).__name__)
    if isinstance(result, list):
        return [_describe(e) for e in result if not isinstance(e, ev.PriorityUpdated)]
    return result


def same(results: list[Any]) -> Any:
    assert results[0] == results[1], f"h2: {results[0]}\nlean: {results[1]}"
    return results[0]


def test_a_response_with_body_and_trailers() -> None:
    pair = Pair()
    same(pair.client_does(lambda c: c.send_headers(1, POST)))
    same(pair.client_does(lambda c: c.send_data(1, b"body", end_stream=True)))

    def respond(s: Any) -> None:
        s.send_headers(1, [(b":status", b"100")])
        s.send_headers(1, [(b":status", b"200"), (b"content-length", b"5")])
        s.send_data(1, b"hello")
        s.send_headers(1, [(b"x-check", b"1")], end_stream=True)

    events = same(pair.server_does(respond))
    kinds = [e[0] if isinstance(e, tuple) else e for e in events]
    assert kinds == [
        "InformationalResponseReceived",
        "ResponseReceived",
        "DataReceived",
        "TrailersReceived",
        "StreamEnded",
    ]
    assert same([c.count_open_outbound_streams() for c in pair.clients]) == 0


def test_a_content_length_mismatch_is_a_protocol_error_in_both() -> None:
    pair = Pair()
    same(pair.client_does(lambda c: c.send_headers(1, REQUEST, end_stream=True)))

    def respond(s: Any) -> None:
        s.send_headers(1, [(b":status", b"200"), (b"content-length", b"3")])
        s.send_data(1, b"toolong", end_stream=True)

    outcome = same(pair.server_does(respond))
    assert outcome[0] == "error"


def test_a_head_response_has_no_body_whatever_its_length() -> None:
    pair = Pair()
    same(pair.client_does(lambda c: c.send_headers(1, HEAD, end_stream=True)))
    same(
        pair.server_does(
            lambda s: s.send_headers(
                1, [(b":status", b"200"), (b"content-length", b"99")], end_stream=True
            )
        )
    )


def test_large_header_blocks_go_out_in_continuation_frames_and_arrive_whole() -> None:
    pair = Pair()
    big = [*REQUEST, (b"x-big", b"v" * 40000)]
    same(pair.client_does(lambda c: c.send_headers(1, big, end_stream=True)))
    received = [s for s in pair.servers]
    assert all(s.streams[1] for s in received)
    events = same(
        pair.server_does(
            lambda s: s.send_headers(1, [(b":status", b"200"), (b"x-big", b"w" * 40000)], True)
        )
    )
    assert events[0][1]["headers"][1] == (b"x-big", b"w" * 40000)


def test_reset_streams_late_frames_and_the_hpack_table() -> None:
    """After our reset, the server's DATA still in flight gives its connection window
    back, and its HEADERS are still decoded (the dynamic table stays in step): the next
    response on another stream decodes right in both."""
    pair = Pair()
    same(pair.client_does(lambda c: c.send_headers(1, REQUEST, end_stream=True)))
    same(pair.client_does(lambda c: c.send_headers(3, REQUEST, end_stream=True)))
    resets = []
    for client in pair.clients:  # not delivered yet: the server answers before it sees it
        client.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
        resets.append(client.data_to_send())
    late: list[Any] = []
    for client, server in zip(pair.clients, pair.servers, strict=True):
        # A new header into the server's HPACK table, and data, both after our reset.
        server.send_headers(1, [(b":status", b"200"), (b"x-new", b"indexed")])
        server.send_data(1, b"late" * 100)
        data = server.data_to_send()
        late.append(_outcome(client.receive_data, data))
        answer = client.data_to_send()  # the connection window back, RST_STREAM
        late.append(answer.count(b"\x03\x00\x00\x00\x00\x01"))  # RST_STREAM frames
    assert late[0] == late[2] and late[1] == late[3], late
    for server, reset in zip(pair.servers, resets, strict=True):
        server.receive_data(reset)
    same([c._inbound_flow_control_window_manager.current_window_size for c in pair.clients])
    events = same(
        pair.server_does(
            lambda s: s.send_headers(3, [(b":status", b"200"), (b"x-new", b"indexed")], True)
        )
    )
    assert events[0][1]["headers"] == [(b":status", b"200"), (b"x-new", b"indexed")]


def test_peer_reset_and_goaway_and_ping() -> None:
    pair = Pair()
    same(pair.client_does(lambda c: c.send_headers(1, REQUEST, end_stream=True)))
    same(pair.server_does(lambda s: s.reset_stream(1, h2.errors.ErrorCodes.REFUSED_STREAM)))
    same(pair.client_does(lambda c: c.ping(b"12345678")))
    same(pair.server_does(lambda s: s.ping(b"abcdefgh")))
    events = same(pair.server_does(lambda s: s.close_connection(last_stream_id=1)))
    assert events[0][0] == "ConnectionTerminated"


def test_flow_control_windows_follow_the_peers_settings_and_updates() -> None:
    pair = Pair()
    same(pair.client_does(lambda c: c.send_headers(1, POST)))
    assert same([c.local_flow_control_window(1) for c in pair.clients]) == 65535
    same(
        pair.server_does(
            lambda s: s.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
        )
    )
    assert same([c.local_flow_control_window(1) for c in pair.clients]) == 1000
    same(pair.client_does(lambda c: c.send_data(1, b"x" * 1000)))
    assert same(pair.client_does(lambda c: c.send_data(1, b"y")))[0] == "error"
    same(pair.server_does(lambda s: s.increment_flow_control_window(500, stream_id=1)))
    assert same([c.local_flow_control_window(1) for c in pair.clients]) == 500


def test_too_many_streams_is_refused_alike() -> None:
    pair = Pair(max_streams=2)
    same(pair.client_does(lambda c: c.send_headers(1, REQUEST, end_stream=True)))
    same(pair.client_does(lambda c: c.send_headers(3, REQUEST, end_stream=True)))
    outcome = same(pair.client_does(lambda c: c.send_headers(5, REQUEST, end_stream=True)))
    assert outcome[:2] == ("error", "TooManyStreamsError")


# Hand-made frames h2's server would not send: both clients must refuse them alike (the
# error's class may differ, the HTTP/2 error code may not), or accept them alike.
HOSTILE = {
    "DATA on stream 0": frame(0, 0, 0, b"x"),
    "DATA on an idle stream": frame(0, 0, 9, b"x"),
    "HEADERS on a server stream": frame(1, 4, 2, b"\x88"),
    "PING of 7 bytes": frame(6, 0, 0, b"1234567"),
    "PING on a stream": frame(6, 0, 1, b"12345678"),
    "SETTINGS on a stream": frame(4, 0, 1),
    "SETTINGS of 5 bytes": frame(4, 0, 0, b"\x00\x04\x00\x00\x00"),
    "SETTINGS ACK with payload": frame(4, 1, 0, b"\x00\x04\x00\x00\x00\x01"),
    "window above 2^31-1": frame(4, 0, 0, b"\x00\x04\x80\x00\x00\x00"),
    "zero WINDOW_UPDATE on the connection": frame(8, 0, 0, b"\x00\x00\x00\x00"),
    "WINDOW_UPDATE overflowing the connection": frame(8, 0, 0, b"\x7f\xff\xff\xff"),
    "CONTINUATION without HEADERS": frame(9, 4, 1, b"\x88"),
    "HEADERS then PING before CONTINUATION": frame(1, 0, 1, b"\x88") + frame(6, 0, 0, b"1" * 8),
    "GOAWAY on a stream": frame(7, 0, 1, b"\x00" * 8),
    "an unknown frame type": frame(0xFA, 0, 0, b"whatever"),
    "PRIORITY on stream 0": frame(2, 0, 0, b"\x00" * 5),
    "HEADERS with a bad HPACK index": frame(1, 5, 1, b"\xff\xff\xff\x7f"),
    "DATA before the response headers": frame(0, 1, 1, b"x"),
    "padding longer than the frame": frame(0, 8, 1, b"\x05ab"),
}


# Where the lean client answers otherwise than h2, on purpose, and what it answers.
DIFFERENT: dict[str, Any] = {
    # RFC 9113 section 6.5: FRAME_SIZE_ERROR; h2 4.4 says PROTOCOL_ERROR.
    "SETTINGS ACK with payload": ("error", "FrameTooLargeError", 6),
    # h2 reports an UnknownFrameReceived event, which nothing here reads.
    "an unknown frame type": [],
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_frames_are_answered_alike(name: str) -> None:
    pair = Pair()
    same(pair.client_does(lambda c: c.send_headers(1, REQUEST, end_stream=True)))
    theirs, ours = pair.raw(HOSTILE[name])
    if name in DIFFERENT:
        assert ours == DIFFERENT[name]
    elif isinstance(theirs, tuple) and isinstance(ours, tuple):
        # Both refuse: with the same HTTP/2 error code (h2's exception class may be a
        # more specific one), and the GOAWAY that says it.
        assert theirs[0] == ours[0] == "error" and theirs[2] == ours[2], (theirs, ours)
        goaway = pair.clients[1].data_to_send()
        assert goaway[3] == 7 and goaway[-4:] == struct.pack(">L", ours[2])
    else:
        assert theirs == ours


def _send_request(client: Any, *, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
    client.send_headers(stream_id, headers, end_stream=True)


def _reset(client: Any, *, stream_id: int) -> None:
    client.reset_stream(stream_id)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["GET", "POST", "HEAD"]),
            st.sampled_from(["200", "204", "404", "100+200"]),
            st.integers(min_value=0, max_value=70000),
            st.booleans(),  # trailers
            st.sampled_from(["none", "client", "server"]),  # who resets, before the answer
        ),
        min_size=1,
        max_size=6,
    ),
    st.integers(min_value=1, max_value=40000),  # read boundary
)
def test_exchanges_give_the_same_events_for_any_read_boundaries(
    exchanges: list[tuple[str, str, int, bool, str]], cut: int
) -> None:
    pair = Pair()
    for index, (method, status, size, trailers, reset) in enumerate(exchanges):
        sid = 2 * index + 1
        headers = [(b":method", method.encode()), *REQUEST[1:]]
        same(pair.client_does(functools.partial(_send_request, stream_id=sid, headers=headers)))
        if reset == "client":
            same(pair.client_does(functools.partial(_reset, stream_id=sid)))
        results = []
        for client, server in zip(pair.clients, pair.servers, strict=True):
            if reset == "server":
                server.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
            elif reset == "none" or reset == "client":
                with_body = method != "HEAD" and size and status != "204"
                for code in status.split("+"):
                    last = code == status.split("+")[-1]
                    fields = [(b":status", code.encode())]
                    if last and with_body:
                        fields.append((b"content-length", str(size).encode()))
                    end = last and not with_body and not trailers
                    if reset == "client":
                        continue  # the server answers nothing once it saw the reset
                    server.send_headers(sid, fields, end_stream=end)
                if reset == "none" and with_body:
                    body = b"b" * size
                    while body:
                        room = min(server.local_flow_control_window(sid), 16384, len(body))
                        if room <= 0:
                            break
                        server.send_data(
                            sid, body[:room], end_stream=room == len(body) and not trailers
                        )
                        body = body[room:]
                if reset == "none" and trailers:
                    server.send_headers(sid, [(b"x-t", b"1")], end_stream=True)
            data = server.data_to_send()
            got: list[Any] = []
            for start in range(0, len(data), cut):
                got.append(_outcome(client.receive_data, data[start : start + cut]))
            flat = [e for part in got for e in (part if isinstance(part, list) else [part])]
            results.append(flat)
            for event in flat:
                if isinstance(event, tuple) and event[0] == "DataReceived":
                    client.acknowledge_received_data(event[1]["flow_controlled_length"], sid)
            server.receive_data(client.data_to_send())
        same(results)
