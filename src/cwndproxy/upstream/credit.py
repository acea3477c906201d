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
  stop at "remaining + B", so the credit left when they end is B again.

It caps a single connection's transfer at about 1.5 x the configured bandwidth; a
bandwidth set below the path's real rate caps it below that rate.

This class replaces h2's connection-level ``WindowManager`` (same interface; h2 calls
``window_consumed`` on receipt, ``process_bytes`` on acknowledgement, ``window_opened`` on
our explicit increments). It holds no I/O.
"""

from __future__ import annotations

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


class InboundCredit(h2.windows.WindowManager):
    def __init__(self, initial: int = 65535, buffer_allowance: int = UNCAPPED) -> None:
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
        self.active = False
        self.remaining: int | None = None
        # RTT measured while this connection was idle over the minimum RTT: the queue other
        # traffic keeps at the bottleneck. A byte credit sized for the minimum RTT would
        # then carry only a fraction of the rate: with a bulk flow filling a one-BDP queue
        # the RTT doubles. Idle samples only, so our own transfers' queue cannot feed it.
        self.rtt_factor = 1.0
        # Received but not yet consumed (still in our stream buffers). Beyond the allowance
        # they count as outstanding: a reader that never reads then gets no more credit.
        self.buffered = 0

    @property
    def target(self) -> int:
        """The credit the server should hold now."""
        if self.burst_limit is None:
            return UNCAPPED if self.active else self.max_window_size
        idle = max(MIN_CREDIT, self.burst_limit)
        if not self.active:
            return idle
        active = int(ACTIVE_FACTOR * idle * min(MAX_RTT_FACTOR, max(1.0, self.rtt_factor)))
        if self.remaining is None:
            return active
        return min(active, self.remaining + idle)

    def grant(self) -> int:
        """The increment to send now (0 if the credit is close enough to the target).
        Small top-ups are batched: one WINDOW_UPDATE per eighth of the target at most."""
        held_back = max(0, self.buffered - self.buffer_allowance)
        need = self.target - self.current_window_size - held_back
        if need <= 0 or need < self.target // 8:
            return 0
        return need

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
        self.current_window_size += increment
        self.max_window_size = max(self.max_window_size, self.current_window_size)
        return increment
