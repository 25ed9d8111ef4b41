"""taildir in real agent processes: rotation by rename and by copytruncate, restarts in
the middle of a file (SIGTERM and SIGKILL), new files; every line is counted."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

from tests.util import wait_until_sync

RECORD = "tests.support.record_sink:RecordSink"


def conf(logs: Path, pos: Path, out: Path, *, delay: float = 0.0, capacity: int = 100_000) -> str:
    return f"""
[agents.a1.sources.r1]
type = "taildir"
channels = ["c1"]
positionFile = "{pos}"
writePosInterval = 200
batchSize = 100
[agents.a1.sources.r1.filegroups]
f1 = '{logs}/app.*\\.log'

[agents.a1.channels.c1]
type = "memory"
capacity = {capacity}
transactionCapacity = 1000

[agents.a1.sinks.k1]
type = "{RECORD}"
channel = "c1"
path = "{out}"
batchSize = 100
delay = {delay}
"""


def numbered(a: int, b: int) -> bytes:
    return b"".join(b"line-%08d\n" % i for i in range(a, b))


def recorded(out: Path) -> collections.Counter[bytes]:
    if not out.exists():
        return collections.Counter()
    return collections.Counter(out.read_bytes().splitlines())


def count(out: Path) -> int:
    return out.read_bytes().count(b"\n") if out.exists() else 0


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def test_rotation_restarts_and_new_files(agent_factory, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    pos, out = tmp_path / "state" / "pos.json", tmp_path / "out.txt"
    app = logs / "app.log"
    app.write_bytes(numbered(0, 30_000))

    # A slow sink and a small channel: the source is pushed back mid-file; SIGTERM then.
    a = agent_factory(conf(logs, pos, out, delay=0.02, capacity=1000))
    wait_until_sync(lambda: count(out) >= 3000, what="first lines")
    assert a.terminate() == 0
    first = count(out)
    assert first < 30_000, "the restart must happen in the middle of the file"
    entry = json.loads(pos.read_text())
    assert entry == [{"inode": app.stat().st_ino, "pos": entry[0]["pos"], "file": str(app)}]
    assert entry[0]["pos"] == len(numbered(0, first))  # committed = recorded after the drain

    a = agent_factory(conf(logs, pos, out))
    wait_until_sync(lambda: count(out) >= 30_000, what="the rest of app.log")

    # Rename rotation while the writer keeps the old file open, then a new app.log.
    with app.open("ab") as f:
        f.write(numbered(30_000, 31_000))
        os.rename(app, logs / "app.log.1")
        f.write(numbered(31_000, 32_000))
    app.write_bytes(numbered(32_000, 33_000))
    wait_until_sync(lambda: count(out) >= 33_000, what="lines after rename rotation")

    # copytruncate: copy, then truncate in place; the writer goes on in the same file.
    (logs / "app.log.2").write_bytes(app.read_bytes())
    with app.open("r+b") as f:
        f.truncate(0)
    append(app, numbered(33_000, 33_100))
    wait_until_sync(lambda: count(out) >= 33_100, what="lines after copytruncate")

    # New files while running, and a non-matching one.
    (logs / "app-b.log").write_bytes(numbered(33_100, 34_000))
    (logs / "other.txt").write_bytes(b"not me\n")
    wait_until_sync(lambda: count(out) >= 34_000, what="lines of a new file")
    assert a.terminate() == 0

    # While down: more lines, and app.log rotated away before the agent saw them.
    append(app, numbered(34_000, 34_500))
    os.rename(app, logs / "app.log.3")
    app.write_bytes(numbered(34_500, 35_000))
    a = agent_factory(conf(logs, pos, out))
    wait_until_sync(lambda: count(out) >= 35_000, what="lines written while down")
    assert a.terminate() == 0

    got = recorded(out)
    want = numbered(0, 35_000).splitlines()
    assert set(got) == set(want)
    dups = sum(n - 1 for n in got.values())
    assert dups <= 100 * 3, f"{dups} duplicates for 3 restarts of batchSize 100"
    assert b"not me" not in got

    # Flume's format: compact JSON, inode/pos/file, one entry per followed file.
    text = pos.read_text()
    assert " " not in text
    entries = json.loads(text)
    by_file = {e["file"]: e for e in entries}
    for e in entries:
        assert list(e) == ["inode", "pos", "file"]
    for name in ("app.log", "app-b.log"):
        p = logs / name
        assert by_file[str(p)] == {
            "inode": p.stat().st_ino,
            "pos": p.stat().st_size,
            "file": str(p),
        }


def test_sigkill_mid_file_loses_nothing(agent_factory, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    pos, out = tmp_path / "pos.json", tmp_path / "out.txt"
    app = logs / "app.log"
    app.write_bytes(numbered(0, 10_000))
    a = agent_factory(conf(logs, pos, out))
    wait_until_sync(lambda: count(out) >= 10_000, what="first lines")
    size = app.stat().st_size
    wait_until_sync(
        lambda: pos.exists() and f'"pos":{size},' in pos.read_text(), what="position written"
    )
    # The sink has every line the source read; the position file may be behind: a
    # crash may duplicate lines read since the last write, never lose any.
    append(app, numbered(10_000, 15_000))
    wait_until_sync(lambda: count(out) >= 15_000, what="more lines")
    a.kill()
    append(app, numbered(15_000, 16_000))
    a = agent_factory(conf(logs, pos, out))
    wait_until_sync(lambda: count(out) >= 16_000, what="lines after the crash")
    wait_until_sync(
        lambda: f'"pos":{app.stat().st_size},' in pos.read_text(), what="position caught up"
    )
    assert a.terminate() == 0
    got = recorded(out)
    assert set(got) == set(numbered(0, 16_000).splitlines())
    assert sum(n - 1 for n in got.values()) <= 5000


def test_flume_properties_file(agent_factory, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    out = tmp_path / "out.txt"
    (logs / "x.log").write_bytes(numbered(0, 100))
    props = f"""
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = org.apache.flume.source.taildir.TaildirSource
a1.sources.r1.channels = c1
a1.sources.r1.positionFile = {tmp_path}/pos.json
a1.sources.r1.filegroups = f1
a1.sources.r1.filegroups.f1 = {logs}/.*\\.log
a1.sources.r1.headers.f1.topic = x
a1.channels.c1.type = memory
a1.sinks.k1.type = {RECORD}
a1.sinks.k1.channel = c1
a1.sinks.k1.path = {out}
"""
    a = agent_factory(props, properties=True)
    wait_until_sync(lambda: count(out) >= 100, what="lines")
    assert recorded(out) == collections.Counter(numbered(0, 100).splitlines())
    assert a.counter("SOURCE.r1", "EventAcceptedCount") == 100
    assert a.terminate() == 0
