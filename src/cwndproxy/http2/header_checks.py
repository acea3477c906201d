"""Header checks h2 makes, done in fewer Python steps, with the same answers.

h2 validates every header block it sends or receives through chains of generators, and
checks field names and values a byte at a time (RFC 9113 section 8.2.1, 8.2.2, 8.3): on a
small request that was the largest part of h2's cost. Here:

- the character checks become one regular expression per name and value;
- an ordinary response block (``:status`` first, plain names, clean values) is passed
  without the chain, because every check in it passes by construction;
- an ordinary request block of the shape H2Session sends is normalized and validated in
  one pass.

Anything else goes through h2's own functions and raises h2's own errors. Property tests
compare both ways (tests/unit/http2/test_perf.py). ``install()`` replaces the functions
in h2's modules; http2/perf.py calls it once at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable
from typing import Any

# RFC 9113 section 8.2.1: what a field name may not contain (besides a colon after its
# first character), and what a field value may not contain.
_BAD_NAME_BYTE = re.compile(rb"[\x00-\x20A-Z\x7f-\xff]")
_BAD_VALUE_BYTE = re.compile(rb"[\x00\n\r]")


def _reject_illegal_characters(
    headers: Iterable[Any], hdr_validation_flags: Any
) -> Generator[Any, None, None]:
    """h2's ``_reject_illegal_characters`` with the same checks, errors and messages, its
    per-byte Python loops replaced by one regular-expression search per name and value."""
    from h2.exceptions import ProtocolError

    for header in headers:
        name, value = header[0], header[1]
        bad = _BAD_NAME_BYTE.search(name)
        if bad is not None:
            c = bad.group()[0]
            if 0x41 <= c <= 0x5A:
                raise ProtocolError(f"Received uppercase header name {name!r}.")
            raise ProtocolError(f"Illegal character '{chr(c)}' in header name: {name!r}")
        if name.find(b":", 1) != -1:
            raise ProtocolError(f"Illegal character ':' in header name: {name!r}")
        if value:
            bad = _BAD_VALUE_BYTE.search(value)
            if bad is not None:
                c = bad.group()[0]
                raise ProtocolError(f"Illegal character '{chr(c)}' in header value: {value!r}")
            if value[0] in (0x20, 0x09) or value[-1] in (0x20, 0x09):
                raise ProtocolError(f"Received header value surrounded by whitespace {value!r}")
        yield header


def _install_character_checks() -> None:
    """h2 4.4 checks every byte of every header field in a Python loop (RFC 9113 section
    8.2.1), on the way in and on the way out: ~60 us of a small request's cost here, the
    largest single item of h2's. ``validate_headers`` looks the function up by its global
    name at each call, so replacing it there replaces it everywhere."""
    import h2.utilities

    h2.utilities._reject_illegal_characters = _reject_illegal_characters


# A lower-case RFC 9110 token: a field name that passes every check h2 makes of a name
# (not empty, no upper case, no byte outside 0x21-0x7e, no colon).
_PLAIN_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
# Names h2 refuses or checks further (RFC 9113 section 8.2.2): never on the fast path.
_NOT_PLAIN = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te"}
)


# Names seen to match _PLAIN_NAME: a set lookup instead of a match for the names every
# block repeats (bounded; starts over when full).
_TOKEN_NAMES: set[bytes] = set()


def is_lowercase_token(name: bytes) -> bool:
    """A lower-case RFC 9110 token (what HTTP/2 allows as a regular field name); also the
    inbound request rules' name check (proxy/request_rules.py)."""
    if name in _TOKEN_NAMES:
        return True
    if _PLAIN_NAME.fullmatch(name) is None:
        return False
    if len(_TOKEN_NAMES) >= 1024:
        _TOKEN_NAMES.clear()
    _TOKEN_NAMES.add(name)
    return True


def _plain_response(headers: list[Any]) -> bool:
    """A response header block every one of h2's checks passes: ``:status`` first and the
    only pseudo-header, then lower-case token names that are not connection-specific,
    and values without NUL, CR, LF or surrounding whitespace."""
    if not headers or headers[0][0] != b":status":
        return False
    first = True
    for header in headers:
        name, value = header[0], header[1]
        if first:
            first = False
        elif name in _NOT_PLAIN or not is_lowercase_token(name):
            return False
        if value and (
            _BAD_VALUE_BYTE.search(value) is not None
            or value[0] in (0x20, 0x09)
            or value[-1] in (0x20, 0x09)
        ):
            return False
    return True


def _install_response_fast_path() -> None:
    """Validate an ordinary response header block in one pass.

    h2 validates a received header block through a chain of seven generators, each
    header passing through every one: ~10% of a small request's CPU through the proxy
    (py-spy). A response block of the usual shape (``_plain_response``) passes all of them
    by construction, so it is returned as is; any other block, and every request or
    trailer block, goes through h2's own chain and its errors. h2.stream imported the
    function by name, so it is replaced there.

    h2 normalizes before it validates: its normalization only moves ``cookie`` fields to
    the end, joined, so a block (a list, as the decoder returns it) without one is passed
    on as the same list, which is what lets the fast path see it."""
    import h2.stream
    import h2.utilities

    original = h2.utilities.validate_headers
    original_normalize = h2.utilities.normalize_inbound_headers

    def normalize_inbound_headers(headers: Any, hdr_validation_flags: Any) -> Any:
        if type(headers) is list and not any(h[0] == b"cookie" for h in headers):
            return headers
        return original_normalize(headers, hdr_validation_flags)

    def validate_headers(headers: Any, hdr_validation_flags: Any) -> Any:
        if (
            hdr_validation_flags.is_response_header
            and not hdr_validation_flags.is_trailer
            and type(headers) is list
            and _plain_response(headers)
        ):
            return headers
        return original(headers, hdr_validation_flags)

    h2.stream.validate_headers = validate_headers  # type: ignore[attr-defined]
    h2.stream.normalize_inbound_headers = normalize_inbound_headers  # type: ignore[attr-defined]


