"""The ``cwnd-proxy`` command line: the parser, the commands, and unit parsing."""

from cwndproxy.cli.commands import entry, main

__all__ = ["entry", "main"]
