"""What a client request must satisfy before it may touch a pooled upstream session.

The pool's sessions are shared and kept warm for everyone; one request must never be able
to cost one of them. So the proxy answers these itself, before choosing a session:

- **431** for header blocks an origin would refuse at the connection level. Measured: a
  64 KB header made the demo origin answer GOAWAY(ENHANCE_YOUR_CALM), nginx failed on a
  16 KB one, and each refused request was retried on the next session, 20 requests cost
  40 reconnects. Defaults follow nginx (8 KiB per field line, `large_client_header_buffers
  4 8k`: 32 KiB in all) and HAProxy (101 header fields, `tune.http.maxhdr`).
- **414** for a request target longer than a field line may be.
- **400** for framing that HTTP/1.1 smuggling builds on (RFC 9112 section 6.3):
  Content-Length together with Transfer-Encoding, Content-Lengths that disagree, or one
  that is not a number; for a Host that is missing (HTTP/1.1), repeated or malformed
  (RFC 9112 section 3.2); and for field names or values HTTP/2 forbids (h2 validates
  outbound headers lazily, while HPACK-encoding them: an invalid field late in a list could
  fail after earlier ones entered the encoder's dynamic table, leaving it out of step with
  the upstream's decoder, a connection-level error for every stream on that session).
- **505** for an HTTP version other than 1.0, 1.1 or 2.
- **501** for WebSocket upgrades: not supported, said plainly. Other upgrade offers (e.g.
  ``h2c``, which ``curl --http2`` makes over HTTP/1.1) are ignored, as a server may
  (RFC 9110 section 7.8), and stripped with the other hop-by-hop fields.

Pure functions of plain data: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from cwndproxy.http2.header_checks import is_lowercase_token

Headers = Sequence[tuple[bytes, bytes]]

# A method is an RFC 9110 token (section 9.1); field names must be lower-case tokens, as
# HTTP/2 requires (is_lowercase_token, shared with the upstream's header checks).
_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A host (reg-name, IPv4 or bracketed IPv6) and an optional port; no userinfo, no path.
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(:[0-9]{1,5})?")
MAX_METHOD = 32


@dataclass(frozen=True)
class HeaderLimits:
    max_field_bytes: int = 8 * 1024  # one field line: name + ": " + value
    max_total_bytes: int = 32 * 1024  # the whole header block (HTTP/2 accounting)
    max_count: int = 101
    max_target_bytes: int = 8 * 1024


class RequestRejected(Exception):
    """The proxy answers this request itself with ``status``; ``reason`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def header_list_size(headers: Headers) -> int:
    """RFC 9113 section 6.5.2: name + value + 32 octets per field."""
    return sum(len(n) + len(v) + 32 for n, v in headers)


def check_request(
    method: str,
    target: bytes,
    headers: Headers,
    http_version: str,
    limits: HeaderLimits,
) -> bool:
    """Raise RequestRejected for a request that must not be forwarded; else return whether
    its fields frame an empty body: no Transfer-Encoding, and no Content-Length or 0. In
    HTTP/1.x that is the body (RFC 9112 section 6.3); in HTTP/2 DATA frames are, and a
    request without Content-Length may still carry some.

    One pass over the fields (this runs for every request); when several rules fail, the
    answer is the one checking them one after another gave: 431 for a field line, then
    for the block, then 400 for the first bad name or value, then framing, Host, upgrade."""
    if http_version not in _VERSIONS:
        raise RequestRejected(505, f"HTTP version {http_version!r} is not supported")
    raw_method = method.encode("latin-1", "replace")
    if len(raw_method) > MAX_METHOD or not _METHOD.fullmatch(raw_method):
        raise RequestRejected(400, "invalid request method")
    if len(target) > limits.max_target_bytes:
        raise RequestRejected(414, f"request target longer than {limits.max_target_bytes} bytes")
    if len(headers) > limits.max_count:
        raise RequestRejected(431, f"more than {limits.max_count} header fields")
    field_limit = limits.max_field_bytes - 2  # a field line is name + ": " + value
    long_field = False
    total = 0
    bad: str | None = None
    lengths: list[bytes] = []
    transfer_encoding = False
    hosts: list[bytes] = []
    upgrades: list[bytes] = []
    for name, value in headers:
        size = len(name) + len(value)
        if size > field_limit:
            long_field = True
        total += size + 32  # RFC 9113 section 6.5.2
        if bad is None:
            if not is_lowercase_token(name):
                bad = "invalid header field name"
            elif b"\r" in value or b"\n" in value or b"\0" in value:
                bad = "invalid header field value"
        if name in _READ_LATER:
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                transfer_encoding = True
            elif name == b"host":
                hosts.append(value)
            else:
                upgrades.append(value)
    if long_field:
        raise RequestRejected(431, f"a header field is longer than {limits.max_field_bytes} bytes")
    if total > limits.max_total_bytes:
        raise RequestRejected(431, f"headers larger than {limits.max_total_bytes} bytes")
    if bad is not None:
        raise RequestRejected(400, bad)
    length = _check_framing(lengths, transfer_encoding)
    _check_host(hosts, http_version)
    _check_upgrade(upgrades)
    return not transfer_encoding and not length


_VERSIONS = frozenset({"1.0", "1.1", "2", "2.0"})
# The fields the later checks read (exact lower-case names, as both servers deliver them).
_READ_LATER = frozenset({b"content-length", b"transfer-encoding", b"host", b"upgrade"})


def _check_framing(lengths: list[bytes], transfer_encoding: bool) -> int | None:
    """The Content-Length (None without one), after refusing what frames a body doubtfully."""
    if lengths and transfer_encoding:
        raise RequestRejected(400, "Content-Length together with Transfer-Encoding")
    parsed = set()
    for value in lengths:
        for part in value.split(b","):
            part = part.strip()
            if not part.isdigit():
                raise RequestRejected(400, "invalid Content-Length")
            parsed.add(int(part))
    if len(parsed) > 1:
        raise RequestRejected(400, "conflicting Content-Length values")
    return parsed.pop() if parsed else None


def _check_host(hosts: list[bytes], http_version: str) -> None:
    if len(hosts) > 1:
        raise RequestRejected(400, "more than one Host header")
    if not hosts:
        # HTTP/1.0 may omit it; HTTP/2 carries :authority, which servers pass as Host.
        if http_version == "1.1":
            raise RequestRejected(400, "missing Host header")
        return
    if not _HOST.fullmatch(hosts[0]):
        raise RequestRejected(400, "invalid Host header")


def _check_upgrade(upgrades: list[bytes]) -> None:
    for value in upgrades:
        if b"websocket" in value.lower():
            raise RequestRejected(501, "WebSocket is not supported")
