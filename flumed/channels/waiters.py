"""`Waiters`: wake every task waiting for a channel's state to change (not empty, not
full, healthy again). Shared by the memory and file channels."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Waiters:
    """Wake every waiter when something changes; each re-checks its own condition."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        """Wait for the next notify, up to `timeout` s. Returns False on timeout."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_until(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Wait until `ready()` holds, re-checking at each notify, up to `timeout` s.
        Returns `ready()` at the end (callers need not check again)."""
        if ready():
            return True
        if timeout <= 0:
            return False
        deadline = time.monotonic() + timeout
        while not ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not await self.wait(remaining):
                return ready()
        return True
