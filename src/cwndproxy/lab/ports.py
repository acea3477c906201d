"""Loopback ports for the lab's processes: a free one, and waiting until one listens."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just had free (another process may still take it first)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def wait_listening(
    port: int,
    *,
    host: str = "127.0.0.1",
    timeout: float = 15.0,
    exited: Callable[[], bool] = lambda: False,
) -> None:
    """Return once ``port`` accepts a connection; RuntimeError as soon as ``exited()`` says
    the process that should listen is gone, TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not listening(host, port):
        if exited():
            raise RuntimeError(f"the process for port {port} exited at start")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g} s")
        time.sleep(0.05)


async def wait_listening_async(
    port: int,
    *,
    host: str = "127.0.0.1",
    timeout: float = 15.0,
    exited: Callable[[], bool] = lambda: False,
) -> None:
    """``wait_listening`` without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if exited():
                raise RuntimeError(f"the process for port {port} exited at start") from None
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on {host}:{port} after {timeout:g} s"
                ) from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
