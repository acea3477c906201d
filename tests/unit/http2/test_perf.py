"""The per-request patches of http2/perf.py do what the code they replace did."""

from __future__ import annotations

import h2.exceptions
import h2.utilities
import hpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cwndproxy.http2 import perf

FLAGS = h2.utilities.HeaderValidationFlags(
    is_client=True, is_trailer=False, is_response_header=True, is_push_promise=False
)


def _h2_original() -> object:
    """h2's own _reject_illegal_characters, as shipped (perf.apply replaced it)."""
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
    assert _outcome(perf._reject_illegal_characters, headers) == _outcome(ORIGINAL, headers)


def test_header_character_checks_are_installed() -> None:
    assert h2.utilities._reject_illegal_characters is perf._reject_illegal_characters
    with pytest.raises(h2.exceptions.ProtocolError, match="uppercase"):
        list(h2.utilities.validate_headers([(b":status", b"200"), (b"Bad", b"x")], FLAGS))


def test_huffman_strings_decode_the_same_from_the_cache() -> None:
    encoder = hpack.Encoder()
    block = encoder.encode([(b"date", b"Sun, 29 Nov 2026 10:56:41 GMT")], huffman=True)
    for _ in range(2):  # the second time from the cache
        assert hpack.Decoder().decode(block, raw=True) == [
            (b"date", b"Sun, 29 Nov 2026 10:56:41 GMT")
        ]
    bad = bytes([0x00, 0x04]) + b"date" + bytes([0x81, 0xFF])  # Huffman EOS inside a value
    for _ in range(2):  # errors are not remembered as results
        with pytest.raises(hpack.HPACKDecodingError):
            hpack.Decoder().decode(bad)
