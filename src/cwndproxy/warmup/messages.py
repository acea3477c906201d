"""What the warm-up core hears (events) and what it asks for (commands).

Small frozen dataclasses, in the manner of hypercorn's protocol events and mitmproxy's
commands: the core (``warmup/core.py``) turns events into commands without any I/O, and
the asyncio driver (``warmup/controller.py``) carries the commands out and reports back.
Time is not an event field: every ``handle`` call passes ``now``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cwndproxy.warmup.policy import Flight


class Purpose(enum.Enum):
    RAMP = "ramp"  # burst: paced continuous traffic up to the target rate
    GROW = "grow"  # auto: grow the window once, measured by the next fetch's first flight
    CHECK = "check"  # auto: is the held window still there?
    BURST = "burst"  # burst (and auto's fallback): keep the window by using it
    KEEPALIVE = "keepalive"  # auto: a 1-byte request before the upstream's idle timeout


class Failure(enum.Enum):
    THROTTLED = "throttled"  # 429 / 503
    REJECTED = "rejected"  # e.g. 404: retrying cannot help
    CANCELLED = "cancelled"  # we cancelled it (real traffic came first)
    NO_SLOT = "no_slot"  # it would have taken the last stream slot
    LOST = "lost"  # the session went away


# -- events -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Connected:
    rtt: float  # first PING round trip, seconds


@dataclass(frozen=True)
class TimerFired:
    pass


@dataclass(frozen=True)
class RateSampled:
    """Received (download) or sent (upload) bits per second over the last sample period."""

    bps: float


@dataclass(frozen=True)
class RealStarted:
    """Real traffic began: with ``here``, this session went from no real stream to one (the
    coordinator posts only that edge; the core also takes them one by one)."""

    here: bool  # on this session, or elsewhere in the pool


@dataclass(frozen=True)
class RealEnded:
    """Real traffic ended: with ``here``, this session's last real stream ended."""

    here: bool
    flight: Flight | None = None  # what the response's first round trip carried
    # Packets that arrived out of order on this session's connection while it was busy
    # (tcpi_rcv_ooopack): each loss on the download path makes some. None: not read.
    out_of_order: int | None = None


@dataclass(frozen=True)
class RealFlight:
    """A real response on this session ended while others still run here, and what its
    first round trip carried can tell about the window (a verdict, or a tail rate). The
    session's ends in the middle of a busy period are not news otherwise: ``RealStarted``
    and ``RealEnded`` mark only the edges of its busy periods."""

    flight: Flight


@dataclass(frozen=True)
class RealElsewhere:
    """Real streams that started and ended on other sessions of the pool since the last
    such event: ``RealStarted(here=False)`` and ``RealEnded(here=False)``, counted. A
    session only needs to know whether real traffic runs anywhere in the pool, and under
    load every request would otherwise be news to every member (controller.Inbox)."""

    started: int = 0
    ended: int = 0


@dataclass(frozen=True)
class DummyDone:
    job: int
    received: int = 0
    flight: Flight | None = None
    # Upload: our own congestion window after the job, from TCP_INFO (bytes).
    sender_window: int | None = None


@dataclass(frozen=True)
class DummyFailed:
    job: int
    failure: Failure
    detail: str = ""
    retry_after: float | None = None


@dataclass(frozen=True)
class PingAnswered:
    rtt: float


@dataclass(frozen=True)
class PingMissed:
    pass


@dataclass(frozen=True)
class GrowSlotGranted:
    pass


@dataclass(frozen=True)
class IdleTimeoutLearned:
    """The upstream closed a session that had carried no stream for this long (a GOAWAY
    while idle, e.g. nginx's keepalive_timeout, 75 s, which PINGs do not reset)."""

    seconds: float


@dataclass(frozen=True)
class PathLossy:
    """A session of the pool was renewed because loss had cut its window: until ``until``
    (monotonic seconds) the pool keeps fresh connections rather than growing any."""

    until: float


@dataclass(frozen=True)
class SessionEnded:
    draining: bool  # GOAWAY (streams finish) rather than a lost connection
    reason: str = ""


Event = (
    Connected
    | TimerFired
    | RateSampled
    | RealStarted
    | RealEnded
    | RealFlight
    | RealElsewhere
    | DummyDone
    | DummyFailed
    | PingAnswered
    | PingMissed
    | GrowSlotGranted
    | IdleTimeoutLearned
    | PathLossy
    | SessionEnded
)


# -- commands -----------------------------------------------------------------------------
@dataclass(frozen=True)
class StartDummy:
    job: int
    size: int  # bytes per direction; 0 with upload only: just read our own window
    purpose: Purpose


@dataclass(frozen=True)
class CancelDummies:
    pass


@dataclass(frozen=True)
class SendPing:
    timeout: float


@dataclass(frozen=True)
class WakeAt:
    at: float | None  # monotonic seconds; None: no timer


@dataclass(frozen=True)
class LimitBurst:
    """Bound what the upstream may send at once after idle (download): the credit its
    metered HTTP/2 connection window holds while no response body arrives. A window held
    above one BDP would otherwise burst more into the path than it holds when the next
    response starts, and the drops cost round trips (upstream/credit.py)."""

    size: int  # bytes


@dataclass(frozen=True)
class PaceSends:
    """Cap our own sending rate on this connection (SO_MAX_PACING_RATE; Linux then paces
    even without the fq qdisc): the upload counterpart of ClampWindow, so that our own held
    window leaves as a paced stream rather than a burst that overflows the bottleneck."""

    rate: float  # bytes per second


@dataclass(frozen=True)
class RequestGrowSlot:
    """One session of the pool grows at a time, so it gets the whole path."""


@dataclass(frozen=True)
class ReleaseGrowSlot:
    pass


@dataclass(frozen=True)
class Renew:
    """Replace this session with a fresh connection (a graceful retirement: the pool dials
    the replacement at once). Its window was cut by loss below what a fresh connection's
    slow start, with no ssthresh yet, delivers sooner."""

    reason: str


Command = (
    StartDummy
    | CancelDummies
    | SendPing
    | WakeAt
    | RequestGrowSlot
    | ReleaseGrowSlot
    | LimitBurst
    | PaceSends
    | Renew
)
