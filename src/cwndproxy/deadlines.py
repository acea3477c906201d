"""Deadlines for waits that nearly always end long before them, checked by one ticker.

``asyncio.timeout`` schedules a timer for every wait and cancels it after: a heap push, a
handle and a context object, for each of the 4-5 awaits a forwarded request makes (the
response headers, each ASGI send). py-spy put that at 5-7% of a small request's CPU
through the proxy. These timeouts guard against stalls (an upstream that never answers in
60 s, a client that reads nothing for 30 s) and need no millisecond precision: nginx's
``send_timeout`` and ``proxy_read_timeout`` work the same way, with coarse timers.

An armed wait costs a dict insert and delete. One ticker task per event loop wakes every
RESOLUTION seconds while anything is armed and cancels the tasks whose deadline passed;
the waiter turns that cancellation into its own timeout error, exactly as
``asyncio.timeout`` does (``Task.uncancel``, so a cancellation from elsewhere still wins).
A deadline therefore fires up to RESOLUTION late, never early.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass

RESOLUTION = 0.25


@dataclass(slots=True)
class _Armed:
    deadline: float
    # task.cancelling() when armed: more cancellations than this at the end mean someone
    # else cancelled the task too, and theirs wins.
    cancelling: int
    fired: bool = False


class Deadlines:
    """The armed waits of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._armed: dict[asyncio.Task[object], _Armed] = {}
        self._ticker: asyncio.Task[None] | None = None

    def arm(self, seconds: float) -> asyncio.Task[object]:
        """Arm a deadline ``seconds`` from now for the current task's next wait; pass the
        returned task to ``expired`` and ``disarm``. One armed wait per task at a time."""
        task = asyncio.current_task(self._loop)
        assert task is not None, "Deadlines.arm outside a task"
        self._armed[task] = _Armed(self._loop.time() + seconds, task.cancelling())
        if self._ticker is None:
            self._ticker = self._loop.create_task(self._tick())
        return task

    def expired(self, task: asyncio.Task[object]) -> bool:
        """After a CancelledError in the armed wait: True if it was this deadline (and no
        other cancellation is pending), so the caller raises its timeout error instead."""
        armed = self._armed.get(task)
        if armed is None or not armed.fired:
            return False
        return task.uncancel() <= armed.cancelling

    def disarm(self, task: asyncio.Task[object]) -> None:
        self._armed.pop(task, None)

    async def _tick(self) -> None:
        try:
            while self._armed:
                await asyncio.sleep(RESOLUTION)
                now = self._loop.time()
                for task, armed in list(self._armed.items()):
                    if not armed.fired and armed.deadline <= now:
                        armed.fired = True
                        task.cancel()
        finally:
            self._ticker = None


# One per event loop, as asyncio keeps its own per-loop state; gone with the loop.
_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = (
    weakref.WeakKeyDictionary()
)


_last: Deadlines | None = None


def deadlines() -> Deadlines:
    """The running loop's Deadlines."""
    global _last
    loop = asyncio.get_running_loop()
    last = _last
    if last is not None and last._loop is loop:
        # A process runs one loop: skip the weak dict (it makes a weakref per lookup).
        return last
    found = _per_loop.get(loop)
    if found is None:
        found = _per_loop[loop] = Deadlines(loop)
    _last = found
    return found
