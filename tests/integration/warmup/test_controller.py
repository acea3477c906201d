"""Warm-up workers and controller against the demo origin on loopback (real sockets)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from cwndproxy.lab.origin import DemoOrigin
from cwndproxy.upstream.counters import TrafficKind
from cwndproxy.upstream.dial import UpstreamTarget, dial
from cwndproxy.upstream.session import H2Session, UpstreamError
from cwndproxy.warmup.controller import WarmupController, WarmupSettings
from cwndproxy.warmup.coordinator import WarmupCoordinator
from cwndproxy.warmup.policy import WarmState
from cwndproxy.warmup.workers import DownloadWorker, UploadWorker, WarmupRejected
from tests.conftest import LOOPBACK_WARMING_MBPS, ProxyFactory, proxy_config, wait_for


async def session_to(origin: DemoOrigin) -> H2Session:
    s = await dial(UpstreamTarget("127.0.0.1", origin.port, tls=False), rtt_probe_interval=0)
    await s.ping()  # the server's SETTINGS arrive before the PING ACK
    return s


@pytest.fixture
async def session(origin: DemoOrigin) -> AsyncIterator[H2Session]:
    s = await session_to(origin)
    yield s
    await s.aclose()


def settings(**kw: object) -> WarmupSettings:
    base: dict[str, object] = {
        "strategy": "burst",
        "direction": "download",
        "target_bps": 20e6,
        "dwell": 0.5,
        "download_path": "/cwnd/blob?size=100000000",
        "upload_path": "/cwnd/sink",
        "backoff_min": 0.05,
        "backoff_max": 0.2,
    }
    base.update(kw)
    return WarmupSettings(**base)  # type: ignore[arg-type]


async def test_download_worker_uses_range(session: H2Session) -> None:
    worker = DownloadWorker(session, "/cwnd/blob?size=1000000", {})
    fetched = await worker.fetch(100_000)
    assert fetched.received == 100_000
    assert worker.range_honoured is True and worker.cancelled == 0
    assert session.counters.dummy_rx == 100_000 and session.counters.real_rx == 0


async def test_download_worker_cancels_when_range_is_ignored() -> None:
    async with DemoOrigin("127.0.0.1", 0, supports_range=False) as origin:
        s = await session_to(origin)
        worker = DownloadWorker(s, "/cwnd/blob?size=50000000", {})
        got = (await worker.fetch(200_000)).received
        assert 200_000 <= got < 50_000_000
        assert worker.range_honoured is False and worker.cancelled == 1
        await wait_for(lambda: not any(p.requests for p in origin.protocols))
        assert origin.stats.bytes_sent < 50_000_000
        await s.aclose()


async def test_download_worker_rejects_a_missing_path(session: H2Session) -> None:
    with pytest.raises(WarmupRejected, match="404"):
        await DownloadWorker(session, "/nope", {}).fetch(1000)


async def test_upload_worker_restarts_after_early_termination(session: H2Session) -> None:
    worker = UploadWorker(session, "/reset", "POST", {}, retry=True)
    for _ in range(3):
        # The reset may hit mid-send; the next send reopens the upload.
        with contextlib.suppress(UpstreamError):
            await worker.send(10_000)
        await asyncio.sleep(0.05)
    assert worker.restarts >= 1
    no_retry = UploadWorker(session, "/reset", "POST", {}, retry=False)
    # The reset mid-send (UpstreamError) or, at the next send, the ended upload (rejected).
    with pytest.raises((UpstreamError, WarmupRejected)):
        for _ in range(3):
            await no_retry.send(10_000)
            await asyncio.sleep(0.05)
    worker.close()


async def test_upload_worker_keeps_one_long_lived_stream(origin: DemoOrigin) -> None:
    s = await session_to(origin)
    worker = UploadWorker(s, "/cwnd/sink", "PUT", {"x-token": "t"}, retry=True)
    for _ in range(5):
        assert await worker.send(64 * 1024) == 64 * 1024
    await wait_for(lambda: origin.stats.bytes_received == 5 * 64 * 1024)
    assert worker.restarts == 0 and origin.stats.requests == 1
    assert s.counters.dummy_tx == 5 * 64 * 1024
    worker.close()
    await s.aclose()


async def test_controller_ramps_then_holds_with_bursts(session: H2Session) -> None:
    ctl = WarmupController(session, settings())
    ctl.start()
    await wait_for(lambda: ctl.state_name == WarmState.HOLDING.value)
    assert ctl.plan is not None
    bursts = ctl.bursts
    await wait_for(lambda: ctl.bursts >= bursts + 2, timeout=5)
    assert [s for _, s in ctl.history][:3] == [
        WarmState.CONNECTING,
        WarmState.RAMPING,
        WarmState.HOLDING,
    ]
    await ctl.stop()


async def test_throttling_backs_off_and_shows_as_a_state(session: H2Session) -> None:
    ctl = WarmupController(session, settings(download_path="/status/429"))
    ctl.start()
    await wait_for(lambda: ctl.throttled >= 2)
    assert WarmState.BACKOFF in [s for _, s in ctl.history]
    assert "429" in (ctl.last_error or "")
    await ctl.stop()


async def test_a_404_warm_up_path_fails_warm_up_but_not_the_session(
    session: H2Session,
) -> None:
    ctl = WarmupController(session, settings(download_path="/nope"))
    ctl.start()
    await wait_for(lambda: ctl.state_name == WarmState.FAILED.value)
    assert "404" in (ctl.last_error or "")
    assert session.is_usable
    await ctl.stop()


async def test_no_dummy_traffic_under_max_concurrent_streams_1(
    make_proxy: ProxyFactory,
) -> None:
    async with DemoOrigin("127.0.0.1", 0, max_concurrent_streams=1) as origin:
        config = proxy_config(origin.port, pool_size=1)
        config.pool.strategy = "burst"
        config.pool.warm_up_download_path = "/cwnd/blob?size=10000000"
        config.pool.per_connection_dwell_ms = 300
        async with make_proxy(config) as proxy:
            slot = proxy.pool.slots[0]
            # Warm-up has run and been refused (twice), with the upstream's SETTINGS known.
            await wait_for(lambda: _refusals(slot.controller) >= 2, timeout=10)
            assert slot.session is not None and slot.session.peer_max_concurrent_streams == 1
            assert slot.counters.dummy_rx == 0, "dummy must never take the last stream slot"
            reader, writer = await asyncio.open_connection("127.0.0.1", config.server.port)
            writer.write(b"GET /cwnd/blob?size=1000 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            writer.close()


async def test_real_traffic_pauses_dummy_traffic_and_it_resumes(
    make_proxy: ProxyFactory, origin: DemoOrigin
) -> None:
    config = proxy_config(origin.port, pool_size=1)
    config.pool.strategy = "burst"
    config.pool.bandwidth_mbps = 50
    config.pool.warm_up_download_path = "/cwnd/blob?size=100000000"
    config.pool.per_connection_dwell_ms = 300
    config.pool.warm_up_interval_ms = 50
    async with make_proxy(config) as proxy:
        slot = proxy.pool.slots[0]
        await wait_for(
            lambda: (
                slot.controller is not None
                and slot.controller.state_name == WarmState.HOLDING.value
            )
        )
        session = slot.session
        assert session is not None
        ctl = slot.controller
        assert ctl is not None
        # A slow client: the real stream stays active for a while.
        reader, writer = await asyncio.open_connection("127.0.0.1", config.server.port)
        writer.write(b"GET /cwnd/blob?size=300000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readexactly(1024 * 1024)
        await wait_for(lambda: session.real_active == 1)
        assert ctl.state_name == WarmState.SERVING.value
        # Dummy streams in flight were cancelled; give stragglers a moment to land.
        await asyncio.sleep(0.2)
        during = session.counters.dummy_rx
        for _ in range(10):
            await reader.readexactly(1024 * 1024)
            await asyncio.sleep(0.05)
        assert session.counters.dummy_rx == during, "no dummy data while real traffic flows"
        assert session.active_streams_of(TrafficKind.DUMMY) == 0
        writer.close()
        await wait_for(lambda: session.real_active == 0)
        await wait_for(lambda: ctl.state_name == WarmState.HOLDING.value)
        await wait_for(lambda: session.counters.dummy_rx > during)


async def test_real_traffic_elsewhere_in_the_pool_shrinks_bursts_to_keepalives(
    session: H2Session, origin: DemoOrigin
) -> None:
    other = await session_to(origin)
    coordinator = WarmupCoordinator()
    coordinator.watch(other)
    ctl = WarmupController(session, settings(interval_ms=50), coordinator=coordinator)
    ctl.start()
    await wait_for(lambda: ctl.state_name == WarmState.HOLDING.value)
    await wait_for(lambda: ctl.bursts >= 2)
    assert ctl.keepalive_bursts == 0
    # A slow real download on the other session of the pool.
    stream = await other.open_stream("GET", "/slow?delay_ms=5000", [], end_stream=True)
    await wait_for(lambda: coordinator.real_streams == 1)
    before = session.counters.dummy_rx
    await wait_for(lambda: ctl.keepalive_bursts >= 3)
    per_burst = (session.counters.dummy_rx - before) / max(ctl.keepalive_bursts, 1)
    assert per_burst <= 2 * 16 * 1024
    stream.cancel()
    await ctl.stop()
    await other.aclose()


async def test_dummy_and_real_headers_never_mix(
    make_proxy: ProxyFactory, origin: DemoOrigin
) -> None:
    """warm_up_headers (e.g. a token for the warm-up object) go on dummy requests only; a
    client's Cookie and Authorization go on its own requests only."""
    config = proxy_config(origin.port, pool_size=2)
    config.pool.strategy = "auto"
    config.pool.bandwidth_mbps = LOOPBACK_WARMING_MBPS
    config.pool.warm_up_download_path = "/cwnd/blob?size=20000000"
    config.pool.warm_up_headers = {"authorization": "Bearer dummy-secret", "x-warm": "1"}
    async with make_proxy(config) as proxy:
        warm = ("holding", "serving")
        await wait_for(
            lambda: all(s.controller and s.controller.state_name in warm for s in proxy.pool.slots)
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", config.server.port)
        for _ in range(3):
            writer.write(
                b"GET /echo HTTP/1.1\r\nHost: x\r\nCookie: session=client\r\n"
                b"Authorization: Bearer client-token\r\n\r\n"
            )
            await writer.drain()
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            await asyncio.sleep(0.1)
        writer.close()
    dummy = [r for r in origin.request_log if r.path == "/cwnd/blob"]
    real = [r for r in origin.request_log if r.path == "/echo"]
    assert dummy and len(real) == 3
    for r in dummy:
        assert r.header(b"authorization") == "Bearer dummy-secret"
        assert r.header(b"cookie") is None
    for r in real:
        assert r.header(b"authorization") == "Bearer client-token"
        assert r.header(b"cookie") == "session=client"
        assert r.header(b"x-warm") is None


def _refusals(controller: object) -> int:
    return controller.no_slot_refusals if isinstance(controller, WarmupController) else 0
