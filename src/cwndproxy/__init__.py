"""cwnd-warm-up-proxy: keep a pool of HTTP/2 connections to one upstream warm."""

__version__ = "0.1.0"
