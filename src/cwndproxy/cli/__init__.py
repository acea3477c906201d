"""The ``cwnd-proxy`` command line: the parser, the commands, and unit parsing."""

from cwndproxy.cli.commands import main

__all__ = ["main"]
