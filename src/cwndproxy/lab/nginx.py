"""A private nginx instance as a third-party HTTP/2 origin (tests, benchmarks, testbed).

It runs in the foreground with ``master_process off``: one process we own, no privilege
drop (so files in private temp dirs stay readable as root), its own pid, logs and temp
dirs, nothing shared with a system nginx.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from cwndproxy.lab.origin import blob_bytes
from cwndproxy.lab.ports import listening

# A private nginx: one process in the foreground, every path under its own directory
# (formatted with ``dir``), so it runs unprivileged next to a system nginx. Ends inside http{}.
PRELUDE = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
"""

_CONFIG = (
    PRELUDE
    + """\
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests {keepalive_requests};
    # Also the HTTP/2 idle timeout: a connection without streams is closed (GOAWAY) after
    # it, PINGs or not (measured: 75.2 s with a PING every 140 ms, nginx 1.22's default).
    keepalive_timeout {keepalive_timeout};
    http2_chunk_size {http2_chunk_size};
    # The initial HTTP/2 window nginx offers a request body (default 64k): with the default,
    # every upload stalls one RTT after its first 64 KiB whatever the sender's cwnd.
    http2_body_preread_size {body_preread};
    client_max_body_size 0;
{servers}
}}
"""
)

_SERVER = """\
    server {{
        listen {host}:{port}{ssl} http2;
        {tls}
        root {dir}/www;
        location = /upload {{ return 204; }}
{sink}    }}
"""

# ``/sink`` answers only after the whole request body arrived: nginx buffers the body
# (proxy_request_buffering is on by default) before passing the request to an internal
# server that returns 204. An upload's time to last byte then covers the whole body, which
# a plain ``return 204`` (answered at once, the rest discarded) would not.
_SINK_LOCATION = """\
        location = /sink {{ proxy_pass http://127.0.0.1:{port}/drain; }}
"""
_SINK_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        location = /drain {{ return 204; }}
    }}
"""


@dataclass
class NginxServer:
    """nginx serving ``www/`` over h2c and/or TLS h2 on loopback (or a namespace address)."""

    directory: Path
    host: str = "127.0.0.1"
    h2c_port: int | None = None
    tls_port: int | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_requests: int = 1000
    keepalive_timeout: str = "75s"
    # nginx's largest DATA frame (its default is 8k); the peer's MAX_FRAME_SIZE caps it.
    http2_chunk_size: str = "8k"
    # More TLS ports serving the same content: the testbed gives each benchmark arm its own,
    # so the origin's sockets (ss) tell which arm they carry.
    extra_tls_ports: Sequence[int] = ()
    # nginx's initial HTTP/2 window for request bodies (its default is 64k).
    body_preread: str = "64k"
    # A loopback port for the internal server behind ``/sink`` (None: no sink).
    sink_port: int | None = None
    # Run nginx under this prefix, e.g. ["ip", "netns", "exec", "ns"] for the testbed.
    command_prefix: Sequence[str] = ()
    # How to tell that a port listens (the default connects from this namespace).
    ready_check: Callable[[str, int], bool] | None = None
    # Own session (survives its starter, e.g. `testbed up`); stderr goes to a file.
    detach: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def www(self) -> Path:
        return self.directory / "www"

    def add_blob(self, name: str, size: int) -> Path:
        """A static file whose bytes are the demo origin's blob (so digests match)."""
        path = self.www / name
        path.parent.mkdir(parents=True, exist_ok=True)
        chunk = 4 * 1024 * 1024
        with open(path, "wb") as fh:
            for start in range(0, size, chunk):
                fh.write(blob_bytes(start, min(size, start + chunk)))
        return path

    @property
    def tls_ports(self) -> list[int]:
        return ([self.tls_port] if self.tls_port is not None else []) + list(self.extra_tls_ports)

    def render(self) -> str:
        sink = _SINK_LOCATION.format(port=self.sink_port) if self.sink_port else ""
        servers = []
        if self.h2c_port is not None:
            servers.append(
                _SERVER.format(
                    host=self.host,
                    port=self.h2c_port,
                    ssl="",
                    tls="",
                    dir=self.directory,
                    sink=sink,
                )
            )
        if self.tls_ports and not (self.cert_file and self.key_file):
            raise ValueError("TLS needs cert_file and key_file")
        tls = (
            f"ssl_certificate {self.cert_file}; ssl_certificate_key {self.key_file}; "
            "ssl_protocols TLSv1.2 TLSv1.3;"
        )
        for port in self.tls_ports:
            servers.append(
                _SERVER.format(
                    host=self.host, port=port, ssl=" ssl", tls=tls, dir=self.directory, sink=sink
                )
            )
        if self.sink_port:
            servers.append(_SINK_SERVER.format(port=self.sink_port))
        return _CONFIG.format(
            dir=self.directory,
            servers="".join(servers),
            keepalive_requests=self.keepalive_requests,
            keepalive_timeout=self.keepalive_timeout,
            http2_chunk_size=self.http2_chunk_size,
            body_preread=self.body_preread,
        )

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            raise FileNotFoundError("nginx not found (Debian: apt-get install nginx-light)")
        for sub in ("tmp", "www"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        conf = self.directory / "nginx.conf"
        conf.write_text(self.render())
        stderr: int | IO[bytes] = subprocess.PIPE
        if self.detach:
            stderr = open(self.directory / "stderr.log", "ab")  # noqa: SIM115 - owned by nginx
        self.process = subprocess.Popen(
            [*self.command_prefix, binary, "-p", str(self.directory), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=self.detach,
        )
        if self.detach and not isinstance(stderr, int):
            stderr.close()
        ports = [p for p in (self.h2c_port, *self.tls_ports) if p is not None]
        deadline = time.monotonic() + timeout
        check = self.ready_check or listening
        for port in ports:
            while not check(self.host, port):
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    log = self.directory / "error.log"
                    detail = log.read_text() if log.exists() else ""
                    raise RuntimeError(f"nginx exited at start: {err}{detail}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"nginx did not listen on {self.host}:{port}")
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def __enter__(self) -> NginxServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
