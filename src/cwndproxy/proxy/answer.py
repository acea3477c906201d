"""What a client was answered: status, timings and bytes, for the access log and the
client-side statistics."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import Any

from cwndproxy.proxy.asgi import Message, Scope, Send


class Answer:
    """One client request as it went: the ASGI send, noting the status, when the headers
    went out and the body bytes; and what forwarding adds for the access log."""

    def __init__(self, send: Send, started: float) -> None:
        self._send = send
        self._started = started
        self.status: int | None = None
        self.first_byte: float | None = None
        self.bytes_out = 0
        self.bytes_in = 0
        self.upstream_headers: float | None = None
        self.session: int | None = None
        self.attempts = 0

    def send(self, message: Message) -> Awaitable[None]:
        # Not a coroutine: the server's own awaitable is handed back as it is, without a
        # coroutine frame around it at every message.
        kind = message["type"]
        if kind == "http.response.body":
            self.bytes_out += len(message.get("body", b""))
        elif kind == "http.response.start":
            self.status = message["status"]
            self.first_byte = time.monotonic() - self._started
        return self._send(message)

    def upstream_answered(self) -> None:
        self.upstream_headers = time.monotonic() - self._started

    def log_to(self, access_log: logging.Logger, scope: Scope, duration: float) -> None:
        client = scope.get("client")
        raw_path = scope.get("raw_path") or scope.get("path", "").encode()
        if scope.get("query_string"):
            raw_path += b"?" + scope["query_string"]
        fields: dict[str, Any] = {
            "client": client[0] if client else None,
            "method": scope.get("method"),
            "path": raw_path.decode("latin-1"),
            "http": scope.get("http_version"),
            "status": self.status,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "duration_s": round(duration, 6),
            "upstream_headers_s": (
                None if self.upstream_headers is None else round(self.upstream_headers, 6)
            ),
            "session": self.session,
            "retries": max(0, self.attempts - 1),
        }
        upstream = "-" if self.upstream_headers is None else f"{self.upstream_headers:.3f}s"
        access_log.info(
            '%s "%s %s HTTP/%s" %s in=%d out=%d %.3fs upstream=%s session=%s retries=%d',
            fields["client"] or "-",
            fields["method"],
            fields["path"],
            fields["http"],
            self.status or "-",
            self.bytes_in,
            self.bytes_out,
            duration,
            upstream,
            "-" if self.session is None else self.session,
            fields["retries"],
            extra={"fields": fields},
        )
