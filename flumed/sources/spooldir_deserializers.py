"""The spooldir source's deserializers (Flume's LineDeserializer, BlobDeserializer and
AvroEventDeserializer): each reads one file from a committed position and hands out
bodies in batches; `pos` is where a restart resumes (bytes, or records for Avro).
Called by flumed.sources.spooldir only."""

from __future__ import annotations

import asyncio
import codecs
import io
import itertools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import fastavro
import fastavro.schema

if TYPE_CHECKING:
    from flumed.sources.spooldir import SpoolDirectorySource

#: Bytes read from a file at once (LINE): big enough that the per-read cost vanishes.
CHUNK = 1 << 20
#: A line with no newline within this many bytes is cut here, so memory stays bounded.
MAX_PENDING = 64 << 20


class _FileFailed(Exception):
    """The current file cannot be read further (decode error under FAIL, corrupt Avro)."""


class _Current:
    """The file being consumed: identity, what it looked like when picked up, headers."""

    __slots__ = ("dev", "fd", "headers", "ino", "mtime_ns", "path", "size", "start")

    def __init__(self, path: str, fd: int, st: os.stat_result, start: int) -> None:
        self.path = path
        self.fd = fd
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.size = st.st_size
        self.mtime_ns = st.st_mtime_ns
        self.start = start
        self.headers: dict[str, str] = {}

    def record(self, pos: int) -> dict[str, Any]:
        return {
            "path": self.path,
            "dev": self.dev,
            "ino": self.ino,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "pos": pos,
        }


class _LineReader:
    """Lines of a text file (Flume's LineDeserializer). `pos` is the byte offset after
    the last line handed out; lines longer than maxLineLength characters are split."""

    def __init__(self, src: SpoolDirectorySource, cur: _Current) -> None:
        cfg = src.config
        self.src = src
        self.cur = cur
        self.pos = cur.start
        self._read_pos = cur.start
        self._rest = b""
        self._bodies: list[bytes] = []
        self._ends: list[int] | None = None  # None: body i consumed len(body) + 1 bytes
        self._idx = 0
        self._failure: str | None = None
        self._eof = False
        self._max = cfg.maxLineLength
        self._in = codecs.lookup(cfg.inputCharset).name
        self._out = codecs.lookup(cfg.outputCharset).name
        self._errors = {"FAIL": "strict", "REPLACE": "replace", "IGNORE": "ignore"}[
            cfg.decodeErrorPolicy
        ]

    async def read(self, n: int) -> list[bytes] | None:
        """Up to `n` bodies; [] when more input is needed; None at EOF.

        Raises:
            _FileFailed: the file cannot be decoded (after its good lines were handed out).
        """
        while self._idx >= len(self._bodies):
            if self._failure is not None:
                raise _FileFailed(self._failure)
            if self._eof:
                return None
            await self._fill()
        i = self._idx
        batch = self._bodies[i : i + n]
        self._idx = i + len(batch)
        if self._ends is None:
            self.pos += sum(map(len, batch)) + len(batch)
        else:
            self.pos = self._ends[self._idx - 1]
        return batch

    async def _fill(self) -> None:
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, os.pread, self.cur.fd, CHUNK, self._read_pos)
        base = self._read_pos - len(self._rest)
        self._bodies, self._ends, self._idx = [], None, 0
        if not data:
            self._eof = True
            if self._rest:
                # A last line without a newline still is a line (Flume's readLine).
                rest, self._rest = self._rest, b""
                self._slow([rest], base, final=True)
            return
        self._read_pos += len(data)
        if self._rest:
            data = self._rest + data
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) < MAX_PENDING:
                self._rest = data
            else:
                # An endless line: cut it here, so memory stays bounded.
                self._rest = b""
                self._slow([data], base, final=True)
            return
        self._rest = data[cut + 1 :]
        block = data[:cut]
        lines = block.split(b"\n")
        if self._in == self._out and max(map(len, lines)) <= self._max:
            try:
                block.decode(self._in)
            except UnicodeDecodeError:
                pass
            else:
                self._bodies = lines
                return
        self._slow(lines, base, final=False)

    def _slow(self, lines: list[bytes], base: int, final: bool) -> None:
        """Decode, split long lines and re-encode, line by line; ends are exact offsets."""
        bodies: list[bytes] = []
        ends: list[int] = []
        pos = base
        bad = 0
        mx = self._max
        for ln in lines:
            start = pos
            pos += len(ln) + (0 if final else 1)
            try:
                text = ln.decode(self._in)
            except UnicodeDecodeError as e:
                if self._errors == "strict":
                    self._failure = (
                        f"cannot decode byte offset {start + e.start} as {self._in} ({e.reason}); "
                        "decodeErrorPolicy is FAIL"
                    )
                    self._eof = True
                    break
                bad += 1
                text = ln.decode(self._in, self._errors)
            if len(text) <= mx:
                bodies.append(text.encode(self._out, "replace"))
                ends.append(pos)
                continue
            pieces = [text[j : j + mx] for j in range(0, len(text), mx)]
            bodies += [p.encode(self._out, "replace") for p in pieces]
            # A batch ending inside a long line resumes at the line's start (repeats pieces).
            ends += [start] * (len(pieces) - 1) + [pos]
        if bad:
            self.src.counter.EventReadFail += bad
            self.src.warn(
                "decode",
                "Source %s: %d line(s) of %s had bytes undecodable as %s; decodeErrorPolicy "
                "%s applied.",
                self.src.name,
                bad,
                self.cur.path,
                self._in,
                self.src.config.decodeErrorPolicy,
            )
        self._bodies, self._ends = bodies, ends


