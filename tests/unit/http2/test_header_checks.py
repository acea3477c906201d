"""http2/header_checks.py answers as h2's own header checks do, and h2 takes its fast
paths for ordinary blocks."""

from __future__ import annotations

import h2.exceptions
import h2.utilities
import hpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cwndproxy.http2 import header_checks

FLAGS = h2.utilities.HeaderValidationFlags(
    is_client=True, is_trailer=False, is_response_header=True, is_push_promise=False
)


def _h2_original() -> object:
    """h2's own _reject_illegal_characters, as shipped (installed in its place)."""
    import importlib.util

    spec = importlib.util.find_spec("h2.utilities")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._reject_illegal_characters


ORIGINAL = _h2_original()


def _outcome(check: object, headers: list[tuple[bytes, bytes]]) -> object:
    try:
        return list(check(headers, FLAGS))  # type: ignore[operator]
    except h2.exceptions.ProtocolError as exc:
        return ("error", str(exc))


@given(
    st.lists(
        st.tuples(st.binary(max_size=8), st.binary(max_size=8))
        | st.tuples(st.sampled_from([b"a", b"A", b":x", b"x:y", b"\x7f"]), st.just(b" v\r")),
        max_size=5,
    )
)
def test_header_character_checks_match_h2s(headers: list[tuple[bytes, bytes]]) -> None:
    assert _outcome(header_checks._reject_illegal_characters, headers) == _outcome(
        ORIGINAL, headers
    )


def test_header_character_checks_are_installed() -> None:
    assert h2.utilities._reject_illegal_characters is header_checks._reject_illegal_characters
    with pytest.raises(h2.exceptions.ProtocolError, match="uppercase"):
        list(h2.utilities.validate_headers([(b":status", b"200"), (b"Bad", b"x")], FLAGS))


def _h2_validate(headers: list[tuple[bytes, bytes]], flags: object) -> object:
    """h2's own validate_headers (with its own character checks), as shipped."""
    import importlib.util

    spec = importlib.util.find_spec("h2.utilities")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return list(module.validate_headers(headers, flags))
    except h2.exceptions.ProtocolError as exc:
        return ("error", str(exc))


def _ours(headers: list[tuple[bytes, bytes]], flags: object) -> object:
    import h2.stream

    try:
        return list(h2.stream.validate_headers(headers, flags))  # type: ignore[attr-defined,arg-type]
    except h2.exceptions.ProtocolError as exc:
        return ("error", str(exc))


field_names = st.sampled_from(
    [b":status", b":path", b"content-type", b"Content-Type", b"te", b"connection", b"x:y", b""]
)
field_values = st.sampled_from([b"200", b"text/html", b" padded", b"a\r\nb", b"", b"trailers"])


@given(st.lists(st.tuples(field_names, field_values), max_size=6), st.booleans())
@example([(b":status", b"200"), (b":path", b"/")], False)
@example([(b":status", b"200"), (b"content-type", b"x"), (b":status", b"200")], False)
@example([(b":status", b"200"), (b"", b"x")], False)
@example([(b":status", b" 200")], False)
@example([(b":status", b"200"), (b"te", b"trailers")], False)
@example([(b":status", b"200"), (b"content-type", b"text/html")], True)
def test_response_validation_matches_h2s(headers: list[tuple[bytes, bytes]], trailer: bool) -> None:
    flags = h2.utilities.HeaderValidationFlags(
        is_client=True, is_trailer=trailer, is_response_header=not trailer, is_push_promise=False
    )
    assert _ours(headers, flags) == _h2_validate(headers, flags)


def test_a_plain_response_takes_the_fast_path() -> None:
    headers = [(b":status", b"200"), (b"content-length", b"5"), (b"etag", b'"x"')]
    assert header_checks._plain_response(headers)
    assert not header_checks._plain_response([(b"content-length", b"5"), (b":status", b"200")])
    assert not header_checks._plain_response([(b":status", b"200"), (b"connection", b"close")])


