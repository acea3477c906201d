"""The ASGI names the forwarding layer uses (ASGI 3: scope, receive, send)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# An application as the inbound servers take it: loose, because hypercorn's serve() is typed
# with its own TypedDict scopes and events, which ForwardingApp's mappings do not match.
App = Callable[[Any, Any, Any], Awaitable[None]]
