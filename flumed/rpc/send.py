"""`flumed send`: send a file's (or stdin's) lines as events over Avro RPC.

The counterpart of `flume-ng avro-client`: one event per line (the line without its
`\\n` or `\\r\\n`), headers from `--header k=v` and `-R FILE` (lines `k=v`), sent with
`appendBatch` in batches. Exit status: 0 when every batch was answered OK, 1 when
the receiver refused or did not answer (a message on stderr says which), 2 for bad
usage. A summary (events, batches, bytes, rate) goes to stderr at the end; on a terminal,
progress is shown while a large file is sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import ssl
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

from flumed.event import Event
from flumed.rpc.avro_client import AvroRpcClient, RpcError
from flumed.rpc.avro_protocol import Status
from flumed.tls import client_context


def _header(text: str) -> tuple[str, str]:
    k, sep, v = text.partition("=")
    if not sep or not k:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return k, v


def add_parser(sub: Any) -> None:
    """Add the `send` command to the `flumed` command's subparsers."""
    p = sub.add_parser(
        "send",
        help="send lines as events to an Avro source (like flume-ng avro-client)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-H", "--host", required=True, help="the Avro source's host")
    p.add_argument("-p", "--port", type=int, required=True, help="the Avro source's port")
    p.add_argument("-F", "--filename", help="file to send (default: standard input)")
    p.add_argument(
        "--header", action="append", type=_header, default=[], metavar="K=V", help="a header"
    )
    p.add_argument("-R", "--headerFile", dest="header_file", help="file of K=V header lines")
    p.add_argument("--batch-size", type=int, default=100, help="events per call (100)")
    p.add_argument("--compression-type", choices=["none", "deflate"], default="none")
    p.add_argument("--compression-level", type=int, default=6, choices=range(10))
    p.add_argument("--ssl", action="store_true", help="use TLS")
    p.add_argument("--truststore", help="PEM file of CA certificates to trust")
    p.add_argument("--trust-all-certs", action="store_true", help="do not check the server")
    p.add_argument("--timeout", type=float, default=20.0, help="connect/request timeout (s)")
    p.set_defaults(func=cmd_send)


def _read_headers(path: str) -> dict[str, str]:
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, v = _header(line)
                out[k.strip()] = v.strip()
    return out


def _batches(stream: IO[bytes], headers: dict[str, str], size: int) -> Iterator[list[Event]]:
    batch: list[Event] = []
    for line in stream:
        if line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        batch.append(Event(line, dict(headers)))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class Progress:
    """Counts what was acknowledged; prints a summary, and progress on a terminal."""

    def __init__(self, total_bytes: int | None, out: IO[str] | None = None) -> None:
        self.out = out or sys.stderr
        self.total = total_bytes
        self.events = self.batches = self.bytes = 0
        self.start = time.monotonic()
        self._shown = 0.0
        self.live = self.out.isatty()

    def acked(self, batch: list[Event]) -> None:
        self.events += len(batch)
        self.batches += 1
        self.bytes += sum(len(e.body) + 1 for e in batch)
        now = time.monotonic()
        if self.live and now - self._shown >= 0.5:
            self._shown = now
            pct = f" ({100 * self.bytes / self.total:.0f}%)" if self.total else ""
            rate = self.events / max(now - self.start, 1e-9)
            self.out.write(
                f"\r{self.events:,} events, {self.bytes / 1e6:,.1f} MB{pct}, {rate:,.0f} events/s"
            )
            self.out.flush()

    def summary(self) -> str:
        secs = max(time.monotonic() - self.start, 1e-9)
        return (
            f"{self.events:,} events in {self.batches:,} batches ({self.bytes:,} bytes) "
            f"acknowledged in {secs:.2f} s: {self.events / secs:,.0f} events/s, "
            f"{self.bytes / secs / 1e6:,.1f} MB/s"
        )

    def done(self) -> None:
        if self.live:
            self.out.write("\r\x1b[K")
        print(f"flumed send: {self.summary()}", file=self.out, flush=True)


async def _send(
    args: argparse.Namespace, headers: dict[str, str], stream: IO[bytes], progress: Progress
) -> int:
    context = None
    if args.ssl:
        context = client_context(args.truststore, args.trust_all_certs)
    client = AvroRpcClient(
        args.host,
        args.port,
        connect_timeout=args.timeout,
        request_timeout=args.timeout,
        deflate_level=args.compression_level if args.compression_type == "deflate" else None,
        ssl_context=context,
    )
    loop = asyncio.get_running_loop()
    batches = _batches(stream, headers, args.batch_size)
    try:
        await client.connect()
        while True:
            # Reading a pipe may block: keep it off the event loop.
            batch = await loop.run_in_executor(None, next, batches, None)
            if batch is None:
                break
            status = await client.append_batch(batch)
            if status is not Status.OK:
                print(
                    f"flumed send: {client.remote} answered {status.name} after "
                    f"{progress.events} events were acknowledged",
                    file=sys.stderr,
                )
                return 1
            progress.acked(batch)
    except RpcError as e:
        print(f"flumed send: {e} ({progress.events} events were acknowledged)", file=sys.stderr)
        return 1
    finally:
        await client.close()
        progress.done()
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        print("flumed send: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        headers = _read_headers(args.header_file) if args.header_file else {}
    except (OSError, argparse.ArgumentTypeError) as e:
        print(f"flumed send: header file {args.header_file}: {e}", file=sys.stderr)
        return 2
    headers.update(args.header)
    try:
        stream: IO[bytes] = open(args.filename, "rb") if args.filename else sys.stdin.buffer  # noqa: SIM115
    except OSError as e:
        print(f"flumed send: {args.filename}: {e.strerror}", file=sys.stderr)
        return 2
    size = None
    if args.filename:
        with contextlib.suppress(OSError):
            size = os.fstat(stream.fileno()).st_size
    try:
        return asyncio.run(_send(args, headers, stream, Progress(size)))
    except (OSError, ssl.SSLError, ValueError) as e:
        print(f"flumed send: {e}", file=sys.stderr)
        return 1
    finally:
        if args.filename:
            with contextlib.suppress(OSError):
                stream.close()
