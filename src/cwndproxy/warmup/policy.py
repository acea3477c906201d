"""Warm-up decisions as plain data and pure functions: the state table with its side
effects, the PING hold interval, window targets and verdicts, burst sizing, phase stagger
and the end-of-ramp test. No I/O, no clocks: callers pass measurements in.

Why a PING holds a Linux sender's window (measured on this project's testbed, see
docs/WARMUP.md), ``tcp_slow_start_after_idle=1``, cubic or reno:
- ``tcp_slow_start_after_idle_check`` (run when new data is queued) restarts the window
  from the initial window if the sender has not sent for longer than one RTO
  (``tcp_cwnd_restart``: halved once per RTO of idle). A PING answer is a send: it
  refreshes the sender's last-send time (``tcp_event_data_sent``).
- ``tcp_cwnd_validate`` (RFC 2861) shrinks an application-limited window halfway towards
  what was used once the window has not been validated for an RTO
  (``tcp_cwnd_application_limited``). But every ACK of new data runs ``tcp_cong_avoid``,
  which re-stamps ``snd_cwnd_stamp`` even when cubic itself does not grow the window. The
  ACK of a PING answer is such an ACK, so the decay never comes due either.
So one PING answer per RTO, and its ACK, keep the whole window, for as long as the PINGs
go on. The same holds for our own window on upload: our PING is our send, the server's
ACK of it re-stamps ours. Congestion controls that own the whole loop (``cong_control``,
e.g. BBR) skip both paths.

Bursts (strategy ``burst``, and ``auto``'s fallback when a check finds that PINGs do not
hold on this upstream): a burst of 0.75 BDP every 0.9 RTO keeps a window of about that
size, at a cost of ~RTT / (RTT + 200 ms) x 0.75 of the target rate (24% at 80 ms).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

# Linux's minimum RTO; the RTO is srtt + max(4 * rttvar, 200 ms) >= RTT + 200 ms.
LINUX_RTO_MIN = 0.200
# Fraction of the estimated RTO at which auto bursts are spaced: margin for RTT jitter and
# for the request's one-way trip to the server.
AUTO_INTERVAL_FRACTION = 0.9
# Burst size in BDPs of the per-connection target (see the module docstring).
BURST_BDP_FACTOR = 0.75
MIN_BURST_BYTES = 64 * 1024
# PINGs go out every this fraction of the smallest possible RTO (min RTT + 200 ms): the
# server's sends must never be an RTO apart, whatever the timer slip and path jitter.
HOLD_PING_FRACTION = 0.5
# A window counts as grown (or still held) when the first round trip of a response
# carries at least this share of the target window.
WINDOW_REACHED = 0.7
# Below this share a held window counts as lost.
WINDOW_LOST = 0.4
# A session that never carried data starts near the initial window: this share of a target
# window is what the pool assumes of it.
UNKNOWN_WINDOW_SHARE = 0.1
# The grow phase stops after this many dummy fetches whatever the window reached.
GROW_MAX_FETCHES = 6
MIN_WINDOW_BYTES = 64 * 1024
# After a session was renewed because loss had cut its window, the pool grows no window
# for this long (each renewal starts it again): on a lossy path a grow fetch spends the
# fresh connection's slow start and leaves it with a loss-cut ssthresh of its own.
LOSSY_PATH_HOLD = 60.0
# At most one renewal per this many seconds, pool-wide: each costs a handshake.
MIN_RENEW_INTERVAL = 1.0
# A fresh connection's window, and the most an idle one falls back to: Linux starts (and
# restarts after an idle RTO, ``tcp_cwnd_restart``) at 10 segments (RFC 6928), 1,448 bytes
# each on a 1,500-byte MTU path with timestamps. Senders with a bigger MSS start bigger.
INITIAL_WINDOW_BYTES = 10 * 1448


class WarmState(enum.Enum):
    CONNECTING = "connecting"
    RAMPING = "ramping"  # growing the window with dummy traffic
    HOLDING = "holding"  # keeping the window: PINGs (auto, ping) or periodic bursts
    SERVING = "serving"  # real traffic on the session: no new dummy data
    BACKOFF = "backoff"  # the upstream throttled dummy requests (429/503)
    DRAINING = "draining"  # GOAWAY: no new streams
    FAILED = "failed"  # the session is gone or warm-up cannot work (e.g. 404)


class WarmEvent(enum.Enum):
    CONNECTED = "connected"
    # connected, and nothing to grow: ping, no warm-up path, a target within the initial
    # window, or a lossy path (a fresh connection is kept, not grown)
    CONNECTED_HOLD = "connected_hold"
    TARGET_REACHED = "target_reached"
    PLATEAU = "plateau"
    WINDOW_LOST = "window_lost"
    REAL_STARTED = "real_started"
    REAL_ENDED = "real_ended"
    THROTTLED = "throttled"
    BACKOFF_OVER = "backoff_over"
    GOAWAY = "goaway"
    FAILED = "failed"


class Action(enum.Enum):
    """The side effect of entering a state through one transition."""

    START_RAMP = "start_ramp"  # begin growing the window
    START_HOLD = "start_hold"  # begin holding it (PING timer, bursts, checks)
    SERVE = "serve"  # cancel dummy streams: their bytes would queue ahead of the response
    BACK_OFF = "back_off"  # cancel dummy streams, wake up after the back-off delay
    STOP = "stop"  # cancel everything; the session is going away


@dataclass(frozen=True)
class Transition:
    state: WarmState
    action: Action


S, E, A = WarmState, WarmEvent, Action
_ACTIVE = (S.RAMPING, S.HOLDING, S.SERVING, S.BACKOFF)

# Every allowed transition and its side effect. Anything not listed is a bug and raises.
TRANSITIONS: dict[tuple[WarmState, WarmEvent], Transition] = {
    (S.CONNECTING, E.CONNECTED): Transition(S.RAMPING, A.START_RAMP),
    (S.CONNECTING, E.CONNECTED_HOLD): Transition(S.HOLDING, A.START_HOLD),
    (S.RAMPING, E.TARGET_REACHED): Transition(S.HOLDING, A.START_HOLD),
    (S.RAMPING, E.PLATEAU): Transition(S.HOLDING, A.START_HOLD),
    (S.HOLDING, E.WINDOW_LOST): Transition(S.RAMPING, A.START_RAMP),
    (S.RAMPING, E.REAL_STARTED): Transition(S.SERVING, A.SERVE),
    (S.HOLDING, E.REAL_STARTED): Transition(S.SERVING, A.SERVE),
    (S.BACKOFF, E.REAL_STARTED): Transition(S.SERVING, A.SERVE),
    (S.SERVING, E.REAL_ENDED): Transition(S.HOLDING, A.START_HOLD),
    # A real response showed the window gone: grow it again once the session is free.
    (S.SERVING, E.WINDOW_LOST): Transition(S.RAMPING, A.START_RAMP),
    (S.RAMPING, E.THROTTLED): Transition(S.BACKOFF, A.BACK_OFF),
    (S.HOLDING, E.THROTTLED): Transition(S.BACKOFF, A.BACK_OFF),
    (S.BACKOFF, E.BACKOFF_OVER): Transition(S.RAMPING, A.START_RAMP),
    **{(state, E.GOAWAY): Transition(S.DRAINING, A.STOP) for state in (S.CONNECTING, *_ACTIVE)},
    **{
        (state, E.FAILED): Transition(S.FAILED, A.STOP)
        for state in (S.CONNECTING, *_ACTIVE, S.DRAINING)
    },
}


class InvalidTransition(Exception):
    pass


def transition(state: WarmState, event: WarmEvent) -> Transition:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"{event.value} is not valid in state {state.value}") from None


def next_state(state: WarmState, event: WarmEvent) -> WarmState:
    return transition(state, event).state


# -- holding with PINGs ------------------------------------------------------------------
def estimated_rto(rtt: float) -> float:
    """The smallest RTO a Linux sender can have on this path."""
    return rtt + LINUX_RTO_MIN


def hold_ping_interval(min_rtt: float) -> float:
    """PING period that keeps the server's sends less than one RTO apart. From the
    *minimum* RTT: a PING timed while a transfer fills the queue measures queueing too, and
    an RTO estimated from it would let the real RTO expire between PINGs."""
    return HOLD_PING_FRACTION * estimated_rto(min_rtt)


# -- windows ---------------------------------------------------------------------------------
def bdp_bytes(target_bps: float, rtt: float) -> float:
    """The target's bandwidth-delay product, in bytes."""
    return target_bps / 8 * rtt


