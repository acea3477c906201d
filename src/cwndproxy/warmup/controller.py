"""The warm-up controller: the asyncio driver of one session's ``WarmupCore``.

The core (``warmup/core.py``) decides; this class only turns the world into events (PING
answers, finished dummy jobs, real streams anywhere in the pool via the coordinator,
timers, the session going away) and carries out the core's commands with the workers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace

from cwndproxy.upstream.session import H2Session, SessionState, UpstreamError
from cwndproxy.upstream.tcpinfo import read_field, read_tcp_info
from cwndproxy.warmup import messages as m
from cwndproxy.warmup.coordinator import WarmupCoordinator
from cwndproxy.warmup.core import CoreSettings, WarmupCore
from cwndproxy.warmup.policy import BurstPlan, Flight, WarmState
from cwndproxy.warmup.workers import (
    DownloadWorker,
    NoFreeSlot,
    Throttled,
    UploadWorker,
    WarmupRejected,
)

log = logging.getLogger(__name__)

SAMPLE_PERIOD = 0.1
# <asm-generic/socket.h>; the socket module does not export it.
SO_MAX_PACING_RATE = 47


class Inbox:
    """A controller's queue of events, in order, where the pool's news of real streams on
    other sessions waits as one ``RealElsewhere``: posted while one is queued, a
    ``RealElsewhere`` is added to it instead of queued behind it. Every real stream in the
    pool is news to every member as it starts and ends; under load, many arrive between two
    turns of a member's task, and all but the first cost no turn of its state machine."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[m.Event] = asyncio.Queue()
        # What the queued RealElsewhere stands for, summed as news comes (None while no
        # RealElsewhere is queued): counts, not a new event per post.
        self._elsewhere: list[int] | None = None

    def post(self, event: m.Event) -> None:
        if type(event) is m.RealElsewhere:
            counts = self._elsewhere
            if counts is not None:
                counts[0] += event.started
                counts[1] += event.ended
                return
            self._elsewhere = [event.started, event.ended]
        self._queue.put_nowait(event)

    def empty(self) -> bool:
        return self._queue.empty()

    def get_nowait(self) -> m.Event:
        return self._taken(self._queue.get_nowait())

    async def get(self) -> m.Event:
        return self._taken(await self._queue.get())

    def _taken(self, event: m.Event) -> m.Event:
        if type(event) is m.RealElsewhere and self._elsewhere is not None:
            started, ended = self._elsewhere
            self._elsewhere = None
            return m.RealElsewhere(started, ended)
        return event


@dataclass
class WarmupSettings:
    strategy: str  # auto | burst | ping
    direction: str  # upload | download | both
    target_bps: float  # per connection
    path_bps: float = 0.0  # the whole path; 0 = target_bps
    size_bytes: int = 0
    interval_ms: int = 0
    dwell: float = 2.0
    download_path: str | None = None
    upload_path: str | None = None
    upload_method: str = "POST"
    supports_range: bool = True
    upload_retry: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    backoff_min: float = 1.0
    backoff_max: float = 60.0
    burst_limit_bdp: float = 0.0
    renew_lossy_sessions: bool = False


