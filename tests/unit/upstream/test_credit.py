"""The metered connection window's policy (pure), and h2's internals it relies on."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.windows
import pytest

from cwndproxy.upstream.credit import MIN_CREDIT, UNCAPPED, InboundCredit

B = 1_000_000


def test_idle_credit_is_the_burst_limit_and_active_credit_half_more() -> None:
    credit = InboundCredit()
    assert credit.target == 65535, "before a limit is known: the protocol's initial window"
    credit.active = True
    assert credit.target == UNCAPPED, "and no cap on a transfer in the first RTT"
    credit.burst_limit = B
    credit.active = False
    assert credit.target == B
    credit.active = True
    assert credit.target == 1.5 * B
    # Known remainder: the grants taper so that B is left when the responses end.
    credit.remaining = 300_000
    assert credit.target == 1_300_000
    credit.remaining = 0
    assert credit.target == B


def test_grants_top_up_to_the_target_in_steps_of_at_least_an_eighth() -> None:
    credit = InboundCredit()
    credit.burst_limit = B
    assert credit.grant() == B - 65535
    credit.window_opened(B - 65535)
    assert credit.current_window_size == B and credit.grant() == 0
    credit.active = True
    assert credit.grant() == B // 2  # the first DATA: the rest of the active credit at once
    credit.window_opened(B // 2)
    credit.window_consumed(100_000)  # 100 KB arrived: less than an eighth short, no update
    assert credit.process_bytes(100_000) is None
    credit.window_consumed(200_000)
    assert credit.process_bytes(200_000) == 300_000
    assert credit.current_window_size == 1.5 * B


def test_grants_follow_receipt_until_the_buffer_allowance_is_used() -> None:
    """The proxy's forwarding lag stays out of the credit loop, up to a memory bound."""
    credit = InboundCredit(buffer_allowance=2 * B)
    credit.burst_limit = B
    credit.active = True
    credit.window_opened(B + B // 2 - 65535)
    credit.window_consumed(B + B // 2)  # all arrived, none forwarded yet
    assert credit.grant() == B + B // 2, "within the allowance: credit as if consumed"
    credit.window_opened(B + B // 2)
    credit.window_consumed(B + B // 2)  # 3B buffered: one burst limit beyond the allowance
    assert credit.grant() == B // 2
    credit.window_opened(B // 2)
    credit.window_consumed(B // 2)
    assert credit.grant() == 0, "the allowance is used up: nothing until the data moves on"
    assert credit.process_bytes(B) == B


def test_bytes_not_yet_consumed_count_as_outstanding() -> None:
    """A reader that does not read gets no more credit: backpressure."""
    credit = InboundCredit(buffer_allowance=0)
    credit.burst_limit = B
    credit.active = True
    credit.window_opened(B + B // 2 - 65535)
    credit.window_consumed(B + B // 2)  # all of it arrived, none consumed
    assert credit.current_window_size == 0 and credit.grant() == 0
    assert credit.process_bytes(B) == B  # two thirds consumed: that much granted again
    assert credit.current_window_size + credit.buffered == B + B // 2


def test_tiny_limits_are_raised_to_a_minimum() -> None:
    credit = InboundCredit()
    credit.burst_limit = 1000
    assert credit.target == MIN_CREDIT


def test_h2_keeps_the_connection_window_manager_where_the_session_replaces_it() -> None:
    """The metered session swaps h2's private connection-level window manager; if h2 moves
    it, this fails loudly instead of the cap silently doing nothing."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    manager = conn._inbound_flow_control_window_manager
    assert isinstance(manager, h2.windows.WindowManager)
    credit = InboundCredit()
    conn._inbound_flow_control_window_manager = credit
    conn.initiate_connection()
    assert conn.inbound_flow_control_window == 65535
    conn.increment_flow_control_window(1000)
    assert credit.current_window_size == 66535


def test_active_credit_grows_with_queueing_others_cause() -> None:
    credit = InboundCredit()
    credit.burst_limit = B
    credit.active = True
    credit.rtt_factor = 2.0  # a bulk flow keeps a one-BDP queue: the RTT doubled
    assert credit.target == 3 * B
    credit.rtt_factor = 10.0
    assert credit.target == 6 * B, "capped"
    credit.active = False
    assert credit.target == B, "the first flight stays bounded whatever the RTT"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


RTT = 0.020


def _paced(clock: FakeClock) -> InboundCredit:
    credit = InboundCredit(clock=clock)
    credit.burst_limit = B
    credit.min_rtt = RTT
    credit.window_opened(credit.grant())  # idle: B held by the server, not paced
    assert credit.current_window_size == B
    clock.now += 1.0
    return credit


def test_after_a_stall_the_catch_up_credit_is_paced() -> None:
    """A receiver that stalls (or waits for a retransmission to fill a hole) lets the
    server use up its credit and the pipe drain; the catch-up grant must not become one
    burst of the whole active credit."""
    clock = FakeClock()
    credit = _paced(clock)
    credit.active = True
    credit.window_opened(credit.grant())  # first DATA: 1.5B outstanding, at once
    assert credit.current_window_size == B + B // 2
    clock.now += RTT
    credit.window_consumed(B + B // 2)  # we stalled; all of it arrived at once
    assert credit._need() == B + B // 2
    assert credit.grant() == B // 4, "a quarter of the burst limit now"
    credit.window_opened(B // 4)
    assert credit.grant() == 0
    wait = credit.retry_in()
    # The next step (an eighth of the active credit) comes as the bucket refills at 1.5B
    # per RTT: in RTT / 8.
    assert wait is not None and 0.9 * RTT / 8 < wait < 1.1 * RTT / 8
    began, granted = clock.now, B // 4
    while (wait := credit.retry_in()) is not None:
        clock.now += wait
        step = credit.grant()
        assert step > 0
        credit.window_opened(step)
        granted += step
        assert granted <= B // 4 + 1.5 * B * (clock.now - began) / RTT + 1
    assert granted > (B + B // 2) * 7 // 8, "all of it (but a batched top-up)..."
    assert clock.now - began < RTT, "...within an RTT"


@pytest.mark.parametrize("burst_limit", [20_000, 100_000, B])
@pytest.mark.parametrize("rtt_factor", [1.0, 2.0, 4.0])
def test_a_held_back_grant_always_goes_out_in_the_end(burst_limit: int, rtt_factor: float) -> None:
    """Whatever the limit and the RTT factor, every grant pacing holds back goes out at
    the time retry_in() says (the lossy-link chaos test once stalled for good: with an
    RTT factor of 4 the smallest grant, an eighth of the target, was more than the bucket
    could ever hold)."""
    clock = FakeClock()
    credit = InboundCredit(clock=clock)
    credit.burst_limit = burst_limit
    credit.min_rtt = RTT
    credit.rtt_factor = rtt_factor
    credit.window_opened(credit.grant())
    credit.active = True
    credit.window_opened(credit.grant())
    clock.now += RTT
    credit.window_consumed(credit.current_window_size)  # a stall: all of it arrived at once
    short = credit._need()
    granted = 0
    for _ in range(1000):
        step = credit.grant()
        credit.window_opened(step)
        granted += step
        wait = credit.retry_in()
        if wait is None:
            break
        clock.now += wait
    else:
        raise AssertionError("the grant never went out")
    assert granted > short - credit.target // 8


def test_steady_receipt_at_the_path_rate_is_never_held_back() -> None:
    """Pacing must not cost throughput: at the path rate (~1.1B per RTT) every grant is
    what an unpaced credit would send."""
    clock = FakeClock()
    paced = _paced(clock)
    free = InboundCredit()
    free.burst_limit = B
    free.window_opened(free.grant())
    for credit in (paced, free):
        credit.active = True
        credit.window_opened(credit.grant())
    chunk = B * 11 // 100  # every RTT / 10
    for _ in range(200):
        clock.now += RTT / 10
        for credit in (paced, free):
            credit.window_consumed(chunk)
        assert paced.process_bytes(chunk) == free.process_bytes(chunk)
        assert paced.retry_in() is None
    assert paced.current_window_size == free.current_window_size


def test_grants_are_not_paced_before_the_rtt_is_known() -> None:
    credit = InboundCredit(clock=FakeClock())
    credit.burst_limit = B
    credit.active = True
    assert credit.grant() == B + B // 2 - 65535
    assert credit.retry_in() is None
