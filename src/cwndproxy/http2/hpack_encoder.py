"""An HPACK encoder that never indexes, so that the encoding of a header field can be cached.

hpack's ``Encoder`` searches and updates the dynamic table for every field of every header
block, in Python: about 50 us per request on these machines (7-8 fields), a large share of
a small request's cost through the proxy. Without a dynamic table the encoding of a field
depends on the field alone (RFC 7541 section 6.2.2, literal without indexing, or 6.2.3,
never indexed), so each distinct field is encoded once and then reused: one dict lookup
per field.

The price is bytes on the wire: a field that hpack would send as a one-byte reference to
its dynamic table entry costs its full literal (20-60 bytes for a typical user-agent or
forwarded field). On the request direction of a small request that is a few hundred bytes,
one packet either way; no field is ever added to the upstream's table, which also keeps
the upstream's memory for us at zero.

RFC 7541 section 7.1.3: an intermediary must not index a field the client sent as never
indexed. This encoder never indexes anything, and fields h2 marks as never indexed
(``NeverIndexedHeaderTuple``: authorization, short cookies) keep that representation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hpack.hpack import encode_integer
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.struct import NeverIndexedHeaderTuple
from hpack.table import HeaderTable

_HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)

# Static table (RFC 7541 appendix A): full matches, and the first index of each name.
_STATIC_FULL: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAME: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_FULL.setdefault((_name, _value), _index)
    _STATIC_NAME.setdefault(_name, _index)

# A dynamic table size update to 0 (RFC 7541 section 6.3: 001 + 5-bit prefix integer).
_TABLE_SIZE_ZERO = b"\x20"

# Distinct fields remembered; the cache starts over when full (paths, dates and ids churn).
CACHE_SIZE = 4096


def _string(data: bytes) -> bytes:
    """An HPACK string literal (section 5.2): Huffman-coded when that is shorter."""
    coded = _HUFFMAN.encode(data)
    if len(coded) < len(data):
        length = encode_integer(len(coded), 7)
        length[0] |= 0x80  # H: Huffman-coded
        return bytes(length) + coded
    return bytes(encode_integer(len(data), 7)) + data


def encode_field(name: bytes, value: bytes, *, never_indexed: bool) -> bytes:
    """One header field, without touching any dynamic table."""
    if not never_indexed:
        index = _STATIC_FULL.get((name, value))
        if index is not None:
            encoded = encode_integer(index, 7)  # section 6.1, indexed
            encoded[0] |= 0x80
            return bytes(encoded)
    # Section 6.2.2 (0000, literal without indexing) or 6.2.3 (0001, never indexed), with
    # the name by static index when it has one.
    flag = 0x10 if never_indexed else 0x00
    name_index = _STATIC_NAME.get(name, 0)
    prefix = encode_integer(name_index, 4)
    prefix[0] |= flag
    if name_index:
        return bytes(prefix) + _string(value)
    return bytes(prefix) + _string(name) + _string(value)


class StatelessEncoder:
    """A drop-in for ``hpack.Encoder`` as h2 uses it (``encode``, ``header_table_size``)."""

    def __init__(self) -> None:
        self._plain: dict[tuple[bytes, bytes], bytes] = {}
        self._never: dict[tuple[bytes, bytes], bytes] = {}
        self._table_size = 4096
        # The first block says once that our dynamic table holds nothing (size 0); after
        # that, every change of the peer's SETTINGS_HEADER_TABLE_SIZE is acknowledged the
        # same way at the start of the next block (section 4.2).
        self._size_update_due = True

    @property
    def header_table_size(self) -> int:
        return self._table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._table_size = value
        self._size_update_due = True

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        parts: list[bytes] = []
        if self._size_update_due:
            parts.append(_TABLE_SIZE_ZERO)
            self._size_update_due = False
        plain, never = self._plain, self._never
        for header in headers:
            if type(header) is tuple:
                # The common case, a plain pair of bytes seen before: the pair itself is
                # the key (a NeverIndexedHeaderTuple is a tuple subclass and hashes the
                # same, so it never takes this path; a pair of str is never a key).
                encoded = plain.get(header)
                if encoded is not None:
                    parts.append(encoded)
                    continue
            name, value = header[0], header[1]
            if isinstance(name, str):
                name = name.encode("utf-8")
            if isinstance(value, str):
                value = value.encode("utf-8")
            cache = never if isinstance(header, NeverIndexedHeaderTuple) else plain
            key = (name, value)
            encoded = cache.get(key)
            if encoded is None:
                encoded = encode_field(name, value, never_indexed=cache is never)
                if len(cache) >= CACHE_SIZE:
                    cache.clear()
                cache[key] = encoded
            parts.append(encoded)
        return b"".join(parts)
