"""spooldir -> memory -> null, and exec -> memory -> null, in-process on uvloop.

`python -m tests.bench spooldir`. Lines are 100 bytes (99 + newline); the spool
directory holds 4 files. Figures are medians of 3 runs; events/s and MB/s of bodies.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from flumed.agent import Agent
from flumed.config.graph import build_agent

LINES = 1_000_000
FILES = 4
LINE = b"x" * 99 + b"\n"


def _doc(source: dict[str, Any], batch: int) -> dict:
    return {
        "agents": {
            "a1": {
                "sources": {"r1": {**source, "batchSize": batch, "channels": ["c1"]}},
                "channels": {
                    "c1": {"type": "memory", "capacity": 100_000, "transactionCapacity": batch}
                },
                "sinks": {"k1": {"type": "null", "channel": "c1", "batchSize": batch}},
            }
        }
    }


async def _run(source: dict[str, Any], batch: int) -> float:
    agent = Agent(build_agent(_doc(source, batch), "a1", "bench"))
    gc.collect()
    t0 = time.perf_counter()
    await agent.start()
    sink = agent.sinks["k1"]
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def check() -> None:
        if sink.counter.EventDrainSuccessCount >= LINES:
            done.set()
        else:
            loop.call_later(0.002, check)

    check()
    await done.wait()
    dt = time.perf_counter() - t0
    await agent.stop()
    return dt


async def _spooldir(batch: int) -> float:
    d = Path(tempfile.mkdtemp(prefix="flumed-bench-"))
    try:
        for i in range(FILES):
            (d / f"f{i}.log").write_bytes(LINE * (LINES // FILES))
        return await _run({"type": "spooldir", "spoolDir": str(d)}, batch)
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def _exec(batch: int) -> float:
    d = Path(tempfile.mkdtemp(prefix="flumed-bench-"))
    try:
        f = d / "data"
        f.write_bytes(LINE * LINES)
        return await _run({"type": "exec", "command": f"cat {f}"}, batch)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    cases = [
        ("spooldir (batchSize 100) -> memory -> null", _spooldir, 100),
        ("spooldir (batchSize 1000) -> memory -> null", _spooldir, 1000),
        ("exec `cat` (batchSize 1000) -> memory -> null", _exec, 1000),
    ]
    for name, fn, batch in cases:
        times = [uvloop.run(fn(batch)) for _ in range(3)]
        dt = statistics.median(times)
        rate = LINES / dt
        print(f"{name}: {rate:,.0f} events/s, {rate * 99 / 1e6:.1f} MB/s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
