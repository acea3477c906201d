"""The request rules (pure): what the proxy answers itself, before any pooled session."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cwndproxy.proxy.request_rules import HeaderLimits, RequestRejected, check_request

LIMITS = HeaderLimits()
OK = [(b"host", b"origin.example"), (b"accept", b"*/*")]


def rejected(
    headers: list[tuple[bytes, bytes]],
    *,
    method: str = "GET",
    target: bytes = b"/",
    version: str = "1.1",
) -> int:
    with pytest.raises(RequestRejected) as info:
        check_request(method, target, headers, version, LIMITS)
    return info.value.status


def test_an_ordinary_request_passes() -> None:
    check_request("GET", b"/a?b=c", OK, "1.1", LIMITS)
    check_request("POST", b"/", [*OK, (b"content-length", b"10")], "2", LIMITS)
    check_request("GET", b"/", [], "1.0", LIMITS)  # HTTP/1.0 may omit Host
    check_request("GET", b"/", [(b"host", b"[::1]:8080")], "1.1", LIMITS)
    # curl --http2 offers an h2c upgrade over HTTP/1.1: ignored, not refused.
    check_request("GET", b"/", [*OK, (b"upgrade", b"h2c")], "1.1", LIMITS)


@pytest.mark.parametrize(
    ("framing", "empty"),
    [
        ([], True),
        ([(b"content-length", b"0")], True),
        ([(b"content-length", b"0, 0")], True),
        ([(b"content-length", b"5")], False),
        ([(b"transfer-encoding", b"chunked")], False),
    ],
)
def test_the_answer_says_whether_the_framing_means_an_empty_body(
    framing: list[tuple[bytes, bytes]], empty: bool
) -> None:
    assert check_request("GET", b"/", [*OK, *framing], "1.1", LIMITS) is empty


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([*OK, (b"x-big", b"a" * 64 * 1024)], 431),  # one 64 KB field
        ([*OK, (b"x-big", b"a" * 8190)], 431),  # just over a field line
        ([*OK] + [(b"x-%d" % i, b"v") for i in range(10_000)], 431),  # 10,000 fields
        ([*OK] + [(b"x-%d" % i, b"v" * 4000) for i in range(9)], 431),  # 36 KB in all
    ],
)
def test_oversized_headers_are_431(headers: list[tuple[bytes, bytes]], status: int) -> None:
    assert rejected(headers) == status


def test_a_long_target_is_414_and_a_long_method_400() -> None:
    assert rejected(OK, target=b"/" + b"a" * 100_000) == 414
    assert rejected(OK, method="A" * 10_000) == 400


@pytest.mark.parametrize(
    "framing",
    [
        [(b"content-length", b"10"), (b"transfer-encoding", b"chunked")],  # CL.TE / TE.CL
        [(b"content-length", b"10"), (b"content-length", b"11")],
        [(b"content-length", b"10, 11")],
        [(b"content-length", b"-1")],
        [(b"content-length", b"0x10")],
    ],
)
def test_smuggling_framing_is_400(framing: list[tuple[bytes, bytes]]) -> None:
    assert rejected([*OK, *framing]) == 400


def test_repeated_identical_content_lengths_are_one() -> None:
    check_request("POST", b"/", [*OK, (b"content-length", b"5, 5")], "1.1", LIMITS)


@pytest.mark.parametrize(
    "hosts",
    [[], [(b"host", b"a"), (b"host", b"b")], [(b"host", b"a b")], [(b"host", b"a/b")]],
)
def test_host_must_be_one_valid_field_on_http11(hosts: list[tuple[bytes, bytes]]) -> None:
    assert rejected(hosts) == 400


def test_versions_upgrades_and_field_syntax() -> None:
    assert rejected(OK, version="9.9") == 505
    assert rejected([*OK, (b"upgrade", b"websocket")]) == 501
    assert rejected([*OK, (b"Bad Name", b"x")]) == 400
    assert rejected([*OK, (b"x", b"a\nb")]) == 400
    assert rejected([*OK, (b"x", b"a\0b")]) == 400


def _one_rule_at_a_time(headers: list[tuple[bytes, bytes]], limits: HeaderLimits) -> object:
    """The rules as separate passes, in order (how check_request read before it became
    one pass): the answer must be the same for any header list."""
    try:
        if len(headers) > limits.max_count:
            raise RequestRejected(431, "count")
        for name, value in headers:
            if len(name) + len(value) + 2 > limits.max_field_bytes:
                raise RequestRejected(431, "field")
        if sum(len(n) + len(v) + 32 for n, v in headers) > limits.max_total_bytes:
            raise RequestRejected(431, "total")
        for name, value in headers:
            if not re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9a-z]+", name):
                raise RequestRejected(400, "invalid header field name")
            if any(c in value for c in (b"\r", b"\n", b"\0")):
                raise RequestRejected(400, "invalid header field value")
        check_request("GET", b"/", headers, "1.1", limits)  # framing, Host, upgrade
    except RequestRejected as exc:
        return exc.status, exc.reason if exc.status == 400 else None
    return None


def _one_pass(headers: list[tuple[bytes, bytes]], limits: HeaderLimits) -> object:
    try:
        check_request("GET", b"/", headers, "1.1", limits)
    except RequestRejected as exc:
        return exc.status, exc.reason if exc.status == 400 else None
    return None


@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"host", b"accept", b"Accept", b"x:y", b"content-length", b"x" * 40]),
            st.sampled_from([b"a", b"5", b"b\r\nc", b"v" * 50, b"example.com", b"6"]),
        ),
        max_size=6,
    )
)
def test_one_pass_answers_as_the_rules_one_at_a_time(headers: list[tuple[bytes, bytes]]) -> None:
    limits = HeaderLimits(max_field_bytes=60, max_total_bytes=300, max_count=5)
    assert _one_pass(headers, limits) == _one_rule_at_a_time(headers, limits)