class WarmupController:
    def __init__(
        self,
        session: H2Session,
        settings: WarmupSettings,
        *,
        index: int = 0,
        pool_size: int = 1,
        clock: Callable[[], float] = time.monotonic,
        coordinator: WarmupCoordinator | None = None,
    ) -> None:
        # An attribute, not a property: the coordinator reads it of every member at each of
        # the pool's busy edges.
        self.session = session
        self.settings = settings
        self.index = index
        self._clock = clock
        s = settings
        self.download = (
            DownloadWorker(session, s.download_path, s.headers, s.supports_range)
            if s.direction in ("download", "both") and s.download_path
            else None
        )
        self.upload = (
            UploadWorker(session, s.upload_path, s.upload_method, s.headers, s.upload_retry)
            if s.direction in ("upload", "both") and s.upload_path
            else None
        )
        self.core = WarmupCore(
            CoreSettings(
                strategy=s.strategy,
                target_bps=s.target_bps,
                path_bps=s.path_bps or s.target_bps,
                download=self.download is not None,
                upload=self.upload is not None,
                size_bytes=s.size_bytes,
                interval_ms=s.interval_ms,
                dwell=s.dwell,
                backoff_min=s.backoff_min,
                backoff_max=s.backoff_max,
                burst_limit_bdp=s.burst_limit_bdp,
                renew_lossy_sessions=s.renew_lossy_sessions,
            ),
            now=clock(),
            index=index,
            pool_size=pool_size,
        )
        self._events = Inbox()
        self._jobs: dict[int, asyncio.Task[None]] = {}
        # Dummy jobs not started because they would have taken the upstream's last free
        # stream slot (a real request would then wait behind warm-up traffic).
        self.no_slot_refusals = 0
        # tcpi_rcv_ooopack when this session's current busy period began (auto, download).
        self._out_of_order_at_start: int | None = None
        self._counts_out_of_order = (
            s.strategy == "auto" and s.renew_lossy_sessions and self.download is not None
        )
        self._aux: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_state = self.core.state
        # What the pool's choice reads of this session at every request, refreshed after
        # each event: only the core's handling of an event changes it.
        self.selection_facts = self._selection_facts()
        self.coordinator = coordinator or WarmupCoordinator()
        self.coordinator.add(self)

    # -- what the pool, the dashboard and the exporter read ------------------------------------
    @property
    def state(self) -> WarmState:
        return self.core.state

    @property
    def state_name(self) -> str:
        return self.core.state.value

    @property
    def state_since(self) -> float:
        return self.core.state_since

    @property
    def warm(self) -> bool:
        return self.core.warm

    @property
    def flight_floor(self) -> float:
        return self.core.flight_floor

    @property
    def note(self) -> str:
        return self.core.note

    @property
    def history(self) -> list[tuple[float, WarmState]]:
        return list(self.core.history)

    @property
    def plan(self) -> BurstPlan | None:
        return self.core.plan

    @property
    def bursts(self) -> int:
        return self.core.bursts

    @property
    def keepalive_bursts(self) -> int:
        return self.core.keepalive_bursts

    @property
    def throttled(self) -> int:
        return self.core.throttled

    @property
    def path_limited_bps(self) -> float | None:
        return self.core.path_limited_bps

    @property
    def last_error(self) -> str | None:
        return self.core.last_error

    # -- lifecycle ---------------------------------------------------------------------------
    def post(self, event: m.Event) -> None:
        self._events.post(event)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"warmup-{self.index}")

    async def stop(self) -> None:
        self.coordinator.remove(self)
        tasks = [t for t in (self._task, *self._jobs.values(), *self._aux) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.upload is not None:
            self.upload.close()
        if self.download is not None:
            self.download.cancel_all()

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not kill the proxy; say it loudly
            log.exception("warm-up of session %d stopped", self.index)
            self.core.last_error = f"internal error: {exc}"
            self.core.state = WarmState.FAILED
            self.selection_facts = self._selection_facts()
        finally:
            self.coordinator.remove(self)
            for task in [*self._jobs.values(), *self._aux]:
                task.cancel()

    async def _run(self) -> None:
        session = self.session
        watcher = asyncio.get_running_loop().create_task(self._watch_session())
        sampler = asyncio.get_running_loop().create_task(self._sample_rates())
        self._aux.update((watcher, sampler))
        try:
            try:
                rtt = await session.ping()
            except (UpstreamError, TimeoutError) as exc:
                self._feed(m.SessionEnded(session.state is SessionState.DRAINING, str(exc)))
                return
            if self.coordinator.lossy_until > self._clock():
                # Before Connected: a fresh connection on a lossy path is not grown.
                self._feed(m.PathLossy(self.coordinator.lossy_until))
            self._feed(m.Connected(session.min_rtt or rtt))
            while self.core.state not in (WarmState.DRAINING, WarmState.FAILED):
                wake = self.core.wake_at
                event: m.Event
                if not self._events.empty():
                    # Several events may wait at once (a busy edge, a dummy job's end, a
                    # sample). Taken as they are: a timeout armed around a get() that
                    # returns at once never fires, so this is the same, without a timer
                    # made and cancelled per event.
                    self._feed(self._events.get_nowait())
                    continue
                try:
                    if wake is None:
                        event = await self._events.get()
                    else:
                        async with asyncio.timeout(max(0.0, wake - self._clock())):
                            event = await self._events.get()
                except TimeoutError:
                    event = m.TimerFired()
                self._feed(event)
        finally:
            for task in (watcher, sampler):
                task.cancel()

    async def _watch_session(self) -> None:
        await self.session.unusable.wait()
        self.coordinator.session_ended(self.session)
        draining = self.session.state is SessionState.DRAINING
        self.post(m.SessionEnded(draining, self.session.close_reason or ""))

    def _selection_facts(self) -> tuple[bool, bool, float]:
        core = self.core
        return core.dummy_active, core.warm, core.window_share

    # -- events in, commands out ------------------------------------------------------------------
    def _feed(self, event: m.Event) -> None:
        if self._counts_out_of_order and isinstance(event, m.RealStarted | m.RealEnded):
            event = self._with_out_of_order(event)
        for command in self.core.handle(event, self._clock()):
            self._execute(command)
        self.selection_facts = self._selection_facts()
        if log.isEnabledFor(logging.DEBUG):
            self._trace(event)
        if self.core.state is not self._last_state:
            log.debug(
                "session %d: %s -> %s",
                self.index,
                self._last_state.value,
                self.core.state.value,
            )
            if self.core.state is WarmState.FAILED and self.core.last_error:
                log.warning("warm-up of session %d stopped: %s", self.index, self.core.last_error)
            self._last_state = self.core.state

    def _with_out_of_order(self, event: m.RealStarted | m.RealEnded) -> m.Event:
        """Loss on the download path during a busy period, from the kernel's count of
        packets that arrived out of order: read at the period's two edges only (two
        getsockopt calls per busy period, none per request under load)."""
        if not event.here:
            return event
        count = self._read_out_of_order()
        if isinstance(event, m.RealStarted):
            self._out_of_order_at_start = count
            return event
        start, self._out_of_order_at_start = self._out_of_order_at_start, None
        if count is None or start is None:
            return event
        return replace(event, out_of_order=count - start)

    def _read_out_of_order(self) -> int | None:
        sock = self.session.socket
        if sock is None:
            return None
        try:
            return read_field(sock, "rcv_ooopack")
        except OSError:
            return None

    def _trace(self, event: m.Event) -> None:
        """What the warm-up saw of the server's window (debug log)."""
        flight: Flight | None = None
        what = ""
        if isinstance(event, m.RealEnded) and event.here:
            flight, what = event.flight, "response"
        elif isinstance(event, m.DummyDone):
            flight, what = event.flight, "dummy fetch"
            if event.sender_window is not None:
                log.debug(
                    "session %d: our window %d of %d bytes",
                    self.index,
                    event.sender_window,
                    self.core.window,
                )
        if flight is not None:
            log.debug(
                "session %d: %s's first RTT carried %d of %d bytes (window %d, min RTT %.1f ms)",
                self.index,
                what,
                flight.first_rtt_bytes,
                flight.total_bytes,
                self.core.window,
                (self.core.min_rtt or 0) * 1000,
            )

    def _execute(self, command: m.Command) -> None:
        if isinstance(command, m.StartDummy):
            task = asyncio.get_running_loop().create_task(self._job(command))
            self._jobs[command.job] = task
        elif isinstance(command, m.CancelDummies):
            for task in self._jobs.values():
                task.cancel()
            if self.download is not None:
                # Real traffic first: stop the server from queueing more dummy bytes.
                self.download.cancel_all()
        elif isinstance(command, m.SendPing):
            self._spawn(self._ping(command.timeout))
        elif isinstance(command, m.RequestGrowSlot):
            self.coordinator.request_grow(self)
        elif isinstance(command, m.ReleaseGrowSlot):
            self.coordinator.release_grow(self)
        elif isinstance(command, m.LimitBurst):
            self.session.limit_burst(command.size)
        elif isinstance(command, m.PaceSends):
            self._setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, int(command.rate))
        elif isinstance(command, m.Renew) and self.coordinator.renew(self, self._clock()):
            # The pool sees a retired session as routine, dials its replacement at once and
            # logs the reason; its reconnect count includes renewals.
            self.session.retire(command.reason)
        # WakeAt: the run loop reads core.wake_at.

    def _setsockopt(self, level: int, option: int, value: int) -> None:
        sock = self.session.socket
        if sock is None:
            return
        try:
            sock.setsockopt(level, option, value)
        except OSError as exc:  # e.g. not Linux: warm-up still works, bursts are not capped
            log.warning("session %d: setsockopt(%d, %d) failed: %s", self.index, level, option, exc)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._aux.add(task)
        task.add_done_callback(self._aux.discard)

    async def _ping(self, timeout: float) -> None:
        try:
            rtt = await self.session.ping(timeout=timeout)
        except (UpstreamError, TimeoutError):
            self.post(m.PingMissed())
        else:
            self.post(m.PingAnswered(rtt))

    # -- dummy jobs ------------------------------------------------------------------------------
    async def _job(self, command: m.StartDummy) -> None:
        job = command.job
        try:
            if command.purpose in (m.Purpose.GROW, m.Purpose.CHECK, m.Purpose.KEEPALIVE):
                event: m.Event = await self._measured(job, command.size)
            else:
                received = await self._one_burst(command.size)
                event = m.DummyDone(job, received)
        except asyncio.CancelledError:
            self.post(m.DummyFailed(job, m.Failure.CANCELLED))
            raise
        except Throttled as exc:
            event = m.DummyFailed(job, m.Failure.THROTTLED, str(exc), exc.retry_after)
        except WarmupRejected as exc:
            event = m.DummyFailed(job, m.Failure.REJECTED, str(exc))
        except NoFreeSlot:
            self.no_slot_refusals += 1
            event = m.DummyFailed(job, m.Failure.NO_SLOT)
        except UpstreamError as exc:
            lost = self.session.unusable.is_set()
            event = m.DummyFailed(job, m.Failure.LOST if lost else m.Failure.CANCELLED, str(exc))
        except Exception as exc:  # a bug: say it, and let the core know the job is over
            log.exception("warm-up job of session %d failed", self.index)
            event = m.DummyFailed(job, m.Failure.LOST, f"internal error: {exc}")
        finally:
            self._jobs.pop(job, None)
        self.post(event)

    async def _measured(self, job: int, size: int) -> m.DummyDone:
        """A grow or check: a download whose first flight shows the server's window, then
        (upload) a finite upload after which our own window is read from TCP_INFO."""
        received, flight, sender = 0, None, None
        if self.download is not None and size > 0:
            fetched = await self.download.fetch(size)
            received = fetched.received
            if self.session.min_rtt is not None:
                flight = Flight(fetched.first_rtt_bytes, fetched.received)
        if self.upload is not None:
            if size > 0:
                await self.upload.post(size)
            sender = self._sender_window()
        return m.DummyDone(job, received, flight, sender)

    def _sender_window(self) -> int | None:
        sock = self.session.socket
        if sock is None:
            return None
        try:
            info = read_tcp_info(sock)
        except OSError:
            return None
        return info.cwnd_bytes

    async def _one_burst(self, size: int) -> int:
        jobs = []
        if self.download is not None:
            jobs.append(self._fetch_bytes(size))
        if self.upload is not None:
            jobs.append(self.upload.send(size))
        sent = 0
        for result in await asyncio.gather(*jobs, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
            sent += result
        return sent

    async def _fetch_bytes(self, size: int) -> int:
        assert self.download is not None
        return (await self.download.fetch(size)).received

    async def _sample_rates(self) -> None:
        """Received (download) or sent (upload) bits per second, both traffic kinds: real
        traffic warms the window as well as dummy traffic does. Only the burst ramp uses
        them."""

        def total() -> tuple[int, int]:
            c = self.session.counters
            return c.dummy_rx + c.real_rx, c.dummy_tx + c.real_tx

        last_rx, last_tx = total()
        last = self._clock()
        while True:
            await asyncio.sleep(SAMPLE_PERIOD)
            rx, tx = total()
            now = self._clock()
            dt = max(now - last, 1e-6)
            if self.core.wants_rates:
                rates = []
                if self.download is not None:
                    rates.append((rx - last_rx) * 8 / dt)
                if self.upload is not None:
                    rates.append((tx - last_tx) * 8 / dt)
                if rates:
                    self.post(m.RateSampled(min(rates)))
            last_rx, last_tx, last = rx, tx, now
