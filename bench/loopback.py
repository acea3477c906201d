"""Loopback throughput: 256 MiB through the proxy vs curl straight to nginx, side by side.

Run with ``make bench-loopback``. Arms are interleaved round by round so that noise from
other tenants of this shared 2-core machine hits every arm alike; the report gives medians
and the proxy/direct ratio per transport. This is a benchmark, not a test.

    python bench/loopback.py [--size-mib 256] [--rounds 5] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cwndproxy.nginx import NginxServer

MiB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_certs(directory: Path) -> tuple[str, str, str]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key_file))
    with open(cert_file, "wb") as fh:
        for blob in cert.cert_chain_pems:
            fh.write(blob.bytes())
    return str(ca_file), str(cert_file), str(key_file)


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("proxy exited at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def start_proxy(args: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cwndproxy",
            "run",
            "--no-tui",
            "--listen",
            f"127.0.0.1:{port}",
            "--pool-size",
            "2",
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(port, proc)
    time.sleep(0.5)  # let the pool connect
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def curl_rate(url: str, *extra: str) -> float:
    """MiB/s of one download, as curl measured it (bytes / total time)."""
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-S",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{time_total}",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.split()
    size, seconds = int(out[0]), float(out[1])
    return size / MiB / seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    size = args.size_mib * MiB

    with tempfile.TemporaryDirectory(prefix="cwnd-bench-") as tmp_s:
        tmp = Path(tmp_s)
        ca, cert, key = make_certs(tmp)
        nginx = NginxServer(
            tmp / "nginx", h2c_port=free_port(), tls_port=free_port(), cert_file=cert, key_file=key
        )
        nginx.add_blob("blob.bin", size)
        h2c_proxy_port, tls_proxy_port = free_port(), free_port()
        with nginx:
            proxies = [
                start_proxy(["--upstream", f"http://127.0.0.1:{nginx.h2c_port}"], h2c_proxy_port),
                start_proxy(
                    [
                        "--upstream",
                        f"https://127.0.0.1:{nginx.tls_port}",
                        "--ca-file",
                        ca,
                        "--server-name",
                        "localhost",
                        "--inbound-tls-cert",
                        cert,
                        "--inbound-tls-key",
                        key,
                    ],
                    tls_proxy_port,
                ),
            ]
            arms = {
                "h2c direct (curl -> nginx)": (
                    f"http://127.0.0.1:{nginx.h2c_port}/blob.bin",
                    ["--http2-prior-knowledge"],
                ),
                "h2c via proxy (curl -> proxy -> nginx)": (
                    f"http://127.0.0.1:{h2c_proxy_port}/blob.bin",
                    ["--http2-prior-knowledge"],
                ),
                "TLS direct (curl -> nginx)": (
                    f"https://localhost:{nginx.tls_port}/blob.bin",
                    ["--http2", "--cacert", ca],
                ),
                "TLS via proxy (curl -> proxy -> nginx)": (
                    f"https://localhost:{tls_proxy_port}/blob.bin",
                    ["--http2", "--cacert", ca],
                ),
            }
            samples: dict[str, list[float]] = {name: [] for name in arms}
            try:
                for url, extra in arms.values():
                    curl_rate(url, *extra)  # warm caches and the pool; not recorded
                for _ in range(args.rounds):
                    for name, (url, extra) in arms.items():
                        samples[name].append(curl_rate(url, *extra))
            finally:
                for proc in proxies:
                    stop(proc)

    medians = {name: statistics.median(v) for name, v in samples.items()}
    ratios = {
        "h2c": medians["h2c via proxy (curl -> proxy -> nginx)"]
        / medians["h2c direct (curl -> nginx)"],
        "tls": medians["TLS via proxy (curl -> proxy -> nginx)"]
        / medians["TLS direct (curl -> nginx)"],
    }
    print(f"\n{args.size_mib} MiB download, {args.rounds} interleaved rounds, median MiB/s")
    for name, value in medians.items():
        spread = ", ".join(f"{v:.0f}" for v in samples[name])
        print(f"  {name:42s} {value:8.1f}   [{spread}]")
    print(
        f"  ratio proxy/direct  h2c: {ratios['h2c']:.2f} (target >= 0.8)"
        f"   TLS: {ratios['tls']:.2f} (target >= 0.5)"
    )
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "size_mib": args.size_mib,
        "rounds": args.rounds,
        "samples_mib_s": samples,
        "median_mib_s": medians,
        "ratio": ratios,
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out_dir / "loopback.json").write_text(json.dumps(report, indent=2))
    print(f"  written to {out_dir / 'loopback.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
