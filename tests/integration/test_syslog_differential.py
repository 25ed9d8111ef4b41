"""The fast syslog parse against the reference rules, on a large corpus of real and
generated messages: every header (names, values, order), every body byte, every count.

The corpus: what util-linux `logger` really sends (captured from a real socket, TCP and
UDP, RFC 3164 and RFC 5424, octet-counted), what a private rsyslogd forwards with its
standard templates (when rsyslogd is installed), generated RFC 5424 messages with
structured data, and each of those truncated at every length and mutated byte by byte.
"""

from __future__ import annotations

import itertools
import random
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flumed.sources.syslog_parser import (
    STATUS,
    ReferenceSyslogParser,
    SyslogFramer,
    SyslogParser,
)
from tests.util import free_port, wait_until_sync

# 2024-03-15T12:00:00Z: "now" for year inference and the multiport receive time.
NOW = 1710504000.0

VARIANTS = [
    {"keep_fields": "none"},
    {"keep_fields": "all"},
    {"keep_fields": "timestamp hostname"},
    {"keep_fields": "none", "flavor": "multiport", "utc3164": True},
    {"keep_fields": "all", "flavor": "multiport", "utc3164": True},
]


def frame(data: bytes) -> list[bytes]:
    """Messages of one TCP stream, as the sources frame them."""
    f = SyslogFramer(65536)
    lines, _ = f.feed(data)
    more, _ = f.close()
    return lines + more


class Capture:
    """A TCP (or UDP) listener on a free port that keeps every byte it receives, per
    connection (or datagram)."""

    def __init__(self, kind: int = socket.SOCK_STREAM) -> None:
        self.kind = kind
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.streams: list[bytearray] = []
        self.closed = 0
        self.lock = threading.Lock()
        if kind == socket.SOCK_STREAM:
            self.sock.listen(64)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                if self.kind == socket.SOCK_DGRAM:
                    data = self.sock.recv(65536)
                    with self.lock:
                        self.streams.append(bytearray(data))
                        self.closed += 1
                    continue
                conn, _ = self.sock.accept()
            except OSError:
                return
            buf = bytearray()
            with self.lock:
                self.streams.append(buf)
            threading.Thread(target=self._read, args=(conn, buf), daemon=True).start()

    def _read(self, conn: socket.socket, buf: bytearray) -> None:
        with conn:
            while True:
                try:
                    b = conn.recv(65536)
                except OSError:
                    b = b""
                with self.lock:
                    if not b:
                        self.closed += 1
                        return
                    buf += b

    def count(self) -> int:
        """Connections (datagrams) finished."""
        with self.lock:
            return self.closed

    def peek(self) -> list[bytes]:
        with self.lock:
            return [bytes(b) for b in self.streams]

    def close(self) -> list[bytes]:
        self.sock.close()
        return self.peek()


def logger_corpus() -> list[bytes]:
    """Messages util-linux `logger` sends over TCP and UDP in its formats."""
    tcp = Capture()
    udp = Capture(socket.SOCK_DGRAM)
    runs = [
        ["--rfc3164"],
        ["--rfc5424"],
        ["--rfc5424", "--octet-count"],
        ["--rfc5424=notq"],
        ["--rfc5424=notime"],
        ["--rfc5424=nohost"],
        ["--rfc5424", "--msgid", "ID47", "-i"],
        [
            "--rfc5424",
            "--sd-id",
            "ex@32473",
            "--sd-param",
            'a="b \\"q\\" \\]"',
            "--sd-param",
            'c=""',
        ],
        ["--rfc3164", "-i"],
        ["--rfc3164", "-p", "local7.debug", "-t", "a.b-c"],
        ["--rfc5424", "-p", "kern.emerg", "-t", "-"],
    ]
    bodies = ["plain message", "with  two  spaces", "tab\there", "utf8 é ü", "[not sd]", ""]
    sent_tcp = 0
    sent_udp = 0
    try:
        for opts, body in itertools.product(runs, bodies):
            for transport, port in (("--tcp", tcp.port), ("--udp", udp.port)):
                args = ["logger", transport, "-n", "127.0.0.1", "-P", str(port), *opts]
                if "-t" not in opts:
                    args += ["-t", "difftest"]
                subprocess.run([*args, "--", body], check=True, timeout=30)
                if transport == "--tcp":
                    sent_tcp += 1
                else:
                    sent_udp += 1
        wait_until_sync(lambda: tcp.count() >= sent_tcp, 30, "logger TCP connections")
        wait_until_sync(lambda: udp.count() >= sent_udp / 2, 30, "logger datagrams")
    finally:
        streams = tcp.close()
        grams = udp.close()
    out = [ln for s in streams for ln in frame(s)]
    out += [g.rstrip(b"\n") for g in grams]
    return [m for m in out if m]


