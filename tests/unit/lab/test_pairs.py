"""The fine A/B (lab/bench/pairs.py): arms as the command line names them, and each round's
ratio to the base arm's run of the same round."""

from __future__ import annotations

import pytest

from cwndproxy.lab.bench.pairs import PairArm, paired, parse_arms
from cwndproxy.lab.bench.small_requests import LoadResult


def test_arms_sources_and_interpreters_by_name() -> None:
    arms = parse_arms(
        ["off=--strategy off --pool-size 4", "auto=--strategy auto"],
        ["auto=/tmp/wt/src"],
        ["off=/opt/py313/bin/python"],
    )
    assert list(arms) == ["off", "auto"]  # the first is the base
    assert arms["off"].args == ["--strategy", "off", "--pool-size", "4"]
    assert arms["off"].python == "/opt/py313/bin/python" and arms["off"].source is None
    assert arms["auto"].source == "/tmp/wt/src" and arms["auto"].python is None


@pytest.mark.parametrize(
    ("arms", "sources", "why"),
    [
        (["a=--x"], [], "at least two arms"),
        (["a=", "a="], [], "given twice"),
        (["--strategy off", "b="], [], "NAME=ARGS"),
        (["a=", "b="], ["c=/src"], "named arm"),
    ],
)
def test_bad_arms_are_refused_with_a_reason(arms: list[str], sources: list[str], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_arms(arms, sources, [])


def run(loop_us: float | None) -> LoadResult:
    return LoadResult(1000.0, 3000, 0, loop_us, loop_us)


def test_ratios_are_taken_round_by_round() -> None:
    # Round 2 was slow for both arms: paired, the arm costs 1.2x the base every round.
    base = PairArm("base", [], runs=[run(100), run(200), run(100)])
    arm = PairArm("arm", [], runs=[run(120), run(240), run(120)])
    assert [round(r, 6) for r in paired(arm, base)] == [1.2, 1.2, 1.2]
    # A run without a CPU figure is left out, not counted as a ratio.
    arm.runs[1] = run(None)
    assert [round(r, 6) for r in paired(arm, base)] == [1.2, 1.2]
