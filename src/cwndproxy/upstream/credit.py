"""A metered HTTP/2 connection receive window: the upstream's first flight is bounded.

The problem it solves (measured on the testbed, see docs/WARMUP.md): a held congestion
window is whatever the last transfer left, often 1.4-2 BDP under cubic. The next response
after idle then leaves the server as one burst of that size, overflows a bottleneck queue
of about one BDP, and the tail drops cost one or two round trips. The TCP receive window
cannot bound it: ``TCP_WINDOW_CLAMP`` is overwritten by receive-buffer autotuning
(``tcp_rcv_space_adjust`` "makes the window clamp follow along"), and Linux never shrinks
a window it has advertised.

The HTTP/2 connection window is ours alone to grow: a server may not send more DATA than we
granted, and every grant is a WINDOW_UPDATE we choose to send. So:
- while no response body is arriving, the credit the server holds is topped up to the
  *idle* target B (one BDP): a response's first flight is at most B, whatever the cwnd;
- once data flows, grants keep 1.5B outstanding: enough for the path rate (one BDP in
  flight, plus half a round trip of queueing or WINDOW_UPDATE latency), and never so much
  that the server's window, however large, puts more than half a BDP in the queue. A first
  version granted 2B at the first DATA: the server then sent the extra B as a second burst
  one RTT in, on top of its ACK-clocked slow start, and the queue still overflowed;
- when the remaining bytes of the active responses are known (content-length), grants
  stop at "remaining + B", so the credit left when they end is B again;
- while data flows, grants are paced by a token bucket: at most B/4 at once, refilled
  at the active credit per minimum RTT (1.5B per RTT), plus, when a response starts,
  the active credit's extra over the idle one at once (as before pacing: it reaches the
  server with the first ACKs and keeps the pipe full). Without pacing, receipt that comes
  in lumps turns into a burst from the server. Lumps come from the receiver stalling
  (its process not scheduled, or busy: loop lags of 10-20 ms with 5-7 ms of CPU used were
  measured on the 2-core testbed) and from a retransmission filling a hole (the kernel
  holds what came after it). Meanwhile the server used up its credit and the pipe
  drained; one catch-up grant of the whole active credit then leaves the server as one
  burst into the emptied pipe, and a one-BDP queue drops the excess. Traced on the
  20 ms, 200 Mbit/s path: three WINDOW_UPDATEs of 700 kB within 5 ms after an 11 ms
  stall, 45 packets dropped; in another run two such drops cut the origin's cwnd from
  611 to 303 packets for the rest of the run. Steady receipt at the path rate (about
  1.1B per RTT) stays under the bucket's rate, so pacing only acts on a lump. Idle
  top-ups are not paced: nothing is sent while idle.

It caps a single connection's transfer at about 1.5 x the configured bandwidth; a
bandwidth set below the path's real rate caps it below that rate.

This class replaces h2's connection-level ``WindowManager`` (same interface; h2 calls
``window_consumed`` on receipt, ``process_bytes`` on acknowledgement, ``window_opened`` on
our explicit increments). It holds no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import h2.windows

# No connection window below this, whatever the burst limit: tiny windows would cost a
# WINDOW_UPDATE per few frames.
MIN_CREDIT = 64 * 1024
# Before a burst limit is known (the first RTT of a connection): no cap while data flows.
UNCAPPED = 64 * 1024 * 1024
# Credit outstanding while data flows, in burst limits.
ACTIVE_FACTOR = 1.5
# The most the active credit grows for a path whose RTT other traffic has inflated.
MAX_RTT_FACTOR = 4.0
# While data flows, grants are paced (a token bucket): at most this many burst limits at
# once, then the active credit per minimum RTT. A quarter: with the whole burst limit at
# once, 8 runs of 15 fetches on the 20 ms, 200 Mbit/s cell dropped as many packets as
# unpaced grants beside them (617 against 652); with a quarter, 85, 11 and 97 in three
# such sets (against 758, 802 and 452; docs/BENCHMARKS.md, "The near-fast cell").
PACE_DEPTH = 0.25


class InboundCredit(h2.windows.WindowManager):
    def __init__(
        self,
        initial: int = 65535,
        buffer_allowance: int = UNCAPPED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(max_window_size=initial)
        # Received bytes we may hold unconsumed before they hold back credit: the memory
        # bound an unmetered connection window gives (each stream's own window bounds it
        # per stream). Below it, grants follow receipt, so the server's credit does not
        # wait for the proxy to forward the data: at 1.5 burst limits, that lag would be
        # the difference between the path rate and less.
        self.buffer_allowance = buffer_allowance
        self.burst_limit: int | None = None
        # Set by the session: is a response body arriving, and how much of it (and of any
        # other active response) is still to come? None = unknown (no content-length).
        self._active = False
        self.remaining: int | None = None
        # RTT measured while this connection was idle over the minimum RTT: the queue other
        # traffic keeps at the bottleneck. A byte credit sized for the minimum RTT would
        # then carry only a fraction of the rate: with a bulk flow filling a one-BDP queue
        # the RTT doubles. Idle samples only, so our own transfers' queue cannot feed it.
        self.rtt_factor = 1.0
        # Received but not yet consumed (still in our stream buffers). Beyond the allowance
        # they count as outstanding: a reader that never reads then gets no more credit.
        self.buffered = 0
        # The path's RTT without queueing (set by the session from its PINGs): grants are
        # paced only once it and the burst limit are known.
        self.min_rtt: float | None = None
        self._clock = clock
        self._tokens: float | None = None  # None: a full bucket
        self._tokens_at = 0.0
        # Did the last grant() hold some of the need back? (Then retry_in() says when.)
        self.held_back = False

    @property
    def active(self) -> bool:
        return self._active

    @active.setter
    def active(self, value: bool) -> None:
        if value and not self._active:
            self._response_started()
        self._active = value

    def _credits(self) -> tuple[int, int] | None:
        """(idle, active) credit once the burst limit is known."""
        if self.burst_limit is None:
            return None
        idle = max(MIN_CREDIT, self.burst_limit)
        return idle, int(ACTIVE_FACTOR * idle * min(MAX_RTT_FACTOR, max(1.0, self.rtt_factor)))

    @property
    def target(self) -> int:
        """The credit the server should hold now."""
        credits = self._credits()
        if credits is None:
            return UNCAPPED if self.active else self.max_window_size
        idle, active = credits
        if not self.active:
            return idle
        if self.remaining is None:
            return active
        return min(active, self.remaining + idle)

    def _need(self) -> int:
        """What the credit is short of its target (0 when within an eighth of it: small
        top-ups are batched, one WINDOW_UPDATE per eighth of the target at most)."""
        target = self.target
        held_back = max(0, self.buffered - self.buffer_allowance)
        need = target - self.current_window_size - held_back
        return need if need > 0 and need >= target // 8 else 0

    def _pace(self) -> tuple[float, float] | None:
        """The bucket (depth, bytes per second), or None while grants are not paced."""
        credits = self._credits()
        if credits is None or not self.min_rtt:
            return None
        idle, active = credits
        return max(MIN_CREDIT, PACE_DEPTH * idle), active / self.min_rtt

    def _allowed(self) -> float | None:
        """What may be granted now; None when unpaced."""
        pace = self._pace()
        if pace is None:
            return None
        depth, rate = pace
        if self._tokens is None:
            return depth
        if self._tokens >= depth:
            return self._tokens  # a response's start-up allowance, not yet used
        elapsed = max(0.0, self._clock() - self._tokens_at)
        return min(depth, self._tokens + elapsed * rate)

    def _response_started(self) -> None:
        """The first DATA after idle: the active credit's extra over the idle credit may
        go at once, unpaced, as before pacing. It reaches the server one RTT after its
        first flight left, as the first ACKs do, and keeps the pipe full from then on."""
        allowed = self._allowed()
        credits = self._credits()
        if allowed is None or credits is None:
            return
        idle, active = credits
        self._tokens = allowed + active - idle
        self._tokens_at = self._clock()

    def grant(self) -> int:
        """The increment to send now (0 if none is due, or pacing holds it back)."""
        self.held_back = False
        need = self._need()
        if not need or not self._active:
            # Idle top-ups are not paced: the server sends nothing while idle, so they can
            # make no burst beyond the first flight the idle credit already bounds.
            return need
        allowed = self._allowed()
        if allowed is None or allowed >= need:
            return need
        # Paced: part now if the part is worth a WINDOW_UPDATE, the rest by retry_in().
        self.held_back = True
        return int(allowed) if allowed >= self._step() else 0

    def _step(self) -> float:
        """The smallest paced grant: an eighth of the target, but never more than the
        bucket holds (with an RTT factor the target's eighth can exceed the bucket's depth,
        and a step the bucket never reaches would hold the grant back for good)."""
        pace = self._pace()
        return min(self.target // 8, pace[0]) if pace is not None else self.target // 8

    def retry_in(self) -> float | None:
        """Seconds until a grant that pacing holds back may go; None if none is held."""
        need = self._need()
        allowed = self._allowed()
        pace = self._pace()
        if not need or not self._active or allowed is None or pace is None:
            return None
        step = min(need, self._step())
        if allowed >= step:
            return 0.0
        return (step - allowed) / pace[1] + 1e-6  # + a hair: float rounding

    def _spent(self, increment: int) -> None:
        if not self._active:
            return  # idle grants are not paced (grant())
        allowed = self._allowed()
        if allowed is not None:
            self._tokens = allowed - increment  # below 0 after an unpaced grant: a debt
            self._tokens_at = self._clock()

    def window_opened(self, size: int) -> None:
        self._spent(size)
        super().window_opened(size)

    def window_consumed(self, size: int) -> None:
        super().window_consumed(size)  # raises FlowControlError if the server overran us
        self.buffered += size

    def process_bytes(self, size: int) -> int | None:
        self.buffered = max(0, self.buffered - size)
        return super().process_bytes(size)

    def _maybe_update_window(self) -> int | None:
        # Called by h2 when we acknowledge consumed bytes.
        if not self._bytes_processed:
            return None
        increment = self.grant()
        self._bytes_processed = 0
        if not increment:
            return None
        self._spent(increment)
        self.current_window_size += increment
        self.max_window_size = max(self.max_window_size, self.current_window_size)
        return increment