class _BlobReader:
    """The whole file as one event (Flume's BlobDeserializer); files larger than
    maxBlobLength become several events. `pos` is a byte offset."""

    def __init__(self, src: SpoolDirectorySource, cur: _Current) -> None:
        self.cur = cur
        self.pos = cur.start
        self._max = src.config.maxBlobLength

    async def read(self, n: int) -> list[bytes] | None:
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, os.pread, self.cur.fd, self._max, self.pos)
        if not data:
            return None
        self.pos += len(data)
        return [data]


class _AvroReader:
    """Records of an Avro container file (Flume's AvroEventDeserializer): each body is
    one record in Avro binary encoding with the file's schema; the header carries the
    schema's CRC-64-AVRO fingerprint in hex (HASH) or the schema JSON (LITERAL).
    `pos` counts records."""

    def __init__(self, src: SpoolDirectorySource, cur: _Current) -> None:
        self.src = src
        self.cur = cur
        self.pos = cur.start
        self._it: Iterator[bytes] | None = None
        self._fo: BinaryIO | None = None
        self.header: tuple[str, str] = ("", "")

    def _open(self) -> Iterator[bytes]:
        fo = self._fo = open(self.cur.fd, "rb", buffering=CHUNK, closefd=False)  # noqa: SIM115
        reader = fastavro.block_reader(fo)
        schema = reader.writer_schema
        raw = reader.metadata.get("avro.schema", "")
        if self.src.config.schemaType == "HASH":
            canon = fastavro.schema.to_parsing_canonical_form(schema)
            self.header = (
                "flume.avro.schema.hash",
                fastavro.schema.fingerprint(canon, "CRC-64-AVRO"),
            )
        else:
            self.header = ("flume.avro.schema.literal", raw)
        parsed = fastavro.parse_schema(schema)
        skip = self.pos

        def records() -> Iterator[bytes]:
            seen = 0
            buf = io.BytesIO()
            for block in reader:
                if seen + block.num_records <= skip:
                    seen += block.num_records
                    continue
                for rec in block:
                    seen += 1
                    if seen <= skip:
                        continue
                    buf.seek(0)
                    buf.truncate()
                    fastavro.schemaless_writer(buf, parsed, rec)
                    yield buf.getvalue()

        return records()

    def _take(self, n: int) -> list[bytes]:
        try:
            if self._it is None:
                os.lseek(self.cur.fd, 0, os.SEEK_SET)
                self._it = self._open()
            return list(itertools.islice(self._it, n))
        except Exception as e:  # noqa: BLE001 - fastavro raises many types on a corrupt file
            raise _FileFailed(f"not a readable Avro container file: {e!r}") from None

    def close(self) -> None:
        if self._fo is not None:
            self._fo.close()  # closefd=False: the descriptor is the caller's

    async def read(self, n: int) -> list[bytes] | None:
        loop = asyncio.get_running_loop()
        bodies = await loop.run_in_executor(None, self._take, n)
        if not bodies:
            return None
        self.pos += len(bodies)
        return bodies


_Reader = _LineReader | _BlobReader | _AvroReader
