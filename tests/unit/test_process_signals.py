"""The process's signals are caught from the start: a SIGHUP before the service runs waits
for it instead of killing the process, and SIGTERM asks for a stop."""

from __future__ import annotations

import asyncio
import os
import signal

from cwndproxy.service import ProcessSignals


async def test_an_early_sighup_is_applied_once_reload_is_possible() -> None:
    reloads: list[int] = []
    with ProcessSignals() as signals:
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.05)  # the loop runs the handler
        assert reloads == []
        signals.on_reload(lambda: reloads.append(1))
        assert reloads == [1], "the pending SIGHUP is applied when reload becomes possible"
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.05)
        assert reloads == [1, 1]
        assert not signals.stop.done()


async def test_sigterm_asks_for_a_stop() -> None:
    with ProcessSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        async with asyncio.timeout(2):
            assert await signals.stop == "SIGTERM"