def generated_corpus(n: int, seed: int) -> list[bytes]:
    """RFC 5424 / 3164 messages built from varied parts, valid and not."""
    rnd = random.Random(seed)
    pris = [b"<0>", b"<13>", b"<165>", b"<191>", b"<192>", b"<013>", b"<7>", b"<>", b"<1a>"]
    vers = [b"1", b"1", b"", b"2", b"12"]
    stamps = [
        b"2024-03-15T12:00:%02d.%06dZ",
        b"2024-03-15T12:00:%02d.%06d+02:00",
        b"2024-03-15T12:00:%02d.%03d-05:30",
        b"2024-03-15T12:00:%02d.%d+00:00",
        b"2024-03-15T12:00:%02dZ",
        b"2024-03-15T12:00:%02d",
        b"1970-01-01T00:00:%02d.%03dZ",
        b"1969-12-31T23:59:%02d.%03dZ",
        b"2024-02-30T12:00:%02d.%03dZ",
        b"2024-03-15T12:00:%02d.%07dZ",
        b"-",
    ]
    hosts = [b"web1", b"web2.example.com", b"-", b"a_b@c-d", b"-x", b"h\xc3\xa9", b"", b"[h]"]
    apps = [b"nginx", b"-", b"app\xff", b"a" * 48]
    pids = [b"123", b"-", b"9" * 10]
    mids = [b"ID1", b"-", b"GET"]
    sds = [
        b"-",
        b'[ex@1 a="1"]',
        b'[ex@1 a="x \\" y"][ex@2 b="]"]',
        b"[x]",
        b'[ex@1 a="unterminated',
        b"[]",
    ]
    msgs = [b"", b"hello", b"hello world", b" lead", b"\xef\xbb\xbfBOM text", b"a\tb"]
    months = [b"Jan", b"Feb", b"Mar", b"Dec", b"Foo", b"mar"]
    out = []
    for i in range(n):
        pri = rnd.choice(pris)
        if rnd.random() < 0.3:
            day = rnd.choice([b"%2d" % rnd.randint(1, 31), b"%d" % rnd.randint(1, 31), b"30"])
            ts = b"%s %s %02d:%02d:%02d" % (
                rnd.choice(months),
                day,
                rnd.randint(0, 24),
                rnd.randint(0, 59),
                rnd.randint(0, 60),
            )
            sep = rnd.choice([b" ", b" ", b" ", b"\t", b"  "])
            out.append(pri + ts + b" " + rnd.choice(hosts) + sep + rnd.choice(msgs))
            continue
        st = rnd.choice(stamps)
        if b"%" in st:
            k = st.count(b"%")
            args = (i // 50 % 60, rnd.randint(0, 999_999))[:k]
            try:
                st = st % args
            except TypeError:
                st = st % args[:1]
        head = pri + rnd.choice(vers)
        fields = [head, st, rnd.choice(hosts), rnd.choice(apps), rnd.choice(pids)]
        fields += [rnd.choice(mids), rnd.choice(sds)]
        line = b" ".join(fields)
        m = rnd.choice(msgs)
        if m:
            line += b" " + m
        out.append(line)
    return out


def mutations(lines: list[bytes], seed: int, per_line: int = 6) -> Iterator[bytes]:
    """Each line truncated at every length, and with bytes replaced by ones that matter
    to the grammar."""
    rnd = random.Random(seed)
    swaps = [b" ", b"\t", b"-", b"[", b"]", b'"', b"\\", b"0", b"9", b"Z", b":", b".", b"\xff"]
    for ln in lines:
        for i in range(len(ln)):
            yield ln[:i]
        for _ in range(per_line):
            if ln:
                i = rnd.randrange(len(ln))
                yield ln[:i] + rnd.choice(swaps) + ln[i + 1 :]


def check_same(corpus: list[bytes], batch: int = 500) -> int:
    """Both parsers, every variant, in batches (the fast path keeps state across a
    batch); returns how many messages the fast parser took."""
    for kw in VARIANTS:
        fast = SyslogParser(clock=lambda: NOW, **kw)  # type: ignore[arg-type]
        ref = ReferenceSyslogParser(clock=lambda: NOW, **kw)  # type: ignore[arg-type]
        for i in range(0, len(corpus), batch):
            lines = corpus[i : i + batch]
            got, bad = fast.parse(lines)
            want, want_bad = ref.parse(lines)
            assert bad == want_bad, (kw, lines)
            assert len(got) == len(want) == len(lines)
            for ln, a, b in zip(lines, got, want, strict=True):
                assert list(a.headers.items()) == list(b.headers.items()), (kw, ln)
                assert a.body == b.body, (kw, ln)
    return len(corpus)


def test_generated_corpus_and_its_mutations_parse_the_same() -> None:
    base = generated_corpus(4000, seed=3164)
    corpus = base + list(mutations(base[:600], seed=5424))
    assert check_same(corpus) > 20_000
    # The corpus really exercises the fast path: most valid ones parse with a stamp.
    events, _ = SyslogParser(clock=lambda: NOW).parse(base)
    assert sum("timestamp" in e.headers and STATUS not in e.headers for e in events) > 600


def test_repeated_stamps_and_seconds_parse_the_same() -> None:
    # Runs of equal stamps and of one second with varying fractions: the caches that
    # carry from one message to the next.
    lines = []
    for i in range(3000):
        sec, frac = divmod(i, 7)
        ts = b"2024-03-15T12:%02d:%02d.%06d+01:00" % (sec // 60 % 60, sec % 60, frac * 1234)
        if i % 5 == 0:
            ts = b"2024-03-15T12:00:00.123456+01:00"
        lines.append(b"<165>1 %s host%d app %d - - msg %d" % (ts, i % 3, i % 7, i))
        lines.append(b"<13>Mar %2d 12:00:%02d host%d tag: msg %d" % (i % 28 + 1, i % 60, i % 3, i))
    check_same(lines, batch=1000)


@pytest.mark.skipif(shutil.which("logger") is None, reason="util-linux logger is not installed")
def test_real_logger_messages_parse_the_same() -> None:
    real = logger_corpus()
    assert len(real) >= 100
    assert any(m.startswith(b"<13>1 ") for m in real) and any(b">Mar" in m or b">Nov" in m or
               m[m.find(b">") + 1 : m.find(b">") + 2].isalpha() for m in real)  # fmt: skip
    check_same(real + list(mutations(real, seed=7)))


@pytest.fixture
def rsyslog_forwarder(tmp_path: Path) -> Iterator[tuple[int, Capture]]:
    """A private rsyslogd: imtcp on a free port, forwarding each message once per
    standard template to a capture listener."""
    if shutil.which("rsyslogd") is None:
        pytest.skip("rsyslogd is not installed (Debian package rsyslog): no forwarded corpus")
    cap = Capture()
    inp = free_port()
    templates = [
        ("RSYSLOG_SyslogProtocol23Format", "octet-counted"),
        ("RSYSLOG_ForwardFormat", "traditional"),
        ("RSYSLOG_TraditionalForwardFormat", "traditional"),
    ]
    actions = "".join(
        f'action(type="omfwd" target="127.0.0.1" port="{cap.port}" protocol="tcp" '
        f'TCP_Framing="{framing}" template="{tpl}")\n'
        for tpl, framing in templates
    )
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{tmp_path}" parser.escapeControlCharactersOnReceive="off")\n'
        'module(load="imtcp")\n'
        f'input(type="imtcp" address="127.0.0.1" port="{inp}")\n' + actions
    )
    with open(tmp_path / "rsyslog.out", "wb") as log:
        p = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslog.pid")],
            stdout=log,
            stderr=log,
        )
        try:
            yield inp, cap
        finally:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
            cap.close()


def _accepting(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_rsyslog_forwarded_messages_parse_the_same(
    rsyslog_forwarder: tuple[int, Capture],
) -> None:
    inp, cap = rsyslog_forwarder
    wait_until_sync(lambda: _accepting(inp), 30, "rsyslogd listening")
    sent = [m for m in generated_corpus(300, seed=99) if m]
    sent += [b"<14>1 - - multi - - - one", b"<30>Mar  5 01:02:03 h tag[1]: old style"]
    with socket.create_connection(("127.0.0.1", inp)) as s:
        s.sendall(b"".join(b"%d %s" % (len(m), m) for m in sent))
    # rsyslogd keeps its forwarding connections open: wait for the messages, not for EOF
    # (each one comes back once per template).
    wait_until_sync(
        lambda: sum(len(frame(b)) for b in cap.peek()) >= 3 * len(sent), 60, "forwarded"
    )
    lines = [ln for b in cap.peek() for ln in frame(b)]
    check_same(lines + list(mutations(lines[:200], seed=11)))
