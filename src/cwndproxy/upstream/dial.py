"""Opening the TCP (and TLS) connection under an H2Session.

h2c uses prior knowledge (RFC 9113 section 3.3): the client preface goes straight onto the
TCP connection. TLS must negotiate ``h2`` by ALPN; ``selected_alpn_protocol()`` silently
returns None when the server lacks h2, so that case is an explicit error here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass

from cwndproxy.http2.asyncio_edge import EndpointProtocol
from cwndproxy.upstream.session import H2Session, SessionSettings
from cwndproxy.urls import bracket_host, format_url

log = logging.getLogger(__name__)


class DialError(Exception):
    """The upstream could not be reached or does not speak HTTP/2. The message says why."""


@dataclass(frozen=True)
class UpstreamTarget:
    host: str
    port: int
    tls: bool
    server_name: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    connect_timeout: float = 5.0
    # Our sockets' congestion control (TCP_CONGESTION), e.g. "bbr"; None = the system's.
    congestion_control: str | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def authority(self) -> str:
        host = bracket_host(self.server_name or self.host)
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return format_url(self.tls, self.host, self.port)


def build_ssl_context(target: UpstreamTarget) -> ssl.SSLContext:
    """Verification on with system CAs by default; ``ca_file`` adds a private CA."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if target.ca_file:
        try:
            ctx.load_verify_locations(cafile=target.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise DialError(f"cannot load CA file {target.ca_file!r}: {exc}") from exc
    if target.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    # RFC 9113 section 9.2: TLS 1.2 or later for HTTP/2.
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def dial(
    target: UpstreamTarget,
    *,
    settings: SessionSettings | None = None,
    rtt_probe_interval: float = 1.0,
    ssl_context: ssl.SSLContext | None = None,
) -> H2Session:
    """Connect, check ALPN, and start HTTP/2. Raises DialError with a plain reason."""
    loop = asyncio.get_running_loop()
    ctx = (ssl_context or build_ssl_context(target)) if target.tls else None

    def factory() -> H2Session:
        return H2Session(
            authority=target.authority,
            scheme=target.scheme,
            settings=settings,
            rtt_probe_interval=rtt_probe_interval,
        )

    try:
        async with asyncio.timeout(target.connect_timeout):
            session = factory()
            transport, _ = await loop.create_connection(
                lambda: EndpointProtocol(session),
                target.host,
                target.port,
                ssl=ctx,
                server_hostname=(target.server_name or target.host) if ctx else None,
            )
            # uvloop may return before calling connection_made; asyncio never does.
            await session.connected.wait()
    except TimeoutError:
        raise DialError(
            f"connecting to {target.url} timed out after {target.connect_timeout:.1f}s"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise DialError(
            f"TLS certificate of {target.url} not trusted: {exc.verify_message}; "
            "use --ca-file for a private CA (or --insecure for tests only)"
        ) from exc
    except ssl.SSLError as exc:
        raise DialError(f"TLS handshake with {target.url} failed: {exc}") from exc
    except OSError as exc:
        raise DialError(f"cannot connect to {target.url}: {exc.strerror or exc}") from exc

    sock = transport.get_extra_info("socket")
    if sock is not None:
        # asyncio already sets TCP_NODELAY on TCP transports; be explicit, since small
        # frames (PING, WINDOW_UPDATE, HEADERS) must not wait for Nagle.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if target.congestion_control:
            _set_congestion_control(sock, target.congestion_control, transport)
    if ctx is not None:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if alpn != "h2":
            transport.close()
            raise DialError(
                f"{target.url} did not select HTTP/2 by ALPN (got {alpn or 'nothing'}); "
                "the upstream must support h2 over TLS"
            )
    session.start()
    return session


def _set_congestion_control(
    sock: socket.socket, name: str, transport: asyncio.BaseTransport
) -> None:
    """After connect: a route's congestion control (``ip route ... congctl``) is applied
    at connect time and would override an earlier choice. Linux lets an unprivileged
    process pick any algorithm in net.ipv4.tcp_allowed_congestion_control."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name.encode())
    except OSError as exc:
        transport.close()
        raise DialError(
            f"cannot use congestion control {name!r}: {exc.strerror or exc} (allowed here: "
            f"{_allowed_congestion_controls()})"
        ) from exc


def _allowed_congestion_controls() -> str:
    try:
        with open("/proc/sys/net/ipv4/tcp_allowed_congestion_control") as fh:
            return fh.read().strip() or "none"
    except OSError:
        return "unknown"
