from __future__ import annotations

import pytest

from cwndproxy.telemetry.rates import RateWindow


def feed(
    window: RateWindow, rate: float, seconds: float, start: float = 0.0, base: int = 0
) -> tuple[float, int]:
    t, value = start, base
    steps = round(seconds / window.period)
    for _ in range(steps):
        t += window.period
        value += int(rate * window.period)
        window.add(round(t, 6), (value, 0, 0, 0))
    return t, value


def test_rate_over_window_and_last_second() -> None:
    w = RateWindow(window=10.0, period=0.1)
    w.add(0.0, (0, 0, 0, 0))
    t, v = feed(w, 1000.0, 5.0)
    t, v = feed(w, 3000.0, 1.0, t, v)
    assert w.rate(over=1.0)[0] == pytest.approx(3000.0)
    assert w.rate()[0] == pytest.approx((5000 + 3000) / 6.0)


def test_ring_wraps_after_the_window() -> None:
    w = RateWindow(window=10.0, period=0.1)
    w.add(0.0, (0, 0, 0, 0))
    t, _v = feed(w, 5000.0, 20.0)  # twice the window
    assert len(w.samples) == 101
    assert w.samples[0][0] == pytest.approx(t - 10.0)
    assert w.rate()[0] == pytest.approx(5000.0)


def test_idle_period_gives_zero_rate_and_peak_remembers() -> None:
    w = RateWindow(window=10.0, period=0.1)
    w.add(0.0, (0, 0, 0, 0))
    t, v = feed(w, 8000.0, 2.0)
    t, v = feed(w, 0.0, 3.0, t, v)
    assert w.rate(over=1.0)[0] == 0.0
    assert w.peak(span=1.0)[0] == pytest.approx(8000.0)
    t, v = feed(w, 0.0, 10.0, t, v)  # the burst left the window
    assert w.peak(span=1.0)[0] == 0.0


def test_history_buckets_cover_the_window() -> None:
    w = RateWindow(window=10.0, period=0.1)
    w.add(0.0, (0, 0, 0, 0))
    t, v = feed(w, 1000.0, 5.0)
    t, v = feed(w, 4000.0, 5.0, t, v)
    hist = w.history(buckets=10)
    assert len(hist) == 10
    assert hist[0][0] == pytest.approx(1000.0)
    assert hist[-1][0] == pytest.approx(4000.0)


def test_counter_reset_restarts_the_window() -> None:
    w = RateWindow()
    w.add(0.0, (100, 0, 0, 0))
    w.add(0.1, (5, 0, 0, 0))
    assert len(w.samples) == 1 and w.rate()[0] == 0.0