# The pseudo-header fields of every request H2Session sends, in its order.
_REQUEST_PSEUDO = (b":method", b":scheme", b":authority", b":path")
# What bytes.strip() removes: a value that starts or ends with one is not left as is.
_STRIPPED = frozenset(b" \t\n\r\x0b\x0c")
# What h2 sends never indexed (h2.utilities._secure_headers).
_SECURE_NAMES = frozenset({b"authorization", b"proxy-authorization"})


class _PlainRequest(list[Any]):
    """A request header block normalize_outbound_headers found plain: validation would
    pass it unchanged (see ``_plain_request``)."""


def _plain_request(headers: list[Any]) -> bool:
    """A request block that h2's outbound normalization leaves unchanged (but for marking
    secrets never indexed) and its outbound validation passes: the four pseudo-header
    fields in H2Session's order, a method other than CONNECT and a path; then lower-case
    token names that are neither connection-specific nor Host (h2 would compare it with
    :authority), ``te`` only as "trailers", and no value with whitespace at either end."""
    if len(headers) < 4:
        return False
    for index in range(4):
        if headers[index][0] != _REQUEST_PSEUDO[index]:
            return False
    if headers[0][1] == b"CONNECT" or not headers[3][1]:
        return False
    for index, header in enumerate(headers):
        name, value = header[0], header[1]
        # After the four pseudo-header fields, every name is a plain token (which rules out
        # a late or unknown pseudo-header, and an empty name); te only as "trailers".
        plain = index < 4 or (
            name not in _NOT_PLAIN and name != b"host" and is_lowercase_token(name)
        )
        if not plain and (name != b"te" or value.lower() != b"trailers"):
            return False
        if value and (value[0] in _STRIPPED or value[-1] in _STRIPPED):
            return False
    return True


def _install_request_fast_path() -> None:
    """Normalize and validate an ordinary request header block in one pass.

    For every request h2 runs the block through ten generators (lower-casing, stripping,
    connection headers, never-indexed marking, then TE, connection, pseudo-header,
    authority and path checks): ~5% of a small request's CPU. The requests H2Session
    sends have one shape; a block of that shape (``_plain_request``) comes out of them
    unchanged but for the never-indexed marking, which is applied here. Anything else
    goes through h2's own chain. h2.stream imported both functions by name."""
    import h2.stream
    from hpack.struct import NeverIndexedHeaderTuple

    original_normalize = h2.stream.normalize_outbound_headers  # type: ignore[attr-defined]
    original_validate = h2.stream.validate_outbound_headers  # type: ignore[attr-defined]

    def normalize_outbound_headers(
        headers: Any, hdr_validation_flags: Any, should_split_outbound_cookies: bool = False
    ) -> Any:
        if (
            not should_split_outbound_cookies
            and hdr_validation_flags is not None
            and not hdr_validation_flags.is_trailer
            and not hdr_validation_flags.is_response_header
            and type(headers) is list
            and _plain_request(headers)
        ):
            return _PlainRequest(
                NeverIndexedHeaderTuple(h[0], h[1])
                if h[0] in _SECURE_NAMES or (h[0] == b"cookie" and len(h[1]) < 20)
                else h
                for h in headers
            )
        return original_normalize(headers, hdr_validation_flags, should_split_outbound_cookies)

    def validate_outbound_headers(headers: Any, hdr_validation_flags: Any) -> Any:
        if type(headers) is _PlainRequest:
            return headers
        return original_validate(headers, hdr_validation_flags)

    h2.stream.normalize_outbound_headers = normalize_outbound_headers  # type: ignore[attr-defined]
    h2.stream.validate_outbound_headers = validate_outbound_headers  # type: ignore[attr-defined]


def _install_bytes_headers_fast_path() -> None:
    """Pass a header block that is already all bytes through h2's utf8 step unchanged.

    h2 rebuilds every header block it sends as new tuples with names and values encoded to
    bytes (``utf8_encode_headers``): two type checks and a tuple per field, ~10% of
    send_headers. H2Session's blocks are lists of plain tuples of bytes already, for
    which that step returns an equal list of equal tuples; such a list is returned as it
    is. A ``HeaderTuple`` (never indexed), a str, or anything else goes through h2's own
    function. h2.stream imported it by name."""
    import h2.stream

    original = h2.stream.utf8_encode_headers  # type: ignore[attr-defined]

    def utf8_encode_headers(headers: Any) -> Any:
        if type(headers) is list:
            for header in headers:
                if not (
                    type(header) is tuple
                    and len(header) == 2
                    and type(header[0]) is bytes
                    and type(header[1]) is bytes
                ):
                    return original(headers)
            return headers
        return original(headers)

    h2.stream.utf8_encode_headers = utf8_encode_headers  # type: ignore[attr-defined]


def install() -> None:
    _install_character_checks()
    _install_response_fast_path()
    _install_request_fast_path()
    _install_bytes_headers_fast_path()
