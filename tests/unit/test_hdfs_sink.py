"""Sink hdfs on local files: keys, bucketing, rolling, formats, recovery, failures.

Every test writes real files under pytest's tmp_path through a real memory channel; the
formats are checked with readers flumed did not write (zcat, bzcat, fastavro, Hadoop's own
SequenceFile.Reader and codecs through tests/support/hadoop.py).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import fastavro
import pytest

from flumed.channels.memory import MemoryChannel, MemoryChannelConfig
from flumed.config.keys import flatten, parse
from flumed.errors import ConfigError, DeliveryError
from flumed.event import Event
from flumed.lifecycle import Status
from flumed.sinks.hdfs import HDFSEventSink
from tests.support import hadoop
from tests.util import wait_until

TS = 1136214245678  # 2006-01-02 15:04:05.678 UTC


def ev(i: int, ts: int | None = TS, **headers: str) -> Event:
    h = dict(headers)
    if ts is not None:
        h["timestamp"] = str(ts)
    return Event(b"line %d" % i, h)


def config(**keys: Any) -> Any:
    return parse(HDFSEventSink.Config, flatten(keys), "sink k1")


async def make_channel(capacity: int = 10_000) -> MemoryChannel:
    ch = MemoryChannel("c1", MemoryChannelConfig(capacity=capacity, transactionCapacity=capacity))
    await ch.start()
    return ch


async def put(ch: MemoryChannel, events: list[Event]) -> None:
    async with ch.transaction() as tx:
        await tx.put_batch(events)


async def make_sink(ch: MemoryChannel, **hdfs: Any) -> HDFSEventSink:
    serializer = hdfs.pop("serializer", None)
    keys: dict[str, Any] = {"hdfs": {"timeZone": "UTC", **hdfs}}
    if serializer is not None:
        keys["serializer"] = serializer
    sink = HDFSEventSink("k1", config(**keys))
    sink.channel = ch
    await sink.start()
    return sink


async def run_all(sink: HDFSEventSink) -> None:
    while await sink.process() is Status.READY:
        pass


def files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file())


def numbers(paths: list[Path]) -> list[int]:
    out: list[int] = []
    for p in paths:
        out += [int(x) for x in re.findall(rb"line (\d+)", p.read_bytes())]
    return out


# -- configuration -----------------------------------------------------------------------


def test_flume_defaults():
    c = config(hdfs={"path": "/d"})
    assert (c.filePrefix, c.fileSuffix, c.inUsePrefix, c.inUseSuffix) == (
        "FlumeData",
        "",
        "",
        ".tmp",
    )
    assert (c.rollInterval, c.rollSize, c.rollCount, c.idleTimeout) == (30.0, 1024, 10, 0.0)
    assert (c.batchSize, c.fileType, c.writeFormat, c.maxOpenFiles) == (
        100,
        "SequenceFile",
        "Writable",
        5000,
    )
    assert (c.callTimeout, c.closeTries, c.retryInterval) == (30000, 0, 180.0)
    assert (c.round, c.roundValue, c.roundUnit, c.useLocalTimeStamp) == (False, 1, "second", False)
    assert c.serializer == "TEXT" and c.codeC == ""


def test_flume_properties_keys_parse():
    c = parse(
        HDFSEventSink.Config,
        {
            "hdfs.path": "hdfs://nn:8020/flume/%{host}/%y-%m-%d/%H%M",
            "hdfs.round": "true",
            "hdfs.roundValue": "10",
            "hdfs.roundUnit": "minute",
            "hdfs.fileType": "CompressedStream",
            "hdfs.codeC": "org.apache.hadoop.io.compress.GzipCodec",
            "hdfs.threadsPoolSize": "20",
            "hdfs.rollTimerPoolSize": "2",
            "hdfs.minBlockReplicas": "1",
            "serializer": "HEADER_AND_TEXT",
            "serializer.appendNewline": "false",
        },
        "sink k1",
    )
    assert c.target().url == "http://nn:9870" and c.target().path.startswith("/flume/")
    assert c.codec().name == "gzip" and c.serializerKeys == {"appendNewline": "false"}


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"kerberosPrincipal": "flume/_HOST@EX"}, r"Kerberos \(SPNEGO\) is not supported"),
        ({"codeC": "lzo"}, "LZO is not part of Hadoop"),
        ({"codeC": "lzop"}, "LZO is not part of Hadoop"),
        ({"codeC": "brotli"}, "unknown codec 'brotli'"),
        ({"fileType": "CompressedStream"}, "CompressedStream needs a codec"),
        ({"path": "relative/dir"}, "expected an absolute local path"),
        ({"path": "hdfs:///flume"}, "names no namenode"),
        ({"path": "s3a://bucket/x"}, "expected an absolute local path"),
        ({"timeZone": "Nowhere/Land"}, "unknown time zone"),
        ({"round": True, "roundUnit": "minute", "roundValue": 61}, "roundValue must be 1..60"),
        ({"fileType": "DataStream", "serializer": "nope"}, "serializer"),
        ({"path": "/x/%[where]"}, r"unknown escape %\[where\]"),
    ],
)
def test_bad_configurations_are_refused_clearly(keys, message):
    serializer = keys.pop("serializer", None)
    flat = {"hdfs": {"path": "/d", **keys}}
    if serializer:
        flat["serializer"] = serializer
    with pytest.raises(ConfigError, match=message):
        config(**flat)


def test_webhdfs_targets():
    assert config(hdfs={"path": "webhdfs://nn/x"}).target().url == "http://nn:9870"
    assert config(hdfs={"path": "swebhdfs://nn/x"}).target().url == "https://nn:9871"
    t = config(hdfs={"path": "hdfs://nn:8020/x", "webhdfs": {"port": 50070}}).target()
    assert (t.url, t.path, t.local) == ("http://nn:50070", "/x", False)
    t = config(hdfs={"path": "file:///var/x"}).target()
    assert t.local and t.path == "/var/x"


# -- buckets and names -------------------------------------------------------------------


async def test_hourly_buckets_from_the_timestamp_header(tmp_path: Path):
    ch = await make_channel()
    hour = 3_600_000
    await put(ch, [ev(i, TS + (i % 3) * hour, host=f"h{i % 2}") for i in range(60)])
    sink = await make_sink(
        ch,
        path=f"{tmp_path}/logs/%{{host}}/%Y-%m-%d/%H",
        fileType="DataStream",
        rollCount=0,
        rollSize=0,
        batchSize=25,
    )
    await run_all(sink)
    # Before the roll: in-use names.
    assert all(p.name.endswith(".tmp") for p in files(tmp_path / "logs"))
    await sink.stop()
    got = files(tmp_path / "logs")
    dirs = {str(p.parent.relative_to(tmp_path / "logs")) for p in got}
    assert dirs == {f"h{h}/2006-01-02/{hh}" for h in (0, 1) for hh in ("15", "16", "17")}
    assert all(re.fullmatch(r"FlumeData\.\d{13}", p.name) for p in got)
    assert sorted(numbers(got)) == list(range(60))
    for p in got:  # each bucket got its own events
        host = p.parts[-4]
        assert all(n % 2 == int(host[1]) for n in numbers([p]))
    assert sink.counter.EventDrainSuccessCount == 60


async def test_prefix_suffix_and_in_use_names(tmp_path: Path):
    ch = await make_channel()
    await put(ch, [ev(i, dc="eu") for i in range(3)])
    sink = await make_sink(
        ch,
        path=str(tmp_path),
        filePrefix="events-%{dc}-%Y",
        fileSuffix=".log",
        inUsePrefix="_",
        inUseSuffix=".writing",
        fileType="DataStream",
    )
    await run_all(sink)
    [p] = files(tmp_path)
    assert re.fullmatch(r"_events-eu-2006\.\d+\.log\.writing", p.name)
    await sink.stop()
    [p] = files(tmp_path)
    assert re.fullmatch(r"events-eu-2006\.\d+\.log", p.name)


async def test_empty_in_use_suffix(tmp_path: Path):
    ch = await make_channel()
    await put(ch, [ev(1)])
    sink = await make_sink(ch, path=str(tmp_path), fileType="DataStream", emptyInUseSuffix=True)
    await run_all(sink)
    [p] = files(tmp_path)
    assert re.fullmatch(r"FlumeData\.\d+", p.name)
    await sink.stop()


async def test_round_and_local_time_stamp(tmp_path: Path):
    ch = await make_channel()
    await put(ch, [ev(1)])
    sink = await make_sink(
        ch,
        path=f"{tmp_path}/%H%M",
        round=True,
        roundValue=15,
        roundUnit="minute",
        fileType="DataStream",
    )
    await run_all(sink)
    await sink.stop()
    assert [p.parent.name for p in files(tmp_path)] == ["1500"]
    ch = await make_channel()
    await put(ch, [ev(2, ts=None)])
    sink = await make_sink(
        ch, path=f"{tmp_path}/local/%Y", useLocalTimeStamp=True, fileType="DataStream"
    )
    await run_all(sink)
    await sink.stop()
    assert [p.parent.name for p in files(tmp_path / "local")] == [
        time.strftime("%Y", time.gmtime())
    ]


async def test_header_values_cannot_leave_the_base_directory(tmp_path: Path):
    base = tmp_path / "base"
    ch = await make_channel()
    bad = ["../../escaped", "..", "/etc", "a/../../../b", "x\0y"]
    await put(ch, [ev(i, h=v) for i, v in enumerate(bad)])
    sink = await make_sink(
        ch, path=f"{base}/%{{h}}", filePrefix="%{h}", fileType="DataStream", rollCount=0
    )
    await run_all(sink)
    await sink.stop()
    got = files(tmp_path)
    assert len(got) == len(bad)
    assert all(base in p.parents for p in got), got
    assert sorted(numbers(got)) == list(range(len(bad)))


async def test_missing_timestamp_rolls_back_counts_and_names_the_key(tmp_path: Path, caplog):
    ch = await make_channel()
    await put(ch, [ev(1), ev(2, ts=None), ev(3)])
    sink = await make_sink(ch, path=f"{tmp_path}/%Y", fileType="DataStream")
    for _ in range(3):
        with pytest.raises(DeliveryError, match=r"hdfs\.useLocalTimeStamp"):
            await sink.process()
    assert sink.counter.EventEscapeFailCount == 3
    assert ch.size == 3 and files(tmp_path) == []  # nothing written, nothing lost
    assert sum("hdfs.useLocalTimeStamp" in r.message for r in caplog.records) == 1  # rate-limited
    await sink.stop()


# -- rolling -----------------------------------------------------------------------------


async def test_roll_count_splits_a_batch(tmp_path: Path):
    ch = await make_channel()
    await put(ch, [ev(i) for i in range(25)])
    sink = await make_sink(
        ch, path=str(tmp_path), fileType="DataStream", rollCount=10, rollSize=0, batchSize=25
    )
    await run_all(sink)
    finished = [p for p in files(tmp_path) if not p.name.endswith(".tmp")]
    assert [len(numbers([p])) for p in finished] == [10, 10]  # full files finish at once
    await sink.stop()
    got = files(tmp_path)
    assert [len(numbers([p])) for p in got] == [10, 10, 5]
    assert numbers(got) == list(range(25))
    assert sink.counter.ConnectionCreatedCount == 3 == sink.counter.ConnectionClosedCount


async def test_roll_size_counts_body_bytes(tmp_path: Path):
    ch = await make_channel()
    await put(ch, [Event(b"x" * 100, {"timestamp": str(TS)}) for _ in range(10)])
    sink = await make_sink(
        ch, path=str(tmp_path), fileType="DataStream", rollCount=0, rollSize=250, batchSize=10
    )
    await run_all(sink)
    await sink.stop()
    # As Flume: a file rolls before the event that finds it at or past rollSize.
    assert [p.stat().st_size for p in files(tmp_path)] == [303, 303, 303, 101]


async def test_roll_interval_finishes_an_idle_open_file(tmp_path: Path):
    ch = await make_channel()
    await put(ch, [ev(1)])
    sink = await make_sink(ch, path=str(tmp_path), fileType="DataStream", rollInterval=3)
    assert await sink.process() is Status.READY
    assert files(tmp_path)[0].name.endswith(".tmp")
    await wait_until(lambda: not files(tmp_path)[0].name.endswith(".tmp"), 10, "the roll")
    # The rename is seen on disk a moment before the roll task counts it.
    await wait_until(lambda: sink.counter.ConnectionClosedCount == 1, 10, "the roll counted")
    await put(ch, [ev(2)])
    await run_all(sink)
    await sink.stop()
    assert [numbers([p]) for p in files(tmp_path)] == [[1], [2]]


async def test_idle_timeout_closes_inactive_buckets_only(tmp_path: Path):
    ch = await make_channel()
    sink = await make_sink(
        ch,
        path=f"{tmp_path}/%{{b}}",
        fileType="DataStream",
        rollInterval=0,
        rollCount=0,
        rollSize=0,
        idleTimeout=2,
    )
    await put(ch, [ev(1, b="quiet"), ev(2, b="busy")])
    assert await sink.process() is Status.READY
    i = 3
    # Keep "busy" written well within its idle timeout until "quiet" is closed.
    while files(tmp_path / "quiet")[0].name.endswith(".tmp"):
        await put(ch, [ev(i, b="busy")])
        assert await sink.process() is Status.READY
        i += 1
        await asyncio.sleep(0.02)
    [quiet] = files(tmp_path / "quiet")
    assert not quiet.name.endswith(".tmp")
    [busy] = files(tmp_path / "busy")
    assert busy.name.endswith(".tmp")
    await sink.stop()


async def test_max_open_files_closes_the_least_recently_used(tmp_path: Path):
    ch = await make_channel()
    sink = await make_sink(
        ch, path=f"{tmp_path}/%{{b}}", fileType="DataStream", rollCount=0, maxOpenFiles=2
    )
    for b in ("a", "b", "a", "c"):
        await put(ch, [ev(1, b=b)])
        await run_all(sink)
    names = {p.parent.name: p.name.endswith(".tmp") for p in files(tmp_path)}
    assert names == {"a": True, "b": False, "c": True}  # b was least recently used
    await sink.stop()


# -- formats -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "tool", "ext"),
    [("gzip", "zcat", ".gz"), ("bzip2", "bzcat", ".bz2"), ("zstd", "zstdcat", ".zst")],
)
async def test_compressed_stream_read_by_the_command_line_tools(tmp_path: Path, codec, tool, ext):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (its Debian package)")
    ch = await make_channel()
    sink = await make_sink(
        ch, path=str(tmp_path), fileType="CompressedStream", codeC=codec, rollCount=0, batchSize=7
    )
    await put(ch, [ev(i) for i in range(30)])
    await run_all(sink)
    # Committed batches are readable while the file is still open.
    [open_file] = files(tmp_path)
    assert open_file.name.endswith(ext + ".tmp")
    out = subprocess.run([tool], stdin=open_file.open("rb"), capture_output=True, check=True).stdout
    assert out == b"".join(b"line %d\n" % i for i in range(30))
    await sink.stop()


async def test_header_and_text_and_avro_event_serializers(tmp_path: Path):
    ch = await make_channel()
    await put(ch, [ev(i, k="v") for i in range(3)])
    sink = await make_sink(
        ch, path=f"{tmp_path}/ht", fileType="DataStream", serializer="header_and_text"
    )
    await run_all(sink)
    await sink.stop()
    [p] = files(tmp_path / "ht")
    assert p.read_bytes().splitlines()[0] == f"{{k=v, timestamp={TS}}} line 0".encode()

    await put(ch, [ev(i, k="v") for i in range(5)])
    sink = await make_sink(
        ch,
        path=f"{tmp_path}/avro",
        fileType="DataStream",
        serializer={"": "avro_event", "compressionCodec": "deflate"},
        batchSize=2,
        rollCount=0,
    )
    await run_all(sink)
    [p] = files(tmp_path / "avro")
    # Readable before the roll (every batch ends a block).
    records = list(fastavro.reader(io.BytesIO(p.read_bytes())))
    assert [r["body"] for r in records] == [b"line %d" % i for i in range(5)]
    assert records[0]["headers"] == {"timestamp": str(TS), "k": "v"}
    await sink.stop()


def test_gzip_codec_stream_is_one_member_per_batch():
    from flumed.sinks._hdfs_formats import codec_by_name

    c = codec_by_name("GzipCodec")
    assert gzip.decompress(c.compress(b"a") + c.compress(b"b")) == b"ab"
    assert codec_by_name("org.apache.hadoop.io.compress.BZip2Codec").extension == ".bz2"
    assert codec_by_name("zstd").hadoop_class.endswith("ZStandardCodec")


# -- recovery and failures -----------------------------------------------------------------


async def test_in_use_files_of_a_previous_run_are_finished_at_start(tmp_path: Path):
    d = tmp_path / "2006" / "15"
    d.mkdir(parents=True)
    old = d / "FlumeData.1000.tmp"
    old.write_bytes(b"line 1\n")
    other = d / "unrelated.tmp"
    other.write_bytes(b"keep")
    future = d / f"FlumeData.{int(time.time() * 1000) + 10**9}.tmp"  # not of an earlier run
    future.write_bytes(b"")
    ch = await make_channel()
    sink = await make_sink(ch, path=f"{tmp_path}/%Y/%H", fileType="DataStream")
    await wait_until(lambda: sink.counter.FilesRecoveredCount == 1, 10, "recovery")
    assert (d / "FlumeData.1000").read_bytes() == b"line 1\n" and not old.exists()
    assert other.exists() and future.exists()
    await sink.stop()


@pytest.fixture
def tmpfs(tmp_path: Path):
    """A 1 MB tmpfs, when this process may mount one (root in a permissive container)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_full_disk_pushes_back_and_loses_nothing(tmpfs: Path):
    ch = await make_channel(capacity=100_000)
    body = b"y" * 1000
    total = 2000  # 2 MB of bodies into a 1 MB file system
    await put(ch, [Event(body + b" %d" % i, {"timestamp": str(TS)}) for i in range(total)])
    sink = await make_sink(
        ch, path=f"{tmpfs}/out", fileType="DataStream", rollCount=0, rollSize=0, batchSize=100
    )
    failures = 0
    while True:
        try:
            if await sink.process() is Status.BACKOFF:
                break
        except DeliveryError as e:
            assert "no space left" in str(e)
            failures += 1
            break
    assert failures == 1 and sink.counter.EventWriteFail == 1
    written = sink.counter.EventDrainSuccessCount
    assert written + ch.size == total  # the failed batch went back to the channel
    [p] = files(tmpfs / "out")
    assert p.read_bytes().count(b"\n") == written  # no partial batch left in the file
    # Room again: the rest lands, nothing lost, nothing doubled.
    for f in tmpfs.iterdir():
        if f.name != "out":
            f.unlink()
    os.truncate(p, p.stat().st_size)  # nothing to do; the file is whole
    await sink.stop()
    moved = tmpfs.parent / "moved"
    moved.mkdir()
    for q in files(tmpfs / "out"):
        shutil.move(q, moved / q.name)
    sink = await make_sink(
        ch, path=f"{tmpfs}/out", fileType="DataStream", rollCount=0, rollSize=0, batchSize=100
    )
    await run_all(sink)
    await sink.stop()
    got = [
        int(line.rsplit(b" ", 1)[1])
        for q in files(moved) + files(tmpfs / "out")
        for line in q.read_bytes().splitlines()
    ]
    assert sorted(got) == list(range(total))


