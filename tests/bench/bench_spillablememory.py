"""Spillable memory channel: a burst that spills, then its drain; and a steady flow that
stays in memory. In-process, batches of 1,000 events of 200 bytes.

`python -m tests.bench spillablememory`. Burst: TOTAL events put through a
ChannelProcessor with no sink running, memoryCapacity 10,000 (so the rest spills into
the overflow file channel, fsync per commit, overflowTimeout 0 to time the spill and not
the wait), then taken by the null sink until empty (memory first, then the overflow,
in order). Steady: producer and null sink run together with memoryCapacity 100,000.
Medians of ROUNDS rounds; the machine is shared, so the figures are noisy.
"""

from __future__ import annotations

import statistics
import tempfile
import time

from flumed.channels.spillablememory import SpillableMemoryChannel, SpillableMemoryChannelConfig
from flumed.event import Event
from flumed.routing.processor import ChannelProcessor
from flumed.routing.selectors import SelectorConfig, build_selector
from flumed.sinks.base import Status
from flumed.sinks.null import NullSink, NullSinkConfig
from flumed.sinks.runner import DefaultSinkProcessor, SinkRunner
from tests.bench import _harness

TOTAL = 200_000
BATCH = 1000
BODY = 200
ROUNDS = 3
PAD = b"%0" + str(BODY).encode() + b"d"


def make(directory: str, memory: int) -> SpillableMemoryChannel:
    cfg = SpillableMemoryChannelConfig(
        memoryCapacity=memory,
        overflowCapacity=1_000_000,
        overflowTimeout=0,
        transactionCapacity=BATCH,
        dataDirs=directory,
        minimumRequiredSpace=0,
    )
    return SpillableMemoryChannel("c1", cfg)


async def burst() -> tuple[float, float, int]:
    """Returns (put seconds, drain seconds, events that spilled)."""
    with tempfile.TemporaryDirectory(prefix="flumed-bench-") as tmp:
        ch = make(tmp, 10_000)
        await ch.start()
        processor = ChannelProcessor(build_selector([ch], SelectorConfig()))
        sink = NullSink("k1", NullSinkConfig(batchSize=BATCH))
        sink.channel = ch
        await sink.start()
        _harness.started()
        t0 = time.perf_counter()
        for start in range(0, TOTAL, BATCH):
            await processor.process_batch([Event(PAD % i) for i in range(start, start + BATCH)])
        t1 = time.perf_counter()
        spilled = ch.overflow_size
        while await sink.process() is Status.READY:
            pass
        t2 = time.perf_counter()
        assert sink.counter.EventDrainSuccessCount == TOTAL, sink.counter.EventDrainSuccessCount
        await sink.stop()
        await ch.stop()
        return t1 - t0, t2 - t1, spilled


async def steady() -> float:
    with tempfile.TemporaryDirectory(prefix="flumed-bench-") as tmp:
        ch = make(tmp, 100_000)
        await ch.start()
        processor = ChannelProcessor(build_selector([ch], SelectorConfig()))
        sink = NullSink("k1", NullSinkConfig(batchSize=BATCH))
        sink.channel = ch
        await sink.start()
        runner = SinkRunner(DefaultSinkProcessor("k1", [sink]))
        _harness.started()
        t0 = time.perf_counter()
        runner.start()
        for start in range(0, TOTAL, BATCH):
            await processor.process_batch([Event(PAD % i) for i in range(start, start + BATCH)])
        while sink.counter.EventDrainSuccessCount < TOTAL:
            await ch._mem_room.wait(1.0)  # woken by every take commit
        dt = time.perf_counter() - t0
        await runner.stop(5.0)
        await sink.stop()
        await ch.stop()
        return dt


def main() -> None:
    puts, drains, flows = [], [], []
    spilled = 0
    for _ in range(ROUNDS):
        tp, td, spilled = _harness.run(burst())
        puts.append(TOTAL / tp)
        drains.append(TOTAL / td)
        flows.append(TOTAL / _harness.run(steady()))
    for label, rates in (
        (f"burst put, {spilled:,} of {TOTAL:,} spilled", puts),
        ("burst drain (memory, then overflow)", drains),
        ("steady flow, all in memory", flows),
    ):
        r = statistics.median(rates)
        print(
            f"seq -> spillablememory -> null, {label} (batch {BATCH}, {BODY}-byte events): "
            f"{r:,.0f} events/s, {r * BODY / 1e6:.1f} MB/s",
            flush=True,
        )
