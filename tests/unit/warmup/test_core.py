"""The warm-up core as playbooks: scripted events in, expected commands out, time as an
argument (after mitmproxy's test/mitmproxy/proxy/tutils.py). No sockets, no sleeps."""

from __future__ import annotations

import math
from typing import Any

import pytest

from cwndproxy.warmup import messages as m
from cwndproxy.warmup.core import KEEPALIVE_BURST, CoreSettings, WarmupCore
from cwndproxy.warmup.policy import (
    GROW_MAX_FETCHES,
    Flight,
    WarmState,
    WindowVerdict,
    hold_ping_interval,
    target_window,
    window_verdict,
)

RTT = 0.080
TARGET = 100e6
W = target_window(TARGET, RTT)  # 1 MB: one BDP at 100 Mbit/s and 80 ms


class Playbook:
    """``pb >> event`` feeds an event at the playbook's clock; ``pb << command`` expects the
    next command (a type matches any instance of it). WakeAt commands are skipped unless
    expected. ``pb.done()`` fails on commands nobody expected."""

    def __init__(self, core: WarmupCore, ignore: tuple[type, ...] = (m.WakeAt,)) -> None:
        self.core = core
        self.now = core.now
        self.pending: list[m.Command] = []
        # Commands skipped unless expected (WakeAt always; SendPing where pings are noise).
        self.ignore = ignore

    def at(self, t: float) -> Playbook:
        assert not self._unexpected(), f"unexpected commands before t={t}: {self.pending}"
        self.now = t
        return self

    def tick(self, t: float) -> Playbook:
        """Advance the clock to ``t`` and fire the timer (the driver's wake-up)."""
        self.at(t)
        return self >> m.TimerFired()

    def wake(self, expected_at: float | None = None) -> Playbook:
        """Fire the timer the core asked for (at approximately ``expected_at``)."""
        at = self.core.wake_at
        assert at is not None, "the core set no timer"
        if expected_at is not None:
            assert at == pytest.approx(expected_at), f"timer at {at}, expected {expected_at}"
        return self.tick(at)

    def __rshift__(self, event: m.Event) -> Playbook:
        self.pending.extend(self.core.handle(event, self.now))
        return self

    def __lshift__(self, expected: Any) -> Playbook:
        while (
            self.pending
            and isinstance(self.pending[0], self.ignore)
            and expected is not type(self.pending[0])
            and not (not isinstance(expected, type) and expected == self.pending[0])
        ):
            self.pending.pop(0)
        assert self.pending, f"expected {expected}, got nothing"
        got = self.pending.pop(0)
        if isinstance(expected, type):
            assert isinstance(got, expected), f"expected {expected.__name__}, got {got}"
        else:
            assert got == expected, f"expected {expected}, got {got}"
        return self

    def state(self) -> WarmState:
        # A method: mypy would narrow an attribute across the events that change it.
        return self.core.state

    def attr(self, name: str) -> Any:
        return getattr(self.core, name)

    def _unexpected(self) -> list[m.Command]:
        return [c for c in self.pending if not isinstance(c, self.ignore)]

    def done(self) -> None:
        assert not self._unexpected(), f"unexpected commands: {self._unexpected()}"
        self.pending.clear()


def core(strategy: str = "auto", **kw: Any) -> WarmupCore:
    settings = CoreSettings(
        strategy=strategy,
        target_bps=kw.pop("target_bps", TARGET),
        path_bps=kw.pop("path_bps", TARGET),
        download=kw.pop("download", True),
        upload=kw.pop("upload", False),
        dwell=kw.pop("dwell", 1.0),
        burst_limit_bdp=kw.pop("burst_limit_bdp", 0.0),
        renew_lossy_sessions=kw.pop("renew_lossy_sessions", False),
        backoff_min=1.0,
        backoff_max=60.0,
    )
    return WarmupCore(settings, now=0.0, rand=lambda: 0.5, **kw)


QUIET = (m.WakeAt, m.SendPing)


