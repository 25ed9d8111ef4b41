"""Sink file_roll: commit only after the write, rollback on failure, rolling, serializers."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import avro.datafile
import avro.io
import fastavro
import pytest

from flumed.channels.memory import MemoryChannel, MemoryChannelConfig
from flumed.config.graph import build_agent
from flumed.config.keys import flatten, parse
from flumed.config.loader import load_document
from flumed.errors import ComponentStartError, ConfigError, DeliveryError
from flumed.event import Event
from flumed.sinks import file_roll
from flumed.sinks.base import Status
from flumed.sinks.file_roll import RollingFileSink
from tests.util import wait_until


def ev(i: int, **headers: str) -> Event:
    return Event(b"line %d" % i, headers)


async def make_channel(capacity: int = 1000) -> MemoryChannel:
    ch = MemoryChannel("c1", MemoryChannelConfig(capacity=capacity, transactionCapacity=capacity))
    await ch.start()
    return ch


async def put(ch: MemoryChannel, events: list[Event]) -> None:
    async with ch.transaction() as tx:
        await tx.put_batch(events)


async def drain(ch: MemoryChannel) -> list[bytes]:
    async with ch.transaction() as tx:
        return [e.body for e in await tx.take_batch(ch.capacity, 0)]


def config(**keys: Any) -> Any:
    return parse(RollingFileSink.Config, flatten(keys), "sink k1")


async def make_sink(ch: MemoryChannel, directory: Path, **keys: Any) -> RollingFileSink:
    sink = RollingFileSink("k1", config(sink={"directory": str(directory), **keys}))
    sink.channel = ch
    await sink.start()
    return sink


def files(d: Path) -> list[Path]:
    return sorted(d.iterdir(), key=lambda p: int(re.findall(r"-(\d+)", p.name)[-1]))


# -- configuration -------------------------------------------------------------------


def test_config_defaults_and_flume_keys():
    c = config(sink={"directory": "/d"})
    assert (c.rollInterval, c.pathManager, c.serializer, c.batchSize) == (
        30.0,
        "DEFAULT",
        "TEXT",
        100,
    )
    c = parse(
        RollingFileSink.Config,
        {
            "sink.directory": "/d",
            "sink.rollInterval": "0",
            "sink.pathManager": "rolltime",
            "sink.pathManager.prefix": "app-",
            "sink.pathManager.extension": "log",
            "sink.serializer": "avro_event",
            "sink.serializer.compressionCodec": "deflate",
            "sink.batchSize": "500",
        },
        "sink k1",
    )
    assert c.pathManager == "ROLLTIME" and c.rollInterval == 0 and c.batchSize == 500
    assert c.serializerKeys == {"compressionCodec": "deflate"}


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({}, "sink k1: missing required key 'sink.directory'"),
        ({"sink.directory": "/d", "sink.rollInterval": "-1"}, "key 'sink.rollInterval': must be"),
        ({"sink.directory": "/d", "sink.pathManager": "X"}, "key 'sink.pathManager': expected one"),
        ({"sink.directory": "/d", "sink.serializer": "csv"}, "unknown serializer type 'csv'"),
        (
            {"sink.directory": "/d", "sink.serializer.compressionCodec": "deflate"},
            "key 'sink.serializer': unknown key 'compressionCodec'",
        ),
        (
            {
                "sink.directory": "/d",
                "sink.serializer": "avro_event",
                "sink.serializer.compressionCodec": "lz77",
            },
            "key 'sink.serializer.compressionCodec': unknown codec 'lz77'",
        ),
        ({"sink.directory": "/d", "sink.pathManager.suffix": "x"}, "unknown key 'sink.pathManager"),
    ],
)
def test_config_errors_name_the_key(keys: dict[str, str], message: str):
    with pytest.raises(ConfigError) as info:
        parse(RollingFileSink.Config, keys, "sink k1")
    assert message in str(info.value)


def test_toml_and_properties_spell_serializer_keys_alike(tmp_path: Path):
    toml = tmp_path / "a.toml"
    toml.write_text(
        """
[agents.a1.sources.r1]
type = "seq"
channels = ["c1"]
[agents.a1.channels.c1]
type = "memory"
[agents.a1.sinks.k1]
type = "file_roll"
channel = "c1"
[agents.a1.sinks.k1.sink]
directory = "/var/log/flumed"
serializer = "avro_event"
"serializer.compressionCodec" = "deflate"
"pathManager.extension" = "avro"
"""
    )
    props = tmp_path / "a.properties"
    props.write_text(
        """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.sinks.k1.type = org.apache.flume.sink.RollingFileSink
