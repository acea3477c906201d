"""An HPACK decoder that remembers what a header block decoded to, and what it did.

hpack's ``Decoder`` walks every field of every block in Python: the largest single item
of a small request's cost through the proxy (py-spy: ~12% of the CPU, decoding nginx's
response headers). An origin answering the same kind of request sends the same header
block bytes again and again; nginx 1.22, for one, sends byte-identical blocks for a
static file all through one second of Date, each adding its fields to the dynamic table
again (literals with incremental indexing).

What a block decodes to depends on its bytes and, where it refers to the dynamic table,
on that table. So a block is remembered in one of two ways, never otherwise:

- **self-contained**: it referred only to the static table (and changed no table size).
  Its fields are then the same whatever the dynamic table holds, and its effect on the
  table is to add the same entries in the same order: on a repeat, those entries are
  added again (``HeaderTable.add``, exactly what decoding does) and the fields returned.
- **bound to the table**: it referred to the dynamic table but changed nothing. It is
  valid while the table has not changed since (a change counter).

The limits the decoder enforces (header list size, table size) are part of the key, so
a lowered limit is checked again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import hpack
from hpack.table import HeaderTable

# Distinct blocks remembered; the memory starts over when full.
CACHE_SIZE = 256
# Blocks larger than this are not remembered (memory; large blocks are rare).
MAX_CACHED_BLOCK = 4096


class CountingHeaderTable(HeaderTable):
    """hpack's header table, counting its changes and its dynamic-table reads, and
    recording the entries added while ``recording`` is a list."""

    def __init__(self) -> None:
        self.changes = 0
        self.resizes = 0
        self.dynamic_reads = 0
        self.recording: list[tuple[bytes, bytes]] | None = None
        super().__init__()

    def add(self, name: bytes, value: bytes) -> None:
        self.changes += 1
        if self.recording is not None:
            self.recording.append((name, value))
        super().add(name, value)

    def get_by_index(self, index: int) -> tuple[bytes, bytes]:
        if index > HeaderTable.STATIC_TABLE_LENGTH:
            self.dynamic_reads += 1
        return super().get_by_index(index)

    @HeaderTable.maxsize.setter  # type: ignore[attr-defined, untyped-decorator]
    def maxsize(self, newmax: int) -> None:
        self.changes += 1
        self.resizes += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


# A remembered block: self-contained (None, fields, entries added) or bound to the table
# (change count, fields, ()).
_Remembered = tuple[int | None, list[Any], tuple[tuple[bytes, bytes], ...]]


class CachingDecoder(hpack.Decoder):
    """A drop-in for the ``hpack.Decoder`` of an h2 connection (``decode``, limits)."""

    def __init__(self, max_header_list_size: int = hpack.hpack.DEFAULT_MAX_HEADER_LIST_SIZE):
        super().__init__(max_header_list_size)
        self.table = CountingHeaderTable()
        self.header_table = self.table
        self.max_allowed_table_size = self.table.maxsize
        self._cache: dict[tuple[bytes, bool, int, int], _Remembered] = {}

    def decode(self, data: bytes, raw: bool = False) -> Iterable[Any]:
        if len(data) > MAX_CACHED_BLOCK:
            return super().decode(data, raw)
        table = self.table
        key = (bytes(data), raw, self.max_header_list_size, self.max_allowed_table_size)
        hit = self._cache.get(key)
        if hit is not None:
            bound, fields, added = hit
            if bound is None:
                for name, value in added:
                    table.add(name, value)
                return list(fields)
            if bound == table.changes:
                return list(fields)
        changes, resizes, reads = table.changes, table.resizes, table.dynamic_reads
        table.recording = []
        try:
            fields = list(super().decode(data, raw))
        finally:
            recorded, table.recording = table.recording, None
        if table.resizes != resizes:
            return fields  # a table size update: never replayed
        if table.dynamic_reads == reads:
            remembered: _Remembered = (None, fields, tuple(recorded))
        elif table.changes == changes:
            remembered = (changes, fields, ())
        else:
            return fields
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = remembered
        return list(fields)
