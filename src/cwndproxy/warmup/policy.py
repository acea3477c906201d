"""Warm-up decisions as plain data and pure functions: the state table, burst sizing,
phase stagger and the end-of-ramp test. No I/O, no clocks: callers pass measurements in.

Why bursts look the way they do (Linux sender, ``tcp_slow_start_after_idle=1``):
- Sending after an idle gap longer than one RTO (about RTT + 200 ms) restarts the window
  from the initial window (``tcp_cwnd_restart``). So the server must send at least once per
  RTO: the burst interval stays safely below RTT + 200 ms.
- Every RTO in which the sender was not cwnd-limited, the window decays halfway towards
  what was used (``tcp_cwnd_application_limited``). So the window settles near what each
  burst uses: a burst of 0.75 BDP (of the per-connection target) holds ~0.75 BDP.

Holding a window W costs W per RTO at least, i.e. RTT / (RTT + 200 ms) of the target rate
for W = 1 BDP (29% at 80 ms). The defaults hold 0.75 BDP at 0.9 RTO spacing: ~24% at
80 ms. A request then starts at 0.75 of the target rate and reaches it within an RTT or
two instead of the ~log2(BDP / 14 KB) RTTs of a restart from the initial window.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

# Linux's minimum RTO; the RTO is about srtt + max(4 * rttvar, 200 ms).
LINUX_RTO_MIN = 0.200
# Fraction of the estimated RTO at which auto bursts are spaced: margin for RTT jitter and
# for the request's one-way trip to the server.
AUTO_INTERVAL_FRACTION = 0.9
# Burst size in BDPs of the per-connection target (see the module docstring).
BURST_BDP_FACTOR = 0.75
MIN_BURST_BYTES = 64 * 1024


class WarmState(enum.Enum):
    CONNECTING = "connecting"
    RAMPING = "ramping"  # continuous paced dummy traffic until the target rate holds
    HOLDING = "holding"  # periodic bursts keep the window
    SERVING = "serving"  # real traffic on the session: no new dummy data
    BACKOFF = "backoff"  # the upstream throttled dummy requests (429/503)
    DRAINING = "draining"  # GOAWAY: no new streams
    FAILED = "failed"  # the session is gone or warm-up cannot work (e.g. 404)


class WarmEvent(enum.Enum):
    CONNECTED = "connected"
    TARGET_REACHED = "target_reached"
    PLATEAU = "plateau"
    REAL_STARTED = "real_started"
    REAL_ENDED = "real_ended"
    THROTTLED = "throttled"
    BACKOFF_OVER = "backoff_over"
    GOAWAY = "goaway"
    FAILED = "failed"


S, E = WarmState, WarmEvent
_ACTIVE = (S.RAMPING, S.HOLDING, S.SERVING, S.BACKOFF)

# Every allowed transition. Anything not listed is a bug and raises.
TRANSITIONS: dict[tuple[WarmState, WarmEvent], WarmState] = {
    (S.CONNECTING, E.CONNECTED): S.RAMPING,
    (S.CONNECTING, E.FAILED): S.FAILED,
    (S.RAMPING, E.TARGET_REACHED): S.HOLDING,
    (S.RAMPING, E.PLATEAU): S.HOLDING,
    (S.RAMPING, E.REAL_STARTED): S.SERVING,
    (S.HOLDING, E.REAL_STARTED): S.SERVING,
    (S.SERVING, E.REAL_ENDED): S.HOLDING,
    (S.RAMPING, E.THROTTLED): S.BACKOFF,
    (S.HOLDING, E.THROTTLED): S.BACKOFF,
    (S.BACKOFF, E.BACKOFF_OVER): S.RAMPING,
    (S.BACKOFF, E.REAL_STARTED): S.SERVING,
    **{(state, E.GOAWAY): S.DRAINING for state in (S.CONNECTING, *_ACTIVE)},
    **{(state, E.FAILED): S.FAILED for state in (*_ACTIVE, S.DRAINING)},
}


class InvalidTransition(Exception):
    pass


def next_state(state: WarmState, event: WarmEvent) -> WarmState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"{event.value} is not valid in state {state.value}") from None


@dataclass(frozen=True)
class BurstPlan:
    size_bytes: int
    interval: float  # seconds, start to start

    def share_of(self, target_bps: float) -> float:
        """Dummy traffic while holding as a share of the target rate."""
        return self.size_bytes * 8 / self.interval / target_bps


def estimated_rto(rtt: float) -> float:
    return rtt + LINUX_RTO_MIN


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
