"""Parsing of human quantities on the command line: sizes, durations, rates."""

from __future__ import annotations

import re

_NUM = r"(\d+(?:\.\d+)?)"
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_TIME_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
_RATE_UNITS = {"": 1.0, "bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}


def _parse(value: str, units: dict[str, float] | dict[str, int], what: str) -> float:
    m = re.fullmatch(_NUM + r"\s*([a-zA-Z]*)", value.strip())
    if not m or m.group(2).lower() not in units:
        allowed = ", ".join(u for u in units if u)
        raise ValueError(f"{value!r} is not a {what} (units: {allowed})")
    return float(m.group(1)) * units[m.group(2).lower()]


def parse_size(value: str) -> int:
    """'4MB' -> 4000000, '4MiB' -> 4194304, '1500' -> 1500."""
    return int(_parse(value, _SIZE_UNITS, "size"))


def parse_duration(value: str) -> float:
    """'80ms' -> 0.08 seconds; a bare number is seconds."""
    return _parse(value, _TIME_UNITS, "duration")


def parse_rate(value: str) -> float:
    """'100mbit' -> 1e8 bit/s; a bare number is bit/s."""
    return _parse(value, _RATE_UNITS, "rate")
