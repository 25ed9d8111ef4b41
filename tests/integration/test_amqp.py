"""The amqp source and sink against this machine's RabbitMQ, in real agent processes with
file channels: each SIGKILLed mid-stream and restarted loses nothing, duplicates bounded;
an unroutable message with `mandatory` rolls back until a queue is bound."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections import Counter

import pytest

from tests.util import AckingSender, free_port, wait_until_sync

URL = "amqp://guest:guest@127.0.0.1:5672/"
TOTAL = 20_000
BATCH = 500


def _rabbit_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _rabbit_up(), reason="no RabbitMQ on 127.0.0.1:5672")


async def _publish(queue: str, numbers: range) -> None:
    import aio_pika

    conn = await aio_pika.connect(URL)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        await ch.declare_queue(queue, durable=True)
        for start in range(numbers.start, numbers.stop, 1000):
            await asyncio.gather(
                *(
                    ch.default_exchange.publish(
                        aio_pika.Message(b"%d" % i, headers={"n": i}), routing_key=queue
                    )
                    for i in range(start, min(start + 1000, numbers.stop))
                )
            )


async def _consume_all(queue: str, expect: int, timeout: float = 120) -> list[int]:
    """Every message of `queue` (acked), until `expect` distinct numbers were seen."""
    import aio_pika

    conn = await aio_pika.connect(URL)
    got: list[int] = []
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, durable=True)
        async with asyncio.timeout(timeout):
            async with q.iterator() as it:
                async for m in it:
                    got.append(int(m.body))
                    await m.ack()
                    if len(set(got)) >= expect:
                        break
        # Whatever else is queued (duplicates) counts too.
        while (m := await q.get(fail=False, no_ack=True)) is not None:
            got.append(int(m.body))
    return got


async def _delete(*queues: str, exchange: str = "") -> None:
    import aio_pika

    conn = await aio_pika.connect(URL)
    async with conn:
        ch = await conn.channel()
        for q in queues:
            await ch.queue_delete(q)
        if exchange:
            await ch.exchange_delete(exchange)


def delivered(agent) -> list[int]:
    out = []
    for line in agent.stderr_path.read_text(errors="replace").splitlines():
        if "flumed.sinks.logger: Event: {" in line and line.endswith(" }"):
            out.append(int(line.split()[-2]))
    return out


def test_amqp_source_sigkill_loses_nothing(agent_factory, tmp_path):
    queue = f"flumed-src-{uuid.uuid4().hex[:8]}"
    asyncio.run(_publish(queue, range(TOTAL)))
    agent = agent_factory(
        f"""
[agents.a1.sources.r1]
type = "amqp"
url = "{URL}"
queue = "{queue}"
batchSize = {BATCH}
channels = ["c1"]
[agents.a1.channels.c1]
type = "file"
dataDirs = "{tmp_path / "data"}"
minimumRequiredSpace = 0
[agents.a1.sinks.k1]
type = "logger"
channel = "c1"
batchSize = {BATCH}
"""
    )
    try:
        wait_until_sync(lambda: len(delivered(agent)) > 4000, timeout=120, what="delivering")
        agent.kill()
        agent.start()
        wait_until_sync(
            lambda: set(delivered(agent)) >= set(range(TOTAL)), timeout=180, what="all delivered"
        )
        counts = Counter(delivered(agent))
        assert set(counts) == set(range(TOTAL))
        assert sum(n - 1 for n in counts.values()) <= 2 * BATCH  # prefetch = 2 x batchSize
        log = agent.stderr_path.read_text()
        assert f"'amqp.routingKey': '{queue}'" in log and "'n': '" in log
        assert agent.terminate() == 0
    finally:
        asyncio.run(_delete(queue))


def test_amqp_sink_sigkill_loses_nothing(agent_factory, tmp_path):
    queue = f"flumed-sink-{uuid.uuid4().hex[:8]}"
    port = free_port()
    agent = agent_factory(
        f"""
[agents.a1.sources.r1]
type = "netcat"
bind = "127.0.0.1"
port = {port}
ack-every-event = true
channels = ["c1"]
[agents.a1.channels.c1]
type = "file"
dataDirs = "{tmp_path / "data"}"
minimumRequiredSpace = 0
[agents.a1.sinks.k1]
type = "amqp"
url = "{URL}"
routingKey = "{queue}"
batchSize = {BATCH}
channel = "c1"
"""
    )
    asyncio.run(_publish(queue, range(0)))  # declare the queue before anything is sent
    try:
        sender = AckingSender(port)
        t = threading.Thread(target=sender.send_range, args=(0, TOTAL, 300.0), daemon=True)
        t.start()
        wait_until_sync(
            lambda: agent.counter("SINK.k1", "EventDrainSuccessCount") > 4000,
            timeout=120,
            what="publishing",
        )
        agent.kill()
        agent.start()
        t.join(300)
        assert sender.acked == TOTAL
        got = asyncio.run(_consume_all(queue, TOTAL))
        counts = Counter(got)
        assert set(counts) == set(range(TOTAL))
        assert sum(n - 1 for n in counts.values()) <= BATCH
        assert agent.terminate() == 0
    finally:
        asyncio.run(_delete(queue))


def test_mandatory_unroutable_rolls_back_until_a_queue_is_bound(agent_factory, tmp_path):
    exchange = f"flumed-x-{uuid.uuid4().hex[:8]}"
    queue = f"flumed-q-{uuid.uuid4().hex[:8]}"
    port = free_port()
    agent = agent_factory(
        f"""
[agents.a1.sources.r1]
type = "netcat"
bind = "127.0.0.1"
port = {port}
channels = ["c1"]
[agents.a1.channels.c1]
type = "memory"
[agents.a1.sinks.k1]
type = "amqp"
url = "{URL}"
exchange = "{exchange}"
routingKey = "logs"
mandatory = true
batchSize = 10
channel = "c1"
"""
    )
    try:
        AckingSender(port).send_range(0, 10)
        wait_until_sync(
            lambda: agent.counter("SINK.k1", "EventWriteFail") >= 1, what="a returned batch"
        )
        assert agent.counter("CHANNEL.c1", "ChannelSize") == 10
        assert "returned as unroutable" in agent.log()

        async def bind() -> None:
            import aio_pika

            conn = await aio_pika.connect(URL)
            async with conn:
                ch = await conn.channel()
                q = await ch.declare_queue(queue, durable=True)
                await q.bind(exchange, "logs")

        asyncio.run(bind())
        assert sorted(asyncio.run(_consume_all(queue, 10))) == list(range(10))
    finally:
        asyncio.run(_delete(queue, exchange=exchange))
