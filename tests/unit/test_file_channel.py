"""The file channel beyond the shared transaction contract (tests/unit/test_channel_contract.py):
restarts, partial takes, the directory lock, damaged databases and their recovery,
disk space, reclaiming space, and keeping SQLite off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from flumed import cli
from flumed.channels.file import (
    DamagedDatabaseError,
    FileChannel,
    FileChannelConfig,
    decode_batch,
    encode_batch,
    resolve_dir,
)
from flumed.channels.memory import MemoryChannel, MemoryChannelConfig
from flumed.config.keys import parse
from flumed.errors import ChannelError, ChannelFullError, ConfigError
from flumed.event import Event
from tests.support.tmpfs import MakeTmpfs
from tests.util import wait_until


def ev(i: int, pad: int = 0) -> Event:
    return Event(b"%d" % i + b"." * pad, {"n": str(i)})


def num(e: Event) -> int:
    return int(e.body.rstrip(b"."))


def channel(d: Path, name: str = "c1", **kw) -> FileChannel:
    kw.setdefault("minimumRequiredSpace", 0)
    kw.setdefault("capacity", 100_000)
    kw.setdefault("transactionCapacity", 1000)
    return FileChannel(name, FileChannelConfig(dataDirs=str(d), **kw))


async def started(d: Path, name: str = "c1", **kw) -> FileChannel:
    ch = channel(d, name, **kw)
    await ch.start()
    return ch


async def put(ch: FileChannel, numbers: range | list[int], pad: int = 0) -> None:
    async with ch.transaction() as tx:
        await tx.put_batch([ev(i, pad) for i in numbers])


async def take_all(ch: FileChannel, n: int = 1000) -> list[int]:
    out: list[int] = []
    while True:
        async with ch.transaction() as tx:
            got = await tx.take_batch(n)
        if not got:
            return out
        out += [num(e) for e in got]


# -- the encoding --------------------------------------------------------------------


def test_batch_encoding_round_trip():
    events = [
        Event(b""),
        Event(bytes(range(256)), {"h": "v", "ünï": "cødé ✓"}),
        Event(b"x" * 70_000, {}),
        Event(b"\n\r\0", {"odd": "\udc80", "k": ""}),
    ]
    back = decode_batch(encode_batch(events))
    assert back == events
    assert decode_batch(encode_batch([])) == []
    plain = [Event(b"a"), Event(b"bc")]
    blob = encode_batch(plain)
    assert decode_batch(blob) == plain
    assert b"{" not in blob  # no headers, no JSON


def test_decode_rejects_damaged_blobs():
    for events in ([Event(b"abc", {"k": "v"}), Event(b"de")], [Event(b"one")]):
        blob = encode_batch(events)
        assert decode_batch(blob) == events
        for bad in (blob[:5], blob[:-1], blob + b"x", b""):
            with pytest.raises(ValueError):
                decode_batch(bad)


# -- configuration -------------------------------------------------------------------


def test_config_defaults_are_flumes():
    c = parse(FileChannelConfig, {}, "c1")
    assert c.capacity == 1_000_000
    assert c.transactionCapacity == 10_000
    assert c.keep_alive == 3.0
    assert c.minimumRequiredSpace == 524_288_000
    assert c.fsyncPerTransaction is True


def test_config_accepts_flume_keys_with_warnings(caplog: pytest.LogCaptureFixture):
    flume = {
        "checkpointDir": "/var/flume/checkpoint",
        "dataDirs": "/var/flume/data1,/var/flume/data2",
        "useDualCheckpoints": "false",
        "backupCheckpointDir": "/var/flume/backup",
        "checkpointInterval": "30000",
        "maxFileSize": "2146435071",
        "capacity": "5000",
        "transactionCapacity": "500",
        "keep-alive": "1",
        "minimumRequiredSpace": "1048576",
        "fsyncPerTransaction": "false",
        "fsyncInterval": "5",
        "use-fast-replay": "false",
    }
    with caplog.at_level(logging.WARNING):
        c = parse(FileChannelConfig, flume, "a1.channels.c1")
    assert (c.capacity, c.transactionCapacity, c.keep_alive) == (5000, 500, 1.0)
    assert c.fsyncPerTransaction is False
    assert resolve_dir(c, "c1") == Path("/var/flume/data1")
    text = caplog.text
    for k in ("useDualCheckpoints", "checkpointInterval", "maxFileSize", "fsyncInterval"):
        assert f"'{k}' has no meaning" in text
    assert "uses only the first, /var/flume/data1" in text
    assert "a1.channels.c1: key 'checkpointDir': /var/flume/checkpoint is not used" in text


def test_config_refuses_encryption_and_oversized_transactions():
    with pytest.raises(ConfigError, match="encryption"):
        parse(FileChannelConfig, {"encryption.activeKey": "key-0"}, "c1")
    with pytest.raises(ConfigError, match="transactionCapacity"):
        parse(FileChannelConfig, {"capacity": "10", "transactionCapacity": "20"}, "c1")
    with pytest.raises(ConfigError, match="unknown key 'capacityy'"):
        parse(FileChannelConfig, {"capacityy": "10"}, "c1")


def test_default_directory():
    c = FileChannelConfig()
    assert resolve_dir(c, "c1", {"STATE_DIRECTORY": "/var/lib/flumed", "HOME": "/h"}) == Path(
        "/var/lib/flumed/c1"
    )
    assert resolve_dir(c, "c1", {"HOME": "/home/u"}) == Path("/home/u/.flumed/file-channel/c1")
    assert resolve_dir(FileChannelConfig(checkpointDir="/cp"), "c1", {}) == Path("/cp")
    assert resolve_dir(c, "../x/y", {"HOME": "/h"}) == Path("/h/.flumed/file-channel/_.._x_y")


# -- durability and order ------------------------------------------------------------


async def test_restart_brings_back_committed_and_taken_uncommitted_in_order(tmp_path: Path):
    ch = await started(tmp_path)
    await put(ch, range(0, 5))
    await put(ch, range(5, 10))
    await put(ch, range(10, 15))
    async with ch.transaction() as tx:
        assert [num(e) for e in await tx.take_batch(3)] == [0, 1, 2]
    held = ch.transaction()
    held.begin()
    assert [num(e) for e in await held.take_batch(4)] == [3, 4, 5, 6]
    staged = ch.transaction()
    staged.begin()
    await staged.put_batch([ev(99)])  # never committed: must not appear
    await ch.stop()

    ch = await started(tmp_path)
    assert ch.size == 12
    assert await take_all(ch, 5) == list(range(3, 15))
    await ch.stop()
    ch = await started(tmp_path)
    assert ch.size == 0
    await ch.stop()


async def test_partial_takes_persist_their_offset(tmp_path: Path):
    ch = await started(tmp_path, cacheBytes=0)
    await put(ch, range(10))
    for want in ([0, 1, 2], [3, 4]):
        async with ch.transaction() as tx:
            assert [num(e) for e in await tx.take_batch(len(want))] == want
    await ch.stop()
    ch = await started(tmp_path)
    assert ch.size == 5
    assert await take_all(ch) == [5, 6, 7, 8, 9]
    await ch.stop()


async def test_commits_out_of_order_within_one_batch(tmp_path: Path):
    ch = await started(tmp_path)
    await put(ch, range(10))
    a, b = ch.transaction(), ch.transaction()
    a.begin()
    b.begin()
    assert [num(e) for e in await a.take_batch(4)] == [0, 1, 2, 3]
    assert [num(e) for e in await b.take_batch(4)] == [4, 5, 6, 7]
    await b.commit()
    # The batch's head is still taken by `a`: on disk nothing can be dropped yet, so a
    # crash now would deliver 4..7 again (at least once), never lose 0..3.
    await ch.stop()
    ch = await started(tmp_path)
    assert await take_all(ch) == list(range(10))
    await ch.stop()

    ch = await started(tmp_path)
    await put(ch, range(10, 20))
    a, b = ch.transaction(), ch.transaction()
    a.begin()
    b.begin()
    await a.take_batch(4)
    await b.take_batch(4)
    await b.commit()
    await a.commit()
    assert ch.size == 2
    await ch.stop()
    ch = await started(tmp_path)
    assert await take_all(ch) == [18, 19]
    await ch.stop()


async def test_rollbacks_of_concurrent_takes_restore_the_order(tmp_path: Path):
    ch = await started(tmp_path)
    await put(ch, range(0, 4))
    await put(ch, range(4, 9))
    a, b = ch.transaction(), ch.transaction()
    a.begin()
    b.begin()
    assert [num(e) for e in await a.take_batch(3)] == [0, 1, 2]
    assert [num(e) for e in await b.take_batch(3)] == [3, 4, 5]
    await a.rollback()
    await b.rollback()
    assert await take_all(ch, 2) == list(range(9))
    await ch.stop()


async def test_takes_read_back_batches_not_kept_in_memory(tmp_path: Path):
    ch = await started(tmp_path, cacheBytes=0)
    await put(ch, range(0, 3))
    await put(ch, range(3, 6))
    async with ch.transaction() as tx:
        got = await tx.take_batch(4)
    assert [num(e) for e in got] == [0, 1, 2, 3]
    assert got[3].headers == {"n": "3"}
    assert ch._cached_bytes > 0  # read back, kept until the batch is gone
    assert await take_all(ch) == [4, 5]
    assert ch._cached_bytes == 0
    await ch.stop()


async def test_a_cancelled_read_back_does_not_strand_other_takers(tmp_path: Path):
    ch = await started(tmp_path)
    await put(ch, range(10))
    await ch.stop()
    ch = await started(tmp_path)  # nothing in memory: takes read the batch back
    reader = ch._reader
    assert reader is not None
    gate = threading.Event()
    await reader.create_function("gate", 0, lambda: gate.wait(10))
    blocker = asyncio.create_task(reader.execute_fetchall("SELECT gate()"))

    async def take(n: int) -> list[int]:
        async with ch.transaction() as tx:
            return [num(e) for e in await tx.take_batch(n)]

    first = asyncio.create_task(take(3))  # reads the batch, queued behind the gate
    await wait_until(lambda: ch._queue[0][3].loading is not None, what="the read-back")
    second = asyncio.create_task(take(3))  # waits for the first one's read
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await asyncio.wait_for(second, 10) == [0, 1, 2]
    with pytest.raises(asyncio.CancelledError):
        await first
    await blocker
    assert await take_all(ch) == list(range(3, 10))
    await ch.stop()


async def test_fsync_setting_reaches_sqlite(tmp_path: Path):
    for fsync, level in ((True, 2), (False, 1)):  # FULL, NORMAL
        ch = await started(tmp_path / str(fsync), fsyncPerTransaction=fsync)
        assert ch._db is not None
        assert (await ch._db.execute_fetchall("PRAGMA synchronous"))[0][0] == level
        assert (await ch._db.execute_fetchall("PRAGMA journal_mode"))[0][0] == "wal"
        await ch.stop()


async def test_reload_from_memory_channel_keeps_its_events(tmp_path: Path):
    mem = MemoryChannel("c1", MemoryChannelConfig(capacity=100, transactionCapacity=10))
    await mem.start()
    for b in (range(0, 10), range(10, 15)):
        async with mem.transaction() as tx:
            await tx.put_batch([ev(i) for i in b])
    new = channel(tmp_path, transactionCapacity=4)
    new.adopt(mem)
    await mem.stop()
    await new.start()
    assert new.size == 15
    await new.stop()  # they are on disk now
    new = await started(tmp_path)
    assert await take_all(new) == list(range(15))
    await new.stop()


async def test_concurrent_puts_and_takes_with_rollbacks_lose_nothing(tmp_path: Path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    # A tiny cache: most takes read their batches back from the database.
    ch = await started(tmp_path, cacheBytes=300, transactionCapacity=40)
    committed: list[int] = []
    sent = [0, 0, 0]

    async def putter(p: int) -> None:
        for _ in range(40):
            n = rng.randint(1, 20)
            i = sent[p]
            await put(ch, range(p * 10_000 + i, p * 10_000 + i + n))
            sent[p] += n

    async def taker() -> None:
        for _ in range(60):
            tx = ch.transaction()
            tx.begin()
            got = await tx.take_batch(rng.randint(1, 30), timeout=0.01)
            if rng.random() < 0.3:
                await tx.rollback()
            else:
                await tx.commit()
                committed.extend(num(e) for e in got)

    putters = [putter(p) for p in range(3)]
    await asyncio.gather(*putters, *(taker() for _ in range(3)))
    held = ch.transaction()
    held.begin()
    await held.take_batch(25)  # taken, never committed
    await ch.stop()
    ch = await started(tmp_path)
    rest = await take_all(ch, 7)
    await ch.stop()
    everything = sorted(committed + rest)
    assert len(everything) == len(set(everything)), f"duplicates (seed {seed})"
    assert ch.size == 0
    assert everything == [p * 10_000 + i for p in range(3) for i in range(sent[p])], seed
    # What came back after the restart is in put order for each putter.
    for p in range(3):
        mine = [n for n in rest if n // 10_000 == p]
        assert mine == sorted(mine), f"seed {seed}"


# -- one agent per directory ---------------------------------------------------------


async def test_second_channel_on_a_directory_is_refused(tmp_path: Path):
    first = await started(tmp_path)
    await put(first, range(3))
    for name in ("c1", "other"):
        with pytest.raises(ChannelError, match="in use by another flumed agent") as ei:
            await started(tmp_path, name)
        assert str(tmp_path) in str(ei.value)
        assert f"pid {os.getpid()}, channel c1" in str(ei.value)
    assert await take_all(first) == [0, 1, 2]  # untouched
    await first.stop()
    second = await started(tmp_path)
    await second.stop()


# -- damaged or foreign databases ----------------------------------------------------


async def test_garbage_file_is_a_clear_error_and_left_alone(tmp_path: Path):
    db = tmp_path / "c1.db"
    junk = random.Random(7).randbytes(64 * 1024)
    db.write_bytes(junk)
    with pytest.raises(DamagedDatabaseError) as ei:
        await started(tmp_path)
    msg = str(ei.value)
    assert str(db) in msg
    assert f"flumed file-channel-recover --dir {tmp_path} --channel c1" in msg
    assert db.read_bytes() == junk
    # The lock was released: a later start (after recovery) is possible.
    assert cli.main(["file-channel-recover", "--dir", str(tmp_path)]) == 0
    ch = await started(tmp_path)
    assert ch.size == 0
    await ch.stop()


async def test_foreign_and_newer_databases_are_refused(tmp_path: Path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with sqlite3.connect(foreign / "c1.db") as c:
        c.execute("CREATE TABLE logs (line TEXT)")
    with pytest.raises(DamagedDatabaseError, match="not a flumed file-channel database"):
        await started(foreign)

    newer = tmp_path / "newer"
    ch = await started(newer)
    await put(ch, range(3))
    await ch.stop()
    with sqlite3.connect(newer / "c1.db") as c:
        c.execute("PRAGMA user_version = 2")
    with pytest.raises(DamagedDatabaseError, match=r"schema version 2.*newer flumed") as ei:
        await started(newer)
    assert str(newer / "c1.db") in str(ei.value)


def _corrupt_page(path: Path, page: int) -> None:
    with open(path, "r+b") as f:
        f.seek(page * 4096)
        f.write(random.Random(page).randbytes(4096))


async def test_corrupted_database_is_refused_then_recovered(tmp_path: Path):
    ch = await started(tmp_path)
    for b in range(40):
        await put(ch, range(b * 50, b * 50 + 50), pad=195)
    async with ch.transaction() as tx:
        await tx.take_batch(20)
    await ch.stop()
    db = tmp_path / "c1.db"
    _corrupt_page(db, 20)
    with pytest.raises(DamagedDatabaseError, match="is damaged") as ei:
        await started(tmp_path)
    assert str(db) in str(ei.value)

    # The documented way out, as a user runs it.
    r = subprocess.run(
        [sys.executable, "-m", "flumed", "file-channel-recover", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    kept = list(tmp_path.glob("c1.db.damaged-*"))
    assert len(kept) == 1 and kept[0].name in r.stdout
    ch = await started(tmp_path)
    got = await take_all(ch)
    await ch.stop()
    # One page held one batch's data: that batch is lost, every other event is back,
    # in order, the 20 already taken stay taken, and the report says so.
    lost = sorted(set(range(20, 2000)) - set(got))
    assert got == sorted(got) and len(got) == len(set(got))
    assert set(got) <= set(range(20, 2000))
    assert 0 < len(lost) <= 100
    assert f"recovered {len(got)} events" in r.stdout
    assert "could not be read" in r.stdout


async def test_recover_refuses_while_the_channel_runs(tmp_path: Path, capsys):
    ch = await started(tmp_path)
    assert cli.main(["file-channel-recover", "--dir", str(tmp_path), "--channel", "c1"]) == 1
    assert "in use by another flumed agent" in capsys.readouterr().err
    await ch.stop()


async def test_damaged_batch_found_by_a_take_is_set_aside_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    ch = await started(tmp_path)
    for b in range(3):
        await put(ch, range(b * 5, b * 5 + 5))
    await ch.stop()
    with sqlite3.connect(tmp_path / "c1.db") as c:  # bit rot inside batch 2's data
        data = c.execute("SELECT data FROM batches WHERE id = 2").fetchone()[0]
        c.execute("UPDATE batches SET data = ? WHERE id = 2", (data[:-1] + b"X",))
    ch = await started(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert await take_all(ch) == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]
    assert ch.size == 0
    assert ch.counter.EventTakeErrorCount == 1
    assert "batch 2 of" in caplog.text and "checksum mismatch" in caplog.text
    await ch.stop()
    with sqlite3.connect(tmp_path / "c1.db") as c:
        assert c.execute("SELECT batch_id, count FROM damaged").fetchall() == [(2, 5)]
        assert c.execute("SELECT count(*) FROM batches").fetchone() == (0,)


# -- disk space ----------------------------------------------------------------------


async def test_minimum_required_space_refuses_puts(tmp_path: Path):
    ch = await started(tmp_path)
    await put(ch, range(3))
    await ch.stop()
    ch = await started(tmp_path, minimumRequiredSpace=1 << 60, keep_alive=0)
    with pytest.raises(ChannelFullError, match="below minimumRequiredSpace"):
        await put(ch, range(3, 6))
    assert ch.size == 3
    assert await take_all(ch) == [0, 1, 2]  # takes go on
    await ch.stop()


def assert_sqlite_threads_ended() -> None:
    """Every aiosqlite connection thread has ended (a leaked one keeps the process alive)."""
    for t in threading.enumerate():
        if "_connection_worker_thread" in t.name:
            t.join(10)
            assert not t.is_alive(), "a SQLite connection was left open"


@pytest.fixture
def tmpfs(make_tmpfs: MakeTmpfs) -> Path:
    """A 3 MB tmpfs (tests/support/tmpfs.py)."""
    return make_tmpfs("3m")


async def test_full_disk_pushes_back_and_loses_nothing(tmpfs: Path):
    # minimumRequiredSpace = 0: the file system itself runs out (SQLITE_FULL).
    filler = tmpfs / "filler"
    filler.write_bytes(b"\0" * (1 << 20))
    ch = await started(tmpfs / "data", keep_alive=0)
    committed: list[int] = []
    full = None
    for b in range(200):  # 200 x 20 kB would need 4 MB: the disk fills first
        batch = range(b * 100, b * 100 + 100)
        try:
            await put(ch, batch, pad=200)
        except ChannelFullError as e:
            full = e
            break
        committed += batch
    assert full is not None and "database or disk is full" in str(full)
    assert committed and ch.size == len(committed)
    v = ch.counter.values()
    assert v["EventPutErrorCount"] == 1 and v["Unhealthy"] == 1
    assert v["EventPutSuccessCount"] == len(committed)
    # A restart on the full disk loses nothing either.
    await ch.stop()
    ch = await started(tmpfs / "data", keep_alive=0)
    assert ch.size == len(committed)
    filler.unlink()  # space returns: puts resume
    await put(ch, range(10**6, 10**6 + 100), pad=200)
    assert ch.counter.Unhealthy == 0
    committed += range(10**6, 10**6 + 100)
    assert await take_all(ch) == committed
    await ch.stop()
    ch = await started(tmpfs / "data")
    assert ch.size == 0
    await ch.stop()
    assert_sqlite_threads_ended()  # even when the checkpoint at stop met a full disk


async def test_space_is_reclaimed_as_events_drain(tmp_path: Path):
    ch = await started(tmp_path, transactionCapacity=1000)
    db = tmp_path / "c1.db"
    # Steady load: the file does not grow with the number of events that passed.
    for b in range(100):
        await put(ch, range(b * 1000, b * 1000 + 1000), pad=200)
        async with ch.transaction() as tx:
            await tx.take_batch(1000)
    steady = db.stat().st_size + Path(f"{db}-wal").stat().st_size
    assert steady < 16 << 20  # 20 MB went through
    # A backlog of 20 MB, drained: the file gives the space back.
    for b in range(100):
        await put(ch, range(b * 1000, b * 1000 + 1000), pad=200)
    peak = db.stat().st_size + Path(f"{db}-wal").stat().st_size
    assert peak > 20 << 20
    assert len(await take_all(ch)) == 100_000
    await ch.stop()
    assert db.stat().st_size < 8 << 20


# -- the event loop ------------------------------------------------------------------


async def test_sqlite_never_runs_on_the_event_loop_thread(tmp_path: Path):
    loop_thread = threading.get_ident()
    threads: set[int] = set()
    ch = await started(tmp_path, cacheBytes=0)
    for conn in (ch._db, ch._reader):  # the writer's and the takes' connections
        assert conn is not None
        await conn.set_trace_callback(lambda _sql: threads.add(threading.get_ident()))
    await put(ch, range(100))
    await asyncio.gather(put(ch, range(100, 200)), take_all(ch, 30))
    await take_all(ch)
    assert len(threads) == 2 and loop_thread not in threads
    await ch.stop()
