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


def test_retry_rule() -> None:
    from cwndproxy.proxy.app import MAX_ATTEMPTS, should_retry

    def retry(attempt: int, **kw: bool) -> bool:
        base = {
            "unprocessed": False,
            "idempotent": True,
            "response_started": False,
            "body_held": True,
        }
        base.update(kw)
        return should_retry(attempt, **base)

    assert retry(0) and not retry(1)  # idempotent: once
    assert not retry(0, idempotent=False)  # a POST that may have been processed: never
    assert retry(0, idempotent=False, unprocessed=True)  # refused: safe for any method
    assert retry(MAX_ATTEMPTS - 2, unprocessed=True)
    assert not retry(MAX_ATTEMPTS - 1, unprocessed=True)
    assert not retry(0, response_started=True, unprocessed=True)
    assert not retry(0, body_held=False, unprocessed=True)


def test_an_inbound_connection_is_suspect_in_a_burst_or_after_many_early_resets() -> None:
    from cwndproxy.proxy.app import BURST_STREAMS, InboundConnection

    assert not InboundConnection(active=BURST_STREAMS, requests=1000).suspect
    assert InboundConnection(active=BURST_STREAMS + 1).suspect
    # Resets count only when they are many and at least half of what the client asked.
    many = BURST_STREAMS + 1
    assert InboundConnection(requests=2 * many, early_resets=many).suspect
    assert not InboundConnection(requests=10 * many, early_resets=many).suspect
    assert not InboundConnection(requests=BURST_STREAMS, early_resets=BURST_STREAMS).suspect


def test_a_connection_is_refused_once_most_of_its_finished_requests_were_resets() -> None:
    from cwndproxy.proxy.app import REFUSE_RESETS, InboundConnection

    many = REFUSE_RESETS + 1
    # Under a flood most requests that arrived are still waiting: the finished ones count.
    assert InboundConnection(requests=1000, finished=many, early_resets=many).refused
    assert not InboundConnection(requests=1000, finished=10 * many, early_resets=many).refused
    assert not InboundConnection(finished=REFUSE_RESETS, early_resets=REFUSE_RESETS).refused


async def test_forwarding_waits_for_room_and_gives_up_when_the_client_leaves() -> None:
    import asyncio

    from cwndproxy.proxy.app import MAX_FORWARDED, InboundConnection

    conn = InboundConnection(forwarding=MAX_FORWARDED)
    left = asyncio.Event()
    waiter = asyncio.create_task(conn.forward_slot(left))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    conn.forward_done()
    assert await waiter is True and conn.forwarding == MAX_FORWARDED
    gone = asyncio.create_task(conn.forward_slot(left))
    await asyncio.sleep(0.01)
    left.set()
    assert await gone is False and conn.forwarding == MAX_FORWARDED