def grown_auto(ignore: tuple[type, ...] = QUIET, **kw: Any) -> Playbook:
    """An auto core that grew its window and holds it (t = 1.0)."""
    pb = Playbook(core(**kw), ignore)
    pb >> m.Connected(RTT) << m.RequestGrowSlot
    pb >> m.GrowSlotGranted() << m.StartDummy(1, W, m.Purpose.GROW)
    # From the initial window: the first flight is small, the fetch grows the window.
    pb.at(0.5) >> m.DummyDone(1, W, Flight(14_480, W)) << m.StartDummy(2, W, m.Purpose.GROW)
    pb.at(1.0) >> m.DummyDone(2, W, Flight(int(0.9 * W), W)) << m.ReleaseGrowSlot
    pb.done()
    assert pb.state() is WarmState.HOLDING and pb.core.grown_once
    return pb


def test_auto_grows_once_then_holds_with_pings_and_checks_once() -> None:
    pb = grown_auto(ignore=(m.WakeAt,))
    interval = hold_ping_interval(RTT)
    assert interval == pytest.approx(0.14)
    pb.wake(1.0 + interval) << m.SendPing
    pb.wake(1.0 + 2 * interval) << m.SendPing
    pb.done()
    # The first check comes 8 RTOs after the hold began: it takes the pool's grow slot
    # (one measurement at a time) and fetches one window.
    pb.ignore = QUIET
    first_check = 1.0 + 8 * (RTT + 0.2)
    pb.tick(first_check) << m.RequestGrowSlot
    pb >> m.GrowSlotGranted() << m.StartDummy(3, W, m.Purpose.CHECK)
    pb.done()
    pb.at(first_check + 0.3) >> m.DummyDone(3, W, Flight(int(0.95 * W), W))
    pb << m.ReleaseGrowSlot
    pb.done()
    assert pb.core.verified is True and not pb.core.fallback_bursts
    assert pb.state() is WarmState.HOLDING


def check(pb: Playbook, at: float, job: int, first_rtt_bytes: int) -> None:
    """Run a due check at ``at`` that sees ``first_rtt_bytes`` in its first round trip."""
    pb.tick(at) << m.RequestGrowSlot
    pb >> m.GrowSlotGranted() << m.StartDummy(job, W, m.Purpose.CHECK)
    pb.at(at + 0.5) >> m.DummyDone(job, W, Flight(first_rtt_bytes, W))


def test_one_failed_check_grows_again_two_switch_to_bursts() -> None:
    pb = grown_auto()
    first_check = 1.0 + 8 * (RTT + 0.2)
    # Only the initial window's worth arrived in the first round trip.
    check(pb, first_check, 3, 14_480)
    pb << m.StartDummy(4, W, m.Purpose.GROW)  # the slot is kept: the grow starts at once
    pb.done()
    assert pb.state() is WarmState.RAMPING and not pb.attr("fallback_bursts")
    t = first_check + 1.0
    pb.at(t) >> m.DummyDone(4, W, Flight(W, W)) << m.ReleaseGrowSlot
    pb.done()
    # Checked again soon after the new grow; gone again: PINGs do not hold here.
    check(pb, t + 8 * (RTT + 0.2), 5, 14_480)
    assert pb.attr("fallback_bursts") and pb.state() is WarmState.RAMPING
    pb.pending.clear()
    t = pb.now + 0.5
    pb.at(t) >> m.DummyDone(6, W, Flight(W, W)) << m.ReleaseGrowSlot
    pb.done()
    # Holding with bursts now: no more PINGs, a burst of 0.75 window per 0.9 RTO.
    plan = pb.core.plan
    assert plan is not None and plan.size_bytes == math.ceil(0.75 * W)
    pb.ignore = (m.WakeAt,)  # no PINGs may come now
    pb.wake() << m.StartDummy(7, plan.size_bytes, m.Purpose.BURST)
    pb.done()
    assert pb.core._ping_at is None


