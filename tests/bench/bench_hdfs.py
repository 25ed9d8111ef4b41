"""Sink hdfs on local files: seq -> memory -> hdfs, in-process (uvloop, GC tuned as
`flumed agent` does), batch 1000, hourly buckets (`%Y-%m-%d/%H`, useLocalTimeStamp).

`python -m tests.bench hdfs`. Prints events/s and MB/s of event bodies, medians of 3 runs,
for DataStream text and SequenceFile (Writable), each with an fdatasync per batch (the
default) and with hdfs.fsync = false (the CPU cost alone), four sinks on one channel (as
Flume users add sinks: their syncs overlap), SequenceFile gzip BLOCK and CompressedStream
gzip. On this machine's disk one fdatasync takes ~5 ms, which alone
bounds a sink that syncs every batch of 1,000 to ~200,000 events/s.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from flumed.agent import Agent
from flumed.config.graph import build_agent
from tests.bench import _harness

EVENTS = 500_000
BATCH = 1000

CASES: list[tuple[str, dict[str, Any]]] = [
    ("DataStream text", {"fileType": "DataStream"}),
    ("DataStream text, four sinks on the channel", {"fileType": "DataStream", "sinks": 4}),
    ("DataStream text, hdfs.fsync = false", {"fileType": "DataStream", "fsync": False}),
    ("SequenceFile Writable", {"fileType": "SequenceFile"}),
    ("SequenceFile Writable, hdfs.fsync = false", {"fileType": "SequenceFile", "fsync": False}),
    ("SequenceFile Writable, gzip BLOCK", {"fileType": "SequenceFile", "codeC": "gzip"}),
    ("CompressedStream gzip", {"fileType": "CompressedStream", "codeC": "gzip"}),
]


def _doc(out: str, hdfs: dict[str, Any]) -> dict:
    hdfs = dict(hdfs)
    n = hdfs.pop("sinks", 1)
    sinks = {
        f"k{i}": {
            "type": "hdfs",
            "channel": "c1",
            "hdfs": {
                "path": f"{out}/%Y-%m-%d/%H",
                "filePrefix": f"k{i}",
                "useLocalTimeStamp": True,
                "batchSize": BATCH,
                "rollCount": 0,
                "rollSize": 128 * 1024 * 1024,
                "rollInterval": 0,
                **hdfs,
            },
        }
        for i in range(1, n + 1)
    }
    return {
        "agents": {
            "a1": {
                "sources": {
                    "r1": {
                        "type": "seq",
                        "totalEvents": EVENTS,
                        "batchSize": BATCH,
                        "channels": ["c1"],
                    }
                },
                "channels": {
                    "c1": {"type": "memory", "capacity": 100_000, "transactionCapacity": BATCH}
                },
                "sinks": sinks,
            }
        }
    }


async def _pipeline(hdfs: dict[str, Any]) -> float:
    out = tempfile.mkdtemp(prefix="flumed-bench-hdfs-")
    try:
        agent = Agent(build_agent(_doc(out, hdfs), "a1", "bench"))
        _harness.started()
        t0 = time.perf_counter()
        await agent.start()
        sinks = list(agent.sinks.values())
        done = asyncio.Event()
        loop = asyncio.get_running_loop()

        def check() -> None:
            if sum(k.counter.EventDrainSuccessCount for k in sinks) >= EVENTS:
                done.set()
            else:
                loop.call_later(0.002, check)

        check()
        await done.wait()
        dt = time.perf_counter() - t0
        await agent.stop()
        assert sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file()) > 0
        return dt
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    nbytes = sum(len(b"%d" % i) for i in range(EVENTS))
    for name, hdfs in CASES:
        times = [_harness.run(_pipeline(hdfs)) for _ in range(3)]
        dt = statistics.median(times)
        print(
            f"seq -> memory -> hdfs local ({name}, batch {BATCH}, hourly buckets): "
            f"{EVENTS / dt:,.0f} events/s, {nbytes / dt / 1e6:.1f} MB/s",
            flush=True,
        )


if __name__ == "__main__":
    main()
