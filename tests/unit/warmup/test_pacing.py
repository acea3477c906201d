from __future__ import annotations

import pytest

from cwndproxy.warmup.pacing import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_paced() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1000, burst=500, clock=clock)
    assert bucket.reserve(500) == 0.0
    assert bucket.reserve(100) == pytest.approx(0.1)
    clock.now = 0.1
    assert bucket.reserve(100) == pytest.approx(0.1)


def test_long_run_rate_holds_for_large_requests() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1e6, burst=64_000, clock=clock)
    waited = 0.0
    for _ in range(100):
        delay = bucket.reserve(100_000)
        clock.now += delay
        waited += delay
    # 10 MB at 1 MB/s, less the initial burst.
    assert clock.now == pytest.approx(10.0 - 0.064, rel=1e-6)


def test_tokens_cap_at_burst_after_idle() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1000, burst=200, clock=clock)
    bucket.reserve(200)
    clock.now = 100.0
    assert bucket.tokens == 200


def test_rate_change() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1000, burst=100, clock=clock)
    bucket.reserve(100)
    bucket.set_rate(2000)
    assert bucket.reserve(100) == pytest.approx(0.05)


def test_invalid() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)
