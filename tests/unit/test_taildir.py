"""taildir in-process, on real files: lines, rotation, truncation, headers, positions,
multiline, push-back when the channel is full, and the configuration checks."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from flumed.config.keys import flatten, parse
from flumed.config.properties import properties_to_document
from flumed.errors import ComponentStartError, ConfigError
from flumed.sources.taildir import TaildirConfig, TaildirSource, TailFile, dump_positions
from tests.support.harness import memory_channel, wire
from tests.util import wait_until


class Tail:
    """A taildir source on `tmp/logs` into a memory channel; `taken` collects events."""

    def __init__(self, tmp: Path, capacity: int = 100_000, keep_alive: float = 0.05, **keys: Any):
        self.dir = tmp / "logs"
        self.dir.mkdir(exist_ok=True)
        self.pos = tmp / "pos" / "taildir.json"
        conf: dict[str, Any] = {
            "filegroups": {"f1": f"{self.dir}/.*\\.log"},
            "positionFile": str(self.pos),
            "writePosInterval": 50,
        }
        conf.update(keys)
        self.conf = conf
        self.capacity, self.keep_alive = capacity, keep_alive
        self.taken: list[Any] = []

    async def start(self) -> TaildirSource:
        self.channel = memory_channel(self.capacity, min(self.capacity, 10_000), self.keep_alive)
        await self.channel.start()
        self.src = wire(TaildirSource, self.conf, self.channel)
        await self.src.start()
        return self.src

    async def stop(self) -> None:
        await self.src.stop()
        await self.channel.stop()

    async def take(self) -> list[Any]:
        async with self.channel.transaction() as tx:
            got = await tx.take_batch(100_000, 0.001)
        self.taken += got
        return got

    async def bodies(self, n: int, timeout: float = 20) -> list[bytes]:
        """Take until `n` events have arrived in all."""

        async def enough() -> bool:
            await self.take()
            return len(self.taken) >= n

        await wait_until(enough, timeout, what=f"{n} events")
        return [e.body for e in self.taken]


def lines(a: int, b: int, prefix: str = "") -> bytes:
    return b"".join(f"{prefix}{i}\n".encode() for i in range(a, b))


async def test_lines_partial_line_and_crlf(tmp_path):
    t = Tail(tmp_path)
    log = t.dir / "a.log"
    log.write_bytes(b"one\r\ntwo\nthr")
    await t.start()
    assert await t.bodies(2) == [b"one", b"two"]
    with log.open("ab") as f:
        f.write(b"ee\n")
    assert await t.bodies(3) == [b"one", b"two", b"three"]
    await t.stop()
    entries = json.loads(t.pos.read_text())
    assert entries == [{"inode": log.stat().st_ino, "pos": log.stat().st_size, "file": str(log)}]
    assert t.src.counter.EventAcceptedCount == 3


async def test_new_files_and_non_matching_ignored(tmp_path):
    t = Tail(tmp_path, batchSize=7)
    await t.start()
    (t.dir / "a.log").write_bytes(lines(0, 50, "a"))
    (t.dir / "b.txt").write_bytes(lines(0, 50, "b"))
    (t.dir / "c.log").write_bytes(lines(0, 50, "c"))
    got = await t.bodies(100)
    assert sorted(got) == sorted(lines(0, 50, "a").split() + lines(0, 50, "c").split())
    await t.stop()


async def test_rename_rotation_reads_old_file_to_its_end(tmp_path):
    t = Tail(tmp_path)
    log = t.dir / "app.log"
    log.write_bytes(lines(0, 100))
    await t.start()
    await t.bodies(100)
    with log.open("ab") as f:
        f.write(lines(100, 200))
        os.rename(log, t.dir / "app.log.1")  # not matched any more
        f.write(lines(200, 300))  # the writer still holds the old file
    log.write_bytes(lines(300, 400))
    got = await t.bodies(400)
    assert sorted(got, key=int) == lines(0, 400).split()
    assert got[:300] == lines(0, 300).split()  # the old file first (mtime order)
    await t.stop()


async def test_rename_to_matching_name_keeps_position(tmp_path):
    t = Tail(tmp_path)
    log = t.dir / "app.log"
    log.write_bytes(lines(0, 100))
    await t.start()
    await t.bodies(100)
    os.rename(log, t.dir / "app-1.log")  # still matched: not read again
    log.write_bytes(lines(100, 150))
    got = await t.bodies(150)
    assert got == lines(0, 150).split()
    await t.stop()
    entries = {e["file"]: e["pos"] for e in json.loads(t.pos.read_text())}
    assert entries == {str(t.dir / "app-1.log"): len(lines(0, 100)), str(log): len(lines(100, 150))}


async def test_copytruncate_reads_from_zero(tmp_path):
    t = Tail(tmp_path)
    log = t.dir / "app.log"
    log.write_bytes(lines(0, 1000))
    await t.start()
    await t.bodies(1000)
    (t.dir / "app.log.1").write_bytes(log.read_bytes())
    with log.open("r+b") as f:
        f.truncate(0)
    with log.open("ab") as f:
        f.write(lines(1000, 1010))
    got = await t.bodies(1010)
    assert got == lines(0, 1010).split()
    await t.stop()


async def test_restart_resumes_at_position(tmp_path):
    t = Tail(tmp_path)
    log = t.dir / "a.log"
    log.write_bytes(lines(0, 100))
    await t.start()
    await t.bodies(100)
    await t.stop()
    with log.open("ab") as f:
        f.write(lines(100, 150))
    await t.start()
    got = await t.bodies(150)
    assert got == lines(0, 150).split()
    await t.stop()


async def test_restart_finishes_file_rotated_while_down(tmp_path):
    t = Tail(tmp_path)
    log = t.dir / "a.log"
    log.write_bytes(lines(0, 100))
    await t.start()
    await t.bodies(100)
    await t.stop()
    with log.open("ab") as f:
        f.write(lines(100, 150))
    os.rename(log, t.dir / "a.log.1")
    log.write_bytes(lines(150, 160))
    await t.start()
    got = await t.bodies(160)
    assert sorted(got, key=int) == lines(0, 160).split()
    await t.stop()


async def test_skip_to_end_only_for_files_found_at_start(tmp_path):
    t = Tail(tmp_path, skipToEnd=True)
    (t.dir / "old.log").write_bytes(lines(0, 10))
    await t.start()
    with (t.dir / "old.log").open("ab") as f:
        f.write(lines(10, 12))
    (t.dir / "new.log").write_bytes(lines(100, 103))
    got = await t.bodies(5)
    assert sorted(got, key=int) == [b"10", b"11", b"100", b"101", b"102"]
    await t.stop()


async def test_headers(tmp_path):
    t = Tail(
        tmp_path,
        fileHeader=True,
        fileHeaderKey="path",
        byteOffsetHeader=True,
        headers={"f1": {"topic": "app"}},
    )
    log = t.dir / "a.log"
    log.write_bytes(b"ab\r\ncd\nefg\n")
    await t.start()
    await t.bodies(3)
    assert [e.headers for e in t.taken] == [
        {"topic": "app", "path": str(log), "byteoffset": str(o)} for o in (0, 4, 7)
    ]
    await t.stop()


async def test_multiline_joins_stack_traces(tmp_path):
    t = Tail(tmp_path, multiline={"pattern": r"\d{4}-", "timeout": 100})
    log = t.dir / "a.log"
    log.write_bytes(
        b"2024-01 start\n"
        b"2024-02 boom\n"
        b"java.lang.Error: x\n"
        b"\tat A.b(A.java:1)\n"
        b"2024-03 last\n"
        b"\tat C.d(C.java:2)\n"
    )
    await t.start()
    got = await t.bodies(3)
    assert got == [
        b"2024-01 start",
        b"2024-02 boom\njava.lang.Error: x\n\tat A.b(A.java:1)",
        b"2024-03 last\n\tat C.d(C.java:2)",  # flushed by the timeout
    ]
    await t.stop()
    assert json.loads(t.pos.read_text())[0]["pos"] == log.stat().st_size


async def test_full_channel_pushes_back_without_loss(tmp_path):
    t = Tail(
        tmp_path,
        capacity=50,
        keep_alive=0.01,
        batchSize=20,
        backoffSleepIncrement=10,
        maxBackoffSleep=50,
    )
    log = t.dir / "a.log"
    log.write_bytes(lines(0, 1000))
    await t.start()
    await wait_until(lambda: t.src.counter.ChannelWriteFail > 0, what="a refused batch")
    assert t.channel.size <= 50
    got = await t.bodies(1000)
    assert got == lines(0, 1000).split()
    assert t.src.counter.EventAcceptedCount == 1000
    await t.stop()
    assert json.loads(t.pos.read_text())[0]["pos"] == log.stat().st_size


async def test_position_not_past_uncommitted_lines(tmp_path):
    t = Tail(tmp_path, capacity=100, keep_alive=0.01, batchSize=100)
    log = t.dir / "a.log"
    log.write_bytes(lines(0, 1000))
    await t.start()
    await wait_until(lambda: t.channel.size == 100, what="channel full")
    await t.stop()
    assert json.loads(t.pos.read_text())[0]["pos"] == len(lines(0, 100))


async def test_position_written_in_the_middle_of_a_long_read(tmp_path):
    """A backlog of many batches is one read pass; its position must still reach the file
    every writePosInterval, so that a crash re-reads one interval, not the whole backlog
    (found by tests/fleet: an edge killed in a 30,000-line burst)."""
    t = Tail(tmp_path, capacity=1_000_000, batchSize=100, writePosInterval=10)
    await t.start()
    real = t.src.processor.process_batch
    gate = asyncio.Event()
    held = asyncio.Event()
    commits: list[float] = []

    async def gated(events):
        commits.append(time.monotonic())
        if len(commits) > 10 and commits[-1] - commits[0] > 0.05:
            held.set()
            await gate.wait()  # the pass stalls here, in the middle of the file
        await real(events)

    t.src.processor.process_batch = gated
    log = t.dir / "a.log"
    log.write_bytes(lines(0, 100_000))
    await wait_until(held.is_set, what="the read to stall mid-file")
    committed = (len(commits) - 1) * 100
    saved = json.loads(t.pos.read_text())[0]["pos"] if t.pos.exists() else 0
    assert 0 < saved <= len(lines(0, committed)), "no position written during the read"
    gate.set()
    assert len(await t.bodies(100_000, timeout=60)) == 100_000
    await t.stop()
    assert json.loads(t.pos.read_text())[0]["pos"] == log.stat().st_size


def test_position_file_format_is_flumes():
    a = TailFile("/var/log/a<b>&'=.log", 12, 34, "f1")
    b = TailFile("/var/log/é.log", 5, 0, "f1")
    assert (
        dump_positions([a, b])
        == (
            '[{"inode":12,"pos":34,"file":"/var/log/a\\u003cb\\u003e\\u0026\\u0027\\u003d.log"},'
            '{"inode":5,"pos":0,"file":"/var/log/é.log"}]'
        ).encode()
    )
    assert json.loads(dump_positions([a]))[0]["file"] == a.path
    assert dump_positions([]) == b""


async def test_flume_position_file_is_read(tmp_path):
    t = Tail(tmp_path)
    log = t.dir / "a.log"
    log.write_bytes(lines(0, 10))
    t.pos.parent.mkdir()
    # Keys in another order and an unknown key, as Flume's reader accepts.
    t.pos.write_text(json.dumps([{"file": str(log), "x": 1, "pos": 4, "inode": log.stat().st_ino}]))
    await t.start()
    assert await t.bodies(8) == lines(2, 10).split()
    await t.stop()


async def test_corrupt_position_file_fails_start(tmp_path):
    t = Tail(tmp_path)
    t.pos.parent.mkdir()
    t.pos.write_text('[{"inode": 1}]')
    with pytest.raises(ComponentStartError, match="positionFile"):
        await t.start()
    await t.channel.stop()


def test_config_errors():
    with pytest.raises(ConfigError) as e:
        parse(
            TaildirConfig,
            flatten(
                {
                    "filegroups": {"f1": "relative/.*", "f2": "/var/log/(bad"},
                    "headers": {"f3": {"k": "v"}},
                    "multiline": {"pattern": "("},
                }
            ),
            "r1",
        )
    text = str(e.value)
    assert "filegroups.f1: must be an absolute path" in text
    assert "filegroups.f2: bad regex" in text
    assert "headers.f3: no filegroup named 'f3'" in text
    assert "multiline.pattern" in text
    with pytest.raises(ConfigError, match="filegroups"):
        parse(TaildirConfig, {}, "r1")


def test_properties_form_matches_toml():
    text = (
        "a1.sources = r1\na1.channels = c1\na1.sinks = k1\n"
        "a1.sources.r1.type = taildir\n"
        "a1.sources.r1.channels = c1\n"
        "a1.sources.r1.filegroups = f1 f2\n"
        "a1.sources.r1.filegroups.f1 = /var/log/a/.*\\\\.log\n"
        "a1.sources.r1.filegroups.f2 = /var/log/b/x.log\n"
        "a1.sources.r1.headers.f1.topic = a\n"
        "a1.sources.r1.multiline.pattern = ^\\\\d\n"
        "a1.channels.c1.type = memory\n"
        "a1.sinks.k1.type = null\n"
        "a1.sinks.k1.channel = c1\n"
    )
    doc = properties_to_document(text)
    src = doc["agents"]["a1"]["sources"]["r1"]
    del src["type"], src["channels"]
    cfg = parse(TaildirConfig, flatten(src), "r1")
    assert cfg.groups() == {"f1": ("/var/log/a", r".*\.log"), "f2": ("/var/log/b", "x.log")}
    assert cfg.group_headers() == {"f1": {"topic": "a"}}
    assert cfg.multiline_pattern == r"^\d"


async def test_thousand_files_no_busy_loop(tmp_path):
    t = Tail(tmp_path, pollInterval=50, writePosInterval=60_000)
    for i in range(1000):
        (t.dir / f"f{i:04d}.log").write_bytes(b"first %d\n" % i)
    src = await t.start()
    src.max_open = 100  # as under a low descriptor limit: caught-up files get closed
    await t.bodies(1000)
    for i in (3, 500, 999):
        with (t.dir / f"f{i:04d}.log").open("ab") as f:
            f.write(b"second %d\n" % i)
    got = await t.bodies(1003)
    assert sorted(got[1000:]) == [b"second 3", b"second 500", b"second 999"]
    assert sum(tf.fd is not None for tf in src._files.values()) <= 100
    # Idle: the loop turns once per rescan (plus stray wake-ups), it does not spin.
    p0, r0 = src.passes, src.rescans
    await wait_until(lambda: src.rescans >= r0 + 5, what="5 rescans")
    assert src.passes - p0 <= 2 * (src.rescans - r0) + 2
    await t.stop()


async def test_polling_only(tmp_path):
    t = Tail(tmp_path, inotify=False, pollInterval=20)
    await t.start()
    assert t.src._inotify is None
    (t.dir / "a.log").write_bytes(lines(0, 10))
    assert await t.bodies(10) == lines(0, 10).split()
    await t.stop()


async def test_idle_file_closed_and_reopened(tmp_path):
    t = Tail(tmp_path, idleTimeout=0)
    log = t.dir / "a.log"
    log.write_bytes(lines(0, 10))
    src = await t.start()
    await t.bodies(10)
    await wait_until(lambda: all(tf.fd is None for tf in src._files.values()), what="closed")
    with log.open("ab") as f:
        f.write(lines(10, 20))
    assert await t.bodies(20) == lines(0, 20).split()
    await t.stop()


# -- hostile local files (issue 9, point 2) ------------------------------------------


async def test_symlinks_matching_the_pattern_are_not_followed(tmp_path, caplog):
    """A symlink named like a log file, pointing outside: never read, logged once."""
    t = Tail(tmp_path, pollInterval=20)
    secret = tmp_path / "secret"
    secret.write_bytes(lines(0, 5, "secret"))
    (t.dir / "evil.log").symlink_to(secret)
    (t.dir / "a.log").write_bytes(lines(0, 10, "a"))
    await t.start()
    assert await t.bodies(10) == lines(0, 10, "a").split()
    with secret.open("ab") as f:
        f.write(lines(5, 10, "secret"))
    rescans = t.src.rescans
    await wait_until(lambda: t.src.rescans > rescans + 3, 10, "later rescans")
    assert await t.take() == []
    await t.stop()
    assert all(not b.startswith(b"secret") for b in (e.body for e in t.taken))
    assert str(t.dir / "evil.log") not in t.pos.read_text()
    assert caplog.text.count("skipped 1 symbolic link(s)") == 1


async def test_group_directory_swapped_for_a_symlink_is_not_listed(tmp_path, caplog):
    """The group's directory replaced by a symlink to another directory after start:
    the files there are not read; the real directory is again once it is back."""
    app = tmp_path / "logs" / "app"
    app.mkdir(parents=True)
    (app / "a.log").write_bytes(lines(0, 3, "a"))
    t = Tail(tmp_path, pollInterval=20, filegroups={"f1": f"{app}/.*\\.log"})
    await t.start()
    assert await t.bodies(3) == lines(0, 3, "a").split()
    secret = tmp_path / "etc"
    secret.mkdir()
    (secret / "shadow.log").write_bytes(lines(0, 5, "secret"))
    app.rename(tmp_path / "logs" / "app.real")
    app.symlink_to(secret, target_is_directory=True)
    await wait_until(lambda: "now resolves to" in caplog.text, 10, "the warning")
    rescans = t.src.rescans
    await wait_until(lambda: t.src.rescans > rescans + 3, 10, "later rescans")
    assert await t.take() == []
    app.unlink()
    (tmp_path / "logs" / "app.real").rename(app)
    (app / "b.log").write_bytes(lines(0, 2, "b"))
    assert await t.bodies(5) == [*lines(0, 3, "a").split(), *lines(0, 2, "b").split()]
    await t.stop()


def test_filegroup_directory_with_dot_dot_is_refused():
    with pytest.raises(ConfigError, match=r"filegroups.f1: the directory .* must not contain"):
        parse(TaildirConfig, flatten({"filegroups": {"f1": "/var/log/../../etc/.*"}}), "r1")
