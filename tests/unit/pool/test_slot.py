"""What selection sees of a slot comes from its session's warm-up through the SessionWarmth
seam (the warm-up controller in production; plain data here)."""

from __future__ import annotations

from dataclasses import dataclass

from cwndproxy.pool.slot import PoolSlot, SessionWarmth


@dataclass
class Warmth:
    selection_facts: tuple[bool, bool, float] = (False, True, 1.0)
    state_name: str = "holding"
    state_since: float = 0.0
    note: str = ""
    last_error: str | None = None

    async def stop(self) -> None:
        pass


def test_a_slot_without_warm_up_counts_as_warm_with_no_window_information() -> None:
    view = PoolSlot(index=0).view()
    assert (view.dummy_active, view.warm, view.score) == (False, True, 1.0)


def test_the_view_carries_the_warm_up_state() -> None:
    warmth: SessionWarmth = Warmth(selection_facts=(True, False, 0.7))
    view = PoolSlot(index=3, controller=warmth).view()
    assert view.slot == 3
    assert (view.dummy_active, view.warm, view.score) == (True, False, 0.7)
    assert not view.ready, "no session: not ready, whatever the warm-up says"
