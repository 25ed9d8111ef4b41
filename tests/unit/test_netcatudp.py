"""Source netcatudp over real UDP sockets: events, batching, and counted drops when full."""

from __future__ import annotations

import socket

import pytest
import uvloop

from flumed.channels.memory import MemoryChannel
from flumed.config.keys import parse
from flumed.errors import ConfigError
from flumed.sources import netcatudp
from flumed.sources.netcatudp import NetcatUdpSource
from tests.support.harness import memory_channel, wire
from tests.util import wait_until


async def setup(
    capacity: int = 10000, keep_alive: float = 3.0, **keys: str
) -> tuple[NetcatUdpSource, MemoryChannel]:
    ch = memory_channel(capacity, min(capacity, 1000), keep_alive)
    await ch.start()
    src = wire(NetcatUdpSource, {"bind": "127.0.0.1", "port": "0", **keys}, ch)
    await src.start()
    return src, ch


async def take_all(ch: MemoryChannel) -> list:
    async with ch.transaction() as tx:
        return await tx.take_batch(ch.capacity, 0)


async def send_paced(src: NetcatUdpSource, sock: socket.socket, datagrams: list[bytes]) -> None:
    """Send, letting the source read every 50 so the kernel's buffer never overflows."""
    base = src.counter.EventReceivedCount
    for i, d in enumerate(datagrams, 1):
        sock.sendto(d, ("127.0.0.1", src.port))
        if i % 50 == 0 or i == len(datagrams):
            await wait_until(
                lambda i=i: src.counter.EventReceivedCount - base >= i, what=f"{i} datagrams"
            )


@pytest.fixture
def sender():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s
    s.close()


async def test_one_datagram_one_event_with_remote_address(sender: socket.socket):
    src, ch = await setup(remoteAddressHeader="peer")
    datagrams = [b"line %d\n" % i for i in range(300)] + [b"two\nlines\n\n", b"no newline", b""]
    await send_paced(src, sender, datagrams)
    await wait_until(lambda: ch.size == len(datagrams), what="all events in the channel")
    events = await take_all(ch)
    bodies = [e.body for e in events]
    assert bodies[:300] == [b"line %d" % i for i in range(300)]
    assert bodies[300:] == [b"two\nlines\n", b"no newline", b""]
    port = sender.getsockname()[1]
    assert all(e.headers == {"peer": f"/127.0.0.1:{port}"} for e in events)
    c = src.counter
    assert c.EventReceivedCount == c.EventAcceptedCount == len(datagrams)
    assert c.EventDroppedCount == 0
    await src.stop()


async def test_no_header_by_default_and_flume_key_alias(sender: socket.socket):
    src, ch = await setup()
    await send_paced(src, sender, [b"a"])
    await wait_until(lambda: ch.size == 1)
    assert (await take_all(ch))[0].headers == {}
    await src.stop()
    src, ch = await setup(remoteAddress="from")
    await send_paced(src, sender, [b"b"])
    await wait_until(lambda: ch.size == 1)
    assert list((await take_all(ch))[0].headers) == ["from"]
    await src.stop()


def test_datagrams_of_one_loop_turn_are_one_batch():
    """Under uvloop (as the agent runs), datagrams waiting together are committed together."""

    async def main() -> tuple[int, int]:
        src, ch = await setup()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(20):  # all sent before the loop runs again
                s.sendto(b"%d" % i, ("127.0.0.1", src.port))
            await wait_until(lambda: ch.size == 20)
        batches = src.counter.AppendBatchAcceptedCount
        await src.stop()
        return batches, ch.size

    batches, size = uvloop.run(main())
    assert size == 20
    assert batches < 20


async def test_full_channel_holds_a_bounded_buffer_then_counts_drops(
    sender: socket.socket, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(netcatudp, "RETRY_BACKOFF_MAX", 0.2)
    src, ch = await setup(capacity=5, keep_alive=0)
    src.max_pending = 10
    await send_paced(src, sender, [b"%d" % i for i in range(30)])
    await wait_until(lambda: src.counter.ChannelWriteFail > 0, what="a refused batch")
    c = src.counter
    first = ch.size  # 5, or fewer when a refused batch straddled the capacity
    assert 0 < first <= 5
    assert c.EventReceivedCount == 30
    # The source holds max_pending (10) datagrams; the rest were dropped, and counted.
    assert c.EventDroppedCount == 30 - first - 10
    # Draining the channel lets the held datagrams in, in their order.
    got: list[bytes] = []
    while len(got) < first + 10:
        await wait_until(lambda: ch.size > 0, what="held datagrams retried")
        got += [e.body for e in await take_all(ch)]
    assert got == [b"%d" % i for i in range(first)] + sorted(got[first:], key=int)
    assert len(set(got)) == first + 10
    assert c.EventAcceptedCount == first + 10
    assert c.EventAcceptedCount + c.EventDroppedCount == c.EventReceivedCount
    await src.stop()


async def test_stop_with_refused_datagrams_counts_them_lost(sender: socket.socket):
    src, ch = await setup(capacity=2, keep_alive=0)
    await send_paced(src, sender, [b"%d" % i for i in range(5)])
    await wait_until(lambda: src.counter.ChannelWriteFail > 0)
    await src.stop()
    c = src.counter
    assert 0 < ch.size <= 2
    assert c.EventDroppedCount == 5 - ch.size
    assert c.EventAcceptedCount + c.EventDroppedCount == c.EventReceivedCount == 5


def test_config_keys():
    with pytest.raises(ConfigError) as info:
        parse(NetcatUdpSource.Config, {"bind": "0.0.0.0"}, "source r1")
    assert "source r1: missing required key 'port'" in str(info.value)
    with pytest.raises(ConfigError, match="must be <= 65535"):
        parse(NetcatUdpSource.Config, {"bind": "0.0.0.0", "port": "70000"}, "source r1")


async def test_bind_error_fails_start():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = str(taken.getsockname()[1])
        cfg = parse(NetcatUdpSource.Config, {"bind": "127.0.0.1", "port": port}, "r1")
        src = NetcatUdpSource("r1", cfg)
        with pytest.raises(OSError):
            await src.start()


async def test_a_failing_interceptor_drops_only_its_batch(sender: socket.socket):
    class Picky:
        def intercept(self, events):
            if any(e.body == b"poison" for e in events):
                raise ValueError("cannot handle this")
            return events

    src, ch = await setup()
    src.processor.interceptors.append(Picky())  # type: ignore[arg-type]
    await send_paced(src, sender, [b"poison"])
    await wait_until(lambda: src.counter.GenericProcessingFail == 1)
    await send_paced(src, sender, [b"fine"])
    await wait_until(lambda: ch.size == 1)
    assert [e.body for e in await take_all(ch)] == [b"fine"]
    assert src.counter.EventDroppedCount == 1
    await src.stop()
