"""Configuration: typed dataclasses with defaults in source, a TOML file on top,
command-line flags on top of that, then validation.

Every validation error names the key and what is allowed, e.g.
``pool.warm_up_direction = "upload" needs pool.warm_up_upload_path``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import ssl
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cwndproxy.urls import format_url, split_http_url

DIRECTIONS = ("upload", "download", "both")
UPLOAD_METHODS = ("POST", "PUT")
DOWNLOAD_METHODS = ("GET",)
STRATEGIES = ("auto", "burst", "ping", "off")
WARM_UP_TARGETS = ("auto", "path", "share")
LOG_FORMATS = ("human", "json")
HTTP2_CODECS = ("h2", "lean")


class ConfigError(Exception):
    """A configuration problem; the message names the key."""


@dataclass
class TargetConfig:
    # The upstream's host name or address; no default: there is no sensible upstream to
    # guess (``demo`` sets its own origin).
    host: str = ""
    port: int = 8443
    protocol: str = "http2"
    tls: bool = True
    tls_insecure_skip_verify: bool = False
    tls_ca_file: str | None = None
    tls_server_name: str | None = None
    connect_timeout_ms: int = 5000
    # Congestion control of our sockets to the upstream (TCP_CONGESTION), e.g. "bbr"; unset =
    # the system default. Only our own sending (uploads) is affected.
    congestion_control: str | None = None
    # Time allowed for the upstream's response headers before the client gets a 504.
    response_timeout_ms: int = 60000


@dataclass
class PoolConfig:
    pool_size: int = 4
    bandwidth_mbps: float = 100.0
    # 0 means auto: derived from the measured RTT and the per-connection target.
    warm_up_interval_ms: int = 0
    warm_up_size_bytes: int = 0
    warm_up_direction: str = "download"
    warm_up_upload_path: str | None = None
    warm_up_upload_method: str = "POST"
    warm_up_download_path: str | None = None
    warm_up_download_method: str = "GET"
    download_supports_range: bool = True
    per_connection_dwell_ms: int = 2000
    fallback_upload_retry: bool = True
    warm_up_headers: dict[str, str] = field(default_factory=dict)
    # auto: grow each session's window once, hold it with PINGs, verify, grow again when
    # it is gone (bursts if PINGs do not hold); ping: PINGs only; burst: the original
    # spec (ramp, then a burst per interval); off: a plain keep-alive pool.
    strategy: str = "auto"
    # The window each session warms for: "path" = one BDP of the whole bandwidth (a lone
    # request gets the full path rate), "share" = bandwidth / pool_size (the original
    # spec), "auto" = path, except share for burst (whose holding cost grows with it).
    warm_up_target: str = "auto"
    # auto: what a held window may send at once after idle, in target windows (BDPs), so
    # it never bursts more into the path than the path holds. Download: the credit the
    # upstream holds in our HTTP/2 connection window while no response arrives (2x while
    # one does: transfers are not capped). Upload: our own sends are paced at this many x
    # the target rate (SO_MAX_PACING_RATE), which does cap uploads: bandwidth_mbps must not
    # be set below the path's rate. 0.9, not 1: TCP/IP, TLS and HTTP/2 framing make one BDP
    # of payload ~4% more on the wire, enough to overflow a queue of one BDP. 0 = no limit.
    burst_limit_bdp: float = 0.9
    # auto: replace a session whose window packet loss cut below what a new connection's
    # slow start delivers sooner (docs/WARMUP.md). Off by default: it wins on paths with
    # random loss and an empty queue (1% loss: 219 ms p50 against HAProxy's 498), but
    # where the loss comes from a competing flow's full queue the new connection's slow
    # start ends early (by our reading HyStart's delay test) and the fetches after a
    # renewal got slower (up to 7.9 s against 1.4-1.8 s).
    renew_lossy_sessions: bool = False
    # HTTP/2 PING period for RTT measurement; 0 disables it.
    rtt_probe_interval_ms: int = 1000
    # HTTP/2 flow control: must exceed the path's BDP, or the window, not cwnd, is the limit.
    stream_window_bytes: int = 16 * 1024 * 1024
    connection_window_bytes: int = 64 * 1024 * 1024
    # SETTINGS_MAX_FRAME_SIZE we announce; 0 = auto (effective_max_frame_size).
    max_frame_size: int = 0
    # The upstream HTTP/2 client codec: "lean" (ours, fewer Python steps per frame) or
    # "h2" (the library, the reference the lean codec is tested against).
    http2_codec: str = "lean"
    reconnect_min_ms: int = 100
    reconnect_max_ms: int = 10000
    # Streams the upstream serves per connection before its GOAWAY (nginx: http2 or
    # keepalive_requests, default 1000; HAProxy: max-reuse); each session's replacement is
    # then dialled a quarter before and takes over when the session retires itself at the
    # limit, so no request meets the GOAWAY. 0 = learn it from the upstream's GOAWAYs (two
    # at the same count).
    upstream_max_streams: int = 0


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    inbound_tls: bool = False
    inbound_h2c: bool = True
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # Time to receive a request's headers (HTTP/1.1; also how long an idle keep-alive
    # connection may wait for its next request), and to hand one response chunk to a slow
    # client before the exchange is aborted. Short, like nginx's client_header_timeout: a
    # slowloris client must not hold a connection for long.
    read_timeout_ms: int = 10000
    write_timeout_ms: int = 30000
    # HTTP/2 keep-alive: a client connection that does not answer a PING this long is closed.
    idle_timeout_ms: int = 60000
    # "granian" (fast; drops response trailers) or "hypercorn" (passes trailers, for gRPC).
    inbound_server: str = "granian"
    # Client connections served at once (granian's backpressure; its default, 128, let 128
    # idle keep-alive clients lock everyone else out) and the listen backlog.
    max_connections: int = 10000
    backlog: int = 1024
    # Let several proxy processes listen on the same address (SO_REUSEPORT; the kernel
    # spreads new connections over them): the way past one core (docs/SCALING.md). Off,
    # a second process on a taken port fails at start instead of silently sharing it.
    reuse_port: bool = False
    # Send the client's Host as :authority instead of the upstream's own name.
    preserve_host: bool = False
    shutdown_grace_ms: int = 10000
    # Prometheus /metrics and /healthz, e.g. "127.0.0.1:9464"; unset = off.
    admin: str | None = None
    # One line per client request: "-" = standard output, else a file; unset = off.
    access_log: str | None = None
    # Requests beyond these are answered by the proxy (431, 414) and never reach a pooled
    # upstream session. Defaults as nginx (8 KiB per field line, 32 KiB in all) and HAProxy
    # (101 fields).
    max_request_header_bytes: int = 32 * 1024
    max_request_header_field_bytes: int = 8 * 1024
    max_request_headers: int = 101
    max_request_target_bytes: int = 8 * 1024


@dataclass
class UiConfig:
    tui: bool = True
    log_format: str = "human"


@dataclass
class Config:
    target: TargetConfig = field(default_factory=TargetConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    ui: UiConfig = field(default_factory=UiConfig)

    @property
    def warm_up_target(self) -> str:
        """The resolved per-session target: "path" or "share"."""
        target = self.pool.warm_up_target
        if target == "auto":
            return "share" if self.pool.strategy == "burst" else "path"
        return target

    @property
    def per_connection_target_bps(self) -> int:
        """The rate each session warms for, in bit/s: the whole bandwidth ("path"), or
        the original specification's floor((bandwidth_mbps * 1_000_000) / pool_size)
        ("share")."""
        bps = self.pool.bandwidth_mbps * 1_000_000
        if self.warm_up_target == "share":
            return math.floor(bps / self.pool.pool_size)
        return math.floor(bps)

    @property
    def effective_max_frame_size(self) -> int:
        """The largest DATA frame we let the upstream send. A frame is parsed, and its
        bytes forwarded, only once all of it has arrived, so each frame holds its first byte
        back by the frame's time on the path's bottleneck: a 1 MiB frame takes 168 ms at
        50 Mbit/s, and announcing 1 MiB put 1-2 RTTs on the first byte from an origin
        that sends frames that large (the demo origin; nginx sends http2_chunk_size, 8 KiB).
        auto: what the configured bandwidth carries in 2 ms, as a power of two between
        16 KiB (the protocol's default) and 1 MiB (fewer frames, less CPU per byte on fast
        paths: 100 Mbit/s gets 16 KiB, 1 Gbit/s 128 KiB, 10 Gbit/s 1 MiB)."""
        if self.pool.max_frame_size:
            return self.pool.max_frame_size
        carried = self.pool.bandwidth_mbps * 1e6 / 8 * 0.002
        size = 16384
        while size * 2 <= min(carried, 1024 * 1024):
            size *= 2
        return size

    @property
    def holds_only_what_requests_grow(self) -> bool:
        """auto or ping without a path to send dummy traffic on for the warmed direction:
        only real requests grow the windows that the PINGs then hold."""
        p = self.pool
        download = p.warm_up_download_path is not None
        upload = p.warm_up_upload_path is not None
        has_path = {"download": download, "upload": upload}.get(
            p.warm_up_direction, download and upload
        )
        return p.strategy in ("auto", "ping") and not has_path

    @property
    def upstream_url(self) -> str:
        return format_url(self.target.tls, self.target.host, self.target.port)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS: dict[str, type] = {
    "target": TargetConfig,
    "pool": PoolConfig,
    "server": ServerConfig,
    "ui": UiConfig,
}


def _type_name(tp: Any) -> str:
    if tp is bool:
        return "a boolean"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    return "a table of strings"


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Check a TOML value against the field's type. TOML already typed it; we only accept
    an int where a float is wanted and None for optional fields."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return _coerce(key, inner, value)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if (
        typing.get_origin(tp) is dict
        and isinstance(value, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    ):
        return dict(value)
    raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")


def apply_table(config: Config, table: dict[str, Any], source: str = "config") -> None:
    """Merge a parsed TOML table into ``config``, rejecting unknown keys."""
    for section, values in table.items():
        cls = _SECTIONS.get(section)
        if cls is None:
            allowed = ", ".join(_SECTIONS)
            raise ConfigError(f"{source}: unknown section [{section}] (allowed: {allowed})")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        target = getattr(config, section)
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            if key not in hints:
                allowed = ", ".join(hints)
                raise ConfigError(f"{source}: unknown key {section}.{key} (allowed: {allowed})")
            setattr(target, key, _coerce(f"{section}.{key}", hints[key], value))


def load_file(path: str | Path, config: Config | None = None) -> Config:
    config = config or Config()
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    apply_table(config, table, source=str(path))
    return config


def parse_upstream_url(url: str) -> tuple[str, int, bool]:
    """``https://host:port`` is TLS + ALPN h2; ``http://host:port`` is h2c prior knowledge."""
    try:
        host, port, tls, path = split_http_url(url)
    except ValueError as exc:
        raise ConfigError(f"--upstream {url!r}: {exc}") from None
    if path not in ("", "/") or "#" in url:
        raise ConfigError(f"--upstream {url!r}: give only scheme, host and port, no path")
    return host, port, tls


