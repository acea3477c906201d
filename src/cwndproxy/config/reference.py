"""The configuration reference: every key's meaning, and the Markdown table built from it
with each key's type and default read from ``config.py`` (``cwnd-proxy check-config
--reference``, ``docs/CONFIG.md``). A test fails when a key has no entry here, so the
reference cannot fall behind the code."""

from __future__ import annotations

import dataclasses
import typing

from cwndproxy.config.settings import Config, _toml_value

MEANING: dict[str, str] = {
    "target.host": "The upstream's host name or IP address (required; no URL, no port).",
    "target.port": "The upstream's TCP port.",
    "target.protocol": 'Upstream protocol; only "http2" (TLS with ALPN h2, or h2c).',
    "target.tls": "TLS to the upstream (ALPN h2); false = h2c by prior knowledge.",
    "target.tls_insecure_skip_verify": "Do not verify the upstream's certificate (tests only).",
    "target.tls_ca_file": "PEM file of CAs to verify the upstream with (default: the system's).",
    "target.tls_server_name": "SNI and verification name, if not target.host.",
    "target.connect_timeout_ms": "TCP plus TLS handshake timeout per dial.",
    "target.congestion_control": (
        "TCP_CONGESTION for our upstream sockets (e.g. bbr); affects only what we send "
        "(uploads). Unset: the system default."
    ),
    "target.response_timeout_ms": "Time for the upstream's response headers before a 504.",
    "pool.pool_size": "HTTP/2 sessions, each on its own TCP connection.",
    "pool.bandwidth_mbps": (
        "The path's bandwidth: with the RTT, the window (BDP) each session warms for."
    ),
    "pool.warm_up_interval_ms": "burst: time between bursts; 0 = derived from the RTT.",
    "pool.warm_up_size_bytes": "burst: bytes per burst; 0 = derived from the target window.",
    "pool.warm_up_direction": "download, upload or both: whose window is warmed.",
    "pool.warm_up_upload_path": "Path of the upload sink for dummy POST/PUT (upload warm-up).",
    "pool.warm_up_upload_method": "POST or PUT for dummy uploads.",
    "pool.warm_up_download_path": (
        "Path of a large object for dummy Range GETs (download warm-up); unset: auto holds "
        "what real traffic grows."
    ),
    "pool.warm_up_download_method": "GET.",
    "pool.download_supports_range": "The download path honours Range (else reads and cancels).",
    "pool.per_connection_dwell_ms": "burst: how long each session's burst lasts at most.",
    "pool.fallback_upload_retry": "Retry a failed dummy upload stream.",
    "pool.warm_up_headers": (
        "Headers sent on dummy requests only (e.g. authorization), never on client requests; "
        "check-config prints their values redacted."
    ),
    "pool.strategy": "auto (grow, hold with PINGs, verify), ping, burst, or off (plain pool).",
    "pool.warm_up_target": (
        "path: each session warms for the whole bandwidth; share: bandwidth / pool_size; "
        "auto: path, but share for burst."
    ),
    "pool.burst_limit_bdp": (
        "auto: what a held window may send at once after idle, in BDPs (metered HTTP/2 "
        "window for downloads, pacing for uploads); 0 = no limit."
    ),
    "pool.renew_lossy_sessions": (
        "auto: replace a session whose window packet loss cut below a new connection's "
        "slow start (helps on random loss, hurts beside a competing flow)."
    ),
    "pool.rtt_probe_interval_ms": "HTTP/2 PING period for RTT measurement; 0 = off.",
    "pool.stream_window_bytes": "HTTP/2 stream receive window (must exceed the BDP).",
    "pool.connection_window_bytes": "HTTP/2 connection receive window (buffer allowance).",
    "pool.max_frame_size": "SETTINGS_MAX_FRAME_SIZE we announce upstream (the largest DATA "
    "frame the upstream may send). 0 = auto: what `bandwidth_mbps` carries in 2 ms, as a "
    "power of two from 16 KiB to 1 MiB, because a frame's first byte is forwarded only once "
    "the whole frame has crossed the path.",
    "pool.http2_codec": (
        "The upstream HTTP/2 client codec: `lean` (default: the same protocol in fewer Python "
        "steps per frame, about half h2's CPU per small request; "
        "cwndproxy/http2/lean_client.py) or `h2` (the h2 library, the reference the lean "
        "codec is tested against frame for frame). Restart to change."
    ),
    "pool.reconnect_min_ms": "First reconnect back-off step.",
    "pool.reconnect_max_ms": "Largest reconnect back-off step.",
    "pool.upstream_max_streams": (
        "Streams the upstream serves per connection (nginx keepalive_requests, HAProxy "
        "max-reuse); a replacement is dialled a quarter before, and takes over at the limit. "
        "0 = learned from its GOAWAYs."
    ),
    "server.host": "Inbound listen address (an IP address).",
    "server.port": "Inbound listen port.",
    "server.inbound_tls": "TLS for clients (needs tls_cert_file and tls_key_file).",
    "server.inbound_h2c": "Accept HTTP/2 cleartext (prior knowledge) from clients.",
    "server.tls_cert_file": "PEM certificate chain for inbound TLS.",
    "server.tls_key_file": "PEM private key for inbound TLS.",
    "server.read_timeout_ms": (
        "Time for a request's headers (and an idle keep-alive wait); like nginx's "
        "client_header_timeout."
    ),
    "server.write_timeout_ms": "Time to hand one response chunk to a client before aborting.",
    "server.idle_timeout_ms": "HTTP/2 client connection closed when a PING goes unanswered.",
    "server.inbound_server": "granian (fast) or hypercorn (passes response trailers).",
    "server.max_connections": "Client connections served at once.",
    "server.backlog": "Listen backlog.",
    "server.reuse_port": (
        "Share the listening address with other proxy processes (SO_REUSEPORT), one per "
        "core; each has its own pool (docs/SCALING.md)."
    ),
    "server.preserve_host": "Send the client's Host as :authority (else the upstream's name).",
    "server.shutdown_grace_ms": "On SIGINT/SIGTERM, time for in-flight requests to finish.",
    "server.admin": "HOST:PORT for Prometheus /metrics and /healthz; unset = off.",
    "server.access_log": (
        "One line per client request (client, method, path, status, bytes in and out, "
        "duration, upstream headers time, session, retries) to - (stdout) or a file, in "
        "ui.log_format; unset = off."
    ),
    "server.max_request_header_bytes": "Request header block above this: 431.",
    "server.max_request_header_field_bytes": "One header field line above this: 431.",
    "server.max_request_headers": "More header fields than this: 431.",
    "server.max_request_target_bytes": "Request target above this: 414.",
    "ui.tui": "Full-screen dashboard on a terminal (else a log line every 5 s).",
    "ui.log_format": "human or json.",
}