def test_a_check_waits_for_the_slot_and_for_a_quiet_pool() -> None:
    pb = grown_auto()
    first_check = 1.0 + 8 * (RTT + 0.2)
    pb.tick(first_check) << m.RequestGrowSlot
    pb.done()
    # Another session measures first; then real traffic starts before the slot comes.
    pb.at(first_check + 0.1) >> m.RealStarted(here=False)
    pb >> m.GrowSlotGranted()
    pb.done()  # no check beside real traffic
    pb.at(first_check + 0.4) >> m.RealEnded(here=False)
    pb.done()
    assert not pb.core.jobs


def test_real_streams_elsewhere_counted_together_pause_a_grow_as_one_by_one_do() -> None:
    """RealElsewhere(started, ended) is the member's news of many streams on other
    sessions at once: starts counted first, so a grow is never begun for a pool that a
    known start already made busy."""
    pb = Playbook(core())
    pb >> m.Connected(RTT) << m.RequestGrowSlot
    pb >> m.GrowSlotGranted() << m.StartDummy(1, W, m.Purpose.GROW)
    pb.at(0.1) >> m.RealElsewhere(started=3, ended=1) << m.CancelDummies
    pb >> m.DummyFailed(1, m.Failure.CANCELLED)
    pb.done()
    assert pb.core.real_pool == 2 and pb.core.real_here == 0
    pb.at(0.3) >> m.RealElsewhere(started=1, ended=2)  # one still runs: no grow
    pb.done()
    assert pb.core.real_pool == 1
    pb.at(0.6) >> m.RealElsewhere(ended=1) << m.StartDummy(2, W, m.Purpose.GROW)
    pb.done()
    assert pb.core.real_pool == 0


def test_real_traffic_while_connecting_comes_first() -> None:
    """A real stream opened before the first PING answer: no dummy traffic beside it."""
    pb = Playbook(core())
    pb >> m.RealStarted(here=True) >> m.Connected(RTT)
    pb.done()  # no grow, no dummy data
    assert pb.state() is WarmState.SERVING
    # The real response was small (no verdict) and the window never grew: grow now.
    pb.at(0.3) >> m.RealEnded(here=True, flight=Flight(10_000, 10_000))
    pb << m.RequestGrowSlot
    pb.done()
    assert pb.state() is WarmState.RAMPING


def test_real_traffic_elsewhere_pauses_a_grow_until_the_pool_is_free() -> None:
    pb = Playbook(core())
    pb >> m.Connected(RTT) << m.RequestGrowSlot
    pb >> m.GrowSlotGranted() << m.StartDummy(1, W, m.Purpose.GROW)
    pb.at(0.1) >> m.RealStarted(here=False) << m.CancelDummies
    pb >> m.DummyFailed(1, m.Failure.CANCELLED)
    pb.done()
    assert pb.state() is WarmState.RAMPING and not pb.core.dummy_active
    pb.at(0.6) >> m.RealEnded(here=False) << m.StartDummy(2, W, m.Purpose.GROW)
    pb.done()


def test_a_real_response_that_shows_the_window_gone_grows_it_again() -> None:
    pb = grown_auto()
    pb.at(2.0) >> m.RealStarted(here=True)
    pb.done()
    assert pb.state() is WarmState.SERVING
    pb.at(2.9) >> m.RealEnded(here=True, flight=Flight(14_480, 4 * W)) << m.RequestGrowSlot
    pb.done()
    assert pb.state() is WarmState.RAMPING and pb.core.lost_streak == 1
    assert not pb.core.fallback_bursts, "one loss after a real transfer is not a verdict on PINGs"


def test_a_real_response_that_shows_the_window_held_counts_as_a_check() -> None:
    pb = grown_auto()
    pb.at(2.0) >> m.RealStarted(here=True)
    pb.at(2.5) >> m.RealEnded(here=True, flight=Flight(int(0.9 * W), 4 * W))
    pb.done()
    assert pb.state() is WarmState.HOLDING and pb.core.verified is True


