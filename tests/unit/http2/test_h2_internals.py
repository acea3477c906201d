"""The private parts of h2 and hyperframe that cwnd-proxy replaces or patches, checked by
name and by behaviour, so that a new h2 release that moves them fails here, loudly, and not
as a subtle change of behaviour under load.

Replaced or patched, and where:
- ``H2Connection._receive_goaway_frame`` and ``_prepare_for_sending`` (http2/endpoint.py,
  GracefulH2Connection: GOAWAY without closing the state machine, python-hyper/h2#1181),
  and its ``open_outbound_streams``, which ``send_headers`` reads for its stream-limit check
  and which walks ``_open_streams`` (the same class: an amortized count);
- ``H2Connection.incoming_buffer`` with FrameBuffer's ``_preamble``, ``_preamble_len``,
  ``_validate_frame_length`` and ``_update_header_buffer`` (http2/framebuffer.py);
- ``H2Connection._inbound_flow_control_window_manager``, a WindowManager whose
  ``_bytes_processed`` and ``_maybe_update_window`` we override (upstream/credit.py);
- hyperframe's ``Flags.__init__`` (``_valid_flags``, ``_flags``) and ``Frame.__repr__`` (which
  ``DataFrame`` inherits), h2's ``utilities._reject_illegal_characters`` (looked up by
  ``validate_headers`` at each call) and hpack's ``hpack.decode_huffman`` (http2/perf.py);
- ``H2Connection.encoder``, which h2 uses through ``encode()`` and ``header_table_size``
  (http2/hpack_encoder.py), and ``H2Connection.decoder``, whose hpack ``HeaderTable``
  (``add``, the ``maxsize`` property) http2/hpack_decoder.py subclasses;
- ``h2.errors._error_code_from_int`` (GracefulH2Connection and http2/lean_client.py).
"""

from __future__ import annotations

import importlib.metadata
import inspect

import h2.config
import h2.connection
import h2.errors
import h2.events as ev
import h2.exceptions
import h2.frame_buffer
import h2.settings
import h2.windows
import hyperframe.flags
import hyperframe.frame
import pytest

from cwndproxy.http2.endpoint import GracefulH2Connection
from cwndproxy.http2.framebuffer import ZeroCopyFrameBuffer
from cwndproxy.upstream.credit import InboundCredit

# The releases these replacements were written and tested against (pyproject pins them).
TESTED = {"h2": ("4.4",), "hyperframe": ("6.1",)}


def test_the_installed_releases_are_the_tested_ones() -> None:
    for name, series in TESTED.items():
        version = importlib.metadata.version(name)
        assert version.startswith(series), (
            f"{name} {version} is not a tested release ({', '.join(series)}.x): check "
            "this module's list of private names against it, then extend TESTED and pyproject"
        )


def test_the_connection_methods_we_override_exist_with_our_signatures() -> None:
    conn = h2.connection.H2Connection
    goaway = inspect.signature(conn._receive_goaway_frame)
    assert list(goaway.parameters) == ["self", "frame"]
    assert list(inspect.signature(conn._prepare_for_sending).parameters) == ["self", "frames"]
    assert list(inspect.signature(conn._open_streams).parameters) == ["self", "remainder"]
    assert "open_outbound_streams" in conn.send_headers.__code__.co_names
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    assert isinstance(client.incoming_buffer, h2.frame_buffer.FrameBuffer)
    assert isinstance(client._inbound_flow_control_window_manager, h2.windows.WindowManager)


def test_the_frame_buffer_internals_we_rely_on_exist() -> None:
    buffer = h2.frame_buffer.FrameBuffer(server=True)
    assert isinstance(buffer._preamble, bytes) and buffer._preamble_len == len(buffer._preamble)
    assert callable(buffer._validate_frame_length)
    assert callable(buffer._update_header_buffer)
    assert isinstance(ZeroCopyFrameBuffer(server=True), h2.frame_buffer.FrameBuffer)


def test_the_window_manager_internals_we_rely_on_exist() -> None:
    manager = h2.windows.WindowManager(max_window_size=65535)
    assert manager._bytes_processed == 0
    assert callable(manager._maybe_update_window)
    # h2 asks the replacement, not a cached copy: a grant from it reaches the wire.
    credit = InboundCredit(initial=65535)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn._inbound_flow_control_window_manager = credit
    assert conn.inbound_flow_control_window == credit.current_window_size


def test_hyperframe_flags_and_data_repr_are_where_perf_patches_them() -> None:
    assert list(inspect.signature(hyperframe.flags.Flags.__init__).parameters) == [
        "self",
        "defined_flags",
    ]
    flags = hyperframe.flags.Flags(hyperframe.frame.DataFrame.defined_flags)
    assert isinstance(flags._valid_flags, set) and isinstance(flags._flags, set)
    assert "__repr__" in vars(hyperframe.frame.Frame)
    assert "__repr__" not in vars(hyperframe.frame.DataFrame), "DataFrame's own repr unpatched"


