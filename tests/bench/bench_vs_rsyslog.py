"""flumed against rsyslog in one run, on the same generator and the same machine.

`python -m tests.bench vs_rsyslog` (`FLUMED_BENCH_N` messages per run, 300,000 by
default). Four paths, each flumed run interleaved with an rsyslog run, median of 3:

- raw lines: netcat → memory → file_roll against imtcp → omfile (`%rawmsg%`);
- parsed RFC 3164 and parsed RFC 5424: syslogtcp (keepFields = all) → memory →
  file_roll against imtcp → omfile with a template of parsed properties;
- durable: syslogtcp → file channel (fsync per commit) → file_roll against imtcp →
  omfile behind a disk-assisted action queue that syncs its queue files
  (`queue.syncqueuefiles="on"`), fewer messages (rsyslog's disk queue is slow).

The generator is one TCP connection sending a prepared buffer of 100-byte messages
from a thread of this process; a run ends when the output file holds every message
(this process tails it). Both daemons are real processes started here; rsyslogd is a
private one (its own config, work directory and pid file). Prints a clear skip when
rsyslogd is not installed. The machine may be shared: the ratio is what to compare.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.util import free_port

N = int(os.environ.get("FLUMED_BENCH_N", "300000"))
N_DURABLE = max(N // 30, 2000)
ROUNDS = 3


def lines3164(n: int) -> bytes:
    """100-byte RFC 3164 lines, the stamp changing every 1000."""
    out = []
    for i in range(n):
        sec = i // 1000
        head = b"<13>Nov %2d %02d:%02d:%02d web%d.example.com app[%d]: " % (
            1 + sec // 86400 % 28,
            sec // 3600 % 24,
            sec // 60 % 60,
            sec % 60,
            i % 8,
            1000 + i % 50,
        )
        out.append(head + (b"message %d " % i).ljust(99 - len(head), b"x") + b"\n")
    return b"".join(out)


def lines5424(n: int) -> bytes:
    """About 100-byte RFC 5424 lines (rsyslog's shape: microsecond stamps with zone)."""
    out = []
    for i in range(n):
        sec, us = divmod(i, 1000)
        head = b"<165>1 2024-05-01T10:%02d:%02d.%06d+02:00 web%d.example.com app %d - - " % (
            sec // 60 % 60,
            sec % 60,
            us * 997 % 1_000_000,
            i % 8,
            1000 + i % 50,
        )
        out.append(head + (b"message %d " % i).ljust(max(99 - len(head), 12), b"x") + b"\n")
    return b"".join(out)


def wait_lines(path: Path, n: int, alive: Callable[[], bool], timeout: float) -> None:
    """Tail `path` (created later, maybe; a directory: the files in it) until it holds
    `n` newlines."""
    deadline = time.monotonic() + timeout
    count = 0
    pos = 0
    if path.is_dir():
        while not (files := sorted(path.iterdir())):
            if time.monotonic() > deadline or not alive():
                raise RuntimeError(f"no file written in {path}")
            time.sleep(0.01)
        if len(files) > 1:
            raise RuntimeError(f"{path}: more than one output file")
        path = files[0]
    while count < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path.name}: {count} of {n} lines after {timeout}s")
        if not alive():
            raise RuntimeError("the daemon exited")
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read()
        except FileNotFoundError:
            data = b""
        if data:
            pos += len(data)
            count += data.count(b"\n")
        else:
            time.sleep(0.01)


def wait_port(port: int, alive: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if not alive() or time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port}")
        time.sleep(0.05)


def send_and_wait(port: int, data: bytes, out: Path, n: int, alive: Callable[[], bool]) -> float:
    """Seconds from the first byte sent to `n` lines in `out`."""
    sock = socket.create_connection(("127.0.0.1", port))
    t0 = time.perf_counter()
    sender = threading.Thread(target=sock.sendall, args=(data,))
    sender.start()
    try:
        wait_lines(out, n, alive, timeout=600)
    finally:
        sender.join()
        sock.close()
    return time.perf_counter() - t0