def test_a_flight_in_the_middle_of_a_busy_period_is_judged_and_the_session_keeps_serving() -> None:
    pb = grown_auto()
    pb.at(2.0) >> m.RealStarted(here=True)
    pb.at(2.5) >> m.RealFlight(Flight(int(0.9 * W), 4 * W))
    pb.done()
    assert pb.state() is WarmState.SERVING and pb.core.verified is True
    pb.at(2.9) >> m.RealFlight(Flight(14_480, 4 * W))
    pb.done()
    assert pb.state() is WarmState.SERVING, "real traffic still runs here: no grow beside it"
    assert pb.core.lost_streak == 1
    # The busy period's end (its last response too small to tell) grows the lost window.
    pb.at(3.0) >> m.RealEnded(here=True, flight=Flight(1024, 1024)) << m.RequestGrowSlot
    pb.done()
    assert pb.state() is WarmState.RAMPING


def test_the_flight_floor_is_where_a_verdict_begins() -> None:
    pb = grown_auto()
    floor = pb.core.flight_floor
    assert 0 < floor <= W
    below = Flight(int(floor) - 1, int(floor) - 1)
    assert window_verdict(below, pb.core.window) is WindowVerdict.UNKNOWN
    at = Flight(math.ceil(floor), math.ceil(floor))
    assert window_verdict(at, pb.core.window) is not WindowVerdict.UNKNOWN
    assert core("ping").flight_floor == math.inf, "no verdict wanted before a window is known"


def test_ping_interval_follows_the_minimum_rtt_not_a_queued_one() -> None:
    pb = Playbook(core("ping"))
    pb >> m.Connected(RTT)
    pb.done()
    assert pb.state() is WarmState.HOLDING
    interval = hold_ping_interval(RTT)
    pb.wake(interval) << m.SendPing
    # A PING timed behind a full queue: 2 x RTT. The interval must not grow with it.
    pb.at(interval + 0.1) >> m.PingAnswered(2 * RTT)
    pb.wake(2 * interval) << m.SendPing
    pb.done()
    assert pb.core.min_rtt == RTT


def test_ping_never_sends_dummy_data_and_survives_real_traffic() -> None:
    pb = Playbook(core("ping"), QUIET)
    pb >> m.Connected(RTT) >> m.RealStarted(here=True)
    pb.at(1.0) >> m.RealEnded(here=True, flight=Flight(100, 4 * W))
    pb.done()
    assert pb.state() is WarmState.HOLDING and pb.core.jobs == {}


def test_throttling_honours_retry_after_and_success_resets_the_count() -> None:
    pb = Playbook(core("burst", dwell=0.5))
    pb >> m.Connected(RTT)
    pb << m.StartDummy(1, pb.core.plan.size_bytes if pb.core.plan else 0, m.Purpose.RAMP)
    pb.done()
    pb.at(0.2) >> m.DummyFailed(1, m.Failure.THROTTLED, "429", retry_after=7.0)
    pb.done()
    assert pb.state() is WarmState.BACKOFF and pb.core.throttled == 1
    pb.tick(6.9)
    pb.done()
    assert pb.state() is WarmState.BACKOFF
    pb.tick(7.2) << m.StartDummy  # ramping again
    pb.done()
    job = max(pb.core.jobs)
    pb.at(7.5) >> m.DummyDone(job, 1000)
    assert pb.core.throttled == 0


def test_back_off_without_retry_after_grows_exponentially() -> None:
    pb = Playbook(core("burst"))
    pb >> m.Connected(RTT)
    delays = []
    for attempt in range(3):
        job = max(pb.core.jobs)
        start = pb.now
        pb >> m.DummyFailed(job, m.Failure.THROTTLED, "503")
        pb.pending.clear()
        wake = pb.core.wake_at
        assert wake is not None
        delays.append(wake - start)
        pb.tick(wake + 0.001)
        pb.pending.clear()
        assert pb.state() is WarmState.RAMPING, attempt
    # equal jitter with rand = 0.5: 0.75 x 1, 2, 4 s
    assert delays == pytest.approx([0.75, 1.5, 3.0], abs=0.01)


