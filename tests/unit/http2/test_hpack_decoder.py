"""The caching HPACK decoder against hpack's own: for any sequence of blocks from a real
encoder (dynamic table, Huffman, size updates), the same fields and the same table after
every block."""

from __future__ import annotations

import hpack
from hypothesis import given
from hypothesis import strategies as st

from cwndproxy.http2.hpack_decoder import CachingDecoder

fields = st.tuples(
    st.sampled_from([b":status", b"date", b"etag", b"content-type", b"x-id", b"server"]),
    st.sampled_from([b"200", b"a", b"b", b"text/html", b"Sun, 29 Nov 2026 11:00:00 GMT", b""]),
)
blocks = st.lists(st.lists(fields, min_size=1, max_size=6), min_size=1, max_size=4)


@given(st.lists(st.tuples(blocks, st.sampled_from([None, 0, 64, 4096])), min_size=1, max_size=6))
def test_decodes_as_hpack_does(
    rounds: list[tuple[list[list[tuple[bytes, bytes]]], int | None]],
) -> None:
    encoder, plain, caching = hpack.Encoder(), hpack.Decoder(), CachingDecoder()
    for group, table_size in rounds:
        if table_size is not None:
            encoder.header_table_size = table_size  # a size update in the next block
        for block in group + group:  # each list twice in a row, the group twice over
            for data in (encoder.encode(block), encoder.encode(block)):
                expected = list(plain.decode(data, raw=True))
                assert list(caching.decode(data, raw=True)) == expected
                assert list(caching.header_table.dynamic_entries) == list(
                    plain.header_table.dynamic_entries
                )


def test_a_repeated_block_is_decoded_once() -> None:
    encoder, decoder = hpack.Encoder(), CachingDecoder()
    block = [(b":status", b"200"), (b"content-type", b"text/html")]
    first = encoder.encode(block)  # indexes the fields
    second = encoder.encode(block)  # refers to them: changes nothing
    decoder.decode(first, raw=True)
    assert decoder.decode(second, raw=True) == block
    assert len(decoder._cache) == 2, "the indexing block (static refs only) and the repeat"
    calls = []
    original = hpack.Decoder.decode

    def counting(self: hpack.Decoder, data: bytes, raw: bool = False) -> object:
        calls.append(data)
        return original(self, data, raw)

    hpack.Decoder.decode = counting  # type: ignore[method-assign,assignment]
    try:
        assert decoder.decode(second, raw=True) == block
    finally:
        hpack.Decoder.decode = original  # type: ignore[method-assign]
    assert calls == []


def test_a_lower_header_list_limit_is_still_enforced() -> None:
    encoder, decoder = hpack.Encoder(), CachingDecoder()
    block = [(b"x-big", b"v" * 100)]
    decoder.decode(encoder.encode(block), raw=True)  # indexes the field
    data = encoder.encode(block)  # refers to it
    decoder.decode(data, raw=True)
    decoder.decode(data, raw=True)  # remembered
    decoder.max_header_list_size = 50
    try:
        decoder.decode(data, raw=True)
    except hpack.OversizedHeaderListError:
        return
    raise AssertionError("a block over the new limit was served from the cache")


def test_a_self_contained_block_adds_its_entries_again_on_a_repeat() -> None:
    """nginx's way: the same block, each time adding its fields to the table."""
    decoder, plain = CachingDecoder(), hpack.Decoder()
    encoder = hpack.Encoder()
    block = encoder.encode([(b"date", b"Sun"), (b"server", b"nginx")])  # both indexed
    for _ in range(5):
        assert decoder.decode(block, raw=True) == plain.decode(block, raw=True)
        assert list(decoder.table.dynamic_entries) == list(plain.header_table.dynamic_entries)
    assert decoder.table.changes == 10
