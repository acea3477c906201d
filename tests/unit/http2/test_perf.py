"""The process-wide patches of http2/perf.py keep what they replace working."""

from __future__ import annotations

import hpack
import pytest


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
