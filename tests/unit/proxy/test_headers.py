from __future__ import annotations

from cwndproxy.proxy.headers import (
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
