"""The jdbc channel shared by real agents on this machine's PostgreSQL: one producer
(netcat with acks → jdbc) and two consumers (jdbc → logger) on one queue. A consumer is
SIGKILLed mid-stream and restarted, and every connection of the queue is terminated by
the server once (as a database restart would): every acknowledged number is delivered,
duplicates are bounded by one batch per interruption."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections import Counter

import pytest

from tests.util import AckingSender, free_port, wait_until_sync

BATCH = 500
TOTAL = 20_000
URL = "jdbc:postgresql://127.0.0.1:5432/test?user=postgres"


def _pg_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _pg_up(), reason="no PostgreSQL on 127.0.0.1:5432")

CHANNEL = """
[agents.a1.channels.c1]
type = "jdbc"
"db.type" = "POSTGRESQL"
"driver.url" = "{url}"
queue = "{queue}"
transactionCapacity = 1000
"""
PRODUCER = (
    """
[agents.a1.sources.r1]
type = "netcat"
bind = "127.0.0.1"
port = {port}
ack-every-event = true
channels = ["c1"]
"""
    + CHANNEL
)
CONSUMER = (
    CHANNEL
    + f"""
[agents.a1.sinks.k1]
type = "logger"
channel = "c1"
batchSize = {BATCH}
"""
)


def delivered(agent) -> list[int]:
    out = []
    for line in agent.stderr_path.read_text(errors="replace").splitlines():
        if "flumed.sinks.logger: Event: {" in line and line.endswith(" }"):
            out.append(int(line.split()[-2]))
    return out


async def _terminate(queue: str) -> int:
    import asyncpg

    con = await asyncpg.connect(host="127.0.0.1", user="postgres", database="test")
    try:
        rows = await con.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            f"flumed {queue}",
        )
        return len(rows)
    finally:
        await con.close()


def test_two_consumers_one_killed_and_connections_cut_lose_nothing(agent_factory):
    queue = f"t_{uuid.uuid4().hex[:10]}"
    port = free_port()
    producer = agent_factory(PRODUCER.format(port=port, url=URL, queue=queue))
    c1 = agent_factory(CONSUMER.format(url=URL, queue=queue))
    c2 = agent_factory(CONSUMER.format(url=URL, queue=queue))
    sender = AckingSender(port)
    t = threading.Thread(target=sender.send_range, args=(0, TOTAL, 300.0), daemon=True)
    t.start()
    wait_until_sync(lambda: len(delivered(c1)) > 2000, timeout=120, what="c1 delivering")
    c1.kill()
    c1.start()
    wait_until_sync(
        lambda: len(delivered(c1)) + len(delivered(c2)) > TOTAL // 2, timeout=120, what="half"
    )
    assert asyncio.run(_terminate(queue)) >= 3  # producer, both consumers (and listeners)
    t.join(300)
    assert sender.acked == TOTAL
    wait_until_sync(
        lambda: set(delivered(c1)) | set(delivered(c2)) >= set(range(TOTAL)),
        timeout=180,
        what="every acknowledged number delivered",
    )
    counts = Counter(delivered(c1) + delivered(c2))
    assert set(counts) == set(range(TOTAL))
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= BATCH * 3, duplicates  # one kill, two consumer connections cut
    assert delivered(c2), "both consumers took a share"
    for a in (producer, c1, c2):
        assert a.terminate() == 0
