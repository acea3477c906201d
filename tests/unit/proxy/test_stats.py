"""The client-side latency histogram counts each value in the first bucket whose upper
bound is at least the value, as Prometheus' cumulative buckets expect."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cwndproxy.proxy.stats import Histogram


def test_bounds_are_inclusive_and_past_the_last_only_inf_counts() -> None:
    h = Histogram(bounds=(0.1, 1.0, 10.0))
    for value in (0.0, 0.1, 0.10001, 1.0, 10.0, 10.5, 1e9):
        h.observe(value)
    assert h.counts == [2, 2, 1]
    assert h.cumulative() == [("0.1", 2), ("1.0", 4), ("10.0", 5), ("+Inf", 7)]


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False)))
def test_same_buckets_as_a_linear_scan(values: list[float]) -> None:
    h = Histogram()
    expected = [0] * len(h.bounds)
    for value in values:
        h.observe(value)
        for i, bound in enumerate(h.bounds):
            if value <= bound:
                expected[i] += 1
                break
    assert h.counts == expected
    assert h.n == len(values)
