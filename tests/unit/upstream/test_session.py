"""H2Session against a scripted peer: h2's server side in memory; bytes in through
``data_received``, bytes out through the Link's write callable, no transport or socket."""

from __future__ import annotations

import asyncio

import h2.config
import h2.errors
import h2.events as ev
import h2.settings
import pytest

from cwndproxy.http2.endpoint import GracefulH2Connection, Link
from cwndproxy.upstream.counters import TrafficKind
from cwndproxy.upstream.session import (
    H2Session,
    SessionSettings,
    SessionState,
    UpstreamError,
)


class Wire:
    """The session's byte stream, in memory: what it writes, and whether it closed. The
    session sees only the Link's callables, as it sees asyncio's wire in production."""

    def __init__(self, session: H2Session) -> None:
        self.buffer = bytearray()
        self.closing = False
        self.session = session
        session.attach(Link(write=self.buffer.extend, close=self._close, abort=self._close))

    def _close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.session.connection_lost, None)


class Peer:
    """A scripted HTTP/2 server."""

    def __init__(self, session: H2Session, wire: Wire) -> None:
        self.session = session
        self.wire = wire
        self.conn = GracefulH2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.conn.initiate_connection()
        self.events: list[ev.Event] = []

    def pump(self) -> list[ev.Event]:
        """Deliver client bytes to the peer and peer bytes to the client. Time passes: what
        the session would write at the end of this loop turn (flush_soon) is written."""
        self.session.flush()
        data = bytes(self.wire.buffer)
        self.wire.buffer.clear()
        new = self.conn.receive_data(data) if data else []
        self.events += new
        out = self.conn.data_to_send()
        if out:
            self.session.data_received(out)
        return new

    def send_raw(self, data: bytes) -> None:
        self.session.data_received(data)

    def requests(self) -> list[ev.RequestReceived]:
        return [e for e in self.events if isinstance(e, ev.RequestReceived)]

    def respond(
        self,
        stream_id: int,
        status: int = 200,
        body: bytes = b"",
        trailers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.conn.send_headers(
            stream_id, [(b":status", str(status).encode())], end_stream=not body and not trailers
        )
        if body:
            self.conn.send_data(stream_id, body, end_stream=not trailers)
        if trailers:
            self.conn.send_headers(stream_id, trailers, end_stream=True)


# The client codec under test: every test here runs with each (the ``codec`` fixture).
CODECS = ("h2", "lean")
_codec = ["h2"]


@pytest.fixture(autouse=True, params=CODECS)
def codec(request: pytest.FixtureRequest) -> str:
    _codec[0] = request.param
    return str(request.param)


def make_session(settings: SessionSettings | None = None) -> tuple[H2Session, Wire]:
    settings = settings or SessionSettings()
    settings.codec = _codec[0]
    session = H2Session(
        authority="origin.test", scheme="https", settings=settings, rtt_probe_interval=0
    )
    wire = Wire(session)
    session.start()
    return session, wire


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_large_windows_and_frames_are_announced() -> None:
    session, wire = make_session()
    peer = Peer(session, wire)
    events = peer.pump()
    changed = next(e for e in events if isinstance(e, ev.RemoteSettingsChanged))
    codes = h2.settings.SettingCodes
    assert changed.changed_settings[codes.INITIAL_WINDOW_SIZE].new_value == 16 * 1024 * 1024
    assert changed.changed_settings[codes.MAX_FRAME_SIZE].new_value == 1024 * 1024
    conn_update = [e for e in events if isinstance(e, ev.WindowUpdated) and e.stream_id == 0]
    assert conn_update and conn_update[0].delta == 64 * 1024 * 1024 - 65535


async def test_assumes_one_stream_until_peer_settings_arrive() -> None:
    session, wire = make_session()
    assert session.peer_max_concurrent_streams == 1
    first = await session.open_stream("GET", "/a", [], end_stream=True)
    second_task = asyncio.create_task(session.open_stream("GET", "/b", [], end_stream=True))
    await settle()
    assert not second_task.done(), "second stream must wait for the peer's SETTINGS"
    peer = Peer(session, wire)
    peer.pump()
    await settle()
    assert second_task.done()
    second = second_task.result()
    assert {first.stream_id, second.stream_id} == {1, 3}


async def test_queues_beyond_peer_max_concurrent_streams() -> None:
    session, wire = make_session()
    peer = Peer(session, wire)
    peer.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    peer.pump()
    peer.pump()
    assert session.peer_max_concurrent_streams == 1
    first = await session.open_stream("GET", "/a", [], end_stream=True)
    waiting = asyncio.create_task(session.open_stream("GET", "/b", [], end_stream=True))
    await settle()
    assert not waiting.done()
    peer.pump()
    peer.respond(first.stream_id, 200, b"done")
    peer.pump()
    assert (await first.receive_response()).status == 200
    assert await first.read() == b"done"
    await settle()
    assert waiting.done(), "a slot freed by the finished stream goes to the queued request"


async def test_response_body_and_trailers() -> None:
    session, wire = make_session()
    peer = Peer(session, wire)
    peer.pump()
    stream = await session.open_stream("GET", "/t", [(b"te", b"trailers")], end_stream=True)
    peer.pump()
    request = peer.requests()[0]
    assert dict(request.headers)[b":authority"] == b"origin.test"
    assert dict(request.headers)[b":scheme"] == b"https"
    peer.respond(stream.stream_id, 200, b"hello", trailers=[(b"grpc-status", b"0")])
    peer.pump()
    response = await stream.receive_response()
    assert response.status == 200
    assert b"".join([c async for c in stream.iter_body()]) == b"hello"
    assert stream.trailers == [(b"grpc-status", b"0")]
    assert session.counters.real_rx == 5
    assert session.active_streams == 0


async def test_received_data_is_acknowledged_only_when_consumed() -> None:
    session, wire = make_session(
        SessionSettings(stream_window=65535 * 2, connection_window=65535 * 8)
    )
    peer = Peer(session, wire)
    peer.pump()
    stream = await session.open_stream("GET", "/big", [], end_stream=True, kind=TrafficKind.DUMMY)
    peer.pump()
    peer.conn.send_headers(stream.stream_id, [(b":status", b"200")])
    window = peer.conn.local_flow_control_window(stream.stream_id)
    assert window == 65535 * 2
    peer.conn.send_data(stream.stream_id, b"x" * window)
    peer.pump()
    peer.pump()
    assert peer.conn.local_flow_control_window(stream.stream_id) == 0, (
        "nothing consumed yet, so no WINDOW_UPDATE may have been sent"
    )
    data = await stream.read()
    assert len(data) == window
    peer.pump()
    assert peer.conn.local_flow_control_window(stream.stream_id) > 0
    assert session.counters.dummy_rx == window and session.counters.real_rx == 0


async def test_goaway_fails_streams_above_last_stream_id_as_unprocessed() -> None:
    session, wire = make_session()
    peer = Peer(session, wire)
    peer.pump()
    streams = [await session.open_stream("GET", f"/{i}", [], end_stream=True) for i in range(3)]
    peer.pump()
    # The scripted peer is h2 too, so it uses the same GOAWAY fix to keep talking.
    peer.conn.send_goaway(last_stream_id=streams[0].stream_id)
    peer.pump()
    assert session.state is SessionState.DRAINING
    assert session.unusable.is_set()
    for stream in streams[1:]:
        with pytest.raises(UpstreamError) as info:
            await stream.receive_response()
        assert info.value.unprocessed
    # The stream at or below last_stream_id may still finish.
    peer.respond(streams[0].stream_id, 204)
    peer.pump()
    assert (await streams[0].receive_response()).status == 204
    await settle()
    assert wire.closing, "a drained session closes its connection"
    with pytest.raises(UpstreamError):
        await session.open_stream("GET", "/late", [], end_stream=True)


async def test_protocol_error_fails_every_pending_stream() -> None:
    session, wire = make_session()
    peer = Peer(session, wire)
    peer.pump()
    streams = [await session.open_stream("GET", f"/{i}", [], end_stream=True) for i in range(2)]
    # A DATA frame on stream 0 is a connection error (RFC 9113 section 6.1).
    peer.send_raw(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
    for stream in streams:
        with pytest.raises(UpstreamError, match="protocol error"):
            await asyncio.wait_for(stream.receive_response(), 1)
    await settle()
    assert session.state is SessionState.CLOSED


async def test_refused_stream_is_retryable_other_resets_are_not() -> None:
    session, wire = make_session()
    peer = Peer(session, wire)
    peer.pump()
    a = await session.open_stream("POST", "/a", [], end_stream=True)
    b = await session.open_stream("POST", "/b", [], end_stream=True)
    peer.pump()
    peer.conn.reset_stream(a.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
    peer.conn.reset_stream(b.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
    peer.pump()
    with pytest.raises(UpstreamError) as ia:
        await a.receive_response()
    with pytest.raises(UpstreamError) as ib:
        await b.receive_response()
    assert ia.value.unprocessed and not ib.value.unprocessed


async def test_cancel_sends_rst_stream_cancel() -> None:
    session, wire = make_session()
    peer = Peer(session, wire)
    peer.pump()
    stream = await session.open_stream("GET", "/blob", [], end_stream=True)
    stream.cancel()
    peer.pump()
    resets = [e for e in peer.events if isinstance(e, ev.StreamReset)]
    assert resets and resets[0].error_code == h2.errors.ErrorCodes.CANCEL
    assert session.active_streams == 0


async def test_request_body_waits_for_flow_control_window() -> None:
    session, wire = make_session()
    peer = Peer(session, wire)
    peer.pump()
    stream = await session.open_stream("POST", "/sink", [], end_stream=False)
    body = b"y" * 100_000  # more than the peer's default 65,535-byte window
    send = asyncio.create_task(stream.send(body, end_stream=True))
    await settle()
    assert not send.done(), "must wait for WINDOW_UPDATE beyond 65,535 bytes"
    for _ in range(20):
        for e in peer.pump():
            if isinstance(e, ev.DataReceived):
                peer.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        peer.pump()
        await settle()
        if send.done():
            break
    await send
    peer.pump()
    received = sum(len(e.data) for e in peer.events if isinstance(e, ev.DataReceived))
    assert received == len(body)
    assert any(isinstance(e, ev.StreamEnded) for e in peer.events)
    assert session.counters.real_tx == len(body)


async def test_ping_measures_rtt() -> None:
    session, wire = make_session()
    peer = Peer(session, wire)
    peer.pump()
    ping = asyncio.create_task(session.ping())
    await settle()
    peer.pump()
    rtt = await ping
    assert rtt >= 0 and session.rtt == rtt


async def test_connection_loss_fails_streams_and_pings() -> None:
    session, wire = make_session()
    peer = Peer(session, wire)
    peer.pump()
    stream = await session.open_stream("GET", "/", [], end_stream=True)
    ping = asyncio.create_task(session.ping())
    await settle()
    session.connection_lost(ConnectionResetError("reset by peer"))
    with pytest.raises(UpstreamError, match="connection lost"):
        await stream.receive_response()
    with pytest.raises(UpstreamError):
        await ping
    assert session.closed.done()


async def test_server_bytes_before_start_wait_for_our_preface() -> None:
    session = H2Session(authority="origin.test", scheme="http", rtt_probe_interval=0)
    wire = Wire(session)
    server = GracefulH2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    session.data_received(server.data_to_send())  # arrives before start()
    assert bytes(wire.buffer) == b""
    session.start()
    assert bytes(wire.buffer).startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    events = server.receive_data(bytes(wire.buffer))
    assert any(isinstance(e, ev.SettingsAcknowledged) for e in events)


async def test_stream_budget_retires_the_session_after_its_last_stream() -> None:
    """At the upstream's per-connection limit the session sends its own GOAWAY after the
    last allowed stream, which still completes; the next request never reaches the wire."""
    session, wire = make_session()
    peer = Peer(session, wire)
    peer.pump()
    session.set_stream_budget(4, headroom=1)
    streams = [await session.open_stream("GET", f"/{i}", [], end_stream=True) for i in range(3)]
    assert session.budget_near.is_set()
    assert session.state is SessionState.OPEN
    last = await session.open_stream("GET", "/3", [], end_stream=True)
    assert session.retired and session.recycled
    assert session.unusable.is_set()
    with pytest.raises(UpstreamError) as refused:
        await session.open_stream("GET", "/4", [], end_stream=True)
    assert refused.value.unprocessed
    peer.pump()
    assert len(peer.requests()) == 4
    assert any(isinstance(e, ev.ConnectionTerminated) for e in peer.events)
    for stream in [*streams, last]:
        peer.respond(stream.stream_id, 200, b"ok")
    peer.pump()
    assert (await last.receive_response()).status == 200
    assert await last.read() == b"ok"


async def test_selection_counts_take_the_peer_limit_the_budget_and_waiting_streams() -> None:
    """What the pool's choice reads of a session: free slots for one more request and the
    real streams open or waiting to open (dummy ones are not real traffic)."""
    session, wire = make_session()
    peer = Peer(session, wire)
    peer.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 3})
    peer.pump()
    peer.pump()
    assert session.selection_counts() == (3, 0)
    first = await session.open_stream("GET", "/a", [], end_stream=True)
    await session.open_stream("GET", "/b", [], end_stream=True, kind=TrafficKind.DUMMY)
    await session.open_stream("GET", "/c", [], end_stream=True)
    assert session.selection_counts() == (0, 2)
    waiting = asyncio.ensure_future(session.open_stream("GET", "/d", [], end_stream=True))
    await asyncio.sleep(0)
    assert session.selection_counts() == (0, 3), "a request waiting for a slot counts"
    peer.pump()
    peer.respond(first.stream_id, 200, b"ok")
    peer.pump()
    assert await first.read() == b"ok" and await first.read() == b""
    await waiting
    assert session.selection_counts() == (0, 2)

    budgeted, wire = make_session()
    Peer(budgeted, wire).pump()
    budgeted.set_stream_budget(5, headroom=1)
    for path in ("/a", "/b"):
        await budgeted.open_stream("GET", path, [], end_stream=True)
    free = budgeted.free_stream_slots
    assert free > 3 and budgeted.selection_counts() == (3, 2), "the budget is the bound"


async def test_a_woken_waiter_does_not_open_a_stream_on_a_retired_session() -> None:
    """A request queued for a stream slot is woken when one frees; if the session was
    retired in between, it must fail as unprocessed, not send HEADERS the upstream refuses."""
    session, wire = make_session()
    peer = Peer(session, wire)
    peer.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    peer.pump()
    peer.pump()
    first = await session.open_stream("GET", "/a", [], end_stream=True)
    waiting = asyncio.create_task(session.open_stream("GET", "/b", [], end_stream=True))
    await settle()
    peer.pump()
    peer.respond(first.stream_id, 200, b"done")
    peer.pump()  # frees the slot: the waiter is woken, but has not run yet
    session.retire("test")
    await settle()
    with pytest.raises(UpstreamError) as refused:
        await waiting
    assert refused.value.unprocessed
    peer.pump()
    assert len(peer.requests()) == 1


async def test_free_stream_slots_follow_h2s_own_count_through_every_ending() -> None:
    """free_stream_slots counts our stream table, not h2's (which walks all streams per
    call): the two must agree after a normal end, a request body ended later, our reset,
    the peer's reset and a response headers timeout."""
    session, wire = make_session()
    peer = Peer(session, wire)
    peer.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 10})
    peer.pump()
    peer.pump()

    def agree() -> None:
        assert len(session.streams) == session.conn.count_open_outbound_streams()
        assert session.free_stream_slots == 10 - session.conn.count_open_outbound_streams()
        assert session.selection_counts()[0] == session.free_stream_slots

    done = await session.open_stream("GET", "/done", [], end_stream=True)
    upload = await session.open_stream("POST", "/upload", [], end_stream=False)
    ours = await session.open_stream("GET", "/ours", [], end_stream=True)
    theirs = await session.open_stream("GET", "/theirs", [], end_stream=True)
    slow = await session.open_stream("GET", "/slow", [], end_stream=True)
    peer.pump()
    agree()
    assert session.free_stream_slots == 5
    peer.respond(done.stream_id, 200, b"ok")
    peer.respond(upload.stream_id, 201)  # answered before the request body ended
    peer.conn.reset_stream(theirs.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
    peer.pump()
    assert await done.read() == b"ok" and await done.read() == b""
    agree()
    ours.cancel()
    agree()
    await upload.send(b"late body", end_stream=True)
    agree()
    with pytest.raises(UpstreamError):
        await slow.receive_response(timeout=0.01)
    slow.cancel()  # what the forwarding app does after a timeout
    peer.pump()
    agree()
    assert session.free_stream_slots == 10


async def test_requests_opened_in_one_loop_turn_leave_in_one_write() -> None:
    session, wire = make_session()
    peer = Peer(session, wire)
    peer.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 10})
    peer.pump()
    peer.pump()
    writes: list[bytes] = []
    assert session.link is not None
    session.link = Link(
        write=lambda data: writes.append(bytes(data)), close=wire._close, abort=wire._close
    )
    for i in range(3):
        await session.open_stream("GET", f"/{i}", [], end_stream=True)
    assert writes == [], "nothing leaves before the loop turn ends"
    await asyncio.sleep(0)
    assert len(writes) == 1
    peer.conn.receive_data(writes[0])
    assert len(peer.conn.streams) == 3