def _h2_outbound(headers: list[tuple[bytes, bytes]], patched: bool) -> object:
    import h2.stream

    flags = h2.utilities.HeaderValidationFlags(
        is_client=True, is_trailer=False, is_response_header=False, is_push_promise=False
    )
    if patched:
        normalize = h2.stream.normalize_outbound_headers  # type: ignore[attr-defined]
        validate = h2.stream.validate_outbound_headers  # type: ignore[attr-defined]
    else:
        normalize = h2.utilities.normalize_outbound_headers
        validate = h2.utilities.validate_outbound_headers
    try:
        out = list(validate(normalize(list(headers), flags, False), flags))
    except h2.exceptions.ProtocolError as exc:
        return ("error", str(exc))
    return [(type(h).__name__ == "NeverIndexedHeaderTuple", h[0], h[1]) for h in out]


request_pseudo = st.sampled_from(
    [
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/")],
        [(b":method", b"CONNECT"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/")],
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"")],
        [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https"), (b":authority", b"a")],
        [(b":method", b"GET"), (b":scheme", b"https")],
    ]
)
request_fields = st.tuples(
    st.sampled_from(
        [b"accept", b"Accept", b"te", b"connection", b"host", b"cookie", b"authorization", b":x"]
    ),
    st.sampled_from([b"*/*", b" a", b"b\t", b"trailers", b"TRAILERS", b"gzip", b"x" * 30, b""]),
)


GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/")]


@given(request_pseudo, st.lists(request_fields, max_size=5))
@example(GET, [(b":x", b"*/*")])  # a custom pseudo-header after the four
@example(GET, [(b"accept", b"*/*"), (b":x", b"1")])  # a pseudo-header after a regular one
@example(GET, [(b"te", b"TRAILERS")])
@example(GET, [(b"te", b"gzip")])
@example(GET, [(b"host", b"a")])
@example(GET, [(b"cookie", b"short"), (b"authorization", b"x")])
def test_request_normalization_matches_h2s(
    pseudo: list[tuple[bytes, bytes]], fields: list[tuple[bytes, bytes]]
) -> None:
    headers = pseudo + fields
    assert _h2_outbound(headers, patched=True) == _h2_outbound(headers, patched=False)


def test_received_response_blocks_take_the_fast_path_in_h2() -> None:
    """Through h2 itself (normalization, then validation): a plain block reaches the fast
    path as a list; one with a cookie still has it joined and moved last, as h2 does."""
    import h2.config
    import h2.connection
    import h2.events

    client = h2.connection.H2Connection(h2.config.H2Configuration(header_encoding=None))
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    calls: list[bool] = []
    original = header_checks._plain_response

    def spy(headers: list[tuple[bytes, bytes]]) -> bool:
        calls.append(original(headers))
        return calls[-1]

    header_checks._plain_response = spy
    try:
        for extra in ([], [(b"cookie", b"a=1"), (b"cookie", b"b=2")]):
            sid = client.get_next_available_stream_id()
            client.send_headers(sid, GET, end_stream=True)
            server.receive_data(client.data_to_send())
            server.send_headers(sid, [(b":status", b"200"), *extra, (b"etag", b"x")], True)
            events = client.receive_data(server.data_to_send())
            got = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
            if extra:
                assert list(got.headers)[-1] == (b"cookie", b"a=1; b=2")
    finally:
        header_checks._plain_response = original
    assert calls[0] is True, "a plain response block reached the fast path"


_any_field = st.tuples(st.binary(max_size=6), st.binary(max_size=6)) | st.tuples(
    st.text(max_size=4), st.text(max_size=4)
)


@given(
    st.lists(
        _any_field
        | _any_field.map(lambda f: hpack.NeverIndexedHeaderTuple(*f))
        | _any_field.map(lambda f: hpack.HeaderTuple(*f)),
        max_size=6,
    )
)
def test_the_bytes_headers_fast_path_returns_what_h2s_utf8_step_returns(
    headers: list[tuple[bytes | str, bytes | str]],
) -> None:
    import h2.stream

    ours = h2.stream.utf8_encode_headers(headers)  # type: ignore[attr-defined]
    theirs = h2.utilities.utf8_encode_headers(headers)
    assert list(ours) == theirs
    assert [type(h) for h in ours] == [type(h) for h in theirs]


def test_a_bytes_block_passes_the_utf8_step_as_it_is() -> None:
    import h2.stream

    assert h2.stream.utf8_encode_headers is not h2.utilities.utf8_encode_headers  # type: ignore[attr-defined]
    assert h2.stream.utf8_encode_headers(GET) is GET  # type: ignore[attr-defined]
