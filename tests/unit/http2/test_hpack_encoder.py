"""The stateless HPACK encoder against hpack's own decoder: every block decodes to the
fields given, in order; nothing enters the decoder's dynamic table; never-indexed fields
keep that representation; a table size change is acknowledged."""

from __future__ import annotations

import hpack
from hypothesis import given
from hypothesis import strategies as st

from cwndproxy.http2.hpack_encoder import CACHE_SIZE, StatelessEncoder

names = st.sampled_from(
    [b":method", b":path", b":authority", b"accept", b"user-agent", b"x-custom", b"cookie"]
) | st.binary(min_size=1, max_size=20).map(lambda b: bytes(c % 26 + 97 for c in b))
values = st.binary(max_size=60)


@given(st.lists(st.lists(st.tuples(names, values), max_size=12), min_size=1, max_size=4))
def test_blocks_decode_to_the_fields_given(blocks: list[list[tuple[bytes, bytes]]]) -> None:
    encoder, decoder = StatelessEncoder(), hpack.Decoder()
    for block in blocks:
        assert decoder.decode(encoder.encode(block), raw=True) == block
    assert len(decoder.header_table.dynamic_entries) == 0


def test_static_matches_are_one_byte_and_the_cache_returns_the_same_bytes() -> None:
    encoder = StatelessEncoder()
    first = encoder.encode([(b":method", b"GET"), (b"user-agent", b"curl/8")])
    again = encoder.encode([(b":method", b"GET"), (b"user-agent", b"curl/8")])
    assert first[0] == 0x20, "the first block declares an empty dynamic table"
    assert first[1:2] == b"\x82", ":method GET is static index 2"
    assert again == first[1:]


def test_never_indexed_fields_stay_never_indexed() -> None:
    encoder, decoder = StatelessEncoder(), hpack.Decoder()
    block = encoder.encode(
        [hpack.NeverIndexedHeaderTuple(b"authorization", b"secret"), (b"accept", b"*/*")]
    )
    decoded = list(decoder.decode(block, raw=True))
    assert isinstance(decoded[0], hpack.NeverIndexedHeaderTuple)
    assert not isinstance(decoded[1], hpack.NeverIndexedHeaderTuple)


def test_a_table_size_change_is_acknowledged_in_the_next_block() -> None:
    encoder, decoder = StatelessEncoder(), hpack.Decoder()
    decoder.decode(encoder.encode([(b"accept", b"*/*")]))
    encoder.header_table_size = 0
    block = encoder.encode([(b"accept", b"*/*")])
    assert block[0] == 0x20
    decoder.max_allowed_table_size = 0
    assert decoder.decode(block, raw=True) == [(b"accept", b"*/*")]


def test_the_cache_is_bounded() -> None:
    encoder = StatelessEncoder()
    for i in range(CACHE_SIZE + 10):
        encoder.encode([(b"x-id", str(i).encode())])
    assert len(encoder._plain) <= CACHE_SIZE


def test_the_same_field_keeps_its_own_encoding_as_plain_never_indexed_and_str() -> None:
    """The plain-pair cache is keyed by the pair itself, and a NeverIndexedHeaderTuple
    hashes as the plain pair does: each form must still come out as its own."""
    encoder, decoder = StatelessEncoder(), hpack.Decoder()
    plain = (b"authorization", b"secret")
    for _ in range(2):  # the second time from the caches
        block = encoder.encode(
            [plain, hpack.NeverIndexedHeaderTuple(*plain), ("authorization", "secret")]
        )
        decoded = list(decoder.decode(block, raw=True))
        assert decoded == [plain, plain, plain]
        assert [type(h) for h in decoded] == [
            hpack.HeaderTuple,
            hpack.NeverIndexedHeaderTuple,
            hpack.HeaderTuple,
        ]
