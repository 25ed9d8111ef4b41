"""A source wired to a memory channel inside the test's own event loop.

`memory_channel()` and `wire()` are the two steps; `SourceHarness` does both and starts
them (`async with`), `on_uvloop` runs a test on uvloop as the daemon runs.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

import uvloop

from flumed.channels.base import Channel
from flumed.channels.memory import MemoryChannel, MemoryChannelConfig
from flumed.config.keys import flatten, parse
from flumed.event import Event
from flumed.routing.processor import ChannelProcessor
from flumed.routing.selectors import SelectorConfig, build_selector


def memory_channel(
    capacity: int = 100_000, transaction_capacity: int = 10_000, keep_alive: float = 3.0
) -> MemoryChannel:
    """A memory channel `c1` (not started)."""
    return MemoryChannel(
        "c1",
        MemoryChannelConfig(
            capacity=capacity, transactionCapacity=transaction_capacity, keep_alive=keep_alive
        ),
    )


def wire(source_cls: type, conf: dict[str, Any], channel: Channel) -> Any:
    """Source `r1` of `source_cls` from `conf` (its keys as a user writes them, flat or
    nested), delivering to `channel` (not started)."""
    source = source_cls("r1", parse(source_cls.Config, flatten(conf), "sources.r1"))
    source.processor = ChannelProcessor(build_selector([channel], SelectorConfig()), [])
    return source


class SourceHarness:
    """`async with SourceHarness(SyslogTcpSource, {...}) as h:` starts channel and source.

    `conf` holds the source's keys as a user writes them (strings or TOML values).
    """

    def __init__(
        self,
        source_cls: type,
        conf: dict[str, Any],
        capacity: int = 100_000,
        transaction_capacity: int = 10_000,
        keep_alive: float = 3.0,
    ) -> None:
        self.channel = memory_channel(capacity, transaction_capacity, keep_alive)
        self.source = wire(source_cls, conf, self.channel)

    async def __aenter__(self) -> SourceHarness:
        await self.channel.start()
        await self.source.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.source.stop()
        await self.channel.stop()

    async def take(self, max_events: int = 100_000, timeout: float = 0.0) -> list[Event]:
        async with self.channel.transaction() as tx:
            return await tx.take_batch(max_events, timeout)

    async def events(self, n: int, timeout: float = 30.0) -> list[Event]:
        """Take exactly `n` events (waiting for them), then check no more arrive soon."""
        out: list[Event] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(out)} of {n} events in {timeout}s: {out[-3:]}")
            out += await self.take(n - len(out), min(left, 0.5))
        return out


def on_uvloop(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on its own uvloop loop, as the daemon runs (uvloop's transports
    are not asyncio's classes; tests on the default loop would not see that)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        uvloop.run(fn(*args, **kwargs))

    return run
