"""Does granian's RSGI interface hand an app the request target and fields byte for byte?

RSGI costs less per request than ASGI on granian (the ``floors`` part of ``make
bench-loopback``: the same trivial app, 65 vs 82 us of CPU per request), so it was the
candidate front end for the forwarding app. A reverse proxy, though, must pass the request
target and every header field on unchanged: ``%2F`` and ``/`` are different targets to an
origin, and a field it cannot represent must not vanish silently. This sends one HTTP/1.1
request with an encoded slash, a dot segment, a UTF-8 query and fields with non-ASCII
values to a granian RSGI app and to the same app on ASGI, and prints what each app saw.
Run: ``.venv/bin/python -m cwndproxy.lab.bench.rsgi_fidelity``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from cwndproxy.lab.ports import free_port, wait_listening_async

REQUEST = (
    b"GET /a%2Fb/../c?x=%41&y=\xc3\xa9 HTTP/1.1\r\n"
    b"Host: origin.example\r\n"
    b"X-Latin1: caf\xe9\r\n"
    b"X-Utf8: caf\xc3\xa9\r\n"
    b"X-Twice: 1\r\n"
    b"X-Twice: 2\r\n"
    b"\r\n"
)


def _text(value: Any) -> Any:
    """Bytes shown as latin-1 text (one character per byte), so the two are comparable."""
    return value.decode("latin-1") if isinstance(value, bytes) else value


async def _seen_by(interface: str) -> dict[str, Any]:
    from granian.constants import Interfaces
    from granian.server.embed import Server

    seen: dict[str, Any] = {}

    class Rsgi:
        async def __rsgi__(self, scope: Any, proto: Any) -> None:
            await proto()
            seen["path"] = scope.path
            seen["query"] = scope.query_string
            seen["headers"] = [list(item) for item in scope.headers.items()]
            proto.response_bytes(200, [("content-length", "0")], b"")

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        seen["path"] = _text(scope.get("raw_path"))
        seen["query"] = _text(scope["query_string"])
        seen["headers"] = [[_text(k), _text(v)] for k, v in scope["headers"]]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    port = free_port()
    app = Rsgi() if interface == "rsgi" else asgi
    kind = Interfaces.RSGI if interface == "rsgi" else Interfaces.ASGI
    server = Server(app, address="127.0.0.1", port=port, interface=kind)
    serving = asyncio.create_task(server.serve())
    try:
        await wait_listening_async(port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST)
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        writer.close()
    finally:
        server.stop()  # type: ignore[no-untyped-call]
        await asyncio.wait_for(serving, 10)
    return seen


async def _main() -> None:
    print("sent:", json.dumps(REQUEST.decode("latin-1")))
    for interface in ("asgi", "rsgi"):
        print(f"{interface}:", json.dumps(await _seen_by(interface), ensure_ascii=True))


def main() -> None:
    asyncio.run(_main())


if __name__ == "__main__":
    main()
