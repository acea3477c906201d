"""The pool's decisions as plain functions of plain data: which session serves a request,
how long to wait before dialling again, how early to replace a session that nears the
upstream's stream limit. Testable without sockets or sleeps."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import NamedTuple


class SlotView(NamedTuple):
    """What selection needs to know about a slot, as plain data. A NamedTuple, not a frozen
    dataclass: one is built per slot per request, and a frozen dataclass's __init__ sets
    each field through object.__setattr__ (~5x slower to build)."""

    slot: int  # the slot's index in the pool
    ready: bool
    real_streams: int
    free_stream_slots: int
    last_chosen: float
    # Dummy data in flight (a burst, a grow, a check): a response here would queue behind it.
    dummy_active: bool = False
    warm: bool = True
    # The session's window as last measured, in target windows (1 without warm-up: no
    # information). A loss leaves a cubic sender at 0.7 of its window for seconds of
    # transfer; a session never used starts near the initial window.
    score: float = 1.0


def choose_slot(views: Sequence[SlotView], exclude: frozenset[int] = frozenset()) -> int | None:
    """Pick a session for a real request: ready ones only; prefer one with a free stream
    slot, then the fewest active real streams, then one without dummy data in flight (its
    bytes would queue ahead of the response in the server's socket), then a warm one, then
    the one with the biggest window as last measured (in tenths of the target), then the
    most recently chosen: a held window needs no use to stay, and the session that just
    served has certainly kept its own."""
    candidates = [v for v in views if v.ready and v.slot not in exclude]
    if not candidates:
        return None
    best = min(
        candidates,
        key=lambda v: (
            v.free_stream_slots == 0,
            v.real_streams,
            v.dummy_active,
            not v.warm,
            -round(v.score * 10),
            -v.last_chosen,
            v.slot,
        ),
    )
    return best.slot


def backoff_delay(
    attempt: int, minimum: float, maximum: float, rand: Callable[[], float] = random.random
) -> float:
    """Exponential back-off with "equal jitter": half the step is fixed, half random, so
    reconnects of many slots spread out but never collapse to zero. ``attempt`` counts
    consecutive failures from 0."""
    step = min(maximum, minimum * float(2 ** min(attempt, 30)))
    return step / 2 + rand() * step / 2


def budget_headroom(budget: int) -> int:
    """How many streams before the upstream's per-connection limit to dial the replacement:
    a quarter, so at a steady request rate the handshake has a quarter of a session's life."""
    return max(1, budget // 4)
