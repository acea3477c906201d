"""Process-wide performance fixes for a pure-Python HTTP/2 data path, applied once at
start-up (the CLI's entry and the test conftest). Each was measured on these 2-core
machines (docs/BENCHMARKS.md: the loopback and per-request sections)."""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

from cwndproxy.http2 import header_checks

_applied = False


def patch_hyperframe_flags() -> None:
    """Build each frame type's set of valid flag names once, not once per frame.

    hyperframe's Flags() runs a set comprehension over the frame type's flag definitions
    for every frame it parses; at nginx's 8 KiB DATA frames that is ~30,000 times a second.
    """
    from hyperframe import flags as hf_flags

    cache: dict[int, set[str]] = {}
    original = hf_flags.Flags.__init__

    def init(self: Any, defined_flags: Any) -> None:
        valid = cache.get(id(defined_flags))
        if valid is None:
            original(self, defined_flags)
            cache[id(defined_flags)] = self._valid_flags
            return
        self._valid_flags = valid
        self._flags = set()

    hf_flags.Flags.__init__ = init  # type: ignore[method-assign]


def _cheap_frame_repr(self: Any) -> str:
    data = getattr(self, "data", None)  # DATA payload, HEADERS block fragment
    size = "" if data is None else f": <{len(data)} bytes>"
    return f"{type(self).__name__}(stream_id={self.stream_id}){size}"


def patch_hyperframe_frame_repr() -> None:
    """Stop hyperframe from rendering every frame's body for a log line nobody reads.

    h2 4.x calls ``repr(frame)`` for a trace log line on every received frame, eagerly,
    even with logging off. hyperframe's repr serializes the body again to show it, and for
    DATA hex-encodes the whole payload: with 1 MiB frames that was about 35% of the
    proxy's CPU, and ~7 us per HEADERS frame on small requests. One cheap repr for all
    frame types (DataFrame has no repr of its own): the type, stream and body size."""
    from hyperframe.frame import Frame

    Frame.__repr__ = _cheap_frame_repr  # type: ignore[method-assign]


# Distinct Huffman-coded strings remembered by the decoder's cache (it starts over when full).
HUFFMAN_CACHE_SIZE = 4096


def patch_hpack_huffman_cache() -> None:
    """Decode each distinct Huffman-coded header string once.

    hpack decodes Huffman strings (RFC 7541 section 5.2) a nibble at a time in Python;
    nginx Huffman-codes every literal it sends, so the date, last-modified, etag and
    content-type of each response cost ~25% of a small request's decode time (measured by
    py-spy). The decoding of a string depends on its bytes alone, and response headers
    repeat: a cache keyed by the coded bytes returns the same result. A string that fails to
    decode raises as before and is not remembered.
    """
    import hpack.hpack
    import hpack.huffman_table

    decode = hpack.huffman_table.decode_huffman
    cache: dict[bytes, bytes] = {}

    def cached_decode_huffman(huffman_string: Any) -> bytes:
        key = bytes(huffman_string)
        decoded = cache.get(key)
        if decoded is None:
            decoded = decode(key)
            if len(cache) >= HUFFMAN_CACHE_SIZE:
                cache.clear()
            cache[key] = decoded
        return decoded

    hpack.hpack.decode_huffman = cached_decode_huffman  # type: ignore[attr-defined]


# glibc mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def tune_malloc() -> bool:
    """Raise glibc's mmap/trim thresholds so 1 MiB frame buffers are reused, not mmap'd.

    By default every allocation above 128 KiB-ish is its own mmap and munmap; with 1 MiB
    DATA frames that is two syscalls and page faults per frame. Returns False where glibc
    is not available (musl, macOS), which is harmless.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    ok &= mallopt(_M_TRIM_THRESHOLD, 128 * 1024 * 1024)
    ok &= mallopt(_M_TOP_PAD, 64 * 1024 * 1024)
    return bool(ok)


def apply() -> None:
    global _applied
    if _applied:
        return
    patch_hyperframe_frame_repr()
    patch_hyperframe_flags()
    header_checks.install()
    patch_hpack_huffman_cache()
    tune_malloc()
    _applied = True
