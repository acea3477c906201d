from __future__ import annotations

import pytest

from cwndproxy.warmup.policy import (
    TRANSITIONS,
    InvalidTransition,
    RateSample,
    WarmEvent,
    WarmState,
    fits_initial_window,
    fresh_connection_beats,
    next_state,
    plan_bursts,
    ramp_verdict,
    stagger_offset,
)

S, E = WarmState, WarmEvent


def test_the_main_path() -> None:
    state = S.CONNECTING
    for event, expected in [
        (E.CONNECTED, S.RAMPING),
        (E.TARGET_REACHED, S.HOLDING),
        (E.REAL_STARTED, S.SERVING),
        (E.REAL_ENDED, S.HOLDING),
        (E.THROTTLED, S.BACKOFF),
        (E.BACKOFF_OVER, S.RAMPING),
        (E.PLATEAU, S.HOLDING),
        (E.GOAWAY, S.DRAINING),
        (E.FAILED, S.FAILED),
    ]:
        state = next_state(state, event)
        assert state is expected


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (S.HOLDING, E.REAL_ENDED),
        (S.SERVING, E.TARGET_REACHED),
        (S.FAILED, E.CONNECTED),
        (S.DRAINING, E.REAL_STARTED),
        (S.CONNECTING, E.REAL_STARTED),
    ],
)
def test_unlisted_transitions_are_errors(state: WarmState, event: WarmEvent) -> None:
    assert (state, event) not in TRANSITIONS
    with pytest.raises(InvalidTransition):
        next_state(state, event)


def test_every_state_but_failed_can_fail_and_nothing_leaves_failed() -> None:
    for state in WarmState:
        if state is not S.FAILED:
            assert next_state(state, E.FAILED) is S.FAILED
    assert not [k for k in TRANSITIONS if k[0] is S.FAILED]


def test_auto_bursts_from_rtt_and_target() -> None:
    plan = plan_bursts(target_bps=50e6, rtt=0.080)
    # 0.75 BDP of 50 Mbit/s at 80 ms = 375 KB, every 0.9 x (80 + 200) ms.
    assert plan.size_bytes == 375_000
    assert plan.interval == pytest.approx(0.252)
    # Holding costs ~24% of the target at 80 ms.
    assert 0.2 < plan.share_of(50e6) <= 0.25


def test_interval_stays_below_linux_rto_at_any_rtt() -> None:
    for rtt in (0.001, 0.02, 0.08, 0.2, 0.6):
        assert plan_bursts(10e6, rtt).interval < rtt + 0.2


def test_explicit_size_and_interval_win_and_small_bdps_get_a_floor() -> None:
    assert plan_bursts(50e6, 0.08, size_bytes=1000, interval_ms=500).size_bytes == 1000
    assert plan_bursts(50e6, 0.08, size_bytes=1000, interval_ms=500).interval == 0.5
    assert plan_bursts(1e6, 0.001).size_bytes == 64 * 1024


def test_stagger_spreads_phases_evenly() -> None:
    offsets = [stagger_offset(i, 4, 0.2) for i in range(4)]
    assert offsets == pytest.approx([0.0, 0.05, 0.1, 0.15])
    assert stagger_offset(5, 4, 0.2) == pytest.approx(0.05)


def samples(rates: list[float], step: float = 0.1) -> list[RateSample]:
    return [RateSample(i * step, r) for i, r in enumerate(rates)]


def test_ramp_reaches_target_after_dwell() -> None:
    assert ramp_verdict(samples([50e6] * 5), 50e6, dwell=1.0) is None  # not a dwell yet
    assert ramp_verdict(samples([10e6] * 5 + [48e6] * 12), 50e6, dwell=1.0) is E.TARGET_REACHED


def test_ramp_plateau_below_target_and_growth_keeps_ramping() -> None:
    assert ramp_verdict(samples([30e6] * 25), 50e6, dwell=1.0) is E.PLATEAU
    growing = [1e6 * (i + 1) for i in range(25)]
    assert ramp_verdict(samples(growing), 50e6, dwell=1.0) is None


def test_a_target_fits_the_initial_window_up_to_ten_segments() -> None:
    # 10 x 1,448 bytes: 115.84 Mbit/s over 1 ms, 1 Gbit/s over ~0.116 ms.
    assert fits_initial_window(100e6, 0.001)
    assert fits_initial_window(1e9, 0.0001)
    assert not fits_initial_window(1e9, 0.001)
    # The matrix's smallest per-connection target: 2.5 Mbit/s over 100 ms (31 KB).
    assert not fits_initial_window(2.5e6, 0.100)


def test_a_fresh_connection_beats_only_a_window_loss_cut_far_below_the_target() -> None:
    # The loss cell: a 100 KB target (69 packets at 40 ms, 20 Mbit/s). A fresh connection
    # needs log2(100,000 / 14,480 + 1) = 2.98 round trips for it: it beats a window under
    # ~33.5 KB (23 packets), as those the lossy path left (4-22 packets).
    assert fresh_connection_beats(7 * 1448, 100_000)
    assert fresh_connection_beats(22 * 1448, 100_000)
    assert not fresh_connection_beats(30 * 1448, 100_000)
    # A clean 80 ms, 100 Mbit/s path (1 MB target): cubic's 0.7 after a drop is far above
    # the 163 KB where a fresh connection would start to win.
    assert not fresh_connection_beats(700_000, 1_000_000)
    assert fresh_connection_beats(150_000, 1_000_000)
    assert fresh_connection_beats(0, 1_000_000)
