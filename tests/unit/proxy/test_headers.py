from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cwndproxy.proxy.headers import (
    HOP_BY_HOP,
    Headers,
    downstream_response_headers,
    is_idempotent,
    strip_hop_by_hop,
    upstream_request_headers,
)


def test_hop_by_hop_and_connection_listed_fields_are_dropped() -> None:
    headers = [
        (b"Connection", b"keep-alive, X-Secret"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"h2c"),
        (b"HTTP2-Settings", b"AAA"),
        (b"X-Secret", b"1"),
        (b"Accept", b"*/*"),
    ]
    assert strip_hop_by_hop(headers, keep_te_trailers=True) == [(b"accept", b"*/*")]


def test_te_trailers_survives_other_te_does_not() -> None:
    assert strip_hop_by_hop([(b"te", b"gzip, trailers;q=1")], keep_te_trailers=True) == [
        (b"te", b"trailers")
    ]
    assert strip_hop_by_hop([(b"te", b"gzip")], keep_te_trailers=True) == []
    assert downstream_response_headers([(b"te", b"trailers")]) == []


def test_host_becomes_authority_only_when_preserved() -> None:
    headers = [(b"host", b"client-facing:8080"), (b"accept", b"*/*")]
    authority, out = upstream_request_headers(
        headers,
        client_ip="198.18.0.9",
        inbound_scheme="http",
        upstream_authority="origin.example",
        preserve_host=False,
    )
    assert authority == "origin.example"
    assert all(name != b"host" for name, _ in out)
    authority, _ = upstream_request_headers(
        headers,
        client_ip="198.18.0.9",
        inbound_scheme="http",
        upstream_authority="origin.example",
        preserve_host=True,
    )
    assert authority == "client-facing:8080"


def test_forwarded_headers_append_to_earlier_hops() -> None:
    headers = [
        (b"host", b"a.example"),
        (b"x-forwarded-for", b"203.0.113.1"),
        (b"forwarded", b"for=203.0.113.1"),
        (b"x-forwarded-proto", b"spoofed"),
    ]
    _, out = upstream_request_headers(
        headers,
        client_ip="::1",
        inbound_scheme="https",
        upstream_authority="o",
        preserve_host=False,
    )
    d = dict(out)
    assert d[b"x-forwarded-for"] == b"203.0.113.1, ::1"
    assert d[b"forwarded"] == b'for=203.0.113.1, for="::1";proto=https;host=a.example'
    assert d[b"x-forwarded-proto"] == b"https"
    assert d[b"x-forwarded-host"] == b"a.example"


def test_idempotent_methods() -> None:
    assert is_idempotent("GET") and is_idempotent("put") and is_idempotent("DELETE")
    assert not is_idempotent("POST") and not is_idempotent("PATCH")


def _strip_one_field_at_a_time(headers: Headers, *, keep_te_trailers: bool) -> Headers:
    """The rule as RFC 9110 section 7.6.1 states it, field by field (the reference)."""
    listed = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
        if token.strip()
    }
    out = [
        (name.lower(), value)
        for name, value in headers
        if name.lower() not in HOP_BY_HOP and name.lower() not in listed
    ]
    te = [value for name, value in headers if name.lower() == b"te"]
    trailers = any(
        token.split(b";")[0].strip().lower() == b"trailers"
        for value in te
        for token in value.split(b",")
    )
    if keep_te_trailers and trailers:
        out.append((b"te", b"trailers"))
    return out


_NAMES = st.sampled_from(
    [
        b"accept",
        b"Accept",
        b"x-a",
        b"X-A",
        b"123",
        b"te",
        b"connection",
        b"Connection",
        b"keep-alive",
        b"upgrade",
        b"transfer-encoding",
        b"x-secret",
    ]
)
_VALUES = st.sampled_from([b"", b"1", b"x-secret", b"X-A, accept", b"trailers", b"gzip"])


@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=8), st.booleans())
def test_strip_agrees_with_the_rule_field_by_field(
    headers: Headers, keep_te_trailers: bool
) -> None:
    expected = _strip_one_field_at_a_time(headers, keep_te_trailers=keep_te_trailers)
    assert strip_hop_by_hop(headers, keep_te_trailers=keep_te_trailers) == expected


def test_a_plain_block_comes_back_as_a_new_list_of_the_same_pairs() -> None:
    headers = [(b"accept", b"*/*"), (b"x-a", b"1")]
    out = strip_hop_by_hop(headers, keep_te_trailers=False)
    assert out == headers and out is not headers
