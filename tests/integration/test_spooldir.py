"""spooldir against real files in a real directory, in-process with a memory channel."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema
import pytest

from flumed.config.graph import build_agent
from flumed.config.keys import parse
from flumed.config.properties import properties_to_document
from flumed.errors import ConfigError
from flumed.event import Event
from flumed.sources.spooldir import TRACKER_FILE, SpoolDirectorySource
from tests.support.harness import SourceHarness, on_uvloop
from tests.util import wait_until


def write_lines(path: Path, start: int, stop: int, mtime: int | None = None) -> None:
    path.write_bytes(b"".join(b"line-%06d\n" % i for i in range(start, stop)))
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def conf(d: Path, **kw: Any) -> dict[str, Any]:
    return {"spoolDir": str(d), **kw}


async def take_all(h: SourceHarness) -> list[Event]:
    """Everything the channel holds now."""
    out: list[Event] = []
    while batch := await h.take(10_000, 0):
        out += batch
    return out


async def drain(h: SourceHarness, until: Any, timeout: float = 30.0) -> list[Event]:
    """Take events until `until(events)` holds."""
    out: list[Event] = []

    async def more() -> bool:
        out.extend(await h.take(10_000, 0.05))
        return bool(until(out))

    await wait_until(more, timeout, "events")
    return out


@on_uvloop
async def test_files_consumed_oldest_first_renamed_with_headers(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    d.mkdir()
    write_lines(d / "b.log", 100, 150, mtime=1_000_000)
    write_lines(d / "a.log", 0, 100, mtime=2_000_000)
    (d / "c.tmp").write_bytes(b"ignored\n")
    (d / ".hidden").write_bytes(b"hidden\n")
    cfg = conf(
        d, fileHeader="true", basenameHeader=True, basenameHeaderKey="bn", ignorePattern=r".*\.tmp"
    )
    async with SourceHarness(SpoolDirectorySource, cfg) as h:
        events = await h.events(150)
        await wait_until(lambda: (d / "a.log.COMPLETED").exists(), what="a.log retired")
        assert [e.body for e in events] == [
            b"line-%06d" % i for i in [*range(100, 150), *range(100)]
        ]
        assert events[0].headers == {"file": str(d / "b.log"), "bn": "b.log"}
        assert events[-1].headers == {"file": str(d / "a.log"), "bn": "a.log"}
        # A file dropped in later is picked up too.
        write_lines(d / "new.log", 150, 160)
        events = await h.events(10)
        assert [e.body for e in events] == [b"line-%06d" % i for i in range(150, 160)]
        await wait_until(lambda: (d / "new.log.COMPLETED").exists(), what="new.log retired")
        assert h.source.counter.EventAcceptedCount == 160
    names = sorted(p.name for p in d.iterdir())
    assert names == [".flumespool", ".hidden", "a.log.COMPLETED", "b.log.COMPLETED",
                     "c.tmp", "new.log.COMPLETED"]  # fmt: skip
    assert json.loads((d / ".flumespool" / TRACKER_FILE).read_text()) is None


@on_uvloop
async def test_delete_policy_recursive_include_youngest(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / ".skipme").mkdir()
    write_lines(d / "x.log", 0, 10, mtime=1_000_000)
    write_lines(d / "sub" / "y.log", 10, 20, mtime=3_000_000)
    write_lines(d / "sub" / "deeper" / "z.log", 20, 30, mtime=2_000_000)
    write_lines(d / "sub" / "other.txt", 30, 40)
    write_lines(d / ".skipme" / "h.log", 40, 50)
    cfg = conf(
        d,
        deletePolicy="immediate",
        recursiveDirectorySearch="true",
        includePattern=r".*\.log",
        consumeOrder="youngest",
        trackerDir=str(tmp_path / "tracker"),
    )
    async with SourceHarness(SpoolDirectorySource, cfg) as h:
        events = await h.events(30)
        await wait_until(lambda: not (d / "x.log").exists(), what="x.log deleted")
    assert [e.body for e in events] == [b"line-%06d" % i for i in [*range(10, 30), *range(10)]]
    assert sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()) == [
        ".skipme/h.log",
        "sub/other.txt",
    ]
    assert (tmp_path / "tracker" / TRACKER_FILE).exists()


@on_uvloop
async def test_full_channel_pushes_back_then_restart_resumes_mid_file(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    d.mkdir()
    write_lines(d / "big.log", 0, 1000)
    cfg = conf(d, batchSize=7, maxBackoff=50)
    h = SourceHarness(SpoolDirectorySource, cfg, capacity=20, transaction_capacity=10,
                      keep_alive=0.01)  # fmt: skip
    async with h:
        await wait_until(lambda: h.source.counter.ChannelWriteFail >= 3, what="push-back")
        await h.source.stop()  # stopped while the channel is full
        first = await take_all(h)
    # Stopped while the channel was full: nothing was dropped, the file is not done.
    assert len(first) == 14  # two batches of 7 fit into 20
    assert (d / "big.log").exists()
    rec = json.loads((d / ".flumespool" / TRACKER_FILE).read_text())
    assert rec["path"] == str(d / "big.log") and rec["pos"] == 14 * len(b"line-000000\n")
    async with SourceHarness(SpoolDirectorySource, cfg) as h2:
        rest = await h2.events(1000 - 14)
        await wait_until(lambda: (d / "big.log.COMPLETED").exists(), what="retired")
    bodies = [e.body for e in first + rest]
    assert bodies == [b"line-%06d" % i for i in range(1000)]


@on_uvloop
async def test_file_modified_after_pickup_is_set_aside_rest_flows(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    d.mkdir()
    write_lines(d / "a.log", 0, 100, mtime=1_000_000)
    write_lines(d / "b.log", 100, 110, mtime=2_000_000)
    cfg = conf(d, batchSize=10, maxBackoff=20)
    async with SourceHarness(SpoolDirectorySource, cfg, capacity=10, transaction_capacity=10,
                             keep_alive=0.01) as h:  # fmt: skip
        # a.log is picked up and held mid-file by the full channel; then someone appends.
        await wait_until(lambda: h.source.counter.ChannelWriteFail >= 1, what="a.log picked")
        with open(d / "a.log", "ab") as f:
            f.write(b"appended\n")
        events = await drain(h, lambda ev: len(ev) >= 111)
        await wait_until(lambda: (d / "b.log.COMPLETED").exists(), what="b.log retired")
        assert h.source.counter.GenericProcessingFail == 1
    assert (d / "a.log.CHANGED").exists() and not (d / "a.log").exists()
    bodies = [e.body for e in events]
    assert bodies[:100] == [b"line-%06d" % i for i in range(100)]
    assert bodies[100:] == [b"appended", *(b"line-%06d" % i for i in range(100, 110))]


BAD = b"good-1\nbad-\xff\xfe-2\ngood-3\n"


@pytest.mark.parametrize(
    ("policy", "expect"),
    [
        ("FAIL", [b"good-1"]),
        ("REPLACE", [b"good-1", "bad-\ufffd\ufffd-2".encode(), b"good-3"]),
        ("IGNORE", [b"good-1", b"bad--2", b"good-3"]),
    ],
)
@on_uvloop
async def test_decode_error_policies(tmp_path: Path, policy: str, expect: list[bytes]) -> None:
    d = tmp_path / "spool"
    d.mkdir()
    (d / "bad.log").write_bytes(BAD)
    os.utime(d / "bad.log", (1_000_000, 1_000_000))
    write_lines(d / "next.log", 0, 5, mtime=2_000_000)
    async with SourceHarness(SpoolDirectorySource, conf(d, decodeErrorPolicy=policy)) as h:
        events = await h.events(len(expect) + 5)
        await wait_until(lambda: (d / "next.log.COMPLETED").exists(), what="next.log retired")
        assert h.source.counter.EventReadFail == 1
    assert [e.body for e in events] == expect + [b"line-%06d" % i for i in range(5)]
    done = "bad.log.FAILED" if policy == "FAIL" else "bad.log.COMPLETED"
    assert (d / done).exists()


@on_uvloop
async def test_charsets_long_lines_and_last_line_without_newline(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    d.mkdir()
    (d / "l1.txt").write_bytes("caf\xe9\n".encode("latin-1") + b"x" * 25 + b"\nend")
    cfg = conf(d, inputCharset="ISO-8859-1", **{"deserializer.maxLineLength": 10})
    async with SourceHarness(SpoolDirectorySource, cfg) as h:
        events = await h.events(5)
    assert [e.body for e in events] == ["café".encode(), b"x" * 10, b"x" * 10, b"x" * 5, b"end"]


SCHEMA = {
    "type": "record",
    "name": "Rec",
    "namespace": "t",
    "fields": [{"name": "n", "type": "long"}, {"name": "s", "type": "string"}],
}


@pytest.mark.parametrize("schema_type", ["HASH", "LITERAL"])
@on_uvloop
async def test_avro_container_records(tmp_path: Path, schema_type: str) -> None:
    d = tmp_path / "spool"
    d.mkdir()
    parsed = fastavro.parse_schema(SCHEMA)
    records = [{"n": i, "s": f"r{i}"} for i in range(250)]
    with open(d / "f.avro", "wb") as f:
        fastavro.writer(f, parsed, records, codec="deflate", sync_interval=1000)
    cfg = conf(d, deserializer="AVRO", batchSize=40, **{"deserializer.schemaType": schema_type})
    async with SourceHarness(SpoolDirectorySource, cfg) as h:
        events = await h.events(250)
        await wait_until(lambda: (d / "f.avro.COMPLETED").exists(), what="retired")
    got = [fastavro.schemaless_reader(io.BytesIO(e.body), parsed) for e in events]
    assert got == records
    if schema_type == "HASH":
        canon = fastavro.schema.to_parsing_canonical_form(parsed)
        fp = fastavro.schema.fingerprint(canon, "CRC-64-AVRO")
        assert {e.headers["flume.avro.schema.hash"] for e in events} == {fp}
    else:
        literal = events[0].headers["flume.avro.schema.literal"]
        assert json.loads(literal)["name"] == "t.Rec"


@on_uvloop
async def test_avro_restart_mid_file_and_corrupt_file(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    d.mkdir()
    parsed = fastavro.parse_schema(SCHEMA)
    records = [{"n": i, "s": "x" * 50} for i in range(300)]
    with open(d / "a.avro", "wb") as f:
        fastavro.writer(f, parsed, records, sync_interval=2000)
    os.utime(d / "a.avro", (1_000_000, 1_000_000))
    (d / "b.avro").write_bytes(b"Obj\x01 definitely not avro")
    cfg = conf(d, deserializer="AVRO", batchSize=25, maxBackoff=20)
    async with SourceHarness(SpoolDirectorySource, cfg, capacity=60, transaction_capacity=25,
                             keep_alive=0.01) as h:  # fmt: skip
        await wait_until(lambda: h.source.counter.ChannelWriteFail >= 2, what="push-back")
        await h.source.stop()  # stopped while the channel is full
        first = await take_all(h)
    assert len(first) == 50
    async with SourceHarness(SpoolDirectorySource, cfg) as h2:
        rest = await h2.events(250)
        await wait_until(lambda: (d / "b.avro.FAILED").exists(), what="corrupt set aside")
        assert h2.source.counter.EventReadFail == 1
    got = [fastavro.schemaless_reader(io.BytesIO(e.body), parsed)["n"] for e in first + rest]
    assert got == list(range(300))
    assert (d / "a.avro.COMPLETED").exists()


@on_uvloop
async def test_blob_whole_file_and_split_at_max(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    d.mkdir()
    blob = os.urandom(5000)
    (d / "one.bin").write_bytes(blob)
    os.utime(d / "one.bin", (1_000_000, 1_000_000))
    (d / "empty.bin").write_bytes(b"")
    os.utime(d / "empty.bin", (2_000_000, 2_000_000))
    big = os.urandom(2500)
    (d / "two.bin").write_bytes(big)
    os.utime(d / "two.bin", (3_000_000, 3_000_000))
    cfg = conf(
        d,
        deserializer="org.apache.flume.sink.solr.morphline.BlobDeserializer$Builder",
        **{"deserializer.maxBlobLength": 1000, "basenameHeader": True},
    )
    async with SourceHarness(SpoolDirectorySource, cfg) as h:
        events = await h.events(8)
        await wait_until(lambda: (d / "two.bin.COMPLETED").exists(), what="retired")
    assert b"".join(e.body for e in events[:5]) == blob
    assert b"".join(e.body for e in events[5:]) == big
    assert [len(e.body) for e in events[5:]] == [1000, 1000, 500]
    assert (d / "empty.bin.COMPLETED").exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"deserializer": "JSON"}, "deserializer"),
        ({"includePattern": "(["}, "includePattern"),
        ({"inputCharset": "UTF-16"}, "not ASCII-compatible"),
        ({"inputCharset": "nope"}, "unknown charset"),
        ({"decodeErrorPolicy": "DROP"}, "decodeErrorPolicy"),
        ({"consumeOrder": "newest"}, "consumeOrder"),
        ({"deletePolicy": "later"}, "deletePolicy"),
        ({"batchSize": 0}, "batchSize"),
    ],
)
def test_config_errors_name_the_key(extra: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse(SpoolDirectorySource.Config, {"spoolDir": "/x", **extra}, "sources.r1")
    assert needle in str(ei.value)


def test_config_missing_spooldir() -> None:
    with pytest.raises(ConfigError, match="spoolDir"):
        parse(SpoolDirectorySource.Config, {}, "sources.r1")


def test_flume_properties_file_keys() -> None:
    text = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = org.apache.flume.source.SpoolDirectorySource
a1.sources.r1.spoolDir = /data/in
a1.sources.r1.channels = c1
a1.sources.r1.deserializer = AVRO
a1.sources.r1.deserializer.schemaType = LITERAL
a1.sources.r1.deletePolicy = immediate
a1.sources.r1.bufferMaxLines = 100
a1.channels.c1.type = memory
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
"""
    spec = build_agent(properties_to_document(text), "a1", "flume.properties")
    cfg = spec.sources["r1"].config
    assert cfg.kind == "AVRO" and cfg.schemaType == "LITERAL"
    assert cfg.deletePolicy == "immediate" and cfg.spoolDir == "/data/in"


