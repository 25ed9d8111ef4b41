"""Helpers for the Avro RPC tests: in-process agents from TOML text, channel access,
a raw Netty-framed client, and test certificates."""

from __future__ import annotations

import asyncio
import json
import struct
import tomllib
from collections.abc import Sequence

from flumed.agent import Agent
from flumed.channels.base import Channel
from flumed.config.graph import build_agent
from flumed.event import Event
from tests.support.pki import Pki as Pki
from tests.support.pki import make_pki as make_pki


async def start_agent(text: str, name: str) -> Agent:
    agent = Agent(build_agent(tomllib.loads(text), name, "test"), grace=1.0)
    await agent.start()
    return agent


def _channel(overrides: dict[str, object] | None) -> str:
    keys: dict[str, object] = {"type": "memory", "capacity": 100000, "transactionCapacity": 1000}
    keys.update(overrides or {})
    return "\n".join(f'"{k}" = {json.dumps(v)}' for k, v in keys.items())


def collector(
    port: int = 0, source: str = "", channel: dict[str, object] | None = None, name: str = "b"
) -> str:
    """Agent `name`: avro source r → memory channel c (no sink: the test reads c)."""
    return f"""
[agents.{name}.sources.r]
type = "avro"
bind = "127.0.0.1"
port = {port}
channels = ["c"]
{source}
[agents.{name}.channels.c]
{_channel(channel)}
"""


def forwarder(
    port: int, sink: str = "", channel: dict[str, object] | None = None, name: str = "a"
) -> str:
    """Agent `name`: memory channel c (the test fills it) → avro sink k."""
    return f"""
[agents.{name}.channels.c]
{_channel(channel)}
[agents.{name}.sinks.k]
type = "avro"
channel = "c"
hostname = "127.0.0.1"
port = {port}
batch-size = 100
{sink}
"""


async def put(ch: Channel, events: Sequence[Event]) -> None:
    step = ch.transaction_capacity
    for i in range(0, len(events), step):
        async with ch.transaction() as tx:
            await tx.put_batch(events[i : i + step])


async def drain(ch: Channel, limit: int = 10**9) -> list[Event]:
    out: list[Event] = []
    while len(out) < limit:
        async with ch.transaction() as tx:
            got = await tx.take_batch(min(1000, limit - len(out)), 0)
        if not got:
            break
        out += got
    return out


def numbered(n: int, start: int = 0, headers: bool = True) -> list[Event]:
    return [
        Event(b"%d" % i + b"\x00\xff", {"n": str(i), "host": "wéb1"} if headers else {})
        for i in range(start, start + n)
    ]


class RawClient:
    """A Netty-framed client written from the spec: it sends the bytes it is given."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawClient:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, serial: int, payload: bytes) -> None:
        self.writer.write(struct.pack(">iii", serial, 1, len(payload)) + payload)
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, timeout: float = 10.0) -> tuple[int, bytes]:
        async with asyncio.timeout(timeout):
            serial, count = struct.unpack(">ii", await self.reader.readexactly(8))
            parts = []
            for _ in range(count):
                (n,) = struct.unpack(">i", await self.reader.readexactly(4))
                parts.append(await self.reader.readexactly(n))
        return serial, b"".join(parts)

    async def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True once the server closed the connection (EOF or reset)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except ConnectionError:
            return True
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass
