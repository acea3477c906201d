"""A private HAProxy on loopback as the peer of the loopback benchmarks.

Tuned as its documentation says for this job: one thread (the proxy under test is one
process with one event loop), HTTP/2 to the origin chosen by ALPN (TLS) or prior knowledge
(h2c), origin connections reused across client connections (``http-reuse always``) and a
16 MiB HTTP/2 window (``tune.h2.initial-window-size``; its 64 KiB default would cap a stream
at one window per round trip).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import TracebackType

from cwndproxy.lab.ports import free_port, wait_listening
from cwndproxy.lab.testbed.netns import stop_process


def preamble(*, maxconn: int, threads: int | None = None) -> str:
    """The global and defaults sections every HAProxy peer here gets (this module's and
    the testbed's, bench/peers.py): a 16 MiB HTTP/2 window, origin connections reused
    across clients, long timeouts; ``threads`` pins nbthread (None: HAProxy's default, one
    per CPU)."""
    nbthread = f"    nbthread {threads}\n" if threads else ""
    return (
        f"global\n{nbthread}    tune.h2.initial-window-size 16777216\n    maxconn {maxconn}\n\n"
        "defaults\n    mode http\n    timeout connect 5s\n    timeout client 300s\n"
        "    timeout server 300s\n    timeout http-keep-alive 300s\n    http-reuse always\n\n"
    )


_FRONTEND = """\
frontend clear
    # HTTP/1.1, and HTTP/2 with prior knowledge (HAProxy switches on the h2 preface).
    bind 127.0.0.1:{clear_port}
{tls_bind}    # HAProxy 2.6 turns an h2 response into an HTTP/1.1 status line without a reason
    # phrase ("HTTP/1.1 200 "), which h2load's HTTP/1 parser counts as a failed request
    # without a status. One rule restores "OK" for the benchmark's only status.
    http-response set-status 200 reason OK if {{ status 200 }}
    default_backend origin

backend origin
    server origin {origin}
"""


class HaproxyServer:
    """HAProxy in front of one origin: ``clear_port`` takes HTTP/1.1 and h2c, ``tls_port``
    (with ``cert_pem``, certificate and key in one file) takes TLS with ALPN h2/http1.1."""

    def __init__(
        self,
        directory: Path,
        *,
        origin_port: int,
        origin_tls_ca: str | None = None,
        origin_server_name: str = "localhost",
        cert_pem: str | None = None,
    ) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            raise FileNotFoundError("haproxy not found (Debian: apt-get install haproxy)")
        self.binary = binary
        self.directory = directory
        self.clear_port = free_port()
        self.tls_port = free_port() if cert_pem else None
        if origin_tls_ca:
            origin = (
                f"127.0.0.1:{origin_port} ssl verify required ca-file {origin_tls_ca} "
                f"alpn h2 sni str({origin_server_name})"
            )
        else:
            origin = f"127.0.0.1:{origin_port} proto h2"
        tls_bind = (
            f"    bind 127.0.0.1:{self.tls_port} ssl crt {cert_pem} alpn h2,http/1.1\n"
            if cert_pem
            else ""
        )
        self.config = preamble(maxconn=8000, threads=1) + _FRONTEND.format(
            clear_port=self.clear_port, tls_bind=tls_bind, origin=origin
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "haproxy.cfg"
        conf.write_text(self.config)
        check = subprocess.run(
            [self.binary, "-c", "-q", "-f", str(conf)], capture_output=True, text=True, timeout=20
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejected its config: {check.stderr.strip()}")
        self.process = subprocess.Popen(
            [self.binary, "-db", "-f", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.directory / "haproxy.log", "wb"),  # noqa: SIM115 - owned by haproxy
        )
        for port in (self.clear_port, self.tls_port):
            if port is not None:
                wait_listening(
                    port, exited=lambda: self.process is None or self.process.poll() is not None
                )

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)
            self.process = None

    def __enter__(self) -> HaproxyServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
