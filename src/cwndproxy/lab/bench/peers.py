"""The peers the benchmarks compare against, tuned fairly, inside a testbed namespace.

- **HAProxy** (Debian ``haproxy``): HTTP/1.1 in, HTTP/2 to the origin over TLS (ALPN h2),
  connections reused across requests (``http-reuse always``) and kept while idle, and a
  16 MiB HTTP/2 window (``tune.h2.initial-window-size``): its 64 KiB default alone would cap
  a download at one window per RTT.
- **nginx** as a reverse proxy: HTTP/1.1 in, HTTP/1.1 keep-alive connections to the origin
  over TLS, with request and response streamed rather than buffered.

Neither can do anything about the origin's congestion window after idle: they are the
plain keep-alive pools a user would deploy today.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cwndproxy.lab.haproxy import preamble
from cwndproxy.lab.nginx import PRELUDE
from cwndproxy.lab.testbed.netns import Testbed

_HAPROXY = (
    preamble(maxconn=1000)
    + """\
frontend fe
    bind 127.0.0.1:{listen_port}
    default_backend be

backend be
    # pool-purge-delay: keep idle server connections (default 5 s) across long idle gaps.
    server origin {origin_addr}:{origin_port} ssl verify required ca-file {ca_file} alpn h2 \
pool-purge-delay 300s
"""
)

_NGINX_PROXY = (
    PRELUDE
    + """\
    client_max_body_size 0;
    upstream origin {{
        server {origin_addr}:{origin_port};
        keepalive 16;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{listen_port};
        location / {{
            proxy_pass https://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_trusted_certificate {ca_file};
            proxy_ssl_verify on;
            # nginx 1.22 matches the name against DNS names only (not IP SANs): the
            # testbed's certificate also carries DNS:localhost.
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"""
)


class PeerUnavailable(Exception):
    """The peer's binary is not installed; the message says which package."""


def _binary(name: str, package: str) -> str:
    binary = shutil.which(name) or f"/usr/sbin/{name}"
    if not Path(binary).exists():
        raise PeerUnavailable(f"{name} not found (Debian: apt-get install {package})")
    return binary


def start_haproxy(
    tb: Testbed,
    workdir: Path,
    *,
    listen_port: int,
    origin_port: int,
    ca_file: str,
) -> subprocess.Popen[bytes]:
    binary = _binary("haproxy", "haproxy")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "haproxy.cfg"
    conf.write_text(
        _HAPROXY.format(
            listen_port=listen_port,
            origin_addr=tb.origin_addr,
            origin_port=origin_port,
            ca_file=ca_file,
        )
    )
    check = tb.run("c", [binary, "-c", "-q", "-f", str(conf)], timeout=20)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy rejected its config: {check.stderr.strip()}")
    return _start(
        tb, [binary, "-db", "-f", str(conf)], f"haproxy-{listen_port}", workdir, listen_port
    )


def start_nginx_proxy(
    tb: Testbed,
    workdir: Path,
    *,
    listen_port: int,
    origin_port: int,
    ca_file: str,
) -> subprocess.Popen[bytes]:
    binary = _binary("nginx", "nginx-light")
    # Absolute: nginx resolves a relative -c against its -p prefix, so a relative workdir
    # (the benchmarks' default bench/results/...) named a config that does not exist.
    workdir = workdir.resolve()
    for sub in ("tmp", "logs"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(
        _NGINX_PROXY.format(
            dir=workdir,
            listen_port=listen_port,
            origin_addr=tb.origin_addr,
            origin_port=origin_port,
            ca_file=ca_file,
        )
    )
    argv = [binary, "-p", str(workdir), "-c", str(conf)]
    return _start(tb, argv, f"nginx-proxy-{listen_port}", workdir, listen_port)


def _start(
    tb: Testbed, argv: list[str], name: str, workdir: Path, listen_port: int
) -> subprocess.Popen[bytes]:
    """In the client namespace, its stderr in ``workdir``; returns once it listens."""
    proc = tb.popen(
        "c",
        argv,
        register=name,
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / f"{name}.log", "wb"),  # noqa: SIM115 - owned by the process
    )
    tb.wait_listening("c", listen_port)
    return proc
