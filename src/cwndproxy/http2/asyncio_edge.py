"""The asyncio edge of an ``H2Endpoint``: transport callbacks in, a ``Link`` out.

Everything that knows asyncio's transport lives here; the endpoint itself only sees the
``Link`` callables, so it runs the same under unit tests that feed it bytes.
"""

from __future__ import annotations

import asyncio
from typing import cast

from cwndproxy.http2.endpoint import H2Endpoint, Link

# Write-buffer limits for the transport. asyncio's default high-water mark is 64 KiB, which
# would pause the writer after every 1 MiB frame; a few frames of slack keeps the socket busy.
WRITE_HIGH_WATER = 4 * 1024 * 1024
WRITE_LOW_WATER = 1024 * 1024
READ_SIZE = 4 * 1024 * 1024


class EndpointProtocol(asyncio.Protocol):
    def __init__(self, endpoint: H2Endpoint) -> None:
        self.endpoint = endpoint

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        t = cast(asyncio.Transport, transport)
        t.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        if isinstance(getattr(t, "max_size", None), int):
            # asyncio's plain TCP transport reads at most 256 KiB per recv(); 1 MiB frames
            # then always straddle reads and must be joined. Read up to 4 MiB instead.
            t.max_size = READ_SIZE  # type: ignore[attr-defined]
        self.endpoint.attach(
            Link(write=t.write, close=t.close, abort=t.abort, extra_info=t.get_extra_info)
        )

    def data_received(self, data: bytes) -> None:
        self.endpoint.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.endpoint.connection_lost(exc)

    def pause_writing(self) -> None:
        self.endpoint.pause_writing()

    def resume_writing(self) -> None:
        self.endpoint.resume_writing()
