"""A finely interleaved A/B of proxies: is one arm cheaper per small request than another?

This shared 2-core machine's noise moves on a scale of seconds: three proxies started with
the same arguments, run one after another, gave 238-371 us of loop-thread CPU per request
(docs/BENCHMARKS.md). A few long runs per arm cannot tell 10-20% apart. Here every arm
runs many short h2load runs, order reversed every other round, and each arm's figure is
compared with the first arm's *in the same round*; the report gives the median of those
paired ratios and their quartiles. Two copies of one arm against each other gave 1.05
(0.91-1.21) with 30 rounds: differences inside that are noise.

Each arm is a proxy process: a name, its ``cwnd-proxy run`` arguments, and optionally
another checkout's ``src/`` (``--source``) or another interpreter with the project's
dependencies installed (``--python``). The origin is the small-requests part's nginx
(1 KiB over TLS h2, lab/bench/small_requests.py).

    python -m cwndproxy.lab.bench.pairs --arm off='--strategy off --pool-size 4' \\
        --arm auto='--strategy auto --pool-size 4' [--source NAME=DIR] [--python NAME=EXE] \\
        [--rounds 30] [--requests 3000] [--http1] [--out FILE]

The figure compared is the proxy's event-loop thread CPU per request (it bounds the rate);
req/s and the whole process's CPU are reported beside it. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cwndproxy.lab.bench.loopback import make_certs, proxy_process
from cwndproxy.lab.bench.small_requests import (
    OBJECT_PATH,
    LoadResult,
    h2load,
    ratio_summary,
    round_ratios,
    small_origin,
    tls_upstream_args,
    write_results,
)


@dataclass
class PairArm:
    name: str
    args: list[str]
    source: str | None = None
    python: str | None = None
    runs: list[LoadResult] = field(default_factory=list)


def parse_arms(arms: list[str], sources: list[str], pythons: list[str]) -> dict[str, PairArm]:
    """``NAME=ARGS`` arms, then ``NAME=DIR`` sources and ``NAME=EXE`` interpreters for them."""
    parsed: dict[str, PairArm] = {}
    for spec in arms:
        name, sep, args = spec.partition("=")
        if not sep or not name:
            raise ValueError(f"--arm wants NAME=ARGS, got {spec!r}")
        if name in parsed:
            raise ValueError(f"arm {name!r} given twice")
        parsed[name] = PairArm(name, args.split())
    for option, values in (("source", sources), ("python", pythons)):
        for spec in values:
            name, sep, value = spec.partition("=")
            if not sep or name not in parsed:
                raise ValueError(f"--{option} wants NAME=VALUE for a named arm, got {spec!r}")
            setattr(parsed[name], option, value)
    if len(parsed) < 2:
        raise ValueError("give at least two arms (--arm NAME=ARGS)")
    return parsed


def paired(arm: PairArm, base: PairArm) -> list[float]:
    """The arm's loop CPU per request over the base arm's, round by round."""
    return round_ratios(
        [r.loop_us_per_request for r in arm.runs],
        [r.loop_us_per_request for r in base.runs],
        strict=True,
    )


def measure(arms: dict[str, PairArm], rounds: int, requests: int, http1: bool) -> None:
    load = ["-n", str(requests)] + (["-c", "50", "--h1"] if http1 else ["-c", "10", "-m", "10"])
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        certs = make_certs(Path(tmp))
        nginx = stack.enter_context(small_origin(Path(tmp) / "nginx", certs))
        assert nginx.tls_port is not None
        upstream = tls_upstream_args(nginx.tls_port, certs[0])
        running = {
            arm.name: stack.enter_context(
                proxy_process([*upstream, *arm.args], source=arm.source, python=arm.python)
            )
            for arm in arms.values()
        }
        for proxy in running.values():  # warm: sessions up, code paths hot
            h2load(f"http://127.0.0.1:{proxy.port}{OBJECT_PATH}", ["-n", "2000", *load[2:]])
        order = list(arms.values())
        for index in range(rounds):
            for arm in order if index % 2 == 0 else reversed(order):
                proxy = running[arm.name]
                url = f"http://127.0.0.1:{proxy.port}{OBJECT_PATH}"
                result = h2load(url, load, pids=(proxy.pid,))
                if result.failed or not result.succeeded:
                    raise RuntimeError(f"arm {arm.name}: {result.failed} requests failed")
                arm.runs.append(result)


def report(arms: dict[str, PairArm]) -> dict[str, Any]:
    base = next(iter(arms.values()))
    summary: dict[str, Any] = {}
    print(f"loop-thread CPU per request, each round's ratio to {base.name!r} (median, quartiles)")
    print(f"  {'arm':16s} {'loop us':>8s} {'CPU us':>8s} {'req/s':>8s}  ratio")
    for arm in arms.values():
        ratios = paired(arm, base)
        median, q1, q3 = ratio_summary(ratios) or (float("nan"),) * 3
        row = {
            "args": arm.args,
            "source": arm.source,
            "python": arm.python,
            "loop_us": statistics.median(r.loop_us_per_request or 0.0 for r in arm.runs),
            "cpu_us": statistics.median(r.cpu_us_per_request or 0.0 for r in arm.runs),
            "rps": statistics.median(r.rps for r in arm.runs),
            "loop_ratio": [median, q1, q3],
            "rounds": [r.__dict__ for r in arm.runs],
        }
        summary[arm.name] = row
        print(
            f"  {arm.name:16s} {row['loop_us']:8.0f} {row['cpu_us']:8.0f} {row['rps']:8.0f}  "
            f"{median:.3f} ({q1:.3f}-{q3:.3f})"
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--arm", action="append", default=[], metavar="NAME=ARGS", help="the first is the base"
    )
    parser.add_argument("--source", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--python", action="append", default=[], metavar="NAME=EXE")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=3000, help="per h2load run")
    parser.add_argument("--http1", action="store_true", help="HTTP/1.1 in (default h2c)")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    try:
        arms = parse_arms(args.arm, args.source, args.python)
    except ValueError as exc:
        parser.error(str(exc))
    measure(arms, args.rounds, args.requests, args.http1)
    summary = report(arms)
    write_results(args.out, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
