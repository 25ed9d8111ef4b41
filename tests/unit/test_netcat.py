"""netcat source in-process, over real TCP: boundaries, acks, push-back when full."""

from __future__ import annotations

import asyncio

from flumed.sources.netcat import NetcatSource
from tests.support.harness import memory_channel, wire
from tests.util import wait_until


async def setup(capacity: int = 1000, keep_alive: float = 0.05, **keys: str):
    ch = memory_channel(capacity, capacity, keep_alive)
    await ch.start()
    src = wire(NetcatSource, {"bind": "127.0.0.1", "port": "0", **keys}, ch)
    await src.start()
    r, w = await asyncio.open_connection("127.0.0.1", src.port)
    return ch, src, r, w


async def drain(ch, n: int = 100000) -> list[bytes]:
    async with ch.transaction() as tx:
        return [e.body for e in await tx.take_batch(n)]


async def test_max_line_length_counts_the_newline():
    ch, src, r, w = await setup(**{"max-line-length": "10"})
    w.write(b"123456789\n1234567890\nok\n")
    assert (
        await r.readline()
        == b"FAILED: Event exceeds the maximum length (10 chars, including newline)\n"
    )
    assert await r.readline() == b"OK\n"
    assert await r.readline() == b"OK\n"
    assert await drain(ch) == [b"123456789", b"ok"]
    assert src.counter.EventReadFail == 1
    w.close()
    await src.stop()


async def test_line_split_across_reads_and_last_line_without_newline():
    ch, src, _, w = await setup(**{"ack-every-event": "false"})
    w.write(b"hel")
    await w.drain()
    await asyncio.sleep(0)
    w.write(b"lo\nwor")
    await w.drain()
    w.write(b"ld")
    w.write_eof()
    await wait_until(lambda: ch.size == 2)
    assert await drain(ch) == [b"hello", b"world"]
    await src.stop()


async def test_full_channel_with_acks_answers_failed_for_refused_lines():
    ch, src, r, w = await setup(capacity=3)
    w.write(b"".join(b"%d\n" % i for i in range(5)))
    answers = [await r.readline() for _ in range(5)]
    assert answers[:3] == [b"OK\n"] * 3
    assert all(a.startswith(b"FAILED: Channel c1 is full") for a in answers[3:])
    assert src.counter.EventAcceptedCount == 3
    assert await drain(ch) == [b"0", b"1", b"2"]
    w.close()
    await src.stop()


async def test_full_channel_without_acks_holds_and_pushes_back():
    ch, src, _, w = await setup(capacity=100, keep_alive=0, **{"ack-every-event": "false"})
    total = 1500
    w.write(b"".join(b"%d\n" % i for i in range(total)))
    w.write_eof()
    got: list[bytes] = []
    # The channel holds 100 at a time; the source must wait, not drop.
    while len(got) < total:
        # Drain only once the channel is full, so that puts are refused meanwhile.
        want = min(100, total - len(got))
        await wait_until(lambda n=want: ch.size == n, timeout=30)
        got += await drain(ch)
    assert got == [b"%d" % i for i in range(total)]
    assert src.counter.ChannelWriteFail > 0
    await src.stop()


async def test_two_clients_one_garbage_one_good():
    ch, src, r, w = await setup(**{"max-line-length": "8"})
    w.write(b"\xff\xfe" * 100)  # no newline, far past the limit
    r2, w2 = await asyncio.open_connection("127.0.0.1", src.port)
    w2.write(b"good\n")
    assert await r2.readline() == b"OK\n"
    w.write(b"\nafter\n")
    assert (await r.readline()).startswith(b"FAILED")
    assert await r.readline() == b"OK\n"
    assert await drain(ch) == [b"good", b"after"]
    w.close()
    w2.close()
    await src.stop()