# -- SequenceFile, read by Hadoop ---------------------------------------------------------


@pytest.fixture
def hadoop_reader() -> hadoop.HadoopReader:
    why = hadoop.missing()
    if why:
        pytest.skip(why)
    return hadoop.shared_reader()


SEQ_CASES = [
    ("Writable", "", "BLOCK"),
    ("Text", "", "BLOCK"),
    ("Writable", "gzip", "BLOCK"),
    ("Text", "bzip2", "BLOCK"),
    ("Writable", "deflate", "RECORD"),
    ("Writable", "snappy", "BLOCK"),
    ("Text", "lz4", "RECORD"),
    ("Writable", "gzip", "NONE"),
]


async def test_sequence_files_read_by_hadoop(tmp_path: Path, hadoop_reader):
    ch = await make_channel()
    paths: dict[tuple[str, str, str], Path] = {}
    t0: dict[tuple[str, str, str], int] = {}
    for wf, codec, comp in SEQ_CASES:
        events = [ev(i, ts=TS + i) for i in range(23)]
        events.append(Event(bytes(range(256)) + b"\n\0", {}))  # binary body, no timestamp
        await put(ch, events)
        out = tmp_path / f"{wf}-{codec or 'none'}-{comp}"
        sink = await make_sink(
            ch,
            path=str(out),
            writeFormat=wf,
            codeC=codec,
            sequenceFile={"compressionType": comp},
            rollCount=0,
            rollSize=0,
            batchSize=5,
        )
        t0[wf, codec, comp] = int(time.time() * 1000)
        await run_all(sink)
        await sink.stop()
        [paths[wf, codec, comp]] = files(out)
    got = hadoop_reader.sequence_files(*paths.values())
    for (wf, codec, comp), p in paths.items():
        r = got[str(p)]
        assert r["value_class"].endswith("Text" if wf == "Text" else "BytesWritable")
        assert r["compressed"] == bool(codec and comp != "NONE")
        assert r["block"] == bool(codec and comp == "BLOCK")
        if codec and comp != "NONE":
            assert p.name.endswith(
                {
                    "gzip": ".gz",
                    "bzip2": ".bz2",
                    "deflate": ".deflate",
                    "snappy": ".snappy",
                    "lz4": ".lz4",
                }[codec]
            )
            assert r["codec"].rsplit(".", 1)[1].lower().startswith(codec[:3])
        keys = [k for k, _ in r["records"]]
        assert keys[:23] == [TS + i for i in range(23)]
        assert (
            keys[23] >= t0[wf, codec, comp]
        )  # no timestamp header: the time of the batch, as Flume
        assert [v for _, v in r["records"]] == [b"line %d" % i for i in range(23)] + [
            bytes(range(256)) + b"\n\0"
        ]


