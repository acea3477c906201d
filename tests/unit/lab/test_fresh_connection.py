"""The fresh-versus-reused tool's summary of its fetches."""

from __future__ import annotations

from cwndproxy.lab.bench.fresh_connection import summary


def test_the_summary_gives_median_nearest_rank_p90_and_loss_seen() -> None:
    reused = [(0.1 * i, i % 2) for i in range(1, 11)]  # 100..1000 ms
    fresh = [(0.25, 0), (0.35, 3)]
    out = summary({"reused": reused, "fresh": fresh})
    assert out["reused"]["p50_ms"] == 550.0
    assert out["reused"]["p90_ms"] == 900.0  # the 9th of 10
    assert out["reused"]["out_of_order_fetches"] == 5
    assert out["fresh"] == {
        "fetches": 2,
        "p50_ms": 300.0,
        "p90_ms": 350.0,
        "out_of_order_fetches": 1,
        "ms": [250.0, 350.0],
    }
