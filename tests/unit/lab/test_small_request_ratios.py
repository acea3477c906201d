"""The small-request benchmark's ratios to HAProxy are paired round by round: a round in
which the machine was slow for both arms must not count against one of them."""

from __future__ import annotations

import math

from cwndproxy.lab.bench.small_requests import SmallArm, paired_ratios, ratio_summary


def arm(name: str, rps: list[float], p99: list[float]) -> SmallArm:
    a = SmallArm(name, "http://127.0.0.1:1/small.bin", (1,))
    a.samples = {"h2c_rps": list(rps), "p99_ms": list(p99)}
    return a


def test_ratios_are_taken_within_each_round() -> None:
    # Round 2 was slow for both: paired, the proxy is at 0.2 of HAProxy in two rounds of
    # three; a ratio of the two medians (1000 / 4000) would say 0.25.
    peer = arm("haproxy", [5000, 2500, 4000], [2.0, 4.0, 2.0])
    proxy = arm("proxy", [1000, 500, 1200], [4.0, 8.0, math.nan])
    ratios = paired_ratios(proxy, peer, "h2c_rps")
    assert [round(r, 6) for r in ratios] == [0.2, 0.2, 0.3]
    assert round((ratio_summary(ratios) or (0,))[0], 6) == 0.2
    mine, theirs = proxy.median("h2c_rps"), peer.median("h2c_rps")
    assert mine is not None and theirs is not None and mine / theirs == 0.25
    # A round without a latency log (NaN) is left out, not counted as a ratio.
    assert paired_ratios(proxy, peer, "p99_ms") == [2.0, 2.0]


def test_summary_is_the_median_and_quartiles() -> None:
    assert ratio_summary([]) is None
    assert ratio_summary([0.3]) == (0.3, 0.3, 0.3)
    summary = ratio_summary([0.1, 0.2, 0.3, 0.4, 0.5])
    assert summary is not None
    assert [round(x, 6) for x in summary] == [0.3, 0.2, 0.4]
