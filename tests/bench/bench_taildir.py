"""taildir: a file growing by 100-byte lines -> memory -> null, in-process (uvloop).

`python -m tests.bench taildir`. A writer process appends LINES lines of 100 bytes
(99 + newline) in 1 MB writes while the agent tails the file; the clock runs from the
agent's start until the null sink has drained every line. Also: the same with
`byteOffsetHeader` and `fileHeader` (a headers dict per event), and through the
multiline path.
Medians of 3 runs; MB/s counts the file's bytes.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flumed.agent import Agent
from flumed.config.graph import build_agent
from tests.bench import _harness

LINES = 1_000_000
LINE = b"x" * 99 + b"\n"

WRITER = """
import sys
n, path = int(sys.argv[1]), sys.argv[2]
block = (b"x" * 99 + b"\\n") * 10_000
with open(path, "ab", buffering=0) as f:
    for _ in range(n // 10_000):
        f.write(block)
"""


def _doc(tmp: Path, extra: dict[str, Any]) -> dict:
    src = {
        "type": "taildir",
        "channels": ["c1"],
        "filegroups": {"f1": f"{tmp}/.*\\.log"},
        "positionFile": f"{tmp}/pos.json",
        "batchSize": 1000,
        **extra,
    }
    return {
        "agents": {
            "a1": {
                "sources": {"r1": src},
                "channels": {
                    "c1": {"type": "memory", "capacity": 100_000, "transactionCapacity": 1000}
                },
                "sinks": {"k1": {"type": "null", "channel": "c1", "batchSize": 1000}},
            }
        }
    }


async def _run(extra: dict[str, Any], events: int) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="flumed-bench-"))
    try:
        log = tmp / "app.log"
        log.touch()
        agent = Agent(build_agent(_doc(tmp, extra), "a1", "bench"))
        _harness.started()
        t0 = time.perf_counter()
        await agent.start()
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(LINES), str(log)])
        await _harness.drained(agent.sinks["k1"], events)
        dt = time.perf_counter() - t0
        await agent.stop()
        writer.wait()
        return dt
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _idle_cpu(files: int, seconds: float = 3.0) -> float:
    """CPU share of the process while `files` caught-up files sit idle (inotify + rescan)."""
    tmp = Path(tempfile.mkdtemp(prefix="flumed-bench-"))
    try:
        for i in range(files):
            (tmp / f"f{i:04d}.log").write_bytes(LINE)
        agent = Agent(build_agent(_doc(tmp, {}), "a1", "bench"))
        await agent.start()
        sink = agent.sinks["k1"]
        while sink.counter.EventDrainSuccessCount < files:
            await asyncio.sleep(0.05)
        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)  # the measured idle window, not a synchronisation
        share = (time.process_time() - c0) / (time.perf_counter() - t0)
        await agent.stop()
        return share
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("taildir (growing file) -> memory -> null", {}, LINES),
        ("taildir batchSize 100 (default) -> memory -> null", {"batchSize": 100}, LINES),
        (
            "taildir + fileHeader + byteOffsetHeader -> memory -> null",
            {"fileHeader": True, "byteOffsetHeader": True},
            LINES,
        ),
        # Every line starts a record: the multiline path's cost per line.
        (
            "taildir multiline (1 line/record) -> memory -> null",
            {"multiline": {"pattern": "x"}},
            LINES,
        ),
    ]
    for name, extra, events in cases:
        times = [_harness.run(_run(extra, events)) for _ in range(3)]
        dt = statistics.median(times)
        print(
            f"{name}: {events / dt:,.0f} lines/s, {events * len(LINE) / dt / 1e6:.1f} MB/s",
            flush=True,
        )
    idle()


if __name__ == "__main__":
    main()


def idle() -> None:
    share = _harness.run(_idle_cpu(1000))
    print(f"taildir 1000 idle files: {share * 100:.1f}% of one core", flush=True)
