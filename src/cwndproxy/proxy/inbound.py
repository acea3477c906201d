"""What the app knows of one inbound (client) connection, from the requests it carried:
the rapid-reset defence (CVE-2023-44487) counts here. An ASGI app cannot see or close the
client's connection, so it counts per connection what its requests did and decides whether
a new request waits, is forwarded, or is refused."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

# Rapid reset: on an inbound HTTP/2 connection with more requests than this in progress at
# once, or whose client reset more than this many streams before their answer (and at least
# half of its requests), each new request waits up to RESET_WAIT to see whether its client
# reset it before it is forwarded. Well-behaved connections never wait.
BURST_STREAMS = 16
RESET_WAIT = 0.005
# Requests of one inbound HTTP/2 connection forwarded and not yet finished, at most; more
# wait in the proxy. Under a flood through the proxy, granian delivered the disconnect of a
# reset stream 165-280 ms late (one run, with temporary instrumentation; a bare app sees
# resets within 1 ms: lab/bench/reset_latency.py), so without a cap a rapid-reset burst became
# hundreds of upstream streams before the first reset was seen.
MAX_FORWARDED = 100
# A connection whose client reset more than this many streams before their answer, and at
# least half of all it asked, gets 429 for the rest of its requests: nginx and HAProxy close
# such connections; an ASGI app cannot, but it can refuse to forward.
REFUSE_RESETS = 2 * BURST_STREAMS
# Inbound connections remembered for that (least recently used ones are forgotten).
INBOUND_TRACKED = 4096


@dataclass
class InboundConnection:
    """What the app knows of one inbound connection, from the requests it carried."""

    active: int = 0
    requests: int = 0
    finished: int = 0
    # Requests whose client left (an HTTP/2 RST_STREAM) before the response started.
    early_resets: int = 0
    # Requests forwarded upstream and not finished (HTTP/2 only), and a wake-up for those
    # waiting for one of them to finish.
    forwarding: int = 0
    slot_freed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def suspect(self) -> bool:
        resets = self.early_resets > BURST_STREAMS and 2 * self.early_resets >= self.requests
        return self.active > BURST_STREAMS or resets

    @property
    def refused(self) -> bool:
        # Against the requests already finished: under a flood most of those that arrived
        # are still waiting, and their resets are not known yet.
        return self.early_resets > REFUSE_RESETS and 2 * self.early_resets >= self.finished

    def take_forward_slot(self) -> bool:
        """Take room under MAX_FORWARDED if there is some now (nearly always): no wait."""
        if self.forwarding < MAX_FORWARDED:
            self.forwarding += 1
            return True
        return False

    async def forward_slot(self, left: asyncio.Event) -> bool:
        """Wait for room under MAX_FORWARDED; False if the client left meanwhile."""
        while self.forwarding >= MAX_FORWARDED and not left.is_set():
            self.slot_freed.clear()
            waits = [asyncio.ensure_future(e.wait()) for e in (self.slot_freed, left)]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        if left.is_set():
            return False
        self.forwarding += 1
        return True

    def forward_done(self) -> None:
        self.forwarding -= 1
        self.slot_freed.set()
