from __future__ import annotations

import pytest

from cwndproxy.cli.units import parse_duration, parse_rate, parse_size


def test_units() -> None:
    assert parse_size("4MB") == 4_000_000
    assert parse_size("4MiB") == 4 * 1024 * 1024
    assert parse_size("1500") == 1500
    assert parse_duration("80ms") == pytest.approx(0.08)
    assert parse_duration("3") == 3.0
    assert parse_rate("100mbit") == 1e8
    assert parse_rate("2.5Gbit") == 2.5e9


@pytest.mark.parametrize("value", ["", "ms", "4 parsecs", "-1"])
def test_bad_units(value: str) -> None:
    with pytest.raises(ValueError, match="is not a"):
        parse_size(value)
