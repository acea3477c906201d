"""The dummy-traffic workers: the I/O that makes a sender send.

- ``DownloadWorker`` (server -> us; grows the *server's* cwnd, which we can only influence
  by asking it to send): Range GETs of a given size, read and finished; if the server
  ignores Range (200), read the size and cancel with RST_STREAM(CANCEL).
- ``UploadWorker`` (us -> server; grows *our* cwnd): one long-lived POST/PUT whose body is
  fed on demand; restarted with back-off if the server ends it early.

Both refuse to take the last free stream slot under the peer's MAX_CONCURRENT_STREAMS, so
dummy traffic can never block a real request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from cwndproxy.upstream.counters import TrafficKind
from cwndproxy.upstream.session import H2Session, UpstreamError, UpstreamStream

Headers = list[tuple[bytes, bytes]]
_ZEROS = bytes(1024 * 1024)


class Throttled(Exception):
    """The upstream answered a dummy request with 429 or 503."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"upstream answered {status} to warm-up traffic")
        self.status = status
        self.retry_after = retry_after


class WarmupRejected(Exception):
    """The warm-up endpoint cannot be used (e.g. 404, 405); retrying will not help."""


class NoFreeSlot(Exception):
    """Opening a dummy stream would take the last free stream slot."""


def _headers(extra: dict[str, str]) -> Headers:
    return [(k.encode(), v.encode()) for k, v in extra.items()]


def _retry_after(headers: Sequence[tuple[bytes, bytes]]) -> float | None:
    for name, value in headers:
        if name == b"retry-after":
            with contextlib.suppress(ValueError):
                return float(value)
    return None


def _check_slot(session: H2Session) -> None:
    if session.free_stream_slots < 2:
        raise NoFreeSlot()


def _check_status(status: int, headers: Sequence[tuple[bytes, bytes]], what: str) -> None:
    if status in (429, 503):
        raise Throttled(status, _retry_after(headers))
    if status >= 400:
        raise WarmupRejected(f"{what} answered {status}")


@dataclass(frozen=True)
class Fetched:
    received: int
    # Bytes that arrived within one minimum RTT of the first byte (the server's window
    # as far as one round trip shows it); 0 when the RTT is not known yet.
    first_rtt_bytes: int


class DownloadWorker:
    def __init__(
        self,
        session: H2Session,
        path: str,
        headers: dict[str, str],
        supports_range: bool = True,
        timeout: float = 30.0,
    ) -> None:
        self.session = session
        self.path = path
        self.headers = _headers(headers)
        self.supports_range = supports_range
        self.timeout = timeout
        self.range_honoured: bool | None = None
        self.active: set[UpstreamStream] = set()
        self.cancelled = 0

    async def fetch(self, size: int) -> Fetched:
        """One dummy download of ``size`` bytes."""
        _check_slot(self.session)
        headers = list(self.headers)
        if self.supports_range and self.range_honoured is not False:
            headers.append((b"range", f"bytes=0-{size - 1}".encode()))
        stream = await self.session.open_stream(
            "GET", self.path, headers, end_stream=True, kind=TrafficKind.DUMMY
        )
        self.active.add(stream)
        try:
            response = await stream.receive_response(self.timeout)
            _check_status(response.status, response.headers, f"GET {self.path}")
            if self.supports_range:
                self.range_honoured = response.status == 206
            got = await stream.read_up_to(size)
            if not stream.closed:
                # The server ignored Range (or sent more): stop it. Data already in its
                # socket still arrives and is discarded; h2 returns the window.
                stream.cancel()
                self.cancelled += 1
            return Fetched(got, stream.first_rtt_bytes)
        except BaseException:
            stream.cancel()
            raise
        finally:
            self.active.discard(stream)

    def cancel_all(self) -> None:
        for stream in list(self.active):
            stream.cancel()
            self.cancelled += 1


class UploadWorker:
    def __init__(
        self,
        session: H2Session,
        path: str,
        method: str,
        headers: dict[str, str],
        retry: bool = True,
    ) -> None:
        self.session = session
        self.path = path
        self.method = method
        self.headers = [(b"content-type", b"application/octet-stream"), *_headers(headers)]
        self.retry = retry
        self.stream: UpstreamStream | None = None
        self.restarts = 0
        self._watch: asyncio.Task[None] | None = None
        self.ended_reason: str | None = None
        # Status of the response that ended the last upload early (0: none, or an error).
        self._last_status = 0

    async def _open(self) -> UpstreamStream:
        _check_slot(self.session)
        stream = await self.session.open_stream(
            self.method, self.path, list(self.headers), end_stream=False, kind=TrafficKind.DUMMY
        )
        self.stream = stream
        self._watch = asyncio.get_running_loop().create_task(self._watch_response(stream))
        return stream

    async def _watch_response(self, stream: UpstreamStream) -> None:
        """A response before we end the body means the server ended the upload early."""
        try:
            response = await stream.receive_response()
        except UpstreamError as exc:
            self.ended_reason = str(exc)
        else:
            self.ended_reason = f"server answered {response.status} before the body ended"
            # Judged by the next send(): 429/503 back off, other errors stop warm-up.
            self._last_status = response.status
        if self.stream is stream:
            self.stream = None
        stream.cancel()

    async def post(self, size: int) -> int:
        """One finite dummy upload: ``size`` bytes in its own request, then the answer.
        The answer comes after the server took the last byte, so our window has seen the
        ACKs of the whole body when this returns."""
        _check_slot(self.session)
        stream = await self.session.open_stream(
            self.method, self.path, list(self.headers), end_stream=False, kind=TrafficKind.DUMMY
        )
        try:
            sent = 0
            while sent < size:
                n = min(size - sent, len(_ZEROS))
                await stream.send(_ZEROS[:n])
                sent += n
            await stream.end()
            response = await stream.receive_response(30.0)
            _check_status(response.status, response.headers, f"{self.method} {self.path}")
            await stream.read_up_to(1 << 20)
            return sent
        except BaseException:
            stream.cancel()
            raise

    async def send(self, size: int) -> int:
        """Send ``size`` dummy bytes on the long-lived upload, opening it if needed."""
        stream = self.stream
        if stream is None:
            if self._watch is not None:
                status = self._last_status
                self._last_status = 0
                if status in (429, 503):
                    raise Throttled(status, None)
                if status >= 400:
                    raise WarmupRejected(f"{self.method} {self.path} answered {status}")
                if not self.retry:
                    raise WarmupRejected(f"upload ended: {self.ended_reason}")
                self.restarts += 1
            stream = await self._open()
        sent = 0
        while sent < size:
            n = min(size - sent, len(_ZEROS))
            try:
                await stream.send(_ZEROS[:n])
            except UpstreamError:
                self.stream = None
                raise
            sent += n
        return sent

    def close(self) -> None:
        if self.stream is not None:
            self.stream.cancel()
            self.stream = None
        if self._watch is not None:
            self._watch.cancel()