# -- flumed ----------------------------------------------------------------------------
def flumed_conf(kind: str, port: int, out: Path, state: Path) -> str:
    if kind == "raw":
        source = f'type = "netcat"\nbind = "127.0.0.1"\nport = {port}\nack-every-event = false'
    else:
        source = f'type = "syslogtcp"\nhost = "127.0.0.1"\nport = {port}\nkeepFields = "all"'
    if kind == "durable":
        channel = (
            f'type = "file"\ncheckpointDir = "{state}/cp"\ndataDirs = "{state}/data"\n'
            "transactionCapacity = 20000"
        )
    else:
        channel = 'type = "memory"\ncapacity = 200000\ntransactionCapacity = 20000'
    return f"""
[agents.a1.sources.r1]
{source}
channels = ["c1"]
[agents.a1.channels.c1]
{channel}
[agents.a1.sinks.k1]
type = "file_roll"
channel = "c1"
"sink.directory" = "{out}"
"sink.rollInterval" = 0
"sink.batchSize" = 20000
"""


def run_flumed(kind: str, data: bytes, n: int, extra: list[str] | None = None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        port = free_port()
        conf = Path(tmp) / "a.toml"
        conf.write_text(flumed_conf(kind, port, out, Path(tmp)))
        args = [sys.executable, "-m", "flumed", "agent", "-f", str(conf), "-n", "a1"]
        proc = subprocess.Popen([*args, *(extra or [])], stderr=subprocess.DEVNULL)
        try:
            alive = lambda: proc.poll() is None  # noqa: E731
            wait_port(port, alive)
            return send_and_wait(port, data, out, n, alive)
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- rsyslog ---------------------------------------------------------------------------
PARSED_TEMPLATE = (
    'template(name="parsed" type="string" string="%pri% %timereported:::date-unixtimestamp% '
    '%hostname% %app-name% %procid% %msgid% %msg%\\n")\n'
)


def rsyslog_conf(kind: str, port: int, out: Path, work: Path) -> str:
    template = "parsed" if kind != "raw" else "raw"
    queue = ""
    if kind == "durable":
        queue = (
            ' queue.type="Disk" queue.filename="q" queue.syncqueuefiles="on"'
            ' queue.saveOnShutdown="on"'
        )
    return (
        f'global(workDirectory="{work}" parser.escapeControlCharactersOnReceive="off"'
        ' maxMessageSize="8k")\n'
        'module(load="imtcp")\n'
        'template(name="raw" type="string" string="%rawmsg%\\n")\n'
        + PARSED_TEMPLATE
        + f'input(type="imtcp" address="127.0.0.1" port="{port}")\n'
        f'action(type="omfile" file="{out}" template="{template}"{queue})\n'
    )


def run_rsyslog(kind: str, data: bytes, n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        out = Path(tmp) / "out.log"
        conf = Path(tmp) / "rsyslog.conf"
        conf.write_text(rsyslog_conf(kind, port, out, Path(tmp)))
        cmd = ["rsyslogd", "-n", "-f", str(conf), "-i", str(Path(tmp) / "pid")]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            alive = lambda: proc.poll() is None  # noqa: E731
            wait_port(port, alive)
            return send_and_wait(port, data, out, n, alive)
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def compare(label: str, kind: str, data: bytes, n: int) -> None:
    f_times: list[float] = []
    r_times: list[float] = []
    for _ in range(ROUNDS):  # interleaved: the machine's load changes under us
        f_times.append(run_flumed(kind, data, n))
        r_times.append(run_rsyslog(kind, data, n))
    f = n / statistics.median(f_times)
    r = n / statistics.median(r_times)
    mb = len(data) / 1e6 / statistics.median(f_times)
    print(
        f"{label}: flumed {f:,.0f} events/s ({mb:.1f} MB/s), rsyslog {r:,.0f} events/s, "
        f"ratio {f / r:.2f}x (median of {ROUNDS}, {n:,} messages)",
        flush=True,
    )


def main() -> None:
    if shutil.which("rsyslogd") is None:
        print("vs_rsyslog: skipped (rsyslogd is not installed; Debian package rsyslog)")
        return
    raw = lines3164(N)
    compare("raw lines (netcat -> memory -> file_roll vs imtcp -> omfile)", "raw", raw, N)
    compare("parsed RFC 3164 (syslogtcp keepFields=all -> memory -> file_roll)", "3164", raw, N)
    compare("parsed RFC 5424 (syslogtcp keepFields=all -> memory -> file_roll)", "5424",
            lines5424(N), N)  # fmt: skip
    compare(
        "durable (syslogtcp -> file channel, fsync -> file_roll vs disk queue, fsync)",
        "durable",
        lines3164(N_DURABLE),
        N_DURABLE,
    )


if __name__ == "__main__":
    main()
