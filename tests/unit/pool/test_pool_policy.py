from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cwndproxy.pool.policy import SlotView, backoff_delay, choose_slot


def view(
    i: int,
    *,
    ready: bool = True,
    real: int = 0,
    free: int = 100,
    last: float = 0.0,
    dummy: bool = False,
    warm: bool = True,
    score: float = 1.0,
) -> SlotView:
    return SlotView(
        slot=i,
        ready=ready,
        real_streams=real,
        free_stream_slots=free,
        last_chosen=last,
        dummy_active=dummy,
        warm=warm,
        score=score,
    )


def test_only_ready_sessions_are_chosen() -> None:
    assert choose_slot([view(0, ready=False), view(1, ready=False)]) is None
    assert choose_slot([view(0, ready=False), view(1)]) == 1


def test_prefers_fewest_active_real_streams() -> None:
    assert choose_slot([view(0, real=3), view(1, real=1), view(2, real=2)]) == 1


def test_prefers_a_free_stream_slot_over_fewer_streams() -> None:
    assert choose_slot([view(0, real=0, free=0), view(1, real=5, free=1)]) == 1


def test_ties_go_to_the_most_recently_chosen() -> None:
    assert choose_slot([view(0, last=5.0), view(1, last=2.0), view(2, last=9.0)]) == 2


def test_a_session_with_dummy_data_in_flight_comes_after_a_quiet_one() -> None:
    assert choose_slot([view(0, dummy=True, last=9.0), view(1)]) == 1
    # ... but a free stream slot and fewer real streams still come first.
    assert choose_slot([view(0, dummy=True), view(1, real=1)]) == 0


def test_warm_sessions_come_before_cold_ones() -> None:
    assert choose_slot([view(0, warm=False, last=9.0), view(1, warm=True)]) == 1


def test_a_session_whose_window_was_cut_comes_after_a_full_one() -> None:
    # Scores within a tenth are a tie (noise); a cut window (0.7) is not.
    assert choose_slot([view(0, score=0.7, last=9.0), view(1, score=1.0)]) == 1
    assert choose_slot([view(0, score=0.97, last=9.0), view(1, score=1.0)]) == 0
    assert choose_slot([view(0, score=0.7, warm=True), view(1, score=1.0, warm=False)]) == 0


def test_excluded_sessions_are_skipped() -> None:
    assert choose_slot([view(0), view(1, real=9)], exclude=frozenset({0})) == 1
    assert choose_slot([view(0)], exclude=frozenset({0})) is None


def test_backoff_grows_exponentially_and_is_capped() -> None:
    assert backoff_delay(0, 0.1, 10.0, rand=lambda: 1.0) == 0.1
    assert backoff_delay(3, 0.1, 10.0, rand=lambda: 1.0) == 0.8
    assert backoff_delay(50, 0.1, 10.0, rand=lambda: 1.0) == 10.0
    assert backoff_delay(3, 0.1, 10.0, rand=lambda: 0.0) == 0.4


@given(
    attempt=st.integers(min_value=0, max_value=1000),
    minimum=st.floats(min_value=0.001, max_value=5.0),
    rnd=st.floats(min_value=0.0, max_value=1.0),
)
def test_backoff_stays_within_half_to_full_step(attempt: int, minimum: float, rnd: float) -> None:
    maximum = minimum * 100
    delay = backoff_delay(attempt, minimum, maximum, rand=lambda: rnd)
    step = min(maximum, minimum * 2 ** min(attempt, 30))
    assert step / 2 - 1e-9 <= delay <= step + 1e-9
    assert delay <= maximum + 1e-9
