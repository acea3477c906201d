"""Shared fixtures: real certificates (trustme), real origins and the real proxy on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from cwndproxy.config import Config, validate
from cwndproxy.origin import DemoOrigin, server_ssl_context
from cwndproxy.service import ProxyService


@dataclass
class Certs:
    ca_file: str
    cert_file: str
    key_file: str

    def server_context(self) -> ssl.SSLContext:
        return server_ssl_context(self.cert_file, self.key_file)


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
