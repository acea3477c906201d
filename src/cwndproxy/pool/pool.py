"""The pool: N HTTP/2 sessions over N distinct TCP connections to the one upstream.

Decisions are plain functions of plain data (``policy.py``), testable without sockets or
sleeps; ``Pool`` is the thin asyncio shell that dials, supervises and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from cwndproxy.pool.policy import backoff_delay, budget_headroom, choose_slot
from cwndproxy.pool.slot import PoolSlot, SlotState
from cwndproxy.upstream.counters import TrafficCounters
from cwndproxy.upstream.dial import DialError, UpstreamTarget, dial
from cwndproxy.upstream.session import H2Session, SessionSettings, SessionState

log = logging.getLogger(__name__)


def _close_unused(task: asyncio.Future[H2Session]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().abort("not needed: the pool is stopping")


SessionListener = Callable[[PoolSlot, H2Session], None]
Dialer = Callable[[], Awaitable[H2Session]]


class NoSessionAvailable(Exception):
    """No ready session within the wait; the message carries the last dial error."""


class Pool:
    def __init__(
        self,
        target: UpstreamTarget,
        size: int,
        *,
        settings: SessionSettings | None = None,
        rtt_probe_interval: float = 1.0,
        reconnect_min: float = 0.1,
        reconnect_max: float = 10.0,
        dialer: Dialer | None = None,
        stream_budget: int | None = None,
    ) -> None:
        self.target = target
        self.slots = [PoolSlot(i) for i in range(size)]
        self._settings = settings
        self._rtt_probe_interval = rtt_probe_interval
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._dialer = dialer or self._dial
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._stopping = False
        self.listeners: list[SessionListener] = []
        # Streams per connection the upstream allows, once learned (see _learn_stream_budget).
        self.stream_budget = stream_budget
        # Sessions of removed slots finishing their streams.
        self._closing: set[asyncio.Task[None]] = set()
        # Traffic of slots removed by a reload, so that totals never go backwards.
        self.removed_counters = TrafficCounters()
        self._last_recycle_at: int | None = None

    async def _dial(self) -> H2Session:
        return await dial(
            self.target, settings=self._settings, rtt_probe_interval=self._rtt_probe_interval
        )

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Pre-connect every slot at once; each slot then supervises its connection."""
        loop = asyncio.get_running_loop()
        for slot in self.slots:
            self._tasks.append(loop.create_task(self._supervise(slot), name=f"pool-{slot.index}"))

    async def wait_ready(self, timeout: float, count: int = 1) -> bool:
        try:
            async with asyncio.timeout(timeout):
                while sum(s.ready for s in self.slots) < count:
                    await self._wait_change()
        except TimeoutError:
            return False
        return True

    async def wait_settled(self, timeout: float) -> None:
        """Wait until every slot is ready or has failed to connect at least once."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not all(s.ready or s.dial_failed for s in self.slots):
                    await self._wait_change()

    async def _wait_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()

    def configure(
        self,
        *,
        settings: SessionSettings,
        reconnect_min: float,
        reconnect_max: float,
        stream_budget: int | None,
    ) -> None:
        """New settings from a reload: for the sessions dialled from now on; a configured
        stream budget applies to the running sessions too."""
        self._settings = settings
        self._reconnect_min, self._reconnect_max = reconnect_min, reconnect_max
        if stream_budget is not None and stream_budget != self.stream_budget:
            self.stream_budget = stream_budget
            self._apply_stream_budget(s.session for s in self.slots if s.session is not None)

    def _apply_stream_budget(self, sessions: Iterable[H2Session]) -> None:
        budget = self.stream_budget
        if budget is not None:
            for session in sessions:
                session.set_stream_budget(budget, budget_headroom(budget))

    def resize(self, size: int, grace: float) -> list[PoolSlot]:
        """Grow (new slots dial at once) or shrink (the last slots stop; their sessions
        finish their streams within ``grace`` behind a GOAWAY). The other slots keep their
        sessions. Returns the removed slots."""
        loop = asyncio.get_running_loop()
        for index in range(len(self.slots), size):
            slot = PoolSlot(index)
            self.slots.append(slot)
            self._tasks.append(loop.create_task(self._supervise(slot), name=f"pool-{index}"))
        removed = self.slots[size:]
        del self.slots[size:]
        for task in self._tasks[size:]:
            task.cancel()
        del self._tasks[size:]
        for slot in removed:
            slot.set_state(SlotState.STOPPED)
            self.removed_counters.merge(slot.counters)
            for session in [slot.session, *slot.draining]:
                if session is not None:
                    task = loop.create_task(session.aclose(grace))
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)
        self._notify()
        return removed

    async def close(self, grace: float = 0.0) -> None:
        """GOAWAY every session, let active streams finish within ``grace``, then close."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sessions = [s for slot in self.slots for s in [slot.session, *slot.draining] if s]
        await asyncio.gather(
            *(s.aclose(grace) for s in sessions), *self._closing, return_exceptions=True
        )
        for slot in self.slots:
            slot.set_state(SlotState.STOPPED)
        self._notify()

    # -- supervision -------------------------------------------------------------------------
    async def _supervise(self, slot: PoolSlot) -> None:
        # A replacement dialled ahead while the current session nears its stream budget.
        ahead: asyncio.Future[H2Session] | None = None
        try:
            while not self._stopping:
                slot.set_state(SlotState.CONNECTING)
                self._notify()
                try:
                    session = await (ahead if ahead is not None else self._dialer())
                    if not session.is_usable:
                        # The standby closed while it waited (e.g. the upstream's idle
                        # timeout at a low request rate): dial now.
                        session.abort("stand-by connection closed")
                        session = await self._dialer()
                except DialError as exc:
                    slot.last_error = str(exc)
                    slot.dial_failed = True
                    await self._back_off(slot, "retrying", logging.WARNING)
                    continue
                finally:
                    ahead = None
                self._apply_stream_budget([session])
                slot.session = session
                slot.set_state(SlotState.READY)
                slot.last_error = None
                slot.dial_failed = False
                self._notify()
                for listener in self.listeners:
                    listener(slot, session)
                ahead = await self._serve(session)
                # GOAWAY or loss: a replacement is dialled now (unless it was already) while
                # old streams finish.
                slot.session = None
                if session.state is SessionState.DRAINING:
                    slot.draining.append(session)
                    asyncio.get_running_loop().create_task(self._retire_when_closed(slot, session))
                else:
                    slot.retired_counters.merge(session.counters)
                slot.last_error = slot.last_close_reason = session.close_reason
                slot.reconnects += 1
                self._learn_stream_budget(session)
                slot.retirements += session.retired
                if session.recycled:
                    # A graceful GOAWAY is routine (nginx: every keepalive_requests streams),
                    # not a failure: replace the session at once, no back-off.
                    slot.consecutive_failures = 0
                    slot.last_error = None
                    log.info("session %d: %s; replacing it", slot.index, session.close_reason)
                    continue
                lived = time.monotonic() - session.created_at
                # A connection that lived a while resets the back-off; one that dies at once
                # (e.g. the upstream accepts then closes) keeps backing off.
                if lived > 5.0:
                    slot.consecutive_failures = 0
                await self._back_off(slot, "reconnecting", logging.INFO)
        finally:
            if ahead is not None:
                ahead.cancel()
                ahead.add_done_callback(_close_unused)

    async def _serve(self, session: H2Session) -> asyncio.Future[H2Session] | None:
        """Wait until ``session`` takes no more streams. Near its stream budget, dial the
        replacement ahead: the session still serves up to its last allowed stream (its
        window is warm; a new connection is not), retires itself there with its own GOAWAY,
        and the replacement takes over at once, with no handshake to wait for and no
        stream sent into the upstream's GOAWAY. Returns the replacement's dial, if any."""
        unusable = asyncio.ensure_future(session.unusable.wait())
        near = asyncio.ensure_future(session.budget_near.wait())
        try:
            await asyncio.wait({unusable, near}, return_when=asyncio.FIRST_COMPLETED)
            if unusable.done():
                return None
            ahead = asyncio.ensure_future(self._dialer())
            await unusable
            return ahead
        finally:
            unusable.cancel()
            near.cancel()

    def _learn_stream_budget(self, session: H2Session) -> None:
        """nginx (keepalive_requests), HAProxy and others end a connection after a fixed
        number of streams. Learn it from two GOAWAY(NO_ERROR)s at the same stream count that
        came while its last stream was open (not an idle timeout); a reload's GOAWAY comes
        at a random count and is not taken."""
        accepted = session.accepted_streams
        if (
            not session.recycled
            or accepted is None
            or accepted < 2
            or not session.goaway_at_open_stream
        ):
            return
        previous, self._last_recycle_at = self._last_recycle_at, accepted
        if accepted != previous or accepted == self.stream_budget:
            return
        self.stream_budget = accepted
        log.info(
            "the upstream ends connections after %d streams: each session's replacement is "
            "dialled %d streams before, and takes over there",
            accepted,
            budget_headroom(accepted),
        )
        self._apply_stream_budget(s.session for s in self.slots if s.session is not None)

    async def _back_off(self, slot: PoolSlot, action: str, level: int) -> None:
        delay = backoff_delay(slot.consecutive_failures, self._reconnect_min, self._reconnect_max)
        slot.consecutive_failures += 1
        slot.backoffs += 1
        log.log(level, "session %d: %s; %s in %.2fs", slot.index, slot.last_error, action, delay)
        slot.set_state(SlotState.BACKOFF)
        self._notify()
        await asyncio.sleep(delay)

    async def _retire_when_closed(self, slot: PoolSlot, session: H2Session) -> None:
        await asyncio.shield(session.closed)
        if session in slot.draining:
            slot.draining.remove(session)
            slot.retired_counters.merge(session.counters)

    # -- selection ------------------------------------------------------------------------
    def pick(self, exclude: frozenset[int] = frozenset()) -> PoolSlot | None:
        index = choose_slot([s.view() for s in self.slots], exclude)
        if index is None:
            return None
        slot = self.slots[index]
        slot.last_chosen = time.monotonic()
        return slot

    def ready_session(
        self, exclude: frozenset[int] = frozenset()
    ) -> tuple[PoolSlot, H2Session] | None:
        """A ready session for a real request now, or None (then ``acquire`` waits)."""
        slot = self.pick(exclude)
        if slot is not None and slot.session is not None:
            return slot, slot.session
        return None

    async def acquire(
        self, timeout: float, exclude: frozenset[int] = frozenset()
    ) -> tuple[PoolSlot, H2Session]:
        """A ready session for a real request, waiting up to ``timeout`` for one."""
        deadline = time.monotonic() + timeout
        while True:
            ready = self.ready_session(exclude)
            if ready is not None:
                return ready
            remaining = deadline - time.monotonic()
            # Fail fast when every slot's last dial failed: the upstream is known to be down
            # and waiting would only delay the 502.
            known_down = all(s.dial_failed and s.state is SlotState.BACKOFF for s in self.slots)
            if remaining <= 0 or self._stopping or known_down:
                raise NoSessionAvailable(self.describe_unavailable())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wait_change()

    def describe_unavailable(self) -> str:
        errors = [s.last_error for s in self.slots if s.last_error]
        if self._stopping:
            return "proxy is shutting down"
        if errors:
            return f"upstream {self.target.url} unavailable: {errors[-1]}"
        return f"no connection to upstream {self.target.url} is ready yet"

    @property
    def ready_count(self) -> int:
        return sum(s.ready for s in self.slots)

    def totals(self) -> TrafficCounters:
        total = TrafficCounters()
        total.merge(self.removed_counters)
        for slot in self.slots:
            total.merge(slot.counters)
        return total
