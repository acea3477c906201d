"""What granian costs a small request, against an inbound side that costs next to nothing.

granian runs HTTP on its own threads and hands each request to the event loop: the ASGI
call, the body's ``receive()`` and each ``send()`` cross threads. Is that hand-off what
holds the proxy's small-request rate down? This runs the same proxy three ways, over
HTTP/1.1, rounds interleaved (order alternating), the ratio to the granian arm taken
within each round:

- ``granian``: the proxy as it runs (``cwnd-proxy run``);
- ``in-loop app``: granian replaced by ``InLoopFront``, HTTP/1.1 parsed on the event loop
  itself (no threads, no hand-off), calling the same ``ForwardingApp`` through ASGI;
- ``in-loop session``: the same front calling the pool's session directly: no forwarding
  rules, no ASGI. What forwarding costs at the least with this session and this loop.

``InLoopFront`` is **not a server**: it takes only what h2load sends (GET, no body, one
request at a time per connection), checks nothing, and answers with the upstream's fields
as they came. A measurement device, never a choice of the proxy's.

Run: ``python -m cwndproxy.lab.bench.inbound_front [--rounds 8] [--requests 3000]``
(h2load and nginx from Debian, as ``make bench-loopback`` installs them). A benchmark, not
a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

from cwndproxy.lab.bench.loopback import RunningProxy, make_certs, proxy_process
from cwndproxy.lab.bench.small_requests import (
    OBJECT_PATH,
    LoadResult,
    h2load,
    ratio_summary,
    round_ratios,
    small_origin,
    tls_upstream_args,
    write_results,
)
from cwndproxy.urls import format_url

ARMS = ("granian", "in-loop app", "in-loop session")
_FRONTS = {"in-loop app": "app", "in-loop session": "session"}
_MODULE = "cwndproxy.lab.bench.inbound_front"


class InLoopFront(asyncio.Protocol):
    """One client connection: requests as h2load sends them, answered in turn."""

    def __init__(self, app: Any, server: tuple[str, int], direct: bool) -> None:
        self.app = app
        self.server = server
        self.direct = direct
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        # The loop keeps only weak references to tasks: these hold each request's.
        self.requests: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.client = transport.get_extra_info("peername")[:2]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, target, version = lines[0].split(b" ")
            headers = []
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers.append((name.strip().lower(), value.strip()))
            run = self._session if self.direct else self._asgi
            loop = asyncio.get_running_loop()
            task = loop.create_task(run(method.decode(), target, version[5:].decode(), headers))
            self.requests.add(task)
            task.add_done_callback(self.requests.discard)

    async def _asgi(
        self, method: str, target: bytes, version: str, headers: list[tuple[bytes, bytes]]
    ) -> None:
        path, _, query = target.partition(b"?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": version,
            "method": method,
            "scheme": "http",
            "path": path.decode("latin-1"),
            "raw_path": path,
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": self.client,
            "server": self.server,
        }
        request = {"type": "http.request", "body": b"", "more_body": False}
        parts: list[bytes] = []

        async def receive() -> dict[str, Any]:
            return request

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                parts.append(_status_line(message["status"], message["headers"]))
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if not message.get("more_body") and self.transport is not None:
                    self.transport.write(b"".join(parts))

        await self.app(scope, receive, send)

    async def _session(
        self, method: str, target: bytes, version: str, headers: list[tuple[bytes, bytes]]
    ) -> None:
        from cwndproxy.upstream.counters import TrafficKind

        pool = self.app.pool
        _, session = pool.ready_session(frozenset()) or await pool.acquire(5.0)
        upstream = [(n, v) for n, v in headers if n not in (b"host", b"connection")]
        stream = await session.open_stream(
            method,
            target.decode("latin-1"),
            upstream,
            end_stream=True,
            kind=TrafficKind.REAL,
            authority=pool.target.authority,
        )
        response = await stream.receive_response(60.0)
        body = []
        while chunk := await stream.read():
            body.append(chunk)
        if self.transport is not None:
            self.transport.write(_status_line(response.status, response.headers) + b"".join(body))


def _status_line(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    fields = b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    return b"HTTP/1.1 %d -\r\n%s\r\n" % (status, fields)


class _InLoopServer:
    """The proxy's InboundServer interface over InLoopFront."""

    def __init__(self, app: Any, host: str, port: int, direct: bool) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.tls = False
        self.direct = direct
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return format_url(self.tls, self.host, self.port)

    async def start(self, ready_timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: InLoopFront(self.app, (self.host, self.port), self.direct),
            self.host,
            self.port,
            backlog=1024,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


def serve(front: str, argv: list[str]) -> int:
    """``cwnd-proxy`` (``argv``: ``run ...``) with InLoopFront in place of granian."""
    import cwndproxy.service as service
    from cwndproxy.cli.commands import main

    def in_loop(config: Any, app: Any) -> _InLoopServer:
        return _InLoopServer(app, config.server.host, config.server.port, front == "session")

    service.inbound_server = in_loop
    return main(argv)


def _proxy(arm: str, upstream: list[str]) -> contextlib.AbstractContextManager[RunningProxy]:
    """The proxy for ``arm`` (loopback's plain pool), lean codec on uvloop."""
    module = ("cwndproxy",) if arm == "granian" else (_MODULE, "serve", _FRONTS[arm])
    return proxy_process([*upstream, "--loop", "uvloop"], module=module)


def measure(rounds: int, requests: int) -> dict[str, list[LoadResult]]:
    results: dict[str, list[LoadResult]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        certs = make_certs(Path(tmp))
        nginx = stack.enter_context(small_origin(Path(tmp) / "nginx", certs))
        assert nginx.tls_port is not None
        upstream = tls_upstream_args(nginx.tls_port, certs[0])
        proxies = {arm: stack.enter_context(_proxy(arm, upstream)) for arm in ARMS}
        load = ["-n", str(requests), "-c", "50", "--h1"]
        for proxy in proxies.values():  # warm: sessions up, code paths hot
            url = f"http://127.0.0.1:{proxy.port}{OBJECT_PATH}"
            h2load(url, ["-n", "2000", "-c", "50", "--h1"])
        for index in range(rounds):
            order = ARMS if index % 2 == 0 else tuple(reversed(ARMS))
            for arm in order:
                proxy = proxies[arm]
                url = f"http://127.0.0.1:{proxy.port}{OBJECT_PATH}"
                result = h2load(url, load, pids=(proxy.pid,))
                if result.failed or not result.succeeded:
                    raise RuntimeError(f"{arm}: {result.failed} requests failed")
                results[arm].append(result)
    return results


def report(results: dict[str, list[LoadResult]]) -> dict[str, Any]:
    base = results["granian"]
    summary: dict[str, Any] = {}
    print("HTTP/1.1 small requests, h2load -c 50; ratio = arm / granian in the same round")
    print(f"  {'arm':18s} {'req/s':>8s} {'loop us':>8s} {'CPU us':>8s}  rate ratio (quartiles)")
    for arm, runs in results.items():
        ratios = round_ratios([r.rps for r in runs], [r.rps for r in base], strict=True)
        median, q1, q3 = ratio_summary(ratios) or (float("nan"),) * 3
        row = {
            "rps": statistics.median(r.rps for r in runs),
            "loop_us": statistics.median(r.loop_us_per_request or 0.0 for r in runs),
            "cpu_us": statistics.median(r.cpu_us_per_request or 0.0 for r in runs),
            "rps_ratio": [median, q1, q3],
            "rounds": [r.__dict__ for r in runs],
        }
        summary[arm] = row
        print(
            f"  {arm:18s} {row['rps']:8.0f} {row['loop_us']:8.0f} {row['cpu_us']:8.0f}  "
            f"{median:.2f} ({q1:.2f}-{q3:.2f})"
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return serve(argv[1], argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=3000, help="per h2load run")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    summary = report(measure(args.rounds, args.requests))
    write_results(args.out, summary)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
