"""What every testbed benchmark does before its first arm."""

from __future__ import annotations

import sys
from pathlib import Path

from cwndproxy.lab.testbed import netns


def testbed_out_dir(prog: str, out: str) -> Path | None:
    """The output directory, made; None, after saying why on stderr, when this machine
    cannot build the testbed (not root, no TUN, no namespaces)."""
    try:
        netns.check_available()
    except netns.TestbedUnavailable as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return path