_TOML_TYPES = {str: "string", int: "integer", float: "float", bool: "boolean", dict: "table"}


def _toml_type(hint: object) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is dict:
        return "table"
    if args and len(args) < len(typing.get_args(hint)):  # X | None
        return f"{_toml_type(args[0])}, optional"
    name = _TOML_TYPES.get(hint) if isinstance(hint, type) else None
    return name or str(hint)


def keys() -> list[tuple[str, str, object]]:
    """(section.key, TOML type, default) for every configuration key, in file order."""
    out: list[tuple[str, str, object]] = []
    config = Config()
    for section in dataclasses.fields(Config):
        values = getattr(config, section.name)
        hints = typing.get_type_hints(type(values))
        for f in dataclasses.fields(values):
            out.append(
                (f"{section.name}.{f.name}", _toml_type(hints[f.name]), getattr(values, f.name))
            )
    return out


def markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `src/cwndproxy/config/settings.py` and `src/cwndproxy/config/reference.py`",
        "by `cwnd-proxy check-config --reference` (a test keeps this file in step). A TOML file",
        "sets any key under its section (`[target]`, `[pool]`, `[server]`, `[ui]`);",
        "command-line flags override the file.",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for key, toml_type, default in keys():
        if default is None:
            shown = "unset"
        elif default == "":
            shown = "required"
        elif isinstance(default, dict):
            shown = "`{}`"
        else:
            shown = f"`{_toml_value(default)}`"
        meaning = MEANING.get(key, "**undocumented**")
        lines.append(f"| `{key}` | {toml_type} | {shown} | {meaning} |")
    return "\n".join(lines) + "\n"
