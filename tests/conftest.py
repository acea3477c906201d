"""Shared fixtures: real certificates (trustme), real origins and the real proxy on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from cwndproxy.config import Config, validate
from cwndproxy.http2 import perf
from cwndproxy.lab.nginx import NginxServer
from cwndproxy.lab.origin import DemoOrigin, server_ssl_context
from cwndproxy.lab.ports import free_port
from cwndproxy.lab.testbed import netns
from cwndproxy.lab.testbed.origins import OriginInfo
from cwndproxy.service import ProxyService

# A bandwidth whose BDP over loopback's ~0.03-0.2 ms exceeds TCP's initial window, so that
# auto sends grow and check fetches there (below it, auto has nothing to warm and sends
# none: warmup.policy.fits_initial_window). For tests that need dummy traffic beside real.
LOOPBACK_WARMING_MBPS = 10_000

# What the CLI does at process start, so in-process proxies run as the real one does.
perf.apply()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (``timeout``, a CI runner, ``kill``) stops the run as Ctrl-C does. pytest
    tears fixtures down after a KeyboardInterrupt but not on a bare SIGTERM, which killed
    the process and left testbeds behind: network namespaces, the link process, nginx,
    /run/cwnd-testbed/*.json."""
    signal.signal(signal.SIGTERM, _interrupt)


@dataclass
class Certs:
    ca_file: str
    cert_file: str
    key_file: str

    def server_context(self) -> ssl.SSLContext:
        return server_ssl_context(self.cert_file, self.key_file)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll state the code under test exposes until ``predicate()`` holds; TimeoutError
    after ``timeout`` seconds. For waiting on a condition, never on a fixed sleep."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polling observed state, no event to wait on
            await asyncio.sleep(0.02)


@pytest.fixture(scope="session")
def testbed_available() -> None:
    """Skip unless this machine can build the WAN testbed (root, TUN, namespaces): checked
    once, when the first test that needs it runs, not when its module is imported."""
    try:
        netns.check_available()
    except netns.TestbedUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_file = directory / "ca.pem"
    cert_file = directory / "cert.pem"
    key_file = directory / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key_file))
    # Chain: leaf first, then intermediates (nginx and granian both want the full chain).
    with open(cert_file, "wb") as fh:
        for blob in cert.cert_chain_pems:
            fh.write(blob.bytes())
    return Certs(str(ca_file), str(cert_file), str(key_file))


def rss_mb() -> float:
    """This process's resident memory now, in MB (in-process proxies run in it)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def proxy_argv_for_testbed(info: OriginInfo, *, pool_size: int, bandwidth_mbps: float) -> list[str]:
    """``Testbed.start_proxy`` arguments: in front of the testbed's nginx over TLS, warming
    with its blob."""
    return [
        "--upstream",
        info.tls_url,
        "--ca-file",
        info.ca_file,
        "--pool-size",
        str(pool_size),
        "--bandwidth-mbps",
        f"{bandwidth_mbps:g}",
        "--download-path",
        info.blob_path,
    ]


async def raw_http1_status(
    port: int, raw: bytes, *, timeout: float = 10.0, read_body: bool = False
) -> int:
    """Send ``raw`` bytes to 127.0.0.1:``port`` on a new connection and return the status
    of the HTTP/1 response; with ``read_body``, read on until the server closes (a request
    sent with Connection: close)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(raw)
            await writer.drain()
            line = await reader.readline()
            if read_body:
                await reader.read()
        finally:
            writer.close()
    assert line.startswith(b"HTTP/1."), line
    return int(line.split()[1])


@pytest.fixture
async def origin() -> AsyncIterator[DemoOrigin]:
    async with DemoOrigin("127.0.0.1", 0) as server:
        yield server


@pytest.fixture
async def tls_origin(certs: Certs) -> AsyncIterator[DemoOrigin]:
    async with DemoOrigin("127.0.0.1", 0, ssl_context=certs.server_context()) as server:
        yield server


def proxy_config(
    upstream_port: int, *, tls: bool = False, ca_file: str | None = None, pool_size: int = 2
) -> Config:
    config = Config()
    config.target.host = "127.0.0.1"
    config.target.port = upstream_port
    config.target.tls = tls
    config.target.tls_ca_file = ca_file
    config.target.tls_server_name = "localhost" if tls else None
    config.pool.pool_size = pool_size
    # The proxy-core tests run a plain keep-alive pool; warm-up tests set their own.
    config.pool.strategy = "off"
    config.pool.reconnect_min_ms = 50
    config.pool.reconnect_max_ms = 500
    config.server.port = free_port()
    config.server.shutdown_grace_ms = 5000
    config.ui.tui = False
    return config


ProxyFactory = Callable[[Config], contextlib.AbstractAsyncContextManager[ProxyService]]


@pytest.fixture
def make_proxy() -> ProxyFactory:
    @contextlib.asynccontextmanager
    async def factory(config: Config) -> AsyncIterator[ProxyService]:
        validate(config)
        service = ProxyService(config)
        await service.start(wait_ready=5.0)
        try:
            yield service
        finally:
            await service.stop()

    return factory


@dataclass
class CurlResult:
    code: int
    stdout: bytes
    stderr: bytes


async def run(*argv: str, timeout: float = 120.0, stdin: bytes | None = None) -> CurlResult:
    """Run a third-party client (curl, h2load) without blocking the event loop the proxy
    runs on."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(stdin)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return CurlResult(proc.returncode, out, err)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (the Makefile installs it)")
        pytest.skip(f"{name} not installed (make test installs it)")
    return path


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


@contextlib.asynccontextmanager
async def proxy_to_recycling_nginx(
    tmp_path: Path,
    make_proxy: ProxyFactory,
    keepalive_requests: int,
    *,
    upstream_max_streams: int = 0,
) -> AsyncIterator[ProxyService]:
    """The proxy (pool of 4, warm-up auto on a 4 MiB blob) in front of a private nginx that
    ends each connection with GOAWAY(NO_ERROR) after ``keepalive_requests`` streams; it
    serves /small.bin (1 KiB) for load."""
    require_tool("nginx")
    server = NginxServer(
        tmp_path / "nginx", h2c_port=free_port(), keepalive_requests=keepalive_requests
    )
    server.add_blob("blob.bin", 4 * 1024 * 1024)
    server.add_blob("small.bin", 1024)
    with server:
        assert server.h2c_port is not None
        config = proxy_config(server.h2c_port, pool_size=4)
        config.pool.strategy = "auto"
        config.pool.bandwidth_mbps = LOOPBACK_WARMING_MBPS
        config.pool.warm_up_download_path = "/blob.bin"
        config.pool.upstream_max_streams = upstream_max_streams
        async with make_proxy(config) as proxy:
            yield proxy


async def h2load_report(
    port: int,
    requests: int,
    *,
    timeout: float,
    h1: bool = False,
    clients: int = 20,
    path: str = "/small.bin",
) -> str:
    """h2load, ``clients`` connections (x 10 streams over h2c, 1 over HTTP/1.1) fetching
    ``path`` from the proxy on ``port``; its report, after checking it ran."""
    result = await run(
        require_tool("h2load"),
        *(["--h1"] if h1 else []),
        "-n",
        str(requests),
        "-c",
        str(clients),
        "-m",
        "1" if h1 else "10",
        f"http://127.0.0.1:{port}{path}",
        timeout=timeout,
    )
    text = result.stdout.decode()
    assert result.code == 0, text + result.stderr.decode()
    return text