def test_a_ramp_that_times_out_at_the_target_is_not_path_limited() -> None:
    pb = Playbook(core("burst", dwell=1.0, target_bps=50e6))
    pb >> m.Connected(RTT)
    pb.pending.clear()
    # Noisy samples around the target: no verdict until the ramp's time is up.
    t = 0.0
    for i in range(60):
        t = 0.1 * (i + 1)
        pb.at(t) >> m.RateSampled(60e6 if i % 2 else 40e6)
        pb.pending.clear()
        if pb.state() is not WarmState.RAMPING:
            break
    assert pb.state() is WarmState.HOLDING
    assert pb.core.path_limited_bps is None


def test_a_ramp_that_stalls_below_the_target_is_path_limited() -> None:
    pb = Playbook(core("burst", dwell=0.5, target_bps=50e6))
    pb >> m.Connected(RTT)
    pb.pending.clear()
    for i in range(30):
        pb.at(0.1 * (i + 1)) >> m.RateSampled(20e6)
        pb.pending.clear()
    assert pb.state() is WarmState.HOLDING
    assert pb.core.path_limited_bps == pytest.approx(20e6)


def test_history_stays_bounded_over_many_requests() -> None:
    pb = grown_auto()
    for i in range(500):
        pb.at(2.0 + i) >> m.RealStarted(here=True)
        pb.at(2.5 + i) >> m.RealEnded(here=True, flight=Flight(W, 2 * W))
        pb.pending.clear()
    assert len(pb.core.history) <= 64


def test_burst_shrinks_to_keepalives_while_the_pool_is_busy() -> None:
    pb = Playbook(core("burst", dwell=0.5))
    pb >> m.Connected(RTT)
    for i in range(10):
        pb.pending.clear()  # the ramp's dummy jobs
        pb.at(0.1 * (i + 1)) >> m.RateSampled(TARGET)
    pb.pending.clear()
    for job in list(pb.core.jobs):
        pb >> m.DummyFailed(job, m.Failure.CANCELLED)
    pb.pending.clear()
    assert pb.state() is WarmState.HOLDING
    pb >> m.RealStarted(here=False)
    wake = pb.core.wake_at
    assert wake is not None
    job = pb.core._next_job
    pb.tick(wake) << m.StartDummy(job, KEEPALIVE_BURST, m.Purpose.BURST)
    pb.done()


def test_a_rejected_warm_up_path_leaves_auto_holding_and_stops_burst() -> None:
    pb = Playbook(core())
    pb >> m.Connected(RTT) << m.RequestGrowSlot
    pb >> m.GrowSlotGranted() << m.StartDummy(1, W, m.Purpose.GROW)
    pb.at(0.2) >> m.DummyFailed(1, m.Failure.REJECTED, "GET /blob answered 404")
    pb << m.ReleaseGrowSlot
    pb.done()
    assert pb.state() is WarmState.HOLDING and "404" in (pb.core.last_error or "")
    pb.wake(0.2 + hold_ping_interval(RTT)) << m.SendPing
    pb.done()
    assert not pb.core.can_grow and pb.core._check_at is None

    burst = Playbook(core("burst"))
    burst >> m.Connected(RTT)
    burst.pending.clear()
    burst >> m.DummyFailed(1, m.Failure.REJECTED, "404")
    burst.done()
    assert burst.state() is WarmState.FAILED


def test_a_missed_ping_answer_checks_the_window_at_once() -> None:
    pb = grown_auto()
    pb.at(1.5) >> m.PingMissed() << m.RequestGrowSlot
    pb >> m.GrowSlotGranted() << m.StartDummy(3, W, m.Purpose.CHECK)
    pb.done()


