"""Kafka pipelines against a tansu broker on loopback (started here, memory storage).

`python -m tests.bench kafka`. Bodies are 100 bytes; the sink and the channel use
acks=all. Figures are events/s and MB/s of bodies, the median of three runs, each run
timed from the first event to the last (a consumer group's join, 3 to 5 s with tansu, is
left out and printed apart).

- seq → memory → kafka sink (flumeBatchSize 1000)
- kafka source → memory → null (batchSize 1000), from a topic filled beforehand
- seq → kafka channel → null (a put and a take transaction per batch)
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flumed.agent import Agent
from flumed.config.graph import build_agent
from flumed.config.keys import key
from flumed.errors import ChannelError
from flumed.event import Event
from flumed.sources.base import PollableSource, Status
from tests.bench import _harness
from tests.integration.kafka_broker import TansuBroker, create_topics

EVENTS = 500_000
BODY = 100
PARTITIONS = 4
RUNS = 3


@dataclass(frozen=True, slots=True)
class PaddedSeqConfig:
    batchSize: int = key(1000, ge=1)
    totalEvents: int = key(EVENTS, ge=0)


class PaddedSeqSource(PollableSource):
    """`seq` with 100-byte bodies (the number, zero-padded)."""

    Config = PaddedSeqConfig
    config: PaddedSeqConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.next = 0

    async def process(self) -> Status:
        if self.next >= self.config.totalEvents:
            return Status.BACKOFF
        end = min(self.next + self.config.batchSize, self.config.totalEvents)
        batch = [Event(b"%0100d" % i) for i in range(self.next, end)]
        try:
            await self.processor.process_batch(batch)
        except ChannelError:
            return Status.BACKOFF
        self.next = end
        self.counter.EventAcceptedCount += len(batch)
        return Status.READY


def _doc(source: dict, channel: dict, sink: dict) -> dict:
    return {
        "agents": {
            "a1": {
                "sources": {"r1": {**source, "channels": ["c1"]}},
                "channels": {"c1": channel},
                "sinks": {"k1": {**sink, "channel": "c1"}},
            }
        }
    }


MEMORY = {"type": "memory", "capacity": 100_000, "transactionCapacity": 1000}
PADDED = {"type": "tests.bench.bench_kafka:PaddedSeqSource", "batchSize": 1000}
NULL = {"type": "null", "batchSize": 1000}


async def _timed(doc: dict) -> tuple[float, float]:
    """Run an agent until its sink drained EVENTS; (seconds waiting for the first
    event, seconds from the first event to the last)."""
    agent = Agent(build_agent(doc, "a1", "bench"))
    _harness.started()
    t0 = time.perf_counter()
    await agent.start()
    sink = agent.sinks["k1"]
    first = None
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def check() -> None:
        nonlocal first
        n = sink.counter.EventDrainSuccessCount
        if n and first is None:
            first = time.perf_counter()
        if n >= EVENTS:
            done.set()
        else:
            loop.call_later(0.001, check)

    check()
    await done.wait()
    t1 = time.perf_counter()
    await agent.stop()
    assert first is not None
    return first - t0, t1 - first


async def _bench(broker: TansuBroker) -> dict[str, list[tuple[float, float]]]:
    bs = broker.bootstrap
    out: dict[str, list[tuple[float, float]]] = {}
    for _ in range(RUNS):
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        await create_topics(bs, {topic: PARTITIONS})
        sink = {
            "type": "kafka",
            "kafka.bootstrap.servers": bs,
            "kafka.topic": topic,
            "flumeBatchSize": 1000,
            "kafka.producer.acks": "all",
        }
        out.setdefault("seq -> memory -> kafka sink", []).append(
            await _timed(_doc({**PADDED, "totalEvents": EVENTS}, MEMORY, sink))
        )
        # The topic the sink just filled is the source's input.
        source = {
            "type": "kafka",
            "kafka.bootstrap.servers": bs,
            "kafka.topics": topic,
            "kafka.consumer.group.id": f"g-{uuid.uuid4().hex[:8]}",
            "kafka.consumer.auto.offset.reset": "earliest",
            "batchSize": 1000,
            "backoffSleepIncrement": 50,
            "maxBackoffSleep": 200,
        }
        out.setdefault("kafka source -> memory -> null", []).append(
            await _timed(_doc(source, MEMORY, NULL))
        )
        chan_topic = f"bench-ch-{uuid.uuid4().hex[:8]}"
        await create_topics(bs, {chan_topic: PARTITIONS})
        channel = {
            "type": "kafka",
            "kafka.bootstrap.servers": bs,
            "kafka.topic": chan_topic,
            "kafka.consumer.group.id": f"g-{uuid.uuid4().hex[:8]}",
        }
        out.setdefault("seq -> kafka channel -> null", []).append(
            await _timed(_doc({**PADDED, "totalEvents": EVENTS}, channel, NULL))
        )
    return out


def main() -> None:

    with tempfile.TemporaryDirectory() as tmp:
        broker = TansuBroker(Path(tmp)).start()
        try:
            results = _harness.run(_bench(broker))
        finally:
            broker.stop()
    for name, runs in results.items():
        wait = statistics.median(w for w, _ in runs)
        rate = statistics.median(EVENTS / dt for _, dt in runs)
        print(
            f"{name}: {rate:,.0f} events/s, {rate * BODY / 1e6:.1f} MB/s "
            f"({EVENTS:,} events of {BODY} B; {wait:.1f}s to the first event)",
            flush=True,
        )


if __name__ == "__main__":
    main()
