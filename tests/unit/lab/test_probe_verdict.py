from __future__ import annotations

from cwndproxy.lab.probe import ProbeResult, Transfer, judge


def t(ms: float) -> Transfer:
    return Transfer(ttlb_ms=ms, ttfb_ms=80.0, bytes=4_000_000, status=206)


def result(
    idle_ms: dict[str, float], warm_ms: float = 430.0, cold_ms: float = 1100.0
) -> ProbeResult:
    return ProbeResult(
        url="https://o/b",
        size=4_000_000,
        connect_ms=170,
        rtt_ms=80.0,
        rtt_min_ms=79.5,
        cold=t(cold_ms),
        warm=[t(warm_ms)] * 3,
        idle={k: t(v) for k, v in idle_ms.items()},
        bandwidth_mbps=100.0,
        bandwidth_source="given",
        ideal_ms=400.0,
        range_supported=True,
    )


def test_idle_reset_is_reported_with_threshold_and_saving() -> None:
    r = result({"0.5": 440.0, "1": 700.0, "3": 860.0})
    judge(r)
    assert r.resets_after_idle and r.idle_threshold_s == 1.0
    assert r.saving_ms == 430.0
    assert "restarts slow start after ~1 s idle" in r.verdict
    assert "2.0x longer after 3 s idle" in r.verdict
    assert "save ~430 ms" in r.verdict


def test_mild_penalty_is_not_called_a_reset() -> None:
    r = result({"0.5": 560.0, "3": 540.0})  # 1.3x then 1.26x: slower, but no collapse
    judge(r)
    assert not r.resets_after_idle
    assert r.verdict.startswith("mildly slower after idle")


def test_no_reset_when_idle_matches_warm() -> None:
    r = result({"0.5": 432.0, "3": 445.0})
    judge(r)
    assert not r.resets_after_idle
    assert r.verdict.startswith("no idle penalty seen")


def test_range_ignored_is_noted() -> None:
    r = result({"3": 445.0})
    r.range_supported = False
    judge(r)
    assert any("ignored Range" in n for n in r.notes)


def test_a_loopback_rtt_is_inconclusive_whatever_the_times() -> None:
    r = result({"0.5": 40.0, "3": 90.0}, warm_ms=30.0, cold_ms=50.0)
    r.rtt_min_ms = 0.05
    judge(r)
    assert r.verdict.startswith("inconclusive: the RTT is 0.05 ms")
    assert not r.resets_after_idle
