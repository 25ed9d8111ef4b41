"""What every benchmark shares, so that figures are comparable with each other and with
the daemon: in-process runs get `flumed agent`'s runtime (`cli.prepare_runtime()`:
uvloop, the tuned GC; `runtime_started()`: the start-up heap frozen), agent processes
are the daemon itself. Figures measured while other work loads the machine are noisy.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from flumed.agent import Agent
from flumed.cli import prepare_runtime, runtime_started
from flumed.config.graph import build_agent
from flumed.sinks.base import Sink
from tests.util import AgentProcess, free_port

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one in-process measurement as `flumed agent` runs its agent. The GC freeze of
    `started()` is undone afterwards, so that runs stay independent."""
    prepare_runtime()
    try:
        return asyncio.run(coro)
    finally:
        gc.unfreeze()


def started() -> None:
    """Called once the measured pipeline is built: as the daemon after its start."""
    runtime_started()


async def drained(sink: Sink, events: int) -> None:
    """Return once `sink` delivered `events` (checked every 2 ms: a counter has no
    event to wait on, and the check must cost the pipeline nothing)."""
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def check() -> None:
        if sink.counter.EventDrainSuccessCount >= events:
            done.set()
        else:
            loop.call_later(0.002, check)

    check()
    await done.wait()


async def time_pipeline(doc: dict[str, Any], events: int, sink: str = "k1") -> float:
    """Seconds agent `a1` of `doc` takes from its start until `sink` delivered `events`."""
    agent = Agent(build_agent(doc, "a1", "bench"))
    started()
    t0 = time.perf_counter()
    await agent.start()
    try:
        await drained(agent.sinks[sink], events)
        return time.perf_counter() - t0
    finally:
        await agent.stop()


@contextmanager
def agent_process(source: str, batch: int) -> Iterator[tuple[AgentProcess, int]]:
    """A `flumed agent` process: `source` (the TOML keys of a listening source, without
    its port and channels) on a free port -> memory -> null, `batch` events a transaction.
    Yields the process (running) and the port; stopped at the end."""
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        conf = Path(d) / "bench.toml"
        conf.write_text(f"""
[agents.a1.sources.r1]
{source}
port = {port}
channels = ["c1"]
[agents.a1.channels.c1]
type = "memory"
capacity = 100000
transactionCapacity = {batch}
[agents.a1.sinks.k1]
type = "null"
channel = "c1"
batchSize = {batch}
""")
        agent = AgentProcess(conf).start()
        try:
            yield agent, port
            agent.terminate()
        finally:
            agent.close()
