"""The link emulator's bottleneck model, with a fake clock."""

from __future__ import annotations

import pytest

from cwndproxy.lab.testbed.link import BottleneckDirection, default_queue_bytes


def test_serialization_then_delay() -> None:
    link = BottleneckDirection(rate_bps=8e6, delay=0.040, queue_limit=100_000)  # 1 byte/us
    assert link.admit(0.0, 1000) == pytest.approx(0.001 + 0.040)
    # Back to back: the second waits for the first to be serialized.
    assert link.admit(0.0, 1000) == pytest.approx(0.002 + 0.040)
    # After the link went idle, a packet starts at once.
    assert link.admit(1.0, 500) == pytest.approx(1.0005 + 0.040)


def test_drop_tail_queue_counts_only_unserialized_bytes() -> None:
    link = BottleneckDirection(rate_bps=8e6, delay=0.5, queue_limit=3000)
    assert link.admit(0.0, 1500) is not None
    assert link.admit(0.0, 1500) is not None
    assert link.admit(0.0, 1500) is None  # 4500 > 3000
    assert link.dropped_queue == 1
    # 1.5 ms later one packet is serialized (but still propagating): room again.
    assert link.admit(0.0015, 1500) is not None
    assert link.backlog(0.0015) == pytest.approx(3000)


def test_sustained_rate_matches_the_setting() -> None:
    link = BottleneckDirection(rate_bps=100e6, delay=0.04, queue_limit=10**9)
    due = 0.0
    for _ in range(10_000):
        due = link.admit(0.0, 1500) or due
    assert (due - 0.04) == pytest.approx(10_000 * 1500 * 8 / 100e6)


def test_random_loss() -> None:
    link = BottleneckDirection(rate_bps=1e6, delay=0.0, queue_limit=10**6, loss=0.5)
    values = iter([0.1, 0.9, 0.2])
    results = [link.admit(float(i), 100, rand=lambda: next(values)) for i in range(3)]
    assert [r is None for r in results] == [True, False, True]
    assert link.dropped_loss == 2 and link.forwarded == 1


def test_default_queue_is_one_bdp() -> None:
    assert default_queue_bytes(100e6, 0.08) == 1_000_000
    assert default_queue_bytes(1e6, 0.001) == 6000  # never below a few packets