@pytest.mark.parametrize(("codec", "cls"), [("snappy", "SnappyCodec"), ("lz4", "Lz4Codec")])
async def test_compressed_stream_read_by_hadoop_codecs(tmp_path: Path, hadoop_reader, codec, cls):
    ch = await make_channel()
    body = b"x" * 70_000  # past one 64 KiB codec block
    await put(ch, [ev(i) for i in range(20)] + [Event(body, {"timestamp": str(TS)})])
    sink = await make_sink(
        ch, path=str(tmp_path), fileType="CompressedStream", codeC=codec, rollCount=0, batchSize=6
    )
    await run_all(sink)
    await sink.stop()
    [p] = files(tmp_path)
    out = hadoop_reader.decompress(f"org.apache.hadoop.io.compress.{cls}", p)
    assert out == b"".join(b"line %d\n" % i for i in range(20)) + body + b"\n"


@pytest.mark.parametrize(
    "keys",
    [
        {"fileType": "DataStream"},
        {"fileType": "DataStream", "serializer": "header_and_text"},
        {"fileType": "DataStream", "serializer": "avro_event"},
        {"fileType": "SequenceFile"},
        {"fileType": "SequenceFile", "writeFormat": "Text", "codeC": "gzip"},
        {
            "fileType": "SequenceFile",
            "codeC": "bzip2",
            "sequenceFile": {"compressionType": "RECORD"},
        },
        {"fileType": "CompressedStream", "codeC": "gzip"},
        {"fileType": "CompressedStream", "codeC": "bzip2"},
        {"fileType": "CompressedStream", "codeC": "deflate"},
        {"fileType": "CompressedStream", "codeC": "snappy"},
        {"fileType": "CompressedStream", "codeC": "lz4"},
    ],
    ids=lambda k: "-".join(str(v) for v in flatten(k).values()),
)
async def test_recovery_cuts_a_batch_torn_by_a_crash(tmp_path: Path, keys):
    """A killed run may leave part of an uncommitted batch at the end of its in-use file:
    the next start cuts the file back to its last whole (committed) batch."""
    ch = await make_channel()
    out = tmp_path / "out"
    sink = await make_sink(ch, path=str(out), rollCount=0, rollSize=0, batchSize=5, **keys)
    await put(ch, [ev(i) for i in range(10)])
    assert await sink.process() is Status.READY
    assert await sink.process() is Status.READY
    [p] = files(out)
    two = p.read_bytes()
    await put(ch, [ev(i) for i in range(10, 15)])
    assert await sink.process() is Status.READY
    three = p.read_bytes()
    assert three.startswith(two) and len(three) > len(two)
    await sink.stop()
    for q in files(out):
        q.unlink()
    torn = out / f"FlumeData.1000{sink.ext}.tmp"
    cut = three[: len(two) + (len(three) - len(two)) // 2]
    torn.write_bytes(cut)
    sink = await make_sink(ch, path=str(out), rollCount=0, rollSize=0, batchSize=5, **keys)
    await wait_until(lambda: sink.counter.FilesRecoveredCount == 1, 10, "recovery")
    [p] = files(out)
    assert p.name == torn.name.removesuffix(".tmp")
    got = p.read_bytes()
    if keys["fileType"] == "DataStream" and keys.get("serializer") != "avro_event":
        # Lines delimit themselves: whole lines of the torn batch stay, the partial goes.
        assert got == cut[: cut.rfind(b"\n") + 1] and len(got) >= len(two)
    elif keys["fileType"] == "SequenceFile" and "codeC" not in keys:
        # So do records (not blocks): whole ones stay.
        assert len(two) <= len(got) < len(cut) and three.startswith(got)
        assert got[-7:-1] == b"line 1"  # ends on a whole record
    elif keys.get("sequenceFile") == {"compressionType": "RECORD"}:
        assert len(two) <= len(got) < len(cut) and three.startswith(got)
    else:
        assert got == two
    await sink.stop()


FLUME_PROPERTIES = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = seq
a1.sources.r1.channels = c1
a1.channels.c1.type = memory
a1.sinks.k1.type = org.apache.flume.sink.hdfs.HDFSEventSink
a1.sinks.k1.channel = c1
a1.sinks.k1.hdfs.path = /flume/events/%y-%m-%d/%H%M/%S
a1.sinks.k1.hdfs.filePrefix = events-
a1.sinks.k1.hdfs.round = true
a1.sinks.k1.hdfs.roundValue = 10
a1.sinks.k1.hdfs.roundUnit = minute
a1.sinks.k1.hdfs.fileType = DataStream
a1.sinks.k1.hdfs.writeFormat = Text
a1.sinks.k1.hdfs.callTimeout = 10000
a1.sinks.k1.serializer = text
a1.sinks.k1.serializer.appendNewline = false
"""


def test_the_flume_user_guide_example_runs_unchanged():
    from flumed.config.graph import build_agent
    from flumed.config.properties import properties_to_document

    spec = build_agent(properties_to_document(FLUME_PROPERTIES), "a1", "flume.properties")
    cfg = spec.sinks["k1"].config
    assert (cfg.round, cfg.roundValue, cfg.roundUnit, cfg.fileType) == (
        True,
        10,
        "minute",
        "DataStream",
    )
    assert cfg.serializer == "text" and cfg.serializerKeys == {"appendNewline": "false"}


async def test_more_buckets_than_descriptors(tmp_path: Path):
    """Buckets past the process's descriptor budget stay open as files; their descriptors
    are closed least recently written first and opened again on the next write."""
    ch = await make_channel()
    sink = await make_sink(ch, path=f"{tmp_path}/%{{b}}", fileType="DataStream", rollCount=0)
    sink.store.max_fds = 2
    for r in range(3):
        await put(ch, [ev(r * 10 + b, b=str(b)) for b in range(5)])
        assert await sink.process() is Status.READY
        assert len(sink.store._fds) <= 2
    await sink.stop()
    for b in range(5):
        [p] = files(tmp_path / str(b))
        assert numbers([p]) == [b, 10 + b, 20 + b]


async def test_recovery_leaves_other_prefixes_alone(tmp_path: Path):
    (tmp_path / "other.1000.tmp").write_bytes(b"line 1\n")  # another sink's open file
    (tmp_path / "app-eu.1000.tmp").write_bytes(b"line 2\n")
    ch = await make_channel()
    sink = await make_sink(ch, path=str(tmp_path), filePrefix="app-%{dc}", fileType="DataStream")
    await wait_until(lambda: sink.counter.FilesRecoveredCount == 1, 10, "recovery")
    assert sorted(p.name for p in files(tmp_path)) == ["app-eu.1000", "other.1000.tmp"]
    await sink.stop()
