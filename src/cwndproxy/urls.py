"""URL pieces shared by every layer: the upstream's URL, an IPv6 host in brackets.

Plain functions (ValueError on bad input), so the lowest layers can use them without the
configuration module."""

from __future__ import annotations

from urllib.parse import urlsplit


def split_http_url(url: str) -> tuple[str, int, bool, str]:
    """(host, port, tls, path and query) of an http:// or https:// URL; ValueError says why.
    ``https`` means TLS with ALPN h2; ``http`` means h2c by prior knowledge."""
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ValueError("expected http://HOST[:PORT] (h2c) or https://HOST[:PORT] (TLS)")
    tls = split.scheme == "https"
    try:
        port = split.port or (443 if tls else 80)
    except ValueError:
        raise ValueError("invalid port") from None
    path = split.path + (f"?{split.query}" if split.query else "")
    return split.hostname, port, tls, path


def bracket_host(host: str) -> str:
    """An IPv6 literal in brackets, as URLs and :authority need it (RFC 3986)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def format_url(tls: bool, host: str, port: int) -> str:
    return f"{'https' if tls else 'http'}://{bracket_host(host)}:{port}"
