"""Process-wide performance fixes for a pure-Python HTTP/2 data path.

Both were measured on these 2-core machines (docs/BENCHMARKS.md, loopback section); apply
them once at start-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

_applied = False


def _cheap_data_repr(self: Any) -> str:
    return f"DataFrame(stream_id={self.stream_id}): <{len(self.data)} bytes>"


def patch_hyperframe_data_repr() -> None:
    """Stop hyperframe from hex-encoding every DATA payload.

    h2 4.x calls ``repr(frame)`` for a trace log line on every received frame, eagerly,
    even with logging off. hyperframe's DataFrame repr hex-encodes the whole payload:
    with 1 MiB frames that was about 35% of the proxy's CPU.
    """
    from hyperframe.frame import DataFrame

    DataFrame.__repr__ = _cheap_data_repr  # type: ignore[method-assign]


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
    patch_hyperframe_data_repr()
    patch_hyperframe_flags()
    tune_malloc()
    _applied = True