def test_a_grow_without_a_free_stream_slot_gives_up_after_a_few_tries() -> None:
    pb = Playbook(core())
    pb >> m.Connected(RTT) << m.RequestGrowSlot
    pb >> m.GrowSlotGranted()
    t = 0.0
    for attempt in range(GROW_MAX_FETCHES):
        pb << m.StartDummy
        job = max(pb.core.jobs)
        pb >> m.DummyFailed(job, m.Failure.NO_SLOT)
        if attempt < GROW_MAX_FETCHES - 1:
            pb.done()
            t += 1.0
            pb.tick(t)
    pb << m.ReleaseGrowSlot
    pb.done()
    assert pb.state() is WarmState.HOLDING
    assert "stream slot" in (pb.core.last_error or "")


def test_upload_grows_by_our_own_window() -> None:
    pb = Playbook(core(download=False, upload=True), QUIET)
    pb >> m.Connected(RTT) << m.RequestGrowSlot
    pb >> m.GrowSlotGranted() << m.StartDummy(1, W, m.Purpose.GROW)
    pb.at(0.6) >> m.DummyDone(1, 0, None, sender_window=int(0.8 * W)) << m.ReleaseGrowSlot
    pb.done()
    assert pb.state() is WarmState.HOLDING
    # Checks on upload only read our own window: no bytes.
    pb.tick(0.6 + 8 * (RTT + 0.2)) << m.StartDummy(2, 0, m.Purpose.CHECK)
    pb.done()


def test_session_end_stops_everything() -> None:
    pb = grown_auto()
    pb.at(2.0) >> m.SessionEnded(draining=True, reason="GOAWAY")
    pb.done()
    assert pb.state() is WarmState.DRAINING
    assert pb.core.wake_at is None


def test_auto_caps_what_the_upstream_may_burst_at_one_window() -> None:
    pb = Playbook(core(burst_limit_bdp=1.0), QUIET)
    pb >> m.Connected(RTT) << m.LimitBurst(W) << m.RequestGrowSlot
    pb.done()
    # A smaller RTT seen later shrinks the window, and the clamp with it.
    pb.at(0.5) >> m.PingAnswered(RTT / 2) << m.LimitBurst(target_window(TARGET, RTT / 2))
    pb.done()
    upload = Playbook(core(download=False, upload=True, burst_limit_bdp=1.0), QUIET)
    upload >> m.Connected(RTT) << m.PaceSends(TARGET / 8) << m.RequestGrowSlot
    upload.done()


