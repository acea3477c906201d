"""One place in the pool: the session that serves it now, the ones draining behind a
GOAWAY, its history, and what selection reads of it (``view``)."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Protocol

from cwndproxy.pool.policy import SlotView
from cwndproxy.upstream.counters import TrafficCounters
from cwndproxy.upstream.session import H2Session

# Without warm-up: no dummy data, warm (nothing to wait for), no window measured.
_NO_WARMUP = (False, True, 1.0)


class SlotState(enum.Enum):
    CONNECTING = "connecting"
    READY = "ready"
    BACKOFF = "backoff"
    STOPPED = "stopped"


class SessionWarmth(Protocol):
    """What the pool and its observers read of a session's warm-up (the warm-up controller
    implements it; the pool layer does not import the warm-up layer)."""

    @property
    def selection_facts(self) -> tuple[bool, bool, float]:
        """What selection reads of every slot at every request, at once: dummy data in
        flight (a real response would queue behind it); warm (the window was grown to its
        target and is held); the window as last measured, in target windows."""

    @property
    def state_name(self) -> str:
        """The warm-up state, as the dashboard and ``/metrics`` label it."""

    @property
    def state_since(self) -> float:
        """``time.monotonic()`` when the state was entered."""

    @property
    def note(self) -> str:
        """A short human note about the state (e.g. path-limited)."""

    @property
    def last_error(self) -> str | None:
        """The last error, when the state is a back-off or a failure."""

    async def stop(self) -> None:
        """Stop the warm-up traffic; the session stays."""


@dataclass
class PoolSlot:
    index: int
    state: SlotState = SlotState.CONNECTING
    state_since: float = field(default_factory=time.monotonic)
    session: H2Session | None = None
    # Sessions that got GOAWAY and are finishing their streams while a replacement serves.
    draining: list[H2Session] = field(default_factory=list)
    reconnects: int = 0
    # Sessions we ended ourselves at the upstream's stream limit, their replacement ready.
    retirements: int = 0
    # Times this slot waited in back-off before dialling again (dial failures, sessions lost
    # early; never a graceful GOAWAY).
    backoffs: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    # Why the previous session ended (GOAWAY, loss); kept after a successful reconnect.
    last_close_reason: str | None = None
    # True while the most recent attempt to connect failed (not a session lost later).
    dial_failed: bool = False
    last_chosen: float = 0.0
    retired_counters: TrafficCounters = field(default_factory=TrafficCounters)
    # The warm-up controller of the current session (None with strategy "off").
    controller: SessionWarmth | None = None

    def set_state(self, state: SlotState) -> None:
        if state is not self.state:
            self.state = state
            self.state_since = time.monotonic()

    @property
    def ready(self) -> bool:
        return self.state is SlotState.READY and self.session is not None and self.session.is_usable

    def view(self) -> SlotView:
        # Built for every slot at every request: one call into the session and one into
        # the controller, not a property chain per field.
        s = self.session
        free, real = s.selection_counts() if s is not None else (0, 0)
        controller = self.controller
        dummy, warm, score = _NO_WARMUP if controller is None else controller.selection_facts
        return SlotView(self.index, self.ready, real, free, self.last_chosen, dummy, warm, score)

    @property
    def counters(self) -> TrafficCounters:
        total = TrafficCounters()
        total.merge(self.retired_counters)
        for s in [self.session, *self.draining]:
            if s is not None:
                total.merge(s.counters)
        return total