a1.sinks.k1.channel = c1
a1.sinks.k1.sink.directory = /var/log/flumed
a1.sinks.k1.sink.serializer = AVRO_EVENT
a1.sinks.k1.sink.serializer.compressionCodec = deflate
a1.sinks.k1.sink.pathManager.extension = avro
"""
    )
    a = build_agent(load_document(toml), "a1", "a.toml").sinks["k1"].config
    b = build_agent(load_document(props), "a1", "a.properties").sinks["k1"].config
    assert a.serializerKeys == b.serializerKeys == {"compressionCodec": "deflate"}
    assert a.extension == b.extension == "avro"
    assert a.serializer.lower() == b.serializer.lower() == "avro_event"


async def test_start_fails_when_directory_is_a_file(tmp_path: Path):
    f = tmp_path / "file"
    f.write_text("")
    ch = await make_channel()
    with pytest.raises(ComponentStartError, match=re.escape("sink k1: key 'sink.directory'")):
        await make_sink(ch, f)


async def test_start_creates_missing_directory(tmp_path: Path):
    ch = await make_channel()
    sink = await make_sink(ch, tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()
    await sink.stop()


# -- delivery ------------------------------------------------------------------------


async def test_writes_batches_in_order_and_commits(tmp_path: Path):
    ch = await make_channel()
    sink = await make_sink(ch, tmp_path, batchSize=4)
    await put(ch, [ev(i) for i in range(10)])
    statuses = [await sink.process() for _ in range(3)]
    assert statuses == [Status.READY] * 3
    assert ch.size == 0
    (f,) = files(tmp_path)
    assert f.read_bytes() == b"".join(b"line %d\n" % i for i in range(10))
    c = sink.counter
    assert (c.EventDrainAttemptCount, c.EventDrainSuccessCount) == (10, 10)
    assert (c.BatchCompleteCount, c.BatchUnderflowCount, c.ConnectionCreatedCount) == (2, 1, 1)
    await sink.stop()
    assert sink.counter.ConnectionClosedCount == 1


async def test_empty_channel_backs_off_without_creating_a_file(tmp_path: Path):
    ch = await make_channel()
    sink = await make_sink(ch, tmp_path)
    assert await sink.process() is Status.BACKOFF
    assert sink.counter.BatchEmptyCount == 1
    assert list(tmp_path.iterdir()) == []
    await sink.stop()


async def test_commit_happens_only_after_the_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """While the write is held in the I/O thread, the events are still the channel's."""
    ch = await make_channel()
    sink = await make_sink(ch, tmp_path)
    writing, release = threading.Event(), threading.Event()
    real = file_roll._write_all

    def held_write(fd: int, data: bytes) -> None:
        writing.set()
        release.wait(30)
        real(fd, data)

    monkeypatch.setattr(file_roll, "_write_all", held_write)
    await put(ch, [ev(i) for i in range(5)])
    task = asyncio.create_task(sink.process())
    await wait_until(writing.is_set, what="the write to start")
    assert ch.size == 5  # taken, not committed
    assert ch.counter.EventTakeSuccessCount == 0
    release.set()
    assert await task is Status.READY
    assert ch.size == 0 and ch.counter.EventTakeSuccessCount == 5
    (f,) = files(tmp_path)
    assert f.read_bytes().count(b"\n") == 5
    await sink.stop()


async def test_write_failure_rolls_back_in_order_and_leaves_no_partial_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    ch = await make_channel()
    sink = await make_sink(ch, tmp_path, batchSize=3)
    await put(ch, [ev(i) for i in range(6)])
    assert await sink.process() is Status.READY  # 0..2 written and committed
    real = file_roll._write_all

    def half_then_enospc(fd: int, data: bytes) -> None:
        real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(file_roll, "_write_all", half_then_enospc)
    with pytest.raises(DeliveryError, match="No space left on device"):
        await sink.process()
    assert ch.size == 3
    assert sink.counter.EventWriteFail == 1
    assert sink.counter.EventDrainSuccessCount == 3
    (f,) = files(tmp_path)
    assert f.read_bytes() == b"line 0\nline 1\nline 2\n"  # the half batch was cut off

    monkeypatch.setattr(file_roll, "_write_all", real)
    assert await sink.process() is Status.READY
    assert ch.size == 0
    assert f.read_bytes() == b"".join(b"line %d\n" % i for i in range(6))
    await sink.stop()


async def test_failed_write_that_cannot_be_cut_moves_to_a_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    ch = await make_channel()
    sink = await make_sink(ch, tmp_path, batchSize=2)
    await put(ch, [ev(i) for i in range(4)])
    assert await sink.process() is Status.READY
    real = file_roll._write_all

    def partial(fd: int, data: bytes) -> None:
        real(fd, data[:3])
        raise OSError(errno.EIO, "I/O error")

    def no_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(file_roll, "_write_all", partial)
    monkeypatch.setattr(os, "ftruncate", no_truncate)
    with pytest.raises(DeliveryError):
        await sink.process()
    monkeypatch.undo()
    assert ch.size == 2
    assert await sink.process() is Status.READY
    first, second = files(tmp_path)
    assert first.read_bytes() == b"line 0\nline 1\nlin"
    assert second.read_bytes() == b"line 2\nline 3\n"
    await sink.stop()