def target_window(target_bps: float, rtt: float) -> int:
    """The window that fills the target rate: one bandwidth-delay product, in bytes."""
    return max(MIN_WINDOW_BYTES, math.ceil(bdp_bytes(target_bps, rtt)))


def fits_initial_window(target_bps: float, rtt: float) -> bool:
    """A target whose bandwidth-delay product fits in the initial window needs no warming:
    a cold or idle-reset sender already puts one BDP in its first round trip. Such paths
    (a LAN, loopback) also have RTTs below what a receiver can time a flight by (an event
    loop's wake-up on a loaded host), so a grow or check there would measure scheduling
    noise, and a false "lost" verdict costs a regrow or a fallback to bursts."""
    return bdp_bytes(target_bps, rtt) <= INITIAL_WINDOW_BYTES


def fresh_connection_beats(window_left: int, target_window: int) -> bool:
    """Would a new connection fetch one target window sooner than one whose loss-cut window
    is ``window_left`` bytes? The new one starts at the initial window with no ssthresh and
    doubles: log2(target / IW + 1) round trips. The old one sends about its window per
    round trip and, in congestion avoidance after the loss, grows it by a packet per RTT:
    target / window_left round trips. On a path with 1% random loss the windows left were
    4-22 packets of a 69-packet target, and a fresh connection dialled ahead fetched 2 BDP
    in 279 ms at the median against a reused one's 505 (docs/WARMUP.md)."""
    if window_left <= 0:
        return True
    fresh_rtts = math.log2(target_window / INITIAL_WINDOW_BYTES + 1)
    return target_window / window_left > fresh_rtts


