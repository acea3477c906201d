"""The warm-up controller's decisions, without I/O: ``handle(event, now) -> commands``.

One core per upstream session. The asyncio driver (``warmup/controller.py``) feeds it
events (connected, a real stream started or ended anywhere in the pool, a dummy job done,
a PING answered, a timer) and carries out what it returns (start a dummy job, cancel
dummies, send a PING, wake me at T). Tests script events and read commands; no sockets,
no sleeps.

Strategies:
- ``auto`` (default): grow the window once to one BDP of the target (one session of the
  pool at a time, dummy fetches sized to the window, measured by what the next fetch's
  first round trip carries); hold it with PINGs less than one RTO apart; verify the hold
  (a check fetch a few RTOs after the first hold, then rarely, and every real response
  large enough to show it); grow again when the window is gone; if a check finds that
  PINGs do not hold on this upstream, hold with bursts instead.
- ``ping``: hold with PINGs only; never send dummy data.
- ``burst`` (the original spec): paced continuous dummy traffic until the target rate holds,
  then a burst every interval.
Real traffic always comes first: a real stream on a session stops its dummy traffic, and
auto's grows and checks wait until the whole pool is free of real traffic.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from cwndproxy.pool.policy import backoff_delay
from cwndproxy.warmup import messages as m
from cwndproxy.warmup.pacing import TokenBucket
from cwndproxy.warmup.policy import (
    GROW_MAX_FETCHES,
    LOSSY_PATH_HOLD,
    RAMP_MAX_DWELLS,
    RAMP_REACH,
    UNKNOWN_WINDOW_SHARE,
    WINDOW_LOST,
    WINDOW_REACHED,
    Action,
    BurstPlan,
    Flight,
    RateSample,
    WarmEvent,
    WarmState,
    WindowVerdict,
    bdp_bytes,
    estimated_rto,
    fits_initial_window,
    fresh_connection_beats,
    grown,
    hold_ping_interval,
    mean_rate,
    next_phase,
    plan_bursts,
    ramp_verdict,
    stagger_offset,
    target_window,
    transition,
    window_verdict,
)

# While a real transfer runs on *another* session of the pool, a holding ``burst`` session
# sends only this much: enough that its server is never idle for an RTO, too little to
# compete with the real transfer for the shared bottleneck.
KEEPALIVE_BURST = 16 * 1024
# Verification checks may cost at most this share of the path rate (pool-wide).
CHECK_BUDGET = 0.01
MIN_CHECK_INTERVAL = 60.0
# The first check comes this many RTOs after the first hold: a window that PINGs do not
# keep is long gone by then.
FIRST_CHECK_RTOS = 8
MIN_FIRST_CHECK = 2.0
# Checks that find the window gone this many times in a row (each after a fresh grow, with
# PINGs going out) mean PINGs do not hold on this upstream: hold with bursts. Not one: a
# first flight that shared the path with other traffic looks like a lost window, and bursts
# cost a quarter of the path for good.
FALLBACK_AFTER_LOSSES = 2
HISTORY = 64
NO_SLOT_RETRY = 1.0
# A keep-alive request goes out after this share of the upstream's learned idle timeout.
KEEPALIVE_FRACTION = 0.7
# After a grow that fell short of the target (loss or a competing flow limits the window),
# growing again at every lost-window verdict only adds load to a path that cannot hold
# more: wait this long first, doubling up to the maximum.
REGROW_HOLDOFF_MIN = 15.0
REGROW_HOLDOFF_MAX = 120.0


@dataclass(frozen=True)
class CoreSettings:
    strategy: str  # auto | burst | ping
    target_bps: float  # per-connection target rate
    path_bps: float  # the whole path (for the check budget)
    download: bool  # dummy downloads possible (a download path is configured)
    upload: bool  # dummy uploads possible
    size_bytes: int = 0  # burst size; 0 = auto
    interval_ms: int = 0  # burst interval; 0 = auto
    dwell: float = 2.0
    backoff_min: float = 1.0
    backoff_max: float = 60.0
    # auto: limit what the upstream (download) or we (upload) can put in flight at once to
    # this many target windows; 0 = no limit.
    burst_limit_bdp: float = 0.0
    # auto: renew a session whose window loss cut below a fresh connection's slow start.
    renew_lossy_sessions: bool = False


class WarmupCore:
    def __init__(
        self,
        settings: CoreSettings,
        *,
        now: float,
        index: int = 0,
        pool_size: int = 1,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.index = index
        self.pool_size = pool_size
        self._rand = rand
        self.now = now
        self.state = WarmState.CONNECTING
        self.state_since = now
        self.history: deque[tuple[float, WarmState]] = deque([(now, self.state)], maxlen=HISTORY)
        self.min_rtt: float | None = None
        self.window = 0  # the target window, bytes
        # auto has nothing to grow or check: the target fits in the window any connection
        # starts and restarts with (fits_initial_window). It still holds the connection.
        # Set with the window (it changes only with the RTT): the pool reads it through
        # flight_floor at every response's end.
        self.within_initial_window = self._fits_initial_window()
        self.burst_limit: int | None = None  # the upstream's idle credit in force, bytes
        self.pacing: float | None = None  # our own pacing limit in force, bytes/s
        self.plan: BurstPlan | None = None
        # Real streams on this session, and in the whole pool (this one included).
        self.real_here = 0
        self.real_pool = 0
        # Dummy jobs in flight: job id -> purpose.
        self.jobs: dict[int, m.Purpose] = {}
        self._next_job = 1
        # Timers (absolute, None = off).
        self._ping_at: float | None = None
        self._burst_at: float | None = None
        self._check_at: float | None = None
        self._backoff_until: float | None = None
        self._ramp_next: float | None = None
        self._ramp_deadline: float | None = None
        self._grow_retry_at: float | None = None
        self._keepalive_at: float | None = None
        self._wake_at: float | None = None
        # The upstream's idle timeout (a GOAWAY to a session without streams), if learned,
        # and when this session last had a stream.
        self.idle_timeout: float | None = None
        self._last_stream_at = now
        # Ramp (burst strategy).
        self.rates: deque[RateSample] = deque(maxlen=200)
        self._bucket: TokenBucket | None = None
        # Grow and verification (auto).
        self._slot_requested = False
        self._slot_held = False
        self.grow_fetches = 0
        self.grown_once = False
        self.verified: bool | None = None  # does the held window survive? None: unknown
        self.lost_streak = 0
        self.check_losses = 0  # consecutive checks that found the window gone
        self._check_wanted = False  # a check waits for the grow slot
        self.fallback_bursts = False  # PINGs do not hold here: bursts instead
        self.window_seen: int | None = None  # last first-flight (or sender window), bytes
        # The session's window as the last measurement showed it, in target windows: a grow
        # or check's first flight, or the tail rate of a real response (None: never seen).
        self.window_share_seen: float | None = None
        self.window_reached: int | None = None  # set when growing stopped short
        self._lost_pending = False
        self._regrow_holdoff = 0.0
        self._regrow_not_before = 0.0
        # Until when the pool keeps fresh connections on a lossy path (PathLossy).
        self.lossy_until = 0.0
        # The upstream refused the warm-up path (e.g. 404): auto then only holds.
        self.grow_rejected = False
        # Counters and notes (dashboard, tests).
        self.bursts = 0
        self.keepalive_bursts = 0
        self.grows = 0
        self.checks = 0
        self.pings = 0
        self.pings_missed = 0
        self.throttled = 0  # consecutive throttled dummy requests
        self.path_limited_bps: float | None = None
        self.last_error: str | None = None
        self._out: list[m.Command] = []

    # -- views ------------------------------------------------------------------------------
    @property
    def warm(self) -> bool:
        return self.state in (WarmState.HOLDING, WarmState.SERVING)

    @property
    def dummy_active(self) -> bool:
        """Dummy data in flight: a request here would queue behind it at the server."""
        return bool(self.jobs)

    @property
    def note(self) -> str:
        """One line for the dashboard: what the engine concluded, if anything unusual."""
        if self.path_limited_bps:
            return f"path-limited at {self.path_limited_bps / 1e6:.1f}Mb/s"
        if self.settings.strategy != "auto":
            return ""
        if self.fallback_bursts:
            return "PINGs do not hold this upstream's window: bursts"
        if self.can_grow and self.within_initial_window:
            return f"nothing to warm: a {self.target_bdp:,}-byte target fits the initial window"
        if self.keeps_fresh:
            return "lossy path: fresh connections instead of loss-cut windows"
        if self.grow_rejected:
            return f"holding what real traffic grew ({self.last_error})"
        if not self.can_grow:
            return "holding what real traffic grew (no warm-up path)"
        return ""

    @property
    def window_share(self) -> float:
        """This session's window as last measured, in target windows (capped at 1): the
        pool prefers the biggest. Never measured: assume the initial window."""
        if self.window_share_seen is None or not self.window:
            return UNKNOWN_WINDOW_SHARE
        return min(1.0, self.window_share_seen)

    @property
    def wants_rates(self) -> bool:
        return self.settings.strategy == "burst" and self.state is WarmState.RAMPING

    @property
    def wake_at(self) -> float | None:
        return self._wake_at

    @property
    def holds_with_pings(self) -> bool:
        s = self.settings.strategy
        return s == "ping" or (s == "auto" and not self.fallback_bursts)

    @property
    def holds_with_bursts(self) -> bool:
        s = self.settings.strategy
        return s == "burst" or (s == "auto" and self.fallback_bursts)

    @property
    def can_grow(self) -> bool:
        return (self.settings.download or self.settings.upload) and not self.grow_rejected

    @property
    def target_bdp(self) -> int:
        """The per-connection target's bandwidth-delay product (unlike ``window``, not
        raised to the smallest window worth a grow fetch)."""
        return math.ceil(bdp_bytes(self.settings.target_bps, self._rtt))

    @property
    def keeps_fresh(self) -> bool:
        """auto on a lossy path (PathLossy): a window cut by loss is worth less than a new
        connection's slow start, and a grow fetch would only spend that slow start."""
        return self.settings.strategy == "auto" and self.now < self.lossy_until

    @property
    def grows_windows(self) -> bool:
        """auto grows, checks and judges this session's window."""
        return (
            self.settings.strategy == "auto"
            and self.can_grow
            and not self.within_initial_window
            and not self.keeps_fresh
        )

    # -- the one entry point --------------------------------------------------------------------
    def handle(self, event: m.Event, now: float) -> list[m.Command]:
        self.now = now
        self._out = []
        handler = getattr(self, f"_on_{type(event).__name__}")
        handler(event)
        if isinstance(event, m.DummyDone | m.DummyFailed | m.RealFlight) or (
            isinstance(event, m.RealStarted | m.RealEnded) and event.here
        ):
            # A stream on this session: the upstream's idle clock starts again.
            self._last_stream_at = now
            self._arm_keepalive()
        self._run_timers()
        self._schedule()
        out, self._out = self._out, []
        return out

    # -- transitions ------------------------------------------------------------------------
    def _fire(self, event: WarmEvent) -> None:
        step = transition(self.state, event)
        if step.state is not self.state:
            self.state = step.state
            self.state_since = self.now
            self.history.append((self.now, step.state))
        {
            Action.START_RAMP: self._start_ramp,
            Action.START_HOLD: self._start_hold,
            Action.SERVE: self._serve,
            Action.BACK_OFF: self._back_off,
            Action.STOP: self._stop,
        }[step.action]()

    def _start_ramp(self) -> None:
        if self.real_here:
            # Real traffic got here first (e.g. while connecting): it has priority.
            self._fire(WarmEvent.REAL_STARTED)
            return
        if self.settings.strategy == "burst":
            assert self.plan is not None
            self.rates.clear()
            self._bucket = TokenBucket(
                self.settings.target_bps / 8, self.plan.size_bytes, clock=lambda: self.now
            )
            self._ramp_next = self.now
            self._ramp_deadline = self.now + max(5.0, RAMP_MAX_DWELLS * self.settings.dwell)
            return
        self.grow_fetches = 0
        self.window_reached = None
        if not self._slot_held and not self._slot_requested:
            self._slot_requested = True
            self._out.append(m.RequestGrowSlot())
        self._maybe_grow()

    def _start_hold(self) -> None:
        self._defer_check()
        self._release_slot()
        self._ramp_next = self._ramp_deadline = None
        if self.real_here:
            self._fire(WarmEvent.REAL_STARTED)
            return
        if self.holds_with_pings and self._ping_at is None:
            self._ping_at = self.now + hold_ping_interval(self._rtt)
        if self.holds_with_bursts:
            assert self.plan is not None
            phase = stagger_offset(self.index, self.pool_size, self.plan.interval)
            self._burst_at = next_phase(self.now, phase, self.plan.interval)
        if self.grows_windows and self._check_at is None:
            self._check_at = self.now + self._first_check_delay()

    def _serve(self) -> None:
        self._defer_check()
        self._cancel_dummies()
        self._burst_at = None
        self._ramp_next = self._ramp_deadline = None
        self._release_slot()

    def _back_off(self) -> None:
        self._defer_check()
        self._cancel_dummies()
        self._release_slot()

    def _stop(self) -> None:
        self._check_wanted = False
        self._cancel_dummies()
        self._release_slot()
        self._ping_at = self._burst_at = self._check_at = None
        self._backoff_until = self._ramp_next = self._ramp_deadline = None
        self._grow_retry_at = self._keepalive_at = None

    # -- events ----------------------------------------------------------------------------
    def _on_Connected(self, event: m.Connected) -> None:
        self.min_rtt = event.rtt
        self._sizes()
        if self.settings.strategy == "ping" or (
            self.settings.strategy == "auto" and not self.grows_windows
        ):
            # Nothing to grow with, nothing to grow, or a lossy path: hold what real traffic
            # grows.
            self._fire(WarmEvent.CONNECTED_HOLD)
        else:
            self._fire(WarmEvent.CONNECTED)

    def _on_TimerFired(self, event: m.TimerFired) -> None:
        pass  # _run_timers does the work

    def _on_RateSampled(self, event: m.RateSampled) -> None:
        if not self.wants_rates:
            return
        self.rates.append(RateSample(self.now, event.bps))
        verdict = ramp_verdict(list(self.rates), self.settings.target_bps, self.settings.dwell)
        if verdict is not None:
            self._end_ramp(verdict)

    def _on_RealStarted(self, event: m.RealStarted) -> None:
        if not event.here:
            self._on_RealElsewhere(m.RealElsewhere(started=1))
            return
        self.real_pool += 1
        self.real_here += 1
        if self.state in (WarmState.RAMPING, WarmState.HOLDING, WarmState.BACKOFF):
            self._fire(WarmEvent.REAL_STARTED)

    def _on_RealElsewhere(self, event: m.RealElsewhere) -> None:
        # Starts first: of a stream that started and ended since the last event, the start
        # came first; and a grow is never begun only to be cancelled by a start that is
        # already known.
        self.real_pool += event.started
        if event.started and self.settings.strategy == "auto" and self.jobs:
            # A grow or check here would take bandwidth from the real transfer elsewhere.
            self._cancel_dummies()
        if event.ended:
            self.real_pool = max(0, self.real_pool - event.ended)
            self._maybe_grow()

    def _on_RealEnded(self, event: m.RealEnded) -> None:
        if not event.here:
            self._on_RealElsewhere(m.RealElsewhere(ended=1))
            return
        self.real_pool = max(0, self.real_pool - 1)
        self.real_here = max(0, self.real_here - 1)
        if event.flight is not None:
            self._judge(event.flight)
        if self.real_here == 0 and self._loss_cut_the_window(event):
            # No grow here either (the pool hears the same from the renewal): this session
            # is retired, or, if the pool renewed another a moment ago, held as it is.
            self.lossy_until = max(self.lossy_until, self.now + LOSSY_PATH_HOLD)
        if self.state is WarmState.SERVING and self.real_here == 0:
            regrow = self.grows_windows
            regrow = regrow and (self._lost_pending or not self.grown_once)
            regrow = regrow and self.now >= self._regrow_not_before
            self._lost_pending = False
            self._fire(WarmEvent.WINDOW_LOST if regrow else WarmEvent.REAL_ENDED)
        elif self.real_pool == 0:
            self._maybe_grow()

    def _on_RealFlight(self, event: m.RealFlight) -> None:
        self._judge(event.flight)

    def _loss_cut_the_window(self, event: m.RealEnded) -> bool:
        """After a busy period with loss on the download path: renew the session when the
        window the last response ended with is so small that a new connection's slow start
        (no ssthresh yet) would beat it. A window cut by loss is held as faithfully as a
        grown one, and with it the cut ssthresh: congestion avoidance from there grows a
        packet per round trip. A drop or two on a clean path leaves cubic 0.7 of a big
        window: nowhere near this."""
        flight = event.flight
        if (
            self.settings.strategy != "auto"
            or not self.settings.renew_lossy_sessions
            or not self.settings.download
            or self.within_initial_window
            or not event.out_of_order
            or flight is None
            or flight.tail_bps is None
            or not self.min_rtt
            or self.state not in (WarmState.SERVING, WarmState.HOLDING)
        ):
            return False
        window_left = int(flight.tail_bps / 8 * self.min_rtt)
        if not fresh_connection_beats(window_left, self.window):
            return False
        self._out.append(
            m.Renew(
                f"renewed: loss cut its window to {window_left:,} bytes of {self.window:,}"
                " (a new connection's slow start beats that)"
            )
        )
        return True

    def _on_PathLossy(self, event: m.PathLossy) -> None:
        if self.settings.strategy != "auto":
            return
        self.lossy_until = max(self.lossy_until, event.until)
        self._check_at = None
        self._check_wanted = False
        if self.state is WarmState.RAMPING:
            # A grow would spend the fresh connection's slow start on dummy data.
            self._cancel_dummies()
            self._fire(WarmEvent.PLATEAU)  # holds, and gives the grow slot back
        elif self.state is WarmState.HOLDING:
            self._cancel_dummies()  # a check in flight
            self._release_slot()  # held or asked for a check

    def _judge(self, flight: Flight) -> None:
        """What a real response showed of the window: held or lost (its first flight), and
        the window it ended with (its tail)."""
        if self.wants_verdicts:
            verdict = window_verdict(flight, self.window)
            if verdict is WindowVerdict.HELD:
                self._window_held(flight.first_rtt_bytes)
            elif verdict is WindowVerdict.LOST:
                self._window_lost(flight.first_rtt_bytes)
        if flight.tail_bps is not None and self.min_rtt:
            # The window the response ended with: newer than what its first flight showed.
            self.window_share_seen = flight.tail_bps / 8 * self.min_rtt / self.window

    @property
    def wants_verdicts(self) -> bool:
        return self.grows_windows and bool(self.window)

    @property
    def flight_floor(self) -> float:
        """The fewest bytes a real response must carry for its first flight to give a
        verdict on the window (window_verdict); infinite while no verdict is wanted."""
        if self.wants_verdicts:
            return self.window * WINDOW_REACHED
        return math.inf

    def _on_DummyDone(self, event: m.DummyDone) -> None:
        purpose = self.jobs.pop(event.job, None)
        self.throttled = 0
        if purpose is m.Purpose.BURST:
            self.bursts += 1
        elif purpose is m.Purpose.GROW:
            self._grow_done(event)
        elif purpose is m.Purpose.CHECK:
            self._check_done(event)

    def _on_DummyFailed(self, event: m.DummyFailed) -> None:
        purpose = self.jobs.pop(event.job, None)
        if event.failure is m.Failure.THROTTLED:
            self.throttled += 1
            self.last_error = event.detail
            delay = event.retry_after
            if delay is None or delay < 0:
                s = self.settings
                delay = backoff_delay(self.throttled - 1, s.backoff_min, s.backoff_max, self._rand)
            self._backoff_until = self.now + min(delay, self.settings.backoff_max)
            if self.state in (WarmState.RAMPING, WarmState.HOLDING):
                self._fire(WarmEvent.THROTTLED)
        elif event.failure is m.Failure.REJECTED:
            self.last_error = event.detail
            if self.settings.strategy == "auto":
                # Growing cannot work, holding still can: keep what real traffic grows.
                self.grow_rejected = True
                self._check_at = None
                if self.state is WarmState.RAMPING:
                    self._fire(WarmEvent.PLATEAU)
            elif self.state not in (WarmState.DRAINING, WarmState.FAILED):
                self._fire(WarmEvent.FAILED)
        elif purpose is m.Purpose.CHECK:
            # Cancelled by real traffic, no free stream slot, or lost: look again later.
            self._check_at = self.now + NO_SLOT_RETRY
            if self.state is WarmState.HOLDING:
                self._release_slot()
        elif event.failure is m.Failure.NO_SLOT and purpose is m.Purpose.GROW:
            # The upstream allows so few streams that dummy traffic would block a real
            # request: count the attempt, try again later, give up after a few.
            self.grow_fetches += 1
            if self.grow_fetches >= GROW_MAX_FETCHES and self.state is WarmState.RAMPING:
                self.last_error = "no free stream slot for warm-up traffic"
                self._fire(WarmEvent.PLATEAU)
            else:
                self._grow_retry_at = self.now + NO_SLOT_RETRY
        # CANCELLED and LOST: a grow resumes when the pool is idle again (_maybe_grow); a
        # lost session is reported by SessionEnded.

    def _on_PingAnswered(self, event: m.PingAnswered) -> None:
        self.pings += 1
        if self.min_rtt is None or event.rtt < self.min_rtt:
            self.min_rtt = event.rtt
            self._sizes()

    def _on_PingMissed(self, event: m.PingMissed) -> None:
        self.pings_missed += 1
        if self.wants_verdicts and self.grown_once:
            # No answer: the server may have been silent for an RTO. Look at once.
            self._check_at = self.now

    def _on_IdleTimeoutLearned(self, event: m.IdleTimeoutLearned) -> None:
        if self.idle_timeout is None or event.seconds < self.idle_timeout:
            self.idle_timeout = event.seconds
        self._arm_keepalive()

    def _arm_keepalive(self) -> None:
        """A held window outlives nothing if the upstream closes the connection: before its
        idle timeout, a 1-byte request (auto only: ping sends no data by definition)."""
        if self.idle_timeout is None or self.settings.strategy != "auto" or not self.can_grow:
            self._keepalive_at = None
            return
        self._keepalive_at = self._last_stream_at + KEEPALIVE_FRACTION * self.idle_timeout

    def _on_GrowSlotGranted(self, event: m.GrowSlotGranted) -> None:
        self._slot_requested = False
        self._slot_held = True
        if self.settings.strategy == "auto" and self.state is WarmState.RAMPING:
            self._maybe_grow()
        elif self.settings.strategy == "auto" and self._check_wanted:
            self._maybe_check()
        else:
            self._release_slot()

    def _on_SessionEnded(self, event: m.SessionEnded) -> None:
        if self.state in (WarmState.DRAINING, WarmState.FAILED):
            return
        self.last_error = self.last_error or event.reason or None
        self._fire(WarmEvent.GOAWAY if event.draining else WarmEvent.FAILED)

    # -- auto: grow and verify ----------------------------------------------------------------
    def _maybe_grow(self) -> None:
        """Start the next grow fetch when this session holds the grow slot, no real traffic
        runs anywhere in the pool and no grow is in flight."""
        if (
            not self.grows_windows
            or self.state is not WarmState.RAMPING
            or not self._slot_held
            or self.real_pool
            or self.jobs
            or (self._grow_retry_at is not None and self.now < self._grow_retry_at)
        ):
            return
        self._grow_retry_at = None
        self.grows += 1
        self._start_job(self.window, m.Purpose.GROW)

    def _grow_done(self, event: m.DummyDone) -> None:
        self.grow_fetches += 1
        shown = self._shown(event)
        if shown is not None:
            self.window_seen = shown
            self.window_share_seen = shown / self.window
        if self.state is not WarmState.RAMPING:
            return
        if shown is not None and grown(shown, self.window):
            self.grown_once = True
            self.path_limited_bps = None
            self._regrow_holdoff = 0.0
            self._fire(WarmEvent.TARGET_REACHED)
        elif self.grow_fetches >= GROW_MAX_FETCHES:
            # The window did not reach the target: the path (or the upstream) is slower
            # than the target. Hold what there is and say so.
            self.grown_once = True
            self.window_reached = shown
            if shown is not None and self.min_rtt:
                self.path_limited_bps = shown * 8 / self.min_rtt
            self._regrow_holdoff = min(
                REGROW_HOLDOFF_MAX, max(REGROW_HOLDOFF_MIN, 2 * self._regrow_holdoff)
            )
            self._regrow_not_before = self.now + self._regrow_holdoff
            self._fire(WarmEvent.PLATEAU)
        else:
            self._maybe_grow()

    def _maybe_check(self) -> None:
        """Run the wanted check when this session holds the grow slot (one measurement in
        the pool at a time: a first flight that shares the path looks like a lost window)
        and no real traffic runs anywhere."""
        if (
            not self._check_wanted
            or self.state is not WarmState.HOLDING
            or not self._slot_held
            or self.real_pool
            or self.jobs
        ):
            return
        self._check_wanted = False
        self._start_job(self.window, m.Purpose.CHECK)

    def _check_done(self, event: m.DummyDone) -> None:
        self.checks += 1
        shown = self._shown(event)
        if shown is None:
            self._check_at = self.now + self._check_interval()
        elif shown >= WINDOW_LOST * self.window:
            self._window_held(shown)
        else:
            self._window_lost(shown, from_check=True)
            if self.state is WarmState.HOLDING and self.now >= self._regrow_not_before:
                self._lost_pending = False
                self._fire(WarmEvent.WINDOW_LOST)  # grows again, keeping the slot
                return
        if self.state is WarmState.HOLDING:
            self._release_slot()

    def _shown(self, event: m.DummyDone) -> int | None:
        """The window a dummy job saw: the first flight of its download, or our own
        window after its upload (the smaller when both ran)."""
        seen = []
        if event.flight is not None and event.flight.total_bytes >= 0.7 * self.window:
            seen.append(event.flight.first_rtt_bytes)
        if event.sender_window is not None:
            seen.append(event.sender_window)
        return min(seen) if seen else None

    def _window_held(self, shown: int) -> None:
        self.window_seen = shown
        self.window_share_seen = shown / self.window if self.window else None
        self.verified = True
        self.lost_streak = 0
        self.check_losses = 0
        self._check_at = self.now + self._check_interval()

    def _window_lost(self, shown: int, *, from_check: bool = False) -> None:
        self.window_seen = shown
        self.window_share_seen = shown / self.window if self.window else None
        self.lost_streak += 1
        self._lost_pending = True
        self._check_at = self.now + self._check_interval()
        if not from_check:
            return
        self.check_losses += 1
        if self.holds_with_pings and self.grown_once and self.check_losses >= FALLBACK_AFTER_LOSSES:
            # Grown, held with PINGs, found gone twice by checks in a quiet pool: PINGs do
            # not keep this upstream's window (not a Linux sender, a middlebox answering
            # PINGs, ...). Bursts instead.
            self.fallback_bursts = True
            self._ping_at = None
            self.verified = False
        else:
            # Look again soon after the new grow: a real failure shows twice quickly.
            self._check_at = None

    def _first_check_delay(self) -> float:
        return max(MIN_FIRST_CHECK, FIRST_CHECK_RTOS * estimated_rto(self._rtt))

    def _check_interval(self) -> float:
        """Checks cost one window each; keep all of the pool's within CHECK_BUDGET."""
        per_check = self.window * 8 * self.pool_size
        return max(MIN_CHECK_INTERVAL, per_check / (CHECK_BUDGET * self.settings.path_bps))

    # -- burst: ramp ------------------------------------------------------------------------
    def _end_ramp(self, verdict: WarmEvent) -> None:
        if verdict is WarmEvent.PLATEAU:
            rate = mean_rate(self.rates, self.settings.dwell)
            # Only a rate below the target is a limit worth showing (a ramp can also time
            # out with noisy samples at the target).
            if rate < RAMP_REACH * self.settings.target_bps:
                self.path_limited_bps = rate
        self._cancel_dummies()
        self._fire(verdict)

    # -- timers ----------------------------------------------------------------------------
    def _run_timers(self) -> None:
        now = self.now
        if self._ping_at is not None and now >= self._ping_at:
            interval = hold_ping_interval(self._rtt)
            self._ping_at = now + interval
            if self.state not in (WarmState.DRAINING, WarmState.FAILED, WarmState.CONNECTING):
                self._out.append(m.SendPing(timeout=max(1.0, 4 * interval)))
        if self._backoff_until is not None and now >= self._backoff_until:
            self._backoff_until = None
            if self.state is WarmState.BACKOFF:
                self._fire(WarmEvent.BACKOFF_OVER)
        if self.state is WarmState.RAMPING:
            self._ramp_timers()
        if self._grow_retry_at is not None and now >= self._grow_retry_at:
            self._maybe_grow()
        if self.state is WarmState.HOLDING:
            self._hold_timers()

    def _ramp_timers(self) -> None:
        now = self.now
        if self.settings.strategy != "burst":
            return
        if self._ramp_deadline is not None and now >= self._ramp_deadline:
            self._end_ramp(WarmEvent.PLATEAU)
            return
        if self._ramp_next is not None and now >= self._ramp_next and len(self.jobs) < 2:
            assert self.plan is not None and self._bucket is not None
            chunk = self.plan.size_bytes
            self._start_job(chunk, m.Purpose.RAMP)
            self._ramp_next = now + self._bucket.reserve(chunk)

    def _hold_timers(self) -> None:
        now = self.now
        if self._burst_at is not None and now >= self._burst_at:
            assert self.plan is not None
            self._burst_at = next_phase(
                now,
                stagger_offset(self.index, self.pool_size, self.plan.interval),
                self.plan.interval,
            )
            if not self.jobs and not self.real_here:
                size = self.plan.size_bytes
                if self.real_pool:
                    size = min(size, KEEPALIVE_BURST)
                    self.keepalive_bursts += 1
                self._start_job(size, m.Purpose.BURST)
        if self._keepalive_at is not None and now >= self._keepalive_at:
            self._keepalive_at = None
            if not self.jobs and not self.real_here:
                self._start_job(1, m.Purpose.KEEPALIVE)
        if self._check_at is not None and now >= self._check_at:
            if not self.grows_windows:
                # A later PING showed a shorter RTT than the first, or the path turned out
                # lossy: nothing to verify.
                self._check_at = None
            elif self.real_pool or self.jobs:
                self._check_at = now + NO_SLOT_RETRY  # real traffic first; look later
            elif not self.settings.download:
                # Upload only: the check reads our own window from TCP_INFO, sends nothing.
                self._check_at = None
                self._start_job(0, m.Purpose.CHECK)
            else:
                self._check_at = None
                self._check_wanted = True
                if not self._slot_held and not self._slot_requested:
                    self._slot_requested = True
                    self._out.append(m.RequestGrowSlot())
                self._maybe_check()

    def _schedule(self) -> None:
        candidates = [
            t
            for t in (
                self._ping_at,
                self._backoff_until,
                self._grow_retry_at,
                self._ramp_next if self.state is WarmState.RAMPING and len(self.jobs) < 2 else None,
                self._ramp_deadline if self.state is WarmState.RAMPING else None,
                self._burst_at if self.state is WarmState.HOLDING else None,
                self._keepalive_at if self.state is WarmState.HOLDING else None,
                self._check_at if self.state is WarmState.HOLDING else None,
            )
            if t is not None
        ]
        wake = min(candidates) if candidates else None
        if wake != self._wake_at:
            self._wake_at = wake
            self._out.append(m.WakeAt(wake))

    # -- helpers ---------------------------------------------------------------------------
    @property
    def _rtt(self) -> float:
        return self.min_rtt if self.min_rtt is not None else 0.1

    def _fits_initial_window(self) -> bool:
        return self.settings.strategy == "auto" and fits_initial_window(
            self.settings.target_bps, self._rtt
        )

    def _sizes(self) -> None:
        s = self.settings
        self.window = target_window(s.target_bps, self._rtt)
        self.within_initial_window = self._fits_initial_window()
        self.plan = plan_bursts(s.target_bps, self._rtt, s.size_bytes, s.interval_ms)
        if s.strategy == "auto" and s.burst_limit_bdp > 0:
            if s.download:
                limit = math.ceil(s.burst_limit_bdp * self.window)
                if limit != self.burst_limit:
                    self.burst_limit = limit
                    self._out.append(m.LimitBurst(limit))
            if s.upload and self.pacing is None:
                # At the target rate itself, not the burst fraction: paced sends at the
                # bottleneck's rate never build a queue, so any window may go out at once.
                self.pacing = s.target_bps / 8
                self._out.append(m.PaceSends(self.pacing))

    def _start_job(self, size: int, purpose: m.Purpose) -> None:
        job = self._next_job
        self._next_job += 1
        self.jobs[job] = purpose
        self._out.append(m.StartDummy(job, size, purpose))

    def _cancel_dummies(self) -> None:
        if self.jobs:
            self._out.append(m.CancelDummies())
            self.jobs.clear()

    def _defer_check(self) -> None:
        """A check waiting for the slot when the state changes: ask again later."""
        if self._check_wanted:
            self._check_wanted = False
            self._check_at = self.now + NO_SLOT_RETRY

    def _release_slot(self) -> None:
        if self._slot_held or self._slot_requested:
            self._slot_held = self._slot_requested = False
            self._out.append(m.ReleaseGrowSlot())