def test_the_session_score_is_its_window_as_last_measured() -> None:
    pb = Playbook(core("ping"), QUIET)
    pb >> m.Connected(RTT)
    assert pb.core.window_share == 0.1, "never used: assume the initial window"
    pb = grown_auto()
    assert pb.core.window_share == pytest.approx(0.9), "the grow's verified first flight"
    # A response that ended at 70% of the target rate: cubic cut its window after a loss.
    pb.at(2.0) >> m.RealStarted(here=True)
    pb.at(2.6) >> m.RealEnded(here=True, flight=Flight(W, 5 * W, tail_bps=0.7 * TARGET))
    pb.done()
    assert pb.core.window_share == pytest.approx(0.7)
    # A response too short to have a tail says nothing about the window it ended with.
    pb.at(3.0) >> m.RealStarted(here=True)
    pb.at(3.2) >> m.RealEnded(here=True, flight=Flight(W // 2, W // 2))
    pb.done()
    assert pb.core.window_share == pytest.approx(0.7)


def test_after_a_grow_that_fell_short_regrows_wait() -> None:
    """A lossy path cannot hold the target window: growing again at every verdict only
    loads it. The grow after a shortfall waits 15 s, then 30 s, ..."""
    pb = Playbook(core(), QUIET)
    pb >> m.Connected(RTT) << m.RequestGrowSlot
    pb >> m.GrowSlotGranted()
    for i in range(GROW_MAX_FETCHES):
        pb << m.StartDummy(i + 1, W, m.Purpose.GROW)
        pb.at(0.1 * (i + 1)) >> m.DummyDone(i + 1, W, Flight(30_000, W))
    pb << m.ReleaseGrowSlot
    pb.done()
    assert pb.state() is WarmState.HOLDING and pb.core.path_limited_bps is not None
    # A real response shows the small window again: no grow yet.
    pb.at(2.0) >> m.RealStarted(here=True)
    pb.at(2.5) >> m.RealEnded(here=True, flight=Flight(14_000, 4 * W))
    pb.done()
    assert pb.state() is WarmState.HOLDING
    # After the hold-off, it may grow again.
    pb.at(20.0) >> m.RealStarted(here=True)
    pb.at(20.5) >> m.RealEnded(here=True, flight=Flight(14_000, 4 * W)) << m.RequestGrowSlot
    pb.done()
    assert pb.state() is WarmState.RAMPING


def test_a_learned_idle_timeout_brings_a_keepalive_request_before_it() -> None:
    pb = grown_auto()
    pb.at(1.5) >> m.IdleTimeoutLearned(75.0)
    pb.done()
    # The last stream here was the grow, at t = 1.0: 0.7 x 75 s later, one byte.
    job = pb.core._next_job
    pb.tick(1.0 + 0.7 * 75.0) << m.StartDummy(job, 1, m.Purpose.KEEPALIVE)
    pb.done()
    pb.at(54.0) >> m.DummyDone(job, 1)
    pb.done()
    assert pb.core.wake_at is not None and pb.core._keepalive_at == pytest.approx(54.0 + 52.5)
    # ping sends no data, whatever the upstream does.
    ping = Playbook(core("ping"), QUIET)
    ping >> m.Connected(RTT) >> m.IdleTimeoutLearned(75.0)
    ping.tick(60.0)
    ping.done()


def test_a_target_within_the_initial_window_is_held_without_grows_or_checks() -> None:
    """100 Mbit/s over a 0.2 ms path (a LAN, loopback): a 2,500-byte BDP, which any
    connection puts in its first round trip. No grow, no check, no verdict from real
    responses; PINGs and, once learned, keep-alive requests still hold the connection."""
    pb = Playbook(core(), QUIET)
    pb >> m.Connected(0.0002)
    pb.done()
    assert pb.state() is WarmState.HOLDING
    assert pb.core.within_initial_window and pb.core.target_bdp == 2500
    assert pb.core.note == "nothing to warm: a 2,500-byte target fits the initial window"
    assert pb.core.flight_floor == math.inf
    # A real response that would read as a lost window elsewhere does not regrow here.
    pb.at(1.0) >> m.RealStarted(here=True)
    pb.at(1.5) >> m.RealEnded(here=True, flight=Flight(1_000, 4 * W))
    pb >> m.PingMissed()
    pb.tick(300.0)
    pb.done()
    assert pb.state() is WarmState.HOLDING and pb.core.checks == 0 and pb.core.grows == 0
    # The last stream here ended long before 0.7 x 3 s: a keep-alive request at once, the
    # next 0.7 x 3 s after it.
    job = pb.core._next_job
    pb.at(301.0) >> m.IdleTimeoutLearned(3.0) << m.StartDummy(job, 1, m.Purpose.KEEPALIVE)
    pb.at(301.1) >> m.DummyDone(job, 1)
    pb.tick(301.1 + 0.7 * 3.0) << m.StartDummy(job + 1, 1, m.Purpose.KEEPALIVE)
    pb.done()


def test_a_shorter_rtt_learned_while_holding_ends_the_checks() -> None:
    """The first PING's RTT said 20 ms, a later one 0.2 ms: the check that was due is
    dropped instead of timing a flight shorter than the receiver's scheduling."""
    pb = Playbook(core(), QUIET)
    w = target_window(TARGET, 0.020)
    pb >> m.Connected(0.020) << m.RequestGrowSlot
    pb >> m.GrowSlotGranted() << m.StartDummy(1, w, m.Purpose.GROW)
    pb.at(0.5) >> m.DummyDone(1, w, Flight(w, w)) << m.ReleaseGrowSlot
    pb.done()
    assert pb.state() is WarmState.HOLDING and pb.core.wake_at is not None
    pb.at(0.6) >> m.PingAnswered(0.0002)
    pb.tick(30.0)
    pb.done()
    assert pb.core.checks == 0 and pb.core._check_at is None


def lossy_response(pb: Playbook, at: float, window_left: int, out_of_order: int) -> None:
    """A real response here from ``at`` to ``at`` + 1 s whose last two round trips carried
    ``window_left`` bytes each, with ``out_of_order`` packets out of order meanwhile."""
    pb.at(at) >> m.RealStarted(here=True)
    tail_bps = window_left * 8 / RTT
    flight = Flight(int(0.9 * W), 2 * W, tail_bps)
    pb.at(at + 1.0) >> m.RealEnded(here=True, flight=flight, out_of_order=out_of_order)


def test_a_window_loss_cut_below_a_fresh_start_renews_the_session() -> None:
    """After a busy period with loss, a window left at 100 KB of a 1 MB target (a fresh
    connection needs 6.1 round trips for the target, this one 10): renew the session, and
    grow nothing in the meantime (the pool hears of the lossy path from the renewal)."""
    pb = grown_auto(renew_lossy_sessions=True)
    lossy_response(pb, 2.0, 100_000, out_of_order=40)
    pb << m.Renew
    pb.done()
    assert pb.state() is WarmState.HOLDING and pb.core.keeps_fresh
    assert pb.core.note == "lossy path: fresh connections instead of loss-cut windows"
    # No check comes due while the path counts as lossy.
    pb.tick(40.0)
    pb.done()
    assert pb.core.checks == 0


def test_no_renewal_without_loss_or_with_a_window_worth_keeping() -> None:
    pb = grown_auto(renew_lossy_sessions=True)
    # A small tail but nothing out of order: not cut by loss (e.g. a slow backend).
    lossy_response(pb, 2.0, 100_000, out_of_order=0)
    pb.done()
    # Loss, but cubic left 0.7 of the window: far better than a fresh start.
    lossy_response(pb, 5.0, int(0.7 * W), out_of_order=40)
    pb.done()
    assert not pb.core.keeps_fresh
    # Off by default: beside a competing flow a new connection's slow start ends early.
    off = grown_auto()
    lossy_response(off, 2.0, 100_000, out_of_order=40)
    off.done()
    assert not off.core.keeps_fresh


def test_on_a_lossy_path_a_new_session_holds_without_growing_until_the_hold_ends() -> None:
    pb = Playbook(core(), QUIET)
    pb >> m.PathLossy(until=60.0) >> m.Connected(RTT)
    pb.done()
    assert pb.state() is WarmState.HOLDING and pb.core.grows == 0
    # A real response after the lossy hold ended: never grown, so it grows now.
    pb.at(61.0) >> m.RealStarted(here=True)
    pb.at(61.5) >> m.RealEnded(here=True) << m.RequestGrowSlot
    pb.done()
    assert pb.state() is WarmState.RAMPING


def test_news_of_a_lossy_path_stops_a_grow_in_flight() -> None:
    pb = Playbook(core(), QUIET)
    pb >> m.Connected(RTT) << m.RequestGrowSlot
    pb >> m.GrowSlotGranted() << m.StartDummy(1, W, m.Purpose.GROW)
    pb.at(0.2) >> m.PathLossy(until=60.2) << m.CancelDummies << m.ReleaseGrowSlot
    pb.done()
    assert pb.state() is WarmState.HOLDING and not pb.core.jobs


def test_news_of_a_lossy_path_gives_back_the_slot_a_check_waited_for() -> None:
    pb = grown_auto()
    first_check = 1.0 + 8 * (RTT + 0.2)
    pb.tick(first_check) << m.RequestGrowSlot
    pb.done()
    pb.at(first_check + 0.1) >> m.PathLossy(until=first_check + 60) << m.ReleaseGrowSlot
    pb.done()
    # Granted late: given back at once, no check.
    pb >> m.GrowSlotGranted() << m.ReleaseGrowSlot
    pb.done()
    assert pb.core.checks == 0 and not pb.core.jobs
