"""The inbound server, serving the forwarding app over HTTP/1.1, h2c prior knowledge and
TLS (ALPN h2 / http/1.1), embedded in our asyncio loop so the app, the pool and the warm-up
engine share one event loop and no state crosses processes.

- ``granian`` (default): Rust/hyper, measured 3-4x hypercorn's h2 throughput on these
  machines (h2load against both, same app). It does not implement the ASGI trailers extension, so
  response trailers (gRPC status) are dropped.
- ``hypercorn``: pure Python, slower, but implements ``http.response.trailers``: choose it
  for gRPC and anything else that needs trailers end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings, HTTP2Settings
from granian.log import LogLevels
from granian.server.embed import Server

from cwndproxy.proxy.asgi import App
from cwndproxy.urls import bracket_host, format_url

log = logging.getLogger(__name__)


class InboundServer(Protocol):
    """What the service needs of the server that accepts client connections."""

    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str: ...

    async def start(self, ready_timeout: float = 10.0) -> None:
        """Serve, and return once the port accepts connections (OSError if it cannot)."""

    async def stop(self) -> None:
        """Stop accepting and close the client connections."""


def _check_bindable(host: str, port: int, *, reuse_port: bool = False) -> None:
    """Raise OSError if the address is taken. granian listens with SO_REUSEPORT on Linux,
    so without this check a second proxy on a taken port would silently share it; with
    ``reuse_port`` that sharing is what the operator asked for."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR like granian, so a port in TIME_WAIT is not reported as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))


@dataclass(frozen=True)
class Listener:
    """Where and how clients connect, whichever server accepts them."""

    host: str
    port: int
    tls_cert: str | None = None
    tls_key: str | None = None
    # Request headers must arrive within this; it also ends idle HTTP/1.1 keep-alive.
    read_timeout_ms: int = 30000
    backlog: int = 1024
    # Share the address with other processes (SO_REUSEPORT); granian only.
    reuse_port: bool = False


class _ListeningServer:
    def __init__(self, listener: Listener) -> None:
        self.host = listener.host
        self.port = listener.port
        self.tls = bool(listener.tls_cert)

    @property
    def url(self) -> str:
        return format_url(self.tls, self.host, self.port)


class HypercornServer(_ListeningServer):
    """InboundServer on hypercorn (trailers supported)."""

    def __init__(self, app: App, listener: Listener) -> None:
        from hypercorn.config import Config as HypercornConfig

        super().__init__(listener)
        self.app = app
        config = HypercornConfig()
        config.bind = [f"{bracket_host(self.host)}:{self.port}"]
        if listener.tls_cert and listener.tls_key:
            config.certfile = listener.tls_cert
            config.keyfile = listener.tls_key
        config.alpn_protocols = ["h2", "http/1.1"]
        # Not hypercorn's read_timeout: it ends a connection whose client sent nothing for
        # that long, which is every HTTP/1.1 client in the middle of a long download (the
        # response was cut at ~31 MB for a client reading 1 MB/s; measured). Its
        # keep_alive_timeout runs only while no request is in progress, from the moment
        # the connection opens: a silent or slowloris connection (whose request never
        # completes) is closed after it, an active download never.
        config.keep_alive_timeout = max(1, listener.read_timeout_ms // 1000)
        config.backlog = listener.backlog
        config.accesslog = None
        config.errorlog = None
        self._config = config
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, ready_timeout: float = 10.0) -> None:
        from hypercorn.asyncio import serve

        _check_bindable(self.host, self.port)
        coro = serve(self.app, self._config, shutdown_trigger=self._stop.wait)
        self._task = asyncio.get_running_loop().create_task(coro)
        await _wait_listening(self.host, self.port, self._task, ready_timeout, self.url)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stop.set()
        with contextlib.suppress(Exception):
            await self._task
        self._task = None


async def _wait_listening(
    host: str, port: int, task: asyncio.Task[Any], timeout: float, url: str
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if task.done():
            task.result()  # raises the server's start-up error
            raise OSError(f"inbound server on {host}:{port} exited at start")
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise OSError(f"inbound server did not listen on {url}") from None
            await asyncio.sleep(0.02)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


class GranianServer(_ListeningServer):
    """InboundServer on granian (the default)."""

    def __init__(
        self,
        app: App,
        listener: Listener,
        *,
        h2c: bool = True,
        idle_timeout_ms: int = 60000,
        stream_window: int = 16 * 1024 * 1024,
        log_enabled: bool = False,
        max_connections: int = 10000,
    ) -> None:
        super().__init__(listener)
        self._reuse_port = listener.reuse_port
        # Over TLS, ALPN picks h1 or h2; in plain text, auto mode detects the h2 preface
        # (prior knowledge). With h2c off, plain text is HTTP/1.1 only.
        mode = HTTPModes.auto if (self.tls or h2c) else HTTPModes.http1
        self._server = Server(
            app,
            address=self.host,
            port=self.port,
            interface=Interfaces.ASGINL,
            http=mode,
            # backpressure caps the connections granian serves at once: its default
            # (backlog // workers = 128) let 128 idle keep-alive clients lock out the rest.
            backlog=listener.backlog,
            backpressure=max_connections,
            # Also bounds an idle keep-alive connection's wait for its next request, and a
            # slowloris client's trickle of header bytes.
            http1_settings=HTTP1Settings(header_read_timeout=listener.read_timeout_ms),
            http2_settings=HTTP2Settings(
                # Windows as large as upstream ones, so the client leg is never the limit.
                initial_connection_window_size=4 * stream_window,
                initial_stream_window_size=stream_window,
                max_frame_size=1024 * 1024,
                keep_alive_interval=max(1000, idle_timeout_ms // 2),
                keep_alive_timeout=max(1, idle_timeout_ms // 1000),
                max_send_buffer_size=1024 * 1024,
            ),
            ssl_cert=Path(listener.tls_cert) if listener.tls_cert else None,
            ssl_key=Path(listener.tls_key) if listener.tls_key else None,
            log_enabled=log_enabled,
            log_level=LogLevels.warning,
            websockets=False,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self, ready_timeout: float = 10.0) -> None:
        """Start serving and return once the port accepts connections.

        Raises OSError (e.g. address in use) before granian is started: granian panics in
        Rust on a failed bind, which would print a backtrace instead of a clear error.
        """
        _check_bindable(self.host, self.port, reuse_port=self._reuse_port)
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        await _wait_listening(self.host, self.port, self._task, ready_timeout, self.url)

    async def stop(self) -> None:
        """Stop accepting and let granian close its connections."""
        if self._task is None:
            return
        self._server.stop()  # type: ignore[no-untyped-call]
        with contextlib.suppress(Exception):
            await self._task
        self._task = None