# -- hostile local files (issue 9, point 2) ------------------------------------------


@on_uvloop
async def test_symlinks_out_of_the_spool_directory_are_never_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A symlinked directory and a symlinked file pointing outside: nothing outside is read,
    renamed or deleted (deletePolicy immediate, recursive search); the real file is."""
    d = tmp_path / "spool"
    d.mkdir()
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    write_lines(secret_dir / "shadow.log", 900, 910)
    (secret_dir / "shadow.log").chmod(0o600)
    write_lines(tmp_path / "passwd", 950, 960)
    (d / "linkdir").symlink_to(secret_dir, target_is_directory=True)
    (d / "linkfile.log").symlink_to(tmp_path / "passwd")
    write_lines(d / "real.log", 0, 10)
    cfg = conf(d, deletePolicy="immediate", recursiveDirectorySearch="true")
    async with SourceHarness(SpoolDirectorySource, cfg) as h:
        events = await h.events(10)
        await wait_until(lambda: not (d / "real.log").exists(), what="real.log deleted")
        # Several more listings pass: still nothing from outside.
        scans = 0

        async def listed_again() -> bool:
            nonlocal scans
            scans += 1
            return scans > 3 and not await h.take(10, 0.05)

        await wait_until(listed_again, 10, "later listings")
    assert [e.body for e in events] == [b"line-%06d" % i for i in range(10)]
    assert (secret_dir / "shadow.log").read_bytes().startswith(b"line-000900")
    assert (tmp_path / "passwd").exists()
    assert (d / "linkfile.log").is_symlink() and (d / "linkdir").is_symlink()
    assert sorted(p.name for p in secret_dir.iterdir()) == ["shadow.log"]
    assert "symbolic link" in caplog.text
    # Rate-limited: one line for many listings.
    assert caplog.text.count("skipped 2 symbolic link(s)") == 1


@on_uvloop
async def test_symlink_loops_cost_nothing_and_stop_is_prompt(tmp_path: Path) -> None:
    """`a -> .` and `b -> .` with recursive search: the listing ends, the real file is
    consumed and the source stops when asked (the attack burnt a core and ignored SIGTERM)."""
    d = tmp_path / "spool"
    (d / "sub").mkdir(parents=True)
    (d / "a").symlink_to(".", target_is_directory=True)
    (d / "b").symlink_to(".", target_is_directory=True)
    (d / "sub" / "up").symlink_to("..", target_is_directory=True)
    write_lines(d / "sub" / "real.log", 0, 50)
    cfg = conf(d, recursiveDirectorySearch="true", pollDelay=10)
    h = SourceHarness(SpoolDirectorySource, cfg)
    async with h:
        events = await h.events(50, timeout=10)
        await wait_until(
            lambda: (d / "sub" / "real.log.COMPLETED").exists(), 10, "real.log retired"
        )
    assert [e.body for e in events] == [b"line-%06d" % i for i in range(50)]
    assert h.source._task is None  # stop() returned with its task ended


def test_tracker_pointing_outside_is_not_resumed(tmp_path: Path) -> None:
    """A tracker file edited to name a file outside the directory is not read from."""
    import asyncio

    d = tmp_path / "spool"
    (d / ".flumespool").mkdir(parents=True)
    outside = tmp_path / "outside.log"
    write_lines(outside, 0, 5)
    st = outside.stat()
    (d / ".flumespool" / TRACKER_FILE).write_text(
        json.dumps(
            {
                "path": str(outside),
                "dev": st.st_dev,
                "ino": st.st_ino,
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "pos": 0,
            }
        )
    )
    write_lines(d / "in.log", 10, 15)

    async def run() -> list[Event]:
        async with SourceHarness(SpoolDirectorySource, conf(d)) as h:
            return await h.events(5)

    events = asyncio.run(run())
    assert [e.body for e in events] == [b"line-%06d" % i for i in range(10, 15)]
    assert outside.exists() and not Path(str(outside) + ".COMPLETED").exists()
