"""How late does an ASGI server tell the app that a client reset its HTTP/2 stream?

The proxy's rapid-reset defence (proxy/app.py) depends on it: a request whose client reset
it must not be forwarded, and the app only learns of the reset as an ``http.disconnect``.
This runs granian and hypercorn with a tiny app that times, per request, the gap from its
first ``receive()`` to the disconnect, for one reset stream and for a flood of 1,000
HEADERS+RST_STREAM pairs, and prints percentiles. Run: ``.venv/bin/python
-m cwndproxy.lab.bench.reset_latency``.
"""

from __future__ import annotations

import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hpack

from cwndproxy.lab.ports import free_port, wait_listening

APP = """
import os, time
OUT = os.environ["RESET_LATENCY_OUT"]

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    start = time.monotonic()
    await receive()
    message = await receive()
    if message["type"] == "http.disconnect":
        with open(OUT, "a") as f:
            f.write(f"{(time.monotonic() - start) * 1000:.3f}\\n")
"""


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    head = struct.pack(">I", len(payload))[1:] + bytes([kind, flags])
    return head + struct.pack(">I", stream_id) + payload


def flood(port: int, pairs: int) -> int:
    """Send up to ``pairs`` HEADERS+RST_STREAM pairs; how many went out before the server
    closed the connection (hyper does, past its own limit of pending resets)."""
    encoder = hpack.Encoder()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(0x4, 0, 0))
    sent = 0
    try:
        for i in range(pairs):
            sid = 2 * i + 1
            block = encoder.encode(
                [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "x")]
            )
            # HEADERS (END_STREAM | END_HEADERS), then RST_STREAM(CANCEL) at once.
            sock.sendall(frame(0x1, 0x5, sid, block) + frame(0x3, 0, sid, struct.pack(">I", 8)))
            sent += 1
            if sent % 50 == 0:
                time.sleep(0.001)  # in batches, as the proxy's flood test sends them
    except OSError:
        pass
    time.sleep(3.0)  # let the server deliver every disconnect
    sock.close()
    return sent


def measure(server: str, pairs: int, workdir: Path) -> tuple[int, list[float]]:
    out = workdir / f"{server}-{pairs}.txt"
    out.write_text("")
    port = free_port()
    env = dict(os.environ, RESET_LATENCY_OUT=str(out), PYTHONPATH=str(workdir))
    if server == "granian":
        argv = ["granian", "--interface", "asgi", "--http", "2", "--port", str(port), "app:app"]
    else:
        argv = ["hypercorn", "--bind", f"127.0.0.1:{port}", "app:app"]
    bindir = Path(sys.executable).parent
    proc = subprocess.Popen(
        [str(bindir / argv[0]), *argv[1:]],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port)
        sent = flood(port, pairs)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    return sent, [float(x) for x in out.read_text().split()]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "app.py").write_text(APP)
        for server in ("granian", "hypercorn"):
            for pairs in (1, 1000):
                sent, times = measure(server, pairs, workdir)
                ms = sorted(times)
                if not ms:
                    print(f"{server}, {sent} reset stream(s) sent: no disconnect reached the app")
                    continue
                q = statistics.quantiles(ms, n=10) if len(ms) > 1 else [ms[0]] * 9
                print(
                    f"{server}, {sent} reset stream(s) sent: {len(ms)} disconnects seen; "
                    f"p10 {q[0]:.1f} ms, p50 {statistics.median(ms):.1f} ms, "
                    f"p90 {q[8]:.1f} ms, max {ms[-1]:.1f} ms"
                )


if __name__ == "__main__":
    main()
