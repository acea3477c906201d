"""The inbound request body: read once from ASGI, kept for a retry while it is small, and
never passed on as complete when the client left before its end."""

from __future__ import annotations

import asyncio
from typing import Any

from cwndproxy.proxy.asgi import Message, Receive

# A request body up to this size is kept so that a failed attempt can be replayed.
REPLAY_LIMIT = 1024 * 1024


class ClientGone(Exception):
    """The inbound client disconnected."""


class BadRequestBody(Exception):
    """The inbound server could not deliver the request body (e.g. an invalid chunk size):
    the client's fault, answered with 400, and the upstream stream is reset."""


class RequestBody:
    """The inbound request body, read once from ASGI and kept (up to REPLAY_LIMIT) so that
    a retry can send it again."""

    def __init__(self, receive: Receive, first: Message) -> None:
        self._receive = receive
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False
        self.replayable = True
        self.disconnected = False
        self._absorb(first)

    def _absorb(self, message: Message) -> None:
        if message["type"] == "http.disconnect":
            # Not complete: a body cut short by a departed client must never be sent on as
            # if whole, nor replayed.
            self.disconnected = True
            return
        body = message.get("body", b"")
        if body:
            self.size += len(body)
            if self.size > REPLAY_LIMIT:
                self.replayable = False
            self.chunks.append(body)
        if not message.get("more_body", False):
            self.complete = True

    @property
    def empty(self) -> bool:
        return self.complete and self.size == 0

    def client_gone(self) -> bool:
        # A method, not the attribute: the client can leave during any await (mypy would
        # narrow the attribute across them).
        return self.disconnected

    async def stream(self) -> Any:
        """Yield the body from the start: replayed chunks first, then fresh ones."""
        index = 0
        while True:
            while index < len(self.chunks):
                chunk = self.chunks[index]
                if not self.replayable:
                    # Past the replay limit nothing is kept: hand the chunk over and forget.
                    self.chunks[index] = b""
                index += 1
                yield chunk
            if self.disconnected:
                raise ClientGone()
            if self.complete:
                return
            try:
                message = await self._receive()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server's parser refused the body
                self.disconnected = True
                raise BadRequestBody(str(exc) or type(exc).__name__) from exc
            self._absorb(message)