async def test_removed_directory_fails_the_next_file_and_keeps_events(tmp_path: Path):
    d = tmp_path / "out"
    ch = await make_channel()
    sink = await make_sink(ch, d, rollInterval=0.05)
    await put(ch, [ev(0)])
    assert await sink.process() is Status.READY
    opened = sink._file.opened  # type: ignore[union-attr]
    await wait_until(lambda: time.monotonic() - opened >= 0.05, what="the roll interval")
    shutil.rmtree(d)
    await put(ch, [ev(1), ev(2)])
    with pytest.raises(DeliveryError, match="cannot create a file"):
        await sink.process()
    assert ch.size == 2
    assert sink.counter.ConnectionFailedCount == 1
    assert sink.counter.ConnectionClosedCount == 1
    d.mkdir()
    assert await sink.process() is Status.READY
    assert [p.read_bytes() for p in files(d)] == [b"line 1\nline 2\n"]
    assert await drain(ch) == []
    await sink.stop()


# -- rolling and names -----------------------------------------------------------------


async def test_rolling_creates_new_files_with_flume_names(tmp_path: Path):
    ch = await make_channel()
    sink = await make_sink(ch, tmp_path, rollInterval=0.05, pathManager={"prefix": "web-"})
    series = sink.paths.series
    for i in range(3):
        await put(ch, [ev(i)])
        assert await sink.process() is Status.READY
        opened = sink._file.opened  # type: ignore[union-attr]
        await wait_until(lambda o=opened: time.monotonic() - o >= 0.05, what="roll interval")
    await sink.stop()
    names = [p.name for p in files(tmp_path)]
    assert names == [f"web-{series}-1", f"web-{series}-2", f"web-{series}-3"]
    assert [p.read_bytes() for p in files(tmp_path)] == [b"line %d\n" % i for i in range(3)]
    assert (sink.counter.ConnectionCreatedCount, sink.counter.ConnectionClosedCount) == (3, 3)


async def test_roll_interval_zero_never_rolls(tmp_path: Path):
    ch = await make_channel()
    sink = await make_sink(ch, tmp_path, rollInterval=0)
    for i in range(3):
        await put(ch, [ev(i)])
        await sink.process()
        sink._file.opened -= 3600  # type: ignore[union-attr]  # an hour old: still kept
    await sink.stop()
    assert len(files(tmp_path)) == 1


async def test_rolltime_names_and_extension(tmp_path: Path):
    ch = await make_channel()
    sink = await make_sink(
        ch, tmp_path, **{"pathManager": "ROLLTIME", "pathManager.extension": "log"}
    )
    await put(ch, [ev(0)])
    await sink.process()
    await sink.stop()
    (f,) = tmp_path.iterdir()
    assert re.fullmatch(r"\d{14}-1\.log", f.name)


async def test_existing_file_name_is_skipped_not_appended(tmp_path: Path):
    ch = await make_channel()
    sink = await make_sink(ch, tmp_path)
    taken = tmp_path / f"{sink.paths.series}-1"
    taken.write_bytes(b"someone else's\n")
    await put(ch, [ev(0)])
    await sink.process()
    await sink.stop()
    assert taken.read_bytes() == b"someone else's\n"
    assert (tmp_path / f"{sink.paths.series}-2").read_bytes() == b"line 0\n"


# -- serializers through the sink ------------------------------------------------------


async def test_header_and_text_output(tmp_path: Path):
    ch = await make_channel()
    sink = await make_sink(ch, tmp_path, serializer="header_and_text")
    await put(ch, [ev(1, host="a", n="1"), ev(2)])
    await sink.process()
    await sink.stop()
    (f,) = tmp_path.iterdir()
    assert f.read_bytes() == b"{host=a, n=1} line 1\n{} line 2\n"


async def test_text_without_newline(tmp_path: Path):
    ch = await make_channel()
    sink = await make_sink(
        ch, tmp_path, **{"serializer": "text", "serializer.appendNewline": "false"}
    )
    await put(ch, [ev(1), ev(2)])
    await sink.process()
    await sink.stop()
    (f,) = tmp_path.iterdir()
    assert f.read_bytes() == b"line 1line 2"


async def test_avro_event_output_readable_while_open_and_after_close(tmp_path: Path):
    ch = await make_channel()
    sink = await make_sink(
        ch,
        tmp_path,
        batchSize=2,
        **{"serializer": "avro_event", "serializer.compressionCodec": "deflate"},
    )
    events = [ev(i, h=str(i)) for i in range(5)]
    await put(ch, events)
    for _ in range(3):
        await sink.process()
    (f,) = tmp_path.iterdir()
    expected = [{"headers": e.headers, "body": e.body} for e in events]
    # Committed batches are readable before the file is closed.
    assert list(fastavro.reader(io.BytesIO(f.read_bytes()))) == expected
    await sink.stop()
    with avro.datafile.DataFileReader(f.open("rb"), avro.io.DatumReader()) as r:
        assert list(r) == expected
