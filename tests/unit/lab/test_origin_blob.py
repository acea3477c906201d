from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cwndproxy.lab.origin import blob_bytes, parse_range


@given(st.integers(0, 1 << 30), st.integers(0, 300_000), st.integers(0, 300_000))
def test_blob_slices_are_consistent(start: int, a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    whole = blob_bytes(start, start + hi)
    assert len(whole) == hi
    assert blob_bytes(start + lo, start + hi) == whole[lo:]


def test_blob_is_not_trivially_periodic_at_frame_sizes() -> None:
    assert blob_bytes(0, 16384) != blob_bytes(16384, 32768)
    assert blob_bytes(0, 65536) != blob_bytes(65536, 131072)


def test_parse_range() -> None:
    assert parse_range("bytes=0-99", 1000) == (0, 100)
    assert parse_range("bytes=900-", 1000) == (900, 1000)
    assert parse_range("bytes=-100", 1000) == (900, 1000)
    assert parse_range("bytes=990-2000", 1000) == (990, 1000)
    assert parse_range("bytes=1000-", 1000) is None
    assert parse_range("bytes=5-1", 1000) is None
    assert parse_range("items=0-1", 1000) is None
    assert parse_range("bytes=0-1,5-6", 1000) is None
