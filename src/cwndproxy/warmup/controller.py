"""The warm-up controller: one per session, driving its workers through the state table.

RAMPING sends continuous dummy traffic paced to the per-connection target until the
measured rate holds (or plateaus: "path-limited at X"); HOLDING sends one burst per
interval, phase-staggered across the pool; a real stream on the session moves it to
SERVING, where it starts no dummy data and cancels dummy downloads in flight (their data
would queue ahead of the real response in the server's socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cwndproxy.metrics import TrafficKind
from cwndproxy.pool import backoff_delay
from cwndproxy.upstream.session import H2Session, SessionState, UpstreamError, UpstreamStream
from cwndproxy.warmup.pacing import TokenBucket
from cwndproxy.warmup.policy import (
    RAMP_MAX_DWELLS,
    TRANSITIONS,
    BurstPlan,
    RateSample,
    WarmEvent,
    WarmState,
    estimated_rto,
    next_state,
    plan_bursts,
    ramp_verdict,
    stagger_offset,
)
from cwndproxy.warmup.workers import (
    DownloadWorker,
    NoFreeSlot,
    Throttled,
    UploadWorker,
    WarmupRejected,
)

log = logging.getLogger(__name__)

SAMPLE_PERIOD = 0.1
# While a real transfer runs on *another* session of the pool, a holding session sends only
# this much: enough that its server is never idle for an RTO (no restart from the initial
# window), too little to compete with the real transfer for the shared bottleneck.
KEEPALIVE_BURST = 16 * 1024


@dataclass
class WarmupSettings:
    strategy: str  # burst | ping
    direction: str  # upload | download | both
    target_bps: float
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


class WarmupController:
    def __init__(
        self,
        session: H2Session,
        settings: WarmupSettings,
        *,
        index: int = 0,
        pool_size: int = 1,
        clock: Callable[[], float] = time.monotonic,
        pool_busy: Callable[[], bool] | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        # True while any session of the pool carries real traffic.
        self._pool_busy = pool_busy or (lambda: False)
        self.keepalive_bursts = 0
        self.index = index
        self.pool_size = pool_size
        self._clock = clock
        self.state = WarmState.CONNECTING
        self.state_since = clock()
        self.history: list[tuple[float, WarmState]] = [(self.state_since, self.state)]
        self.plan: BurstPlan | None = None
        self.path_limited_bps: float | None = None
        self.throttled = 0
        self.last_error: str | None = None
        self.bursting = False
        self.bursts = 0
        self.rates: deque[RateSample] = deque(maxlen=200)
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
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        session.stream_listeners.append(self._on_stream)

    # -- state -----------------------------------------------------------------------
    def fire(self, event: WarmEvent) -> None:
        new = next_state(self.state, event)
        if new is not self.state:
            log.debug(
                "session %d: %s -> %s (%s)", self.index, self.state.value, new.value, event.value
            )
            self.state = new
            self.state_since = self._clock()
            self.history.append((self.state_since, new))
        self._wake.set()

    def in_state(self, state: WarmState) -> bool:
        # A method, not an inline comparison: awaits change the state under mypy's feet.
        return self.state is state

    @property
    def warm(self) -> bool:
        return self.state in (WarmState.HOLDING, WarmState.SERVING)

    def _on_stream(self, stream: UpstreamStream, opened: bool) -> None:
        if stream.kind is not TrafficKind.REAL:
            return
        if opened and self.state in (WarmState.RAMPING, WarmState.HOLDING, WarmState.BACKOFF):
            self.fire(WarmEvent.REAL_STARTED)
            if self.download is not None:
                # Real traffic first: stop the server from queueing more dummy bytes.
                self.download.cancel_all()
        elif not opened and self.session.real_active == 0:
            self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"warmup-{self.index}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.upload is not None:
            self.upload.close()
        if self.download is not None:
            self.download.cancel_all()

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except UpstreamError as exc:
            self.last_error = str(exc)
            self._end()
        except WarmupRejected as exc:
            # e.g. 404 on the warm-up path: warm-up cannot work, the proxy still serves.
            log.warning("warm-up of session %d stopped: %s", self.index, exc)
            self.last_error = str(exc)
            if (self.state, WarmEvent.FAILED) in TRANSITIONS:
                self.fire(WarmEvent.FAILED)
        except Exception as exc:  # a bug must not kill the proxy; say it loudly
            log.exception("warm-up of session %d stopped", self.index)
            self.last_error = f"internal error: {exc}"
            if self.state is not WarmState.FAILED:
                self.state = WarmState.FAILED

    def _end(self) -> None:
        draining = self.session.state is SessionState.DRAINING
        event = WarmEvent.GOAWAY if draining else WarmEvent.FAILED
        if (self.state, event) in TRANSITIONS:
            self.fire(event)

    async def _run(self) -> None:
        sampler = asyncio.get_running_loop().create_task(self._sample_rates())
        try:
            rtt = await self.session.ping()
            self.plan = plan_bursts(
                self.settings.target_bps, rtt, self.settings.size_bytes, self.settings.interval_ms
            )
            if self.settings.strategy == "ping":
                self.fire(WarmEvent.CONNECTED)
                self.fire(WarmEvent.PLATEAU)  # nothing to ramp: PINGs only keep what exists
            else:
                self.fire(WarmEvent.CONNECTED)
            while not self.session.unusable.is_set():
                state = self.state
                if state is WarmState.RAMPING:
                    await self._ramp()
                elif state is WarmState.HOLDING:
                    await self._hold()
                elif state is WarmState.SERVING:
                    await self._serve()
                elif state is WarmState.BACKOFF:
                    await self._backoff()
                else:
                    return
            self._end()
        finally:
            sampler.cancel()

    # -- measurements ------------------------------------------------------------------
    async def _sample_rates(self) -> None:
        """Received (download) or sent (upload) bytes per SAMPLE_PERIOD, both kinds: real
        traffic warms the window as well as dummy traffic does."""

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
            rates = []
            if self.download is not None:
                rates.append((rx - last_rx) * 8 / dt)
            if self.upload is not None:
                rates.append((tx - last_tx) * 8 / dt)
            if rates:
                self.rates.append(RateSample(now, min(rates)))
            last_rx, last_tx, last = rx, tx, now

    # -- states ------------------------------------------------------------------------
    async def _ramp(self) -> None:
        """Paced continuous dummy traffic; up to two downloads in flight."""
        assert self.plan is not None
        chunk = self.plan.size_bytes
        bucket = TokenBucket(self.settings.target_bps / 8, chunk, clock=self._clock)
        self.rates.clear()
        started = self._clock()
        tasks: set[asyncio.Task[int]] = set()
        try:
            while self.state is WarmState.RAMPING and not self.session.unusable.is_set():
                verdict = ramp_verdict(
                    list(self.rates), self.settings.target_bps, self.settings.dwell
                )
                if verdict is not None:
                    if verdict is WarmEvent.PLATEAU:
                        self.path_limited_bps = self._recent_rate()
                    self.fire(verdict)
                    return
                if self._clock() - started > max(5.0, RAMP_MAX_DWELLS * self.settings.dwell):
                    self.path_limited_bps = self._recent_rate()
                    self.fire(WarmEvent.PLATEAU)
                    return
                if len(tasks) < 2:
                    await bucket.acquire(chunk)
                    if not self.in_state(WarmState.RAMPING):
                        return
                    tasks.add(asyncio.get_running_loop().create_task(self._one_burst(chunk)))
                done, tasks = await asyncio.wait(
                    tasks, timeout=SAMPLE_PERIOD, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    self._check_burst(task)
        finally:
            for task in tasks:
                task.cancel()
            # Collect what the cancelled bursts raised (a cancelled stream, usually).
            await asyncio.gather(*tasks, return_exceptions=True)

    def _recent_rate(self) -> float:
        """Mean rate over the last dwell period: single 100 ms samples are too noisy to
        report as what the path carries."""
        if not self.rates:
            return 0.0
        horizon = self.rates[-1].at - max(self.settings.dwell, SAMPLE_PERIOD)
        recent = [r.bps for r in self.rates if r.at >= horizon]
        return sum(recent) / len(recent)

    async def _one_burst(self, size: int) -> int:
        sent = 0
        jobs = []
        if self.download is not None:
            jobs.append(self.download.fetch(size))
        if self.upload is not None:
            jobs.append(self.upload.send(size))
        for result in await asyncio.gather(*jobs, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
            sent += result
        return sent

    def _check_burst(self, task: asyncio.Task[int]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None or isinstance(exc, NoFreeSlot):
            return
        if isinstance(exc, Throttled):
            self.throttled += 1
            self.last_error = str(exc)
            if self.state in (WarmState.RAMPING, WarmState.HOLDING):
                self.fire(WarmEvent.THROTTLED)
            return
        if isinstance(exc, WarmupRejected):
            self.last_error = str(exc)
            raise exc
        if isinstance(exc, UpstreamError):
            # A cancelled dummy stream (real traffic arrived) or a lost session.
            if self.session.unusable.is_set():
                raise exc
            return
        raise exc

    async def _hold(self) -> None:
        """Wait for this session's phase, then one burst (or one PING)."""
        assert self.plan is not None
        interval = self.plan.interval
        if self.settings.strategy == "ping":
            # A PING answer is a send by the server: it refreshes its idle timer (no restart
            # from the initial window). Whether the window also survives cwnd validation is
            # measured by the benchmark, not assumed.
            interval = 0.75 * estimated_rto(self.session.rtt or 0.1)
        now = self._clock()
        phase = stagger_offset(self.index, self.pool_size, interval)
        wait = interval - ((now - phase) % interval)
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._wake.wait()
                return  # state changed (real traffic, GOAWAY): re-dispatch
        if self.state is not WarmState.HOLDING or self.session.real_active:
            return
        if self.settings.strategy == "ping":
            with contextlib.suppress(UpstreamError, TimeoutError):
                await self.session.ping(timeout=interval * 4)
            return
        size = self.plan.size_bytes
        if self._pool_busy():
            size = min(size, KEEPALIVE_BURST)
            self.keepalive_bursts += 1
        self.bursting = True
        task = asyncio.get_running_loop().create_task(self._one_burst(size))
        try:
            await asyncio.wait({task})
            self.bursts += 1
            self._check_burst(task)
        finally:
            self.bursting = False
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _serve(self) -> None:
        while self.session.real_active and not self.session.unusable.is_set():
            self._wake.clear()
            await self._wake.wait()
        if not self.session.unusable.is_set():
            self.fire(WarmEvent.REAL_ENDED)

    async def _backoff(self) -> None:
        delay = backoff_delay(
            self.throttled - 1, self.settings.backoff_min, self.settings.backoff_max
        )
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
                return
        if self.state is WarmState.BACKOFF:
            self.fire(WarmEvent.BACKOFF_OVER)
