"""The path matrix keeps every warm-up arm's dummy traffic off the other arms' fetches: a
window check of the default arm that met another arm's first fetch left that connection's
ssthresh low for the whole cell (docs/BENCHMARKS.md, S1's `off`)."""

from __future__ import annotations

from cwndproxy.lab.bench.matrix import ARMS, CELLS, Running, blocks


def names(groups: list[list[Running]]) -> list[list[str]]:
    return [[r.arm.name for r in group] for group in groups]


def test_each_warm_up_arm_alone_then_the_rest_together() -> None:
    running = [Running(arm, 8443 + i, 9000 + i) for i, arm in enumerate(ARMS)]
    assert names(blocks(running)) == [
        ["default"],
        ["burst"],
        ["ping"],
        ["renew"],
        ["off", "haproxy", "nginx", "cold", "bbr"],
    ]


def test_a_cell_without_warm_up_arms_is_one_block() -> None:
    quiet = [Running(arm, 8443, 9000) for arm in ARMS if arm.name in ("off", "haproxy")]
    assert names(blocks(quiet)) == [["off", "haproxy"]]
    warm = [Running(arm, 8443, 9000) for arm in ARMS if arm.name == "default"]
    assert names(blocks(warm)) == [["default"]]


def test_the_renewal_arm_runs_only_where_there_is_loss_or_a_competing_flow() -> None:
    renew = next(arm for arm in ARMS if arm.name == "renew")
    assert sorted(cell.name for cell in CELLS if renew.runs_in(cell)) == ["cross", "loss"]
    default = next(arm for arm in ARMS if arm.name == "default")
    assert all(default.runs_in(cell) for cell in CELLS)
