"""syslogtcp, syslogudp and multiport_syslogtcp against real senders: util-linux `logger`,
rsyslog forwarding with octet counting, raw sockets, TLS clients."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flumed.event import Event
from flumed.sources.multiport_syslogtcp import MultiportSyslogTcpSource
from flumed.sources.syslog_parser import INCOMPLETE, INVALID, STATUS
from flumed.sources.syslogtcp import SyslogTcpSource
from flumed.sources.syslogudp import SyslogUdpSource
from flumed.sources.tcp import HIGH_WATER
from tests.support.harness import SourceHarness, on_uvloop
from tests.support.pki import Pki
from tests.util import free_port, wait_until

HOSTNAME = socket.gethostname().split(".")[0]

needs_logger = pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger absent")


async def logger(*args: str) -> None:
    """Run util-linux `logger` and check it succeeded."""
    p = await asyncio.create_subprocess_exec("logger", *args, stderr=asyncio.subprocess.PIPE)
    _, err = await p.communicate()
    assert p.returncode == 0, err.decode()


async def send_tcp(port: int, data: bytes, ctx: ssl.SSLContext | None = None) -> None:
    _, w = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1" if ctx else None
    )
    w.write(data)
    await w.drain()
    w.close()
    await w.wait_closed()


def by_body(events: list[Event]) -> dict[bytes, dict[str, str]]:
    return {e.body: e.headers for e in events}


# -- util-linux logger ---------------------------------------------------------------------
@needs_logger
@on_uvloop
async def test_logger_over_tcp_rfc3164_rfc5424_and_octet_counting() -> None:
    conf = {"host": "127.0.0.1", "port": 0, "clientIPHeader": "ip", "clientHostnameHeader": "hn"}
    async with SourceHarness(SyslogTcpSource, conf) as h:
        port = str(h.source.port)
        base = ["--tcp", "-n", "127.0.0.1", "-P", port, "-t", "flumetest"]
        await logger(*base, "--rfc3164", "-p", "local3.warning", "three one six four")
        await logger(*base, "--rfc5424", "-i", "--msgid", "MSG7", "-p", "user.err", "five")
        await logger(
            *base, "--rfc5424", "--octet-count", "--sd-id", "ex@32473", "--sd-param",
            'k="v"', "-p", "mail.info", "octets",
        )  # fmt: skip
        events = await h.events(3)
    got = {e.body.split(b" ")[-1]: e.headers for e in events}
    old = got[b"four"]
    assert (old["Facility"], old["Severity"], old["priority"]) == ("19", "4", "156")
    assert old["host"] == HOSTNAME and "version" not in old and int(old["timestamp"]) > 0
    assert old["ip"] == "127.0.0.1" and old["hn"] == "localhost"
    new = got[b"five"]
    assert (new["Facility"], new["Severity"], new["priority"], new["version"]) == (
        "1", "3", "11", "1",
    )  # fmt: skip
    assert new["app-name"] == "flumetest" and new["msgid"] == "MSG7"
    assert new["procid"].isdigit() and new["host"] == HOSTNAME
    assert "timeQuality" in new["structured-data"]
    octets = got[b"octets"]
    assert octets["priority"] == "22" and 'ex@32473 k="v"' in octets["structured-data"]
    assert all(STATUS not in hd for hd in got.values())
    assert b"flumetest: three one six four" in {e.body for e in events}


@needs_logger
@on_uvloop
async def test_logger_over_udp() -> None:
    async with SourceHarness(SyslogUdpSource, {"host": "127.0.0.1", "port": 0,
                                               "clientIPHeader": "ip"}) as h:  # fmt: skip
        port = str(h.source.port)
        base = ["--udp", "-n", "127.0.0.1", "-P", port, "-t", "udptest"]
        await logger(*base, "--rfc3164", "-p", "daemon.notice", "old style")
        await logger(*base, "--rfc5424", "--msgid", "M2", "-p", "local7.debug", "new style")
        events = await h.events(2)
    got = by_body(events)
    old = got[b"udptest: old style"]
    assert (old["Facility"], old["Severity"], old["host"], old["ip"]) == (
        "3", "5", HOSTNAME, "127.0.0.1",
    )  # fmt: skip
    new = next(hd for b, hd in got.items() if b.endswith(b"new style"))
    assert (new["Facility"], new["Severity"], new["version"], new["msgid"]) == (
        "23", "7", "1", "M2",
    )  # fmt: skip
    assert new["app-name"] == "udptest"


# -- rsyslog forwarding --------------------------------------------------------------------
@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[object]:
    """Start a private rsyslogd (foreground child): imtcp on a free port, forwarding to
    a port given later, octet-counted. Yields a function (target_port) -> input_port."""
    if shutil.which("rsyslogd") is None:
        pytest.skip("rsyslogd is not installed (CI installs the Debian package rsyslog)")
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[object] = []

    def start(target: int) -> int:
        inp = free_port()
        conf = tmp_path / "rsyslog.conf"
        # No imuxsock/imklog: this rsyslogd reads only its own TCP input.
        conf.write_text(
            f'global(workDirectory="{tmp_path}" parser.escapeControlCharactersOnReceive="off")\n'
            'module(load="imtcp")\n'
            f'input(type="imtcp" address="127.0.0.1" port="{inp}")\n'
            f'action(type="omfwd" target="127.0.0.1" port="{target}" protocol="tcp" '
            'TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")\n'
        )
        log = open(tmp_path / "rsyslog.out", "wb")  # noqa: SIM115
        logs.append(log)
        p = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslog.pid")],
            stdout=log,
            stderr=log,
        )
        procs.append(p)
        return inp

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
    for f in logs:
        f.close()  # type: ignore[attr-defined]


def _accepting(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@needs_logger
@on_uvloop
async def test_rsyslog_forwarding_octet_counted(rsyslog) -> None:  # type: ignore[no-untyped-def]
    async with SourceHarness(SyslogTcpSource, {"host": "127.0.0.1", "port": 0}) as h:
        inp = rsyslog(h.source.port)
        await wait_until(lambda: _accepting(inp), 30, "rsyslogd listening")
        n = 20
        for i in range(n):
            await logger("--tcp", "-n", "127.0.0.1", "-P", str(inp), "-t", "fwd",
                         "-p", "local0.info", f"forwarded {i}")  # fmt: skip
        # A message with a newline inside survives only with octet counting end to end.
        multi = b"<14>1 - - multi - - - one\ntwo"
        await send_tcp(inp, b"%d %s" % (len(multi), multi))
        events = await h.events(n + 1, timeout=60)
    got = by_body(events)
    for i in range(n):
        hd = next(v for b, v in got.items() if b.endswith(b"forwarded %d" % i))
        assert (hd["Facility"], hd["Severity"], hd["version"]) == ("16", "6", "1")
        assert hd["app-name"] == "fwd" and hd["host"] == HOSTNAME and STATUS not in hd
        assert int(hd["timestamp"]) > 0
    assert got[b"multi - - - one\ntwo"]["app-name"] == "multi"


# -- bad input ------------------------------------------------------------------------------
@on_uvloop
async def test_garbage_and_oversized_messages_are_kept_and_flagged() -> None:
    conf = {"host": "127.0.0.1", "port": 0, "eventSize": 100}
    async with SourceHarness(SyslogTcpSource, conf) as h:
        big = b"<13>1 - host app - - - " + b"x" * 150
        data = b"not syslog at all\n<13>fine\n" + big + b"\n<>\n\xff\xfe\x00\n"
        await send_tcp(h.source.port, data)
        events = await h.events(6)
        # The source keeps serving: a good message on a new connection.
        await send_tcp(h.source.port, b"<14>1 - - app - - - after\n")
        after = await h.events(1)
        counter = h.source.counter
    assert [e.body for e in events] == [
        b"not syslog at all", b"<13>fine", big[13:100], big[100:], b"<>", b"\xff\xfe\x00",
    ]  # fmt: skip
    statuses = [e.headers.get(STATUS) for e in events]
    assert statuses == [INVALID, None, INCOMPLETE, INVALID, INVALID, INVALID]
    assert events[2].headers["host"] == "host"
    assert events[1].headers == {"Facility": "1", "Severity": "5"}
    assert after[0].body == b"app - - - after"
    assert counter.EventReadFail == 4
    assert counter.EventReceivedCount == counter.EventAcceptedCount == 7


# -- TLS ------------------------------------------------------------------------------------
@on_uvloop
async def test_tls(pki: Pki) -> None:
    pem = pki.server
    client = pki.client_context()
    conf = {"host": "127.0.0.1", "port": 0, "ssl": "true", "certificate": str(pem)}
    async with SourceHarness(SyslogTcpSource, conf) as h:
        port = h.source.port
        # A plain-text client gets nothing in; the TLS clients after it are served.
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"<13>1 - - plain - - - not over tls\n")
        await w.drain()
        assert await r.read() == b""
        w.close()
        await send_tcp(port, b"<13>1 - - app - - - newline framed\n", client)
        await send_tcp(port, b"27 <13>1 - - app - - - octets", client)
        events = await h.events(2)
    assert sorted(e.body for e in events) == [b"app - - - newline framed", b"app - - - octets"]
    assert all(e.headers["app-name"] == "app" for e in events)


# -- push-back ------------------------------------------------------------------------------
@on_uvloop
async def test_tcp_pushes_back_when_the_channel_is_full() -> None:
    n = 100_000
    data = b"".join(b"<13>1 - - app - - - msg %08d\n" % i for i in range(n))
    conf = {"host": "127.0.0.1", "port": 0}
    async with SourceHarness(
        SyslogTcpSource, conf, capacity=1000, transaction_capacity=1000, keep_alive=0.05
    ) as h:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        sock.connect(("127.0.0.1", h.source.port))
        _, w = await asyncio.open_connection(sock=sock)
        w.write(data)
        src = h.source
        # Nobody drains: the channel fills, the source holds its batch and stops reading,
        # and the sender's data stays in its own buffer.
        await wait_until(lambda: src.counter.ChannelWriteFail > 0, 30, "a refused batch")
        conn = next(iter(src._connections))
        assert conn.transport is not None
        await wait_until(lambda: not conn.transport.is_reading(), 10, "the socket paused")
        assert h.channel.size == 1000
        assert conn.buffered <= HIGH_WATER + (1 << 20)  # bounded memory while held
        assert w.transport.get_write_buffer_size() > 0  # the sender is held back
        # Drain: everything arrives, once, in order.
        got: list[bytes] = []
        async with asyncio.timeout(120):
            while len(got) < n:
                got += [e.body for e in await h.take(1000, 5.0)]
        await w.drain()
        w.close()
        await w.wait_closed()
    assert got == [b"app - - - msg %08d" % i for i in range(n)]
    assert src.counter.EventAcceptedCount == n


@on_uvloop
async def test_udp_buffers_a_bounded_amount_then_counts_drops() -> None:
    conf = {"host": "127.0.0.1", "port": 0, "maxBufferedDatagrams": 10}
    async with SourceHarness(
        SyslogUdpSource, conf, capacity=20, transaction_capacity=20, keep_alive=0.05
    ) as h:
        loop = asyncio.get_running_loop()
        tx, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=("127.0.0.1", h.source.port)
        )
        sent = 300
        for i in range(sent):
            tx.sendto(b"<13>1 - - app - - - d%d\n" % i)
            await asyncio.sleep(0)  # let the loop read it: no kernel drops in this test
        tx.close()
        c = h.source.counter
        await wait_until(lambda: c.EventDroppedCount > 0, 30, "drops")
        got: list[Event] = []
        # Drain until every datagram is either delivered or counted as dropped.
        async with asyncio.timeout(60):
            while len(got) + c.EventDroppedCount < sent:
                got += await h.take(100, 1.0)
    assert len(got) + c.EventDroppedCount == sent
    assert len({e.body for e in got}) == len(got)
    assert c.EventReceivedCount == len(got)


# -- multiport --------------------------------------------------------------------------------
@on_uvloop
async def test_multiport_ports_port_header_and_charsets() -> None:
    p1, p2 = free_port(), free_port()
    conf = {
        "host": "127.0.0.1",
        "ports": f"{p1} {p2}",
        "portHeader": "port",
        f"charset.port.{p2}": "ISO-8859-1",
        "batchSize": 2,
    }
    async with SourceHarness(MultiportSyslogTcpSource, conf) as h:
        latin = b"<13>1 - host app - - - caf\xe9\n"
        await send_tcp(p1, latin + b"<14>Mar  1 12:00:00 h1 one\n" + b"junk\n")
        await send_tcp(p2, latin + b"<15>1 2024-03-15T12:00:00Z h2 two - - - 2\n")
        events = await h.events(5)
        bad = h.source.counter.EventReadFail
    on = {(e.headers.get("port"), e.body): e.headers for e in events}
    # Not UTF-8 on the default port: Invalid, only the status (and the port) header.
    assert on[(str(p1), latin[:-1])] == {STATUS: INVALID, "port": str(p1)}
    ok = on[(str(p2), b"app - - - caf\xe9")]
    assert ok["Priority"] == "13" and ok["Version"] == "1" and ok["host"] == "host"
    assert "priority" not in ok and int(ok["timestamp"]) > 0
    old = on[(str(p1), b"one")]
    assert old["Priority"] == "14" and old["host"] == "h1" and "Version" not in old
    assert on[(str(p1), b"junk")] == {STATUS: INVALID, "port": str(p1)}
    two = on[(str(p2), b"two - - - 2")]
    assert two["app-name"] == "two" and two["timestamp"] == "1710504000000"
    assert bad == 2
