"""Sink hdfs over WebHDFS/HttpFS against tests/support/webhdfs_server.py (a double written
from Apache's WebHDFS REST docs; no real HDFS runs here): the two-step CREATE/APPEND, RENAME
on roll, MKDIRS, user.name/doas, RemoteException names, and failures: permission, lease,
quota, a stalled datanode, a write that landed without an answer, the namenode down."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flumed.channels.memory import MemoryChannel, MemoryChannelConfig
from flumed.config.keys import flatten, parse
from flumed.errors import DeliveryError
from flumed.event import Event
from flumed.lifecycle import Status
from flumed.sinks.hdfs import HDFSEventSink
from tests.support import hadoop
from tests.support.webhdfs_server import WebHdfsServer
from tests.util import wait_until

TS = 1136214245678  # 2006-01-02 15:04:05.678 UTC


def ev(i: int, **headers: str) -> Event:
    return Event(b"line %d" % i, {"timestamp": str(TS), **headers})


@pytest.fixture
async def server() -> AsyncIterator[WebHdfsServer]:
    s = await WebHdfsServer().start()
    yield s
    await s.stop()


async def make_channel() -> MemoryChannel:
    ch = MemoryChannel("c1", MemoryChannelConfig(capacity=10_000, transactionCapacity=1000))
    await ch.start()
    return ch


async def put(ch: MemoryChannel, events: list[Event]) -> None:
    async with ch.transaction() as tx:
        await tx.put_batch(events)


async def make_sink(ch: MemoryChannel, path: str, **hdfs: Any) -> HDFSEventSink:
    keys = {
        "timeZone": "UTC",
        "fileType": "DataStream",
        "rollCount": 0,
        "rollSize": 0,
        "callTimeout": 2000,
        "webhdfs": {"user": "flume"},
        **hdfs,
    }
    sink = HDFSEventSink(
        "k1", parse(HDFSEventSink.Config, flatten({"hdfs": {"path": path, **keys}}), "k1")
    )
    sink.channel = ch
    await sink.start()
    return sink


async def run_all(sink: HDFSEventSink) -> None:
    while await sink.process() is Status.READY:
        pass


def numbers(server: WebHdfsServer, pattern: str = "") -> list[int]:
    out: list[int] = []
    for p, data in sorted(server.files.items()):
        if pattern in p:
            out += [int(x) for x in re.findall(rb"line (\d+)", bytes(data))]
    return out


async def test_create_append_rename_with_the_datanode_redirect(server: WebHdfsServer):
    ch = await make_channel()
    sink = await make_sink(
        ch, f"webhdfs://{server.url}/flume/%{{host}}/%Y%m%d/%H", batchSize=10, proxyUser="etl"
    )
    await put(ch, [ev(i, host="web1") for i in range(25)])
    await run_all(sink)
    [tmp] = server.files
    assert re.fullmatch(r"/flume/web1/20060102/15/FlumeData\.\d+\.tmp", tmp)
    assert numbers(server) == list(range(25))  # acknowledged batches are on the "cluster"
    await sink.stop()
    [final] = server.files
    assert final == tmp.removesuffix(".tmp")
    nn_ops = [op for side, op, _, _ in server.requests if side == "nn"]
    dn_ops = [op for side, op, _, _ in server.requests if side == "dn"]
    assert nn_ops.count("CREATE") == 1 and nn_ops.count("APPEND") == 2
    assert dn_ops == ["CREATE", "APPEND", "APPEND"]  # the data went to the datanode
    assert "MKDIRS" in nn_ops and nn_ops[-1] == "RENAME"
    assert all(q["user.name"] == "flume" and q["doas"] == "etl" for _, _, _, q in server.requests)


async def test_hdfs_scheme_maps_to_the_webhdfs_port(server: WebHdfsServer):
    ch = await make_channel()
    sink = await make_sink(
        ch, "hdfs://127.0.0.1:8020/data", webhdfs={"port": server.port, "user": "flume"}
    )
    await put(ch, [ev(1)])
    await run_all(sink)
    await sink.stop()
    assert numbers(server) == [1]


async def test_httpfs_sends_data_without_redirect():
    server = await WebHdfsServer(httpfs=True).start()
    try:
        ch = await make_channel()
        sink = await make_sink(
            ch, f"webhdfs://{server.url}/h", webhdfs={"user": "flume", "httpfs": True}
        )
        await put(ch, [ev(i) for i in range(3)])
        await run_all(sink)
        await sink.stop()
        assert numbers(server) == [0, 1, 2]
        assert not [r for r in server.requests if r[0] == "dn"]
    finally:
        await server.stop()


async def test_sequence_file_over_webhdfs_read_by_hadoop(server: WebHdfsServer, tmp_path: Path):
    why = hadoop.missing()
    if why:
        pytest.skip(why)
    ch = await make_channel()
    sink = await make_sink(
        ch, f"webhdfs://{server.url}/seq", fileType="SequenceFile", codeC="gzip", batchSize=4
    )
    await put(ch, [ev(i) for i in range(10)])
    await run_all(sink)
    await sink.stop()
    [(path, data)] = server.files.items()
    assert path.endswith(".gz")
    local = tmp_path / "f.seq"
    local.write_bytes(bytes(data))
    got = hadoop.shared_reader().sequence_files(local)[str(local)]
    assert got["block"] and got["codec"] == "org.apache.hadoop.io.compress.GzipCodec"
    assert got["records"] == [(TS, b"line %d" % i) for i in range(10)]


@pytest.mark.parametrize(
    ("fault", "exception"),
    [
        ("deny", "AccessControlException"),
        ("quota", "DSQuotaExceededException"),
        ("lease", "AlreadyBeingCreatedException"),
    ],
)
async def test_remote_exceptions_roll_back_by_name(server: WebHdfsServer, fault, exception):
    ch = await make_channel()
    sink = await make_sink(ch, f"webhdfs://{server.url}/f", batchSize=5)
    await put(ch, [ev(i) for i in range(5)])
    await run_all(sink)  # the file exists: the next batch is an APPEND
    [path] = server.files
    if fault == "deny":
        server.deny.add("/f")
    elif fault == "quota":
        server.quota = True
    else:
        server.leased.add(path)
    await put(ch, [ev(i) for i in range(5, 10)])
    with pytest.raises(DeliveryError, match=exception) as e:
        await sink.process()
    assert (not e.value.retriable) == (fault == "deny")
    assert ch.size == 5 and numbers(server) == list(range(5))
    server.deny.clear()
    server.quota = False
    server.leased.clear()
    await run_all(sink)
    await sink.stop()
    assert numbers(server) == list(range(10))


async def test_stalled_datanode_rolls_back_then_delivers_once(server: WebHdfsServer):
    ch = await make_channel()
    sink = await make_sink(ch, f"webhdfs://{server.url}/s", batchSize=5)
    await put(ch, [ev(i) for i in range(5)])
    await run_all(sink)
    server.stall_datanode = True
    await put(ch, [ev(i) for i in range(5, 10)])
    with pytest.raises(DeliveryError, match="TimeoutError"):
        await sink.process()
    assert ch.size == 5
    server.stall_datanode = False
    server.release.set()
    await run_all(sink)
    await sink.stop()
    assert numbers(server) == list(range(10))


async def test_landed_but_unacknowledged_append_is_cut_back(server: WebHdfsServer):
    ch = await make_channel()
    sink = await make_sink(ch, f"webhdfs://{server.url}/u", batchSize=5)
    await put(ch, [ev(i) for i in range(5)])
    await run_all(sink)
    server.lose_answer = True
    await put(ch, [ev(i) for i in range(5, 10)])
    with pytest.raises(DeliveryError):
        await sink.process()
    assert numbers(server) == list(range(10))  # it landed, but the take rolled back
    server.lose_answer = False
    server.release.set()
    await run_all(sink)  # GETFILESTATUS, TRUNCATE, then the batch again
    await sink.stop()
    assert numbers(server) == list(range(10))  # no duplicate
    assert server.ops["TRUNCATE"] == 1


async def test_lost_create_answer_starts_the_file_again(server: WebHdfsServer):
    ch = await make_channel()
    sink = await make_sink(ch, f"webhdfs://{server.url}/c", batchSize=5)
    server.lose_answer = True
    await put(ch, [ev(i) for i in range(5)])
    with pytest.raises(DeliveryError):
        await sink.process()
    server.lose_answer = False
    server.release.set()
    await run_all(sink)
    await sink.stop()
    assert numbers(server) == list(range(5))


async def test_namenode_down_backs_off_and_loses_nothing(server: WebHdfsServer):
    ch = await make_channel()
    sink = await make_sink(ch, f"webhdfs://{server.url}/d", batchSize=5)
    await put(ch, [ev(i) for i in range(5)])
    await run_all(sink)
    await server.stop()
    await put(ch, [ev(i) for i in range(5, 10)])
    with pytest.raises(DeliveryError, match=r"ClientConnectorError|Cannot connect"):
        await sink.process()
    assert ch.size == 5
    await server.start()
    await run_all(sink)
    await sink.stop()
    assert numbers(server) == list(range(10))


async def test_failed_rename_is_retried(server: WebHdfsServer):
    ch = await make_channel()
    sink = await make_sink(
        ch, f"webhdfs://{server.url}/r", rollCount=3, retryInterval=0.2, batchSize=3
    )
    server.fail["RENAME"] = 2
    await put(ch, [ev(i) for i in range(3)])
    assert await sink.process() is Status.READY  # data acknowledged: the take commits
    assert sink.counter.FileRenameFailCount == 1
    await wait_until(lambda: not any(p.endswith(".tmp") for p in server.files), 10, "rename")
    assert sink.counter.FileRenameFailCount == 2
    await sink.stop()
    assert numbers(server) == [0, 1, 2]


async def test_in_use_files_of_a_previous_run_are_renamed_at_start(server: WebHdfsServer):
    server.files["/p/2006/FlumeData.1000.tmp"] = bytearray(b"line 7\n")
    server.dirs.update({"/p", "/p/2006"})
    ch = await make_channel()
    sink = await make_sink(ch, f"webhdfs://{server.url}/p/%Y")
    await wait_until(lambda: sink.counter.FilesRecoveredCount == 1, 10, "recovery")
    assert list(server.files) == ["/p/2006/FlumeData.1000"]
    await sink.stop()


async def test_swebhdfs_over_tls_with_a_private_ca(tmp_path: Path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    server = await WebHdfsServer(ssl_context=ctx).start()
    try:
        ch = await make_channel()
        sink = await make_sink(
            ch,
            f"swebhdfs://{server.url}/tls",
            webhdfs={"user": "flume", "cafile": str(cafile)},
        )
        await put(ch, [ev(i) for i in range(3)])
        await run_all(sink)
        await sink.stop()
        assert numbers(server) == [0, 1, 2]
        # Without the CA the server is not trusted: the batch rolls back.
        await put(ch, [ev(3)])
        sink = await make_sink(ch, f"swebhdfs://{server.url}/tls", webhdfs={"user": "flume"})
        with pytest.raises(DeliveryError, match=r"SSL|certificate"):
            await sink.process()
        assert ch.size == 1
        await sink.stop()
    finally:
        await server.stop()
