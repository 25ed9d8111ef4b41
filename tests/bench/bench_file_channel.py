"""File channel against memory channel: seq-like source -> channel -> null, in-process.

`python -m tests.bench file_channel`. Batches of 1,000 events of 200 bytes; the file
channel fsyncs every commit (fsyncPerTransaction = true). The producer commits through
a ChannelProcessor as a source does; the real null sink drains through a SinkRunner.
Rounds alternate file and memory (the machine is noisy); medians are printed, with
the bytes the process wrote to disk per event (/proc/self/io) for the file channel.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from pathlib import Path

from flumed.channels.base import Channel
from flumed.channels.file import FileChannel, FileChannelConfig
from flumed.channels.memory import MemoryChannel, MemoryChannelConfig
from flumed.event import Event
from flumed.routing.processor import ChannelProcessor
from flumed.routing.selectors import SelectorConfig, build_selector
from flumed.sinks.null import NullSink, NullSinkConfig
from flumed.sinks.runner import DefaultSinkProcessor, SinkRunner

TOTAL = 400_000
BATCH = 1000
BODY = 200
ROUNDS = 3


def written_bytes() -> int:
    """Bytes this process caused to be written to storage (Linux /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def make_channel(kind: str, directory: str) -> Channel:
    if kind == "file":
        return FileChannel(
            "c1",
            FileChannelConfig(
                dataDirs=directory,
                capacity=100_000,
                transactionCapacity=BATCH,
                minimumRequiredSpace=0,
                fsyncPerTransaction=True,
            ),
        )
    return MemoryChannel("c1", MemoryChannelConfig(capacity=100_000, transactionCapacity=BATCH))


async def run_once(kind: str, total: int) -> tuple[float, int]:
    """Returns (seconds from first put to last take, bytes written to disk)."""
    with tempfile.TemporaryDirectory(prefix="flumed-bench-") as tmp:
        ch = make_channel(kind, tmp)
        await ch.start()
        processor = ChannelProcessor(build_selector([ch], SelectorConfig()))
        sink = NullSink("k1", NullSinkConfig(batchSize=BATCH))
        sink.channel = ch
        await sink.start()
        runner = SinkRunner(DefaultSinkProcessor("k1", [sink]))
        gc.collect()
        w0 = written_bytes()
        t0 = time.perf_counter()
        runner.start()
        pad = b"%0" + str(BODY).encode() + b"d"
        for start in range(0, total, BATCH):
            await processor.process_batch([Event(pad % i) for i in range(start, start + BATCH)])
        while sink.counter.EventDrainSuccessCount < total:
            await ch._not_full.wait(1.0)  # woken by every take commit
        dt = time.perf_counter() - t0
        await runner.stop(5.0)
        await sink.stop()
        await ch.stop()
        return dt, written_bytes() - w0


def main() -> None:
    import uvloop

    rates: dict[str, list[float]] = {"file": [], "memory": []}
    written: list[int] = []
    for _ in range(ROUNDS):
        for kind in ("file", "memory"):
            dt, wb = uvloop.run(run_once(kind, TOTAL))
            rates[kind].append(TOTAL / dt)
            if kind == "file":
                written.append(wb)
    mb = BODY / 1e6
    for kind in ("file", "memory"):
        r = statistics.median(rates[kind])
        extra = ""
        if kind == "file":
            extra = f", {statistics.median(written) / TOTAL:,.0f} bytes written per event"
        print(
            f"seq -> {kind} -> null (batch {BATCH}, {BODY}-byte events"
            f"{', fsync per commit' if kind == 'file' else ''}): {r:,.0f} events/s, "
            f"{r * mb:.1f} MB/s{extra}",
            flush=True,
        )
