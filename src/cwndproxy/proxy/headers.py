"""Header rules for forwarding, as pure functions (RFC 9110 section 7.6, RFC 9113 8.2.2)."""

from __future__ import annotations

import functools

Headers = list[tuple[bytes, bytes]]

# Connection-specific fields: meaningful for one hop only, and forbidden in HTTP/2.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"http2-settings",
    }
)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def _connection_listed(headers: Headers) -> set[bytes]:
    listed: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            listed.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return listed


def _te_trailers(value: bytes) -> bool:
    return any(t.split(b";")[0].strip().lower() == b"trailers" for t in value.split(b","))


def strip_hop_by_hop(headers: Headers, *, keep_te_trailers: bool) -> Headers:
    """Drop hop-by-hop fields and those the Connection header lists, with names lower-cased.
    ``TE: trailers`` is the one TE value HTTP/2 allows; gRPC needs it end to end.

    Nearly every block has no such field and lower-case names already (ASGI servers
    deliver them so and the request rules refuse others; HTTP/2 makes an upper-case name
    malformed, RFC 9113 section 8.2.1): it comes back as it is, a new list of the same
    pairs, after one pass. Anything else takes the full path."""
    for name, _ in headers:
        if name in HOP_BY_HOP or not name.islower():
            break
    else:
        return list(headers)
    drop = HOP_BY_HOP | _connection_listed(headers)
    out: Headers = []
    te_trailers = False
    for name, value in headers:
        lname = name.lower()
        if lname == b"te":
            te_trailers = te_trailers or _te_trailers(value)
            continue
        if lname in drop:
            continue
        out.append((lname, value))
    if keep_te_trailers and te_trailers:
        out.append((b"te", b"trailers"))
    return out


@functools.lru_cache(maxsize=1024)  # the same few client addresses, request after request
def _quote_forwarded(value: str) -> str:
    # RFC 7239: IPv6 addresses and anything with ':' must be a quoted-string.
    if any(c in value for c in ':[]";,= '):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def upstream_request_headers(
    headers: Headers,
    *,
    client_ip: str | None,
    inbound_scheme: str,
    upstream_authority: str,
    preserve_host: bool,
) -> tuple[str, Headers]:
    """Turn inbound request headers into upstream HTTP/2 headers.

    Returns (":authority" value, regular headers). Host becomes :authority (only when
    ``preserve_host``; otherwise the upstream's own name, as a reverse proxy must send for
    virtual hosting and TLS), hop-by-hop fields go, and the client is recorded in
    ``Forwarded`` and ``X-Forwarded-For`` (appended to what an earlier proxy sent).
    """
    out = strip_hop_by_hop(headers, keep_te_trailers=True)
    host = None
    xff_prior: list[bytes] = []
    forwarded_prior: list[bytes] = []
    regular: Headers = []
    for name, value in out:
        if name == b"host":
            host = value.decode("latin-1")
        elif name == b"x-forwarded-for":
            xff_prior.append(value)
        elif name == b"forwarded":
            forwarded_prior.append(value)
        elif name in (b"x-forwarded-proto", b"x-forwarded-host"):
            continue  # replaced below with what this hop saw
        else:
            regular.append((name, value))
    authority = host if (preserve_host and host) else upstream_authority
    if client_ip:
        xff = b", ".join([*xff_prior, client_ip.encode()])
        regular.append((b"x-forwarded-for", xff))
        elem = f"for={_quote_forwarded(client_ip)};proto={inbound_scheme}"
        if host:
            elem += f";host={_quote_forwarded(host)}"
        regular.append((b"forwarded", b", ".join([*forwarded_prior, elem.encode("latin-1")])))
    regular.append((b"x-forwarded-proto", inbound_scheme.encode()))
    if host:
        regular.append((b"x-forwarded-host", host.encode("latin-1")))
    return authority, regular


def downstream_response_headers(headers: Headers) -> Headers:
    """Upstream response headers for the client: hop-by-hop fields never cross."""
    return strip_hop_by_hop(headers, keep_te_trailers=False)


def is_idempotent(method: str) -> bool:
    return method.upper() in IDEMPOTENT_METHODS
