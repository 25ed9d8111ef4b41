"""JDBC channel on this machine's PostgreSQL and MariaDB: producer → jdbc → null sink,
in-process. `python -m tests.bench jdbc`. Batches of 1,000 events of 100 bytes; the
producer commits through a ChannelProcessor as a source does, the null sink drains
through a SinkRunner at the same time. Prints a skip line for a server that is absent.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

from flumed.channels.jdbc import JdbcChannel, JdbcChannelConfig
from flumed.event import Event
from flumed.routing.processor import ChannelProcessor
from flumed.routing.selectors import SelectorConfig, build_selector
from flumed.sinks.null import NullSink, NullSinkConfig
from flumed.sinks.runner import DefaultSinkProcessor, SinkRunner
from tests.bench import _harness

TOTAL = 200_000
BATCH = 1000
BODY = 100
SERVERS = {
    "postgresql": ("jdbc:postgresql://127.0.0.1:5432/test?user=postgres", 5432),
    "mariadb": ("jdbc:mysql://127.0.0.1:3306/test?user=root", 3306),
}


async def run_once(url: str) -> float:
    cfg = JdbcChannelConfig(
        db_type="POSTGRESQL" if "postgresql" in url else "MYSQL",
        driver_url=url,
        transactionCapacity=BATCH,
        queue=f"bench_{uuid.uuid4().hex[:8]}",
        pollInterval=20,
    )
    ch = JdbcChannel("c1", cfg)
    await ch.start()
    processor = ChannelProcessor(build_selector([ch], SelectorConfig()))
    sink = NullSink("k1", NullSinkConfig(batchSize=BATCH))
    sink.channel = ch
    await sink.start()
    runner = SinkRunner(DefaultSinkProcessor("k1", [sink]))
    _harness.started()
    t0 = time.perf_counter()
    runner.start()
    pad = b"%0" + str(BODY).encode() + b"d"
    for start in range(0, TOTAL, BATCH):
        await processor.process_batch([Event(pad % i) for i in range(start, start + BATCH)])
    while sink.counter.EventDrainSuccessCount < TOTAL:
        await asyncio.sleep(0.01)
    secs = time.perf_counter() - t0
    await runner.stop(5)
    await sink.stop()
    await ch.stop()
    return secs


def main() -> None:
    for name, (url, port) in SERVERS.items():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            print(f"seq -> jdbc ({name}) -> null: skipped, no server on port {port}")
            continue
        secs = _harness.run(run_once(url))
        print(
            f"seq -> jdbc ({name}) -> null, batch {BATCH} x {BODY} B: "
            f"{TOTAL / secs:,.0f} events/s, {TOTAL * BODY / secs / 1e6:.1f} MB/s",
            flush=True,
        )


if __name__ == "__main__":
    main()
