"""Origins inside the testbed's origin namespace: the demo origin and nginx."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cwndproxy.lab.nginx import NginxServer
from cwndproxy.lab.testbed.netns import Testbed, netns_exec, state_dir

H2C_PORT = 8080
TLS_PORT = 8443
BLOB_SIZE = 64 * 1024 * 1024


@dataclass
class OriginInfo:
    kind: str
    h2c_url: str
    tls_url: str
    ca_file: str
    blob_path: str  # path of a large object on both URLs

    def describe(self) -> str:
        return (
            f"{self.kind} origin: {self.h2c_url}{self.blob_path} (h2c), "
            f"{self.tls_url}{self.blob_path} (TLS, CA {self.ca_file})"
        )


def self_signed(directory: Path, address: str) -> tuple[str, str]:
    """A certificate for the origin's address, made with the openssl CLI (Debian base), so
    the testbed needs no Python crypto package. It doubles as its own CA."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "origin.pem", directory / "origin.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "7",
            "-subj",
            "/CN=cwnd-testbed-origin",
            "-addext",
            f"subjectAltName=IP:{address},DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


def workdir(tb: Testbed) -> Path:
    path = state_dir() / tb.name
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_demo_origin(tb: Testbed) -> OriginInfo:
    cert, key = self_signed(workdir(tb), tb.origin_addr)
    for port, extra in ((H2C_PORT, []), (TLS_PORT, ["--tls-cert", cert, "--tls-key", key])):
        tb.popen(
            "o",
            [
                sys.executable,
                "-m",
                "cwndproxy",
                "origin",
                "--listen",
                f"{tb.origin_addr}:{port}",
                *extra,
            ],
            register=f"origin-{port}",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        tb.wait_listening("o", port)
    return OriginInfo(
        "demo",
        f"http://{tb.origin_addr}:{H2C_PORT}",
        f"https://{tb.origin_addr}:{TLS_PORT}",
        cert,
        f"/cwnd/blob?size={BLOB_SIZE}",
    )


SINK_PORT = 8079


def start_nginx(
    tb: Testbed,
    *,
    blob_size: int = BLOB_SIZE,
    extra_tls_ports: Sequence[int] = (),
    keepalive_timeout: str = "75s",
) -> OriginInfo:
    """nginx on H2C_PORT and TLS_PORT (plus ``extra_tls_ports``), serving ``/blob.bin`` and
    the full-body upload sink ``/sink``."""
    directory = workdir(tb)
    cert, key = self_signed(directory, tb.origin_addr)
    nginx = NginxServer(
        directory / "nginx",
        host=tb.origin_addr,
        h2c_port=H2C_PORT,
        tls_port=TLS_PORT,
        extra_tls_ports=extra_tls_ports,
        sink_port=SINK_PORT,
        # Uploads must meet the sender's window, not a 64 KiB stall per request.
        body_preread="4m",
        keepalive_timeout=keepalive_timeout,
        cert_file=cert,
        key_file=key,
        command_prefix=netns_exec(tb.origin_ns),
        ready_check=lambda host, port: tb.listens("o", port),
        detach=True,
    )
    nginx.add_blob("blob.bin", blob_size)
    nginx.start()
    assert nginx.process is not None
    tb.st.pids["nginx"] = nginx.process.pid
    tb._save()
    return OriginInfo(
        "nginx",
        f"http://{tb.origin_addr}:{H2C_PORT}",
        f"https://{tb.origin_addr}:{TLS_PORT}",
        cert,
        "/blob.bin",
    )