def parse_host_port(value: str, flag: str) -> tuple[str, int]:
    host, sep, port_s = value.rpartition(":")
    if not sep:
        raise ConfigError(f"{flag} {value!r}: expected HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError(f"{flag} {value!r}: port must be a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{flag} {value!r}: port must be 0-65535")
    return host, port


def _check_host(host: str) -> None:
    """A host name or an IP address, nothing else: a URL here would be dialled as a name."""
    with_brackets = host.startswith("[") and host.endswith("]")
    try:
        ipaddress.ip_address(host.strip("[]") if with_brackets else host)
        return
    except ValueError:
        pass
    if "://" in host or "/" in host:
        raise ConfigError(
            f"target.host = {host!r} must be a host name or address, not a URL (the port goes "
            "in target.port, TLS in target.tls; --upstream takes a URL)"
        )
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\.?", host):
        raise ConfigError(
            f"target.host = {host!r} is not a host name or address"
            + (" (the port goes in target.port)" if ":" in host else "")
        )


def _check_ca_file(path: str) -> None:
    """The CA file must load as certificates now, not when the first dial fails."""
    if not Path(path).is_file():
        raise ConfigError(f"target.tls_ca_file = {path!r}: file not found")
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(
            f"target.tls_ca_file = {path!r}: not a PEM certificate file ({exc})"
        ) from None


def _check_cert_and_key(cert: str, key: str) -> None:
    """The inbound certificate and key must load and belong together."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"server.tls_cert_file = {cert!r} and server.tls_key_file = {key!r} do not load "
            f"as a certificate and its private key ({exc})"
        ) from None


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f'{key} = "{value}" is not allowed (allowed: {", ".join(allowed)})')


def _positive(key: str, value: float, *, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(f"{key} = {value} must be {'>= 0' if zero_ok else '> 0'}")


def validate(config: Config) -> Config:
    """Raise ConfigError for the first problem found; return the config unchanged."""
    t, p, s, u = config.target, config.pool, config.server, config.ui
    if not t.host:
        raise ConfigError(
            "target.host is not set: name the upstream (target.host and target.port in the "
            "config file, or --upstream https://HOST:PORT)"
        )
    _check_host(t.host)
    if not 1 <= t.port <= 65535:
        raise ConfigError(f"target.port = {t.port} must be 1-65535")
    _one_of("target.protocol", t.protocol, ("http2",))
    if t.tls_ca_file:
        _check_ca_file(t.tls_ca_file)
    if (t.tls_insecure_skip_verify or t.tls_ca_file or t.tls_server_name) and not t.tls:
        raise ConfigError(
            "target.tls_insecure_skip_verify, tls_ca_file and tls_server_name "
            "need target.tls = true"
        )
    if t.congestion_control is not None and not re.fullmatch(
        r"[a-z0-9_]{1,15}", t.congestion_control
    ):
        raise ConfigError(
            f"target.congestion_control = {t.congestion_control!r} is not an algorithm name "
            "(e.g. bbr, cubic, reno)"
        )
    _positive("target.connect_timeout_ms", t.connect_timeout_ms)
    _positive("target.response_timeout_ms", t.response_timeout_ms)

    if not 1 <= p.pool_size <= 1024:
        raise ConfigError(f"pool.pool_size = {p.pool_size} must be 1-1024")
    if not (p.bandwidth_mbps > 0 and math.isfinite(p.bandwidth_mbps)):
        raise ConfigError(f"pool.bandwidth_mbps = {p.bandwidth_mbps} must be a number > 0")
    _positive("pool.warm_up_interval_ms", p.warm_up_interval_ms, zero_ok=True)
    _positive("pool.warm_up_size_bytes", p.warm_up_size_bytes, zero_ok=True)
    _positive("pool.per_connection_dwell_ms", p.per_connection_dwell_ms, zero_ok=True)
    _positive("pool.rtt_probe_interval_ms", p.rtt_probe_interval_ms, zero_ok=True)
    _positive("pool.upstream_max_streams", p.upstream_max_streams, zero_ok=True)
    _one_of("pool.warm_up_direction", p.warm_up_direction, DIRECTIONS)
    _one_of("pool.warm_up_upload_method", p.warm_up_upload_method, UPLOAD_METHODS)
    _one_of("pool.warm_up_download_method", p.warm_up_download_method, DOWNLOAD_METHODS)
    _one_of("pool.strategy", p.strategy, STRATEGIES)
    _one_of("pool.warm_up_target", p.warm_up_target, WARM_UP_TARGETS)
    if p.burst_limit_bdp != 0 and not 0.5 <= p.burst_limit_bdp <= 100:
        raise ConfigError(
            f"pool.burst_limit_bdp = {p.burst_limit_bdp} must be 0 (no limit) or 0.5 .. 100"
        )
    # Only burst cannot work without a warm-up path; auto then holds what real traffic
    # grows, and ping never sends dummy data.
    if p.strategy == "burst":
        if p.warm_up_direction in ("upload", "both") and not p.warm_up_upload_path:
            raise ConfigError(
                f'pool.warm_up_direction = "{p.warm_up_direction}" needs pool.warm_up_upload_path'
                ' with pool.strategy = "burst" (auto and ping work without one)'
            )
        if p.warm_up_direction in ("download", "both") and not p.warm_up_download_path:
            raise ConfigError(
                f'pool.warm_up_direction = "{p.warm_up_direction}" needs pool.warm_up_download_path'
                ' with pool.strategy = "burst" (auto and ping work without one)'
            )
    for key in ("warm_up_upload_path", "warm_up_download_path"):
        value = getattr(p, key)
        if value is not None and not value.startswith("/"):
            raise ConfigError(f"pool.{key} = {value!r} must start with '/'")
    for name in p.warm_up_headers:
        if not name or name.lower() != name or name.startswith(":"):
            raise ConfigError(
                f"pool.warm_up_headers: header name {name!r} must be lower-case and not a "
                "pseudo-header"
            )
    # RFC 9113 section 6.5.2 limits.
    if not 65535 <= p.stream_window_bytes <= 2**31 - 1:
        raise ConfigError("pool.stream_window_bytes must be 65535 .. 2147483647")
    if not 65535 <= p.connection_window_bytes <= 2**31 - 1:
        raise ConfigError("pool.connection_window_bytes must be 65535 .. 2147483647")
    if p.max_frame_size != 0 and not 16384 <= p.max_frame_size <= 2**24 - 1:
        raise ConfigError("pool.max_frame_size must be 0 (auto) or 16384 .. 16777215")
    if p.http2_codec not in HTTP2_CODECS:
        raise ConfigError(f"pool.http2_codec must be one of {', '.join(HTTP2_CODECS)}")
    _positive("pool.reconnect_min_ms", p.reconnect_min_ms)
    if p.reconnect_max_ms < p.reconnect_min_ms:
        raise ConfigError("pool.reconnect_max_ms must be >= pool.reconnect_min_ms")

    if not 0 <= s.port <= 65535:
        raise ConfigError(f"server.port = {s.port} must be 0-65535")
    if s.inbound_tls and not (s.tls_cert_file and s.tls_key_file):
        raise ConfigError("server.inbound_tls = true needs server.tls_cert_file and tls_key_file")
    if bool(s.tls_cert_file) != bool(s.tls_key_file):
        raise ConfigError("server.tls_cert_file and server.tls_key_file go together")
    for key in ("tls_cert_file", "tls_key_file"):
        value = getattr(s, key)
        if value and not Path(value).is_file():
            raise ConfigError(f"server.{key} = {value!r}: file not found")
    if s.tls_cert_file and s.tls_key_file:
        _check_cert_and_key(s.tls_cert_file, s.tls_key_file)
    try:
        ipaddress.ip_address(s.host)
    except ValueError:
        raise ConfigError(
            f"server.host = {s.host!r} must be an IP address to listen on "
            "(e.g. 127.0.0.1, 0.0.0.0 or ::)"
        ) from None
    for key in ("read_timeout_ms", "write_timeout_ms", "idle_timeout_ms", "max_connections"):
        _positive(f"server.{key}", getattr(s, key))
    _positive("server.shutdown_grace_ms", s.shutdown_grace_ms, zero_ok=True)
    if not 1 <= s.backlog <= 65535:
        raise ConfigError(f"server.backlog = {s.backlog} must be 1-65535")
    for key in (
        "max_request_header_bytes",
        "max_request_header_field_bytes",
        "max_request_headers",
        "max_request_target_bytes",
    ):
        _positive(f"server.{key}", getattr(s, key))
    if s.admin is not None:
        parse_host_port(s.admin, "server.admin")
    _one_of("ui.log_format", u.log_format, LOG_FORMATS)
    _one_of("server.inbound_server", s.inbound_server, ("granian", "hypercorn"))
    if s.reuse_port and s.inbound_server != "granian":
        raise ConfigError("server.reuse_port needs server.inbound_server = granian")
    return config


REDACTED = "<redacted>"


def to_toml(config: Config, *, redact: bool = False) -> str:
    """The effective configuration as TOML (for ``check-config``). ``redact`` hides the
    values of pool.warm_up_headers: they usually carry credentials (Authorization)."""
    lines: list[str] = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        tables: list[tuple[str, dict[str, str]]] = []
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} = (unset)")
            elif isinstance(value, dict):
                tables.append((key, value))
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, table in tables:
            inner = ", ".join(
                f"{_toml_value(k)} = {_toml_value(REDACTED if redact else v)}"
                for k, v in table.items()
            )
            lines.append(f"{key} = {{ {inner} }}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