@dataclass(frozen=True)
class Flight:
    """What the first round trip of a response carried: the bytes that arrived within one
    (minimum) RTT of the first byte. A sender with window W sends W at once, and the next
    flight waits for the ACKs, so this is min(W, BDP), read where the response lands."""

    first_rtt_bytes: int
    total_bytes: int
    # Bits per second over the response's last two round trips (None: too short): the
    # window the sender ended with, per RTT. It shows a window held *below* one BDP (after
    # a loss, cubic keeps 0.7 of it and regrows only over seconds of transfer), and, unlike
    # the whole response's rate, not a window that started small and grew.
    tail_bps: float | None = None


class WindowVerdict(enum.Enum):
    HELD = "held"
    LOST = "lost"
    UNKNOWN = "unknown"  # the response was too small to show the window


def window_verdict(flight: Flight, window: int) -> WindowVerdict:
    """Was a window of ``window`` bytes in place when this response started?"""
    # A response smaller than the window ends inside its first flight: it cannot tell a
    # full window from one just big enough for it.
    shown = min(window, flight.total_bytes)
    if flight.total_bytes < window * WINDOW_REACHED:
        return WindowVerdict.UNKNOWN
    if flight.first_rtt_bytes >= WINDOW_LOST * shown:
        return WindowVerdict.HELD
    return WindowVerdict.LOST


def grown(first_rtt_bytes: int, window: int) -> bool:
    return first_rtt_bytes >= WINDOW_REACHED * window


# -- bursts ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BurstPlan:
    size_bytes: int
    interval: float  # seconds, start to start

    def share_of(self, target_bps: float) -> float:
        """Dummy traffic while holding as a share of the target rate."""
        return self.size_bytes * 8 / self.interval / target_bps


def plan_bursts(
    target_bps: float, rtt: float, size_bytes: int = 0, interval_ms: int = 0
) -> BurstPlan:
    """Burst size and interval; 0 in the config means auto (from the measured RTT)."""
    if size_bytes > 0:
        size = size_bytes
    else:
        size = max(MIN_BURST_BYTES, math.ceil(target_bps / 8 * rtt * BURST_BDP_FACTOR))
    interval = (
        interval_ms / 1000 if interval_ms > 0 else AUTO_INTERVAL_FRACTION * estimated_rto(rtt)
    )
    return BurstPlan(size, interval)


def stagger_offset(index: int, count: int, interval: float) -> float:
    """Spread burst phases over the interval so most sessions are quiet at any moment."""
    return (index % max(count, 1)) * interval / max(count, 1)


def next_phase(now: float, phase: float, interval: float) -> float:
    """The next time after ``now`` that is ``phase`` modulo ``interval``."""
    return now + interval - ((now - phase) % interval)


@dataclass(frozen=True)
class RateSample:
    at: float  # seconds
    bps: float


# Reaching this share of the target counts as reached: with a pool that fills the path,
# each connection's fair share minus TLS/HTTP/2 framing is a few percent below 1/pool.
RAMP_REACH = 0.85
# Ramping ends (as a plateau) after this many dwell periods at most; noisy rate samples
# can otherwise hide a plateau for a long time.
RAMP_MAX_DWELLS = 4


def ramp_verdict(
    samples: Sequence[RateSample],
    target_bps: float,
    dwell: float,
    *,
    reach: float = RAMP_REACH,
    growth: float = 0.05,
) -> WarmEvent | None:
    """TARGET_REACHED when every sample of the last ``dwell`` seconds is at least
    ``reach`` x target; PLATEAU when the last dwell's mean grew less than ``growth`` over the
    dwell before it while below target; None while ramping should go on."""
    if not samples:
        return None
    now = samples[-1].at
    if now - samples[0].at < dwell:
        return None
    recent = [s for s in samples if s.at > now - dwell]
    if recent and all(s.bps >= reach * target_bps for s in recent):
        return WarmEvent.TARGET_REACHED
    earlier = [s for s in samples if now - 2 * dwell < s.at <= now - dwell]
    if len(recent) >= 2 and len(earlier) >= 2:
        mean_recent = sum(s.bps for s in recent) / len(recent)
        mean_earlier = sum(s.bps for s in earlier) / len(earlier)
        if mean_recent < reach * target_bps and mean_recent <= mean_earlier * (1 + growth):
            return WarmEvent.PLATEAU
    return None


def mean_rate(samples: Sequence[RateSample], horizon: float) -> float:
    """Mean of the samples of the last ``horizon`` seconds (0 without samples)."""
    if not samples:
        return 0.0
    recent = [s.bps for s in samples if s.at >= samples[-1].at - horizon]
    return sum(recent) / len(recent)