def test_a_goaway_leaves_streams_below_last_stream_id_open() -> None:
    """The behaviour GracefulH2Connection exists for: after a received GOAWAY, the rest of
    a response on a stream at or below last_stream_id is still accepted."""
    client = GracefulH2Connection(h2.config.H2Configuration(client_side=True))
    # Both sides graceful: plain h2 also closes its state machine on *sending* GOAWAY.
    server = GracefulH2Connection(h2.config.H2Configuration(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    client.send_headers(
        1,
        [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")],
        end_stream=True,
    )
    server.receive_data(client.data_to_send())
    server.send_headers(1, [(":status", "200")])
    server.send_goaway(last_stream_id=1)
    server.send_data(1, b"rest", end_stream=True)
    events = client.receive_data(server.data_to_send())
    kinds = [type(e) for e in events]
    assert ev.ConnectionTerminated in kinds
    assert ev.DataReceived in kinds and ev.StreamEnded in kinds


def test_the_per_request_patch_points_exist() -> None:
    import h2.stream
    import h2.utilities
    import hpack.hpack

    assert callable(h2.utilities._reject_illegal_characters)
    assert "validate_headers" in h2.stream.H2Stream._process_received_headers.__code__.co_names
    assert "_reject_illegal_characters" in h2.utilities.validate_headers.__code__.co_names
    assert callable(hpack.hpack.decode_huffman)  # type: ignore[attr-defined]
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    assert hasattr(conn.encoder, "header_table_size") and callable(conn.encoder.encode)
    assert "encoder" in inspect.signature(h2.stream.H2Stream._build_headers_frames).parameters


def test_the_error_code_mapping_we_use_exists() -> None:
    """h2.errors._error_code_from_int, which GracefulH2Connection's GOAWAY and the lean
    client's RST_STREAM and GOAWAY use: a known code as ErrorCodes, any other as it came."""
    assert h2.errors._error_code_from_int(7) is h2.errors.ErrorCodes.REFUSED_STREAM
    assert h2.errors._error_code_from_int(0xABCD) == 0xABCD


def test_the_decoder_internals_we_rely_on_exist() -> None:
    from hpack.table import HeaderTable

    assert isinstance(HeaderTable.__dict__["maxsize"], property)
    assert callable(HeaderTable.add)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    assert "decoder" in inspect.getsource(h2.connection._decode_headers)
    for name in ("max_header_list_size", "max_allowed_table_size", "header_table_size"):
        assert hasattr(conn.decoder, name)


def _connected_pair(max_streams: int) -> tuple[GracefulH2Connection, h2.connection.H2Connection]:
    client = GracefulH2Connection(h2.config.H2Configuration(client_side=True))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    server.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams})
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    return client, server


_REQUEST = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")]


def test_the_amortized_stream_count_refuses_exactly_what_h2s_walk_refuses() -> None:
    """open_outbound_streams may answer with an upper bound, never where it matters: a
    stream beyond the peer's limit is refused, one within it is not, and the closed
    streams h2 keeps stay bounded by the open ones."""
    client, server = _connected_pair(max_streams=5)
    opened: list[int] = []
    for round_ in range(40):
        while len(opened) < 5:
            sid = client.get_next_available_stream_id()
            client.send_headers(sid, _REQUEST, end_stream=True)
            opened.append(sid)
        assert client.count_open_outbound_streams() == 5
        with pytest.raises(h2.exceptions.TooManyStreamsError):
            client.send_headers(client.get_next_available_stream_id(), _REQUEST)
        server.receive_data(client.data_to_send())
        # The server answers some streams (they close), a different number each round.
        for sid in opened[: 1 + round_ % 5]:
            server.send_headers(sid, [(":status", "200")], end_stream=True)
        client.receive_data(server.data_to_send())
        opened = opened[1 + round_ % 5 :]
        assert client.count_open_outbound_streams() == len(opened)
        assert client.open_outbound_streams >= len(opened)
        assert len(client.streams) <= 2 * 5 + 16


def test_the_amortized_stream_count_prunes_closed_streams_when_the_peer_allows_many() -> None:
    """With a large peer limit the bound is rarely walked: h2's table of streams must still
    not grow with every request ever made."""
    client, server = _connected_pair(max_streams=1000)
    for _ in range(500):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, _REQUEST, end_stream=True)
        server.receive_data(client.data_to_send())
        server.send_headers(sid, [(":status", "200")], end_stream=True)
        client.receive_data(server.data_to_send())
    assert len(client.streams) <= 16 + 1
    assert client.count_open_outbound_streams() == 0
