"""File formats of the hdfs sink: Hadoop codecs, DataStream, CompressedStream, SequenceFile.

Written from Hadoop's documentation of the formats (SequenceFile's javadoc, the codec
streams), not from its code. Every format turns one batch into bytes that end on a
boundary a reader can stop at, so that the events a take committed are readable before
the file is closed and a retried batch never leaves half a record behind:

- DataStream: the serializer's bytes.
- CompressedStream: each batch is one complete codec stream appended to the file (a
  gzip member, a bzip2 stream ...), as Flume's HDFSCompressedDataStream finishes the
  codec stream at every flush; `zcat`/`bzcat` read the concatenation.
- SequenceFile (version 6): key LongWritable (the `timestamp` header, else the time of
  the batch), value BytesWritable (writeFormat Writable) or Text (writeFormat Text).
  NONE and RECORD compression: a sync marker starts each batch, then the records.
  BLOCK compression: each batch is one block (sync marker, record count, and the
  compressed key lengths, keys, value lengths and values).

Codecs (`hdfs.codeC`, named as Flume's getCodec: the codec's simple class name with or
without `Codec`, or its full class name): gzip, bzip2, default/deflate (zlib) from the
standard library; snappy, lz4 and zstd through the `cramjam` package when it is
installed. Snappy and LZ4 use Hadoop's block stream framing (BlockCompressorStream:
raw length, then compressed-chunk length and bytes). LZO is refused: its codec is GPL
and not part of Hadoop.
"""

from __future__ import annotations

import bz2
import os
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

from flumed.event import Event
from flumed.serializers.base import EventSerializer

_PKG = "org.apache.hadoop.io.compress."


@dataclass(frozen=True, slots=True)
class Codec:
    """A Hadoop codec: its class name, default file extension and whole-stream compressor."""

    name: str
    hadoop_class: str
    extension: str
    compress: Callable[[bytes], bytes]


def _gzip(data: bytes) -> bytes:
    # A gzip member (zlib's wbits 31) at zlib's default level, as Hadoop's GzipCodec.
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def _bzip2(data: bytes) -> bytes:
    return bz2.compress(data, 9)


def _zlib(data: bytes) -> bytes:
    return zlib.compress(data, 6)


#: Hadoop's BlockCompressorStream: raw bytes per block, kept under the 256 KiB default
#: buffer of Hadoop's Snappy/LZ4 decompressors.
_BLOCK = 64 * 1024


def _block_stream(raw_compress: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    def compress(data: bytes) -> bytes:
        out: list[bytes] = []
        for i in range(0, len(data), _BLOCK):
            piece = data[i : i + _BLOCK]
            c = raw_compress(piece)
            out.append(struct.pack(">ii", len(piece), len(c)))
            out.append(c)
        return b"".join(out)

    return compress


def _cramjam_codecs() -> dict[str, Codec]:
    try:
        import cramjam  # optional dependency
    except ImportError:
        return {}
    return {
        "snappy": Codec(
            "snappy",
            _PKG + "SnappyCodec",
            ".snappy",
            _block_stream(lambda b: bytes(cramjam.snappy.compress_raw(b))),
        ),
        "lz4": Codec(
            "lz4",
            _PKG + "Lz4Codec",
            ".lz4",
            _block_stream(lambda b: bytes(cramjam.lz4.compress_block(b, store_size=False))),
        ),
        "zstandard": Codec(
            "zstandard", _PKG + "ZStandardCodec", ".zst", lambda b: bytes(cramjam.zstd.compress(b))
        ),
    }


CODECS: dict[str, Codec] = {
    "gzip": Codec("gzip", _PKG + "GzipCodec", ".gz", _gzip),
    "bzip2": Codec("bzip2", _PKG + "BZip2Codec", ".bz2", _bzip2),
    "default": Codec("default", _PKG + "DefaultCodec", ".deflate", _zlib),
    "deflate": Codec("deflate", _PKG + "DeflateCodec", ".deflate", _zlib),
    **_cramjam_codecs(),
}
_NEEDS_CRAMJAM = ("snappy", "lz4", "zstandard")
_ALIASES = {"zstd": "zstandard"}


def codec_by_name(name: str) -> Codec:
    """The codec for an `hdfs.codeC` value (as Flume's HDFSEventSink.getCodec matches it).

    Raises:
        ValueError: unknown, refused (lzo) or not installed; the message says which.
    """
    low = name.strip().lower()
    if low.startswith(_PKG.lower()):
        low = low[len(_PKG) :]
    if low.endswith("codec"):
        low = low[: -len("codec")]
    low = _ALIASES.get(low, low)
    if low in CODECS:
        return CODECS[low]
    if low in ("lzo", "lzop") or "lzo" in low:
        raise ValueError(
            f"codec {name!r} is not supported: LZO is not part of Hadoop (hadoop-lzo is GPL "
            "and native); use gzip, bzip2, snappy, lz4 or zstd"
        )
    if low in _NEEDS_CRAMJAM:
        raise ValueError(
            f"codec {name!r} needs the Python package cramjam, which is not installed "
            "(pip install cramjam)"
        )
    known = ", ".join(sorted({*CODECS, *_NEEDS_CRAMJAM}))
    raise ValueError(f"unknown codec {name!r}; known: {known}")


# -- Hadoop's Writable encodings --------------------------------------------------------
def vint(i: int) -> bytes:
    """Hadoop's WritableUtils.writeVLong: one byte for -112..127, else a length byte
    and the big-endian magnitude."""
    if -112 <= i <= 127:
        return struct.pack(">b", i)
    n = -112
    if i < 0:
        i ^= -1
        n = -120
    tmp = i
    while tmp:
        tmp >>= 8
        n -= 1
    size = -(n + 120) if n < -120 else -(n + 112)
    return struct.pack(">b", n) + i.to_bytes(size, "big")


def text(s: str | bytes) -> bytes:
    """Hadoop's Text serialization: vint length, then UTF-8 bytes."""
    b = s.encode() if isinstance(s, str) else s
    return vint(len(b)) + b


# -- formats -----------------------------------------------------------------------------
class FileFormat:
    """One open file's format. `begin()` once at creation, `batch()` per batch (complete
    on its own), `end()` before the file is closed. A batch that failed to reach the
    file may be formatted again: `batch()` keeps no state a retry would double."""

    def begin(self) -> bytes:
        return b""

    def batch(self, events: list[Event], now_ms: int) -> bytes:
        raise NotImplementedError

    def end(self) -> bytes:
        return b""


class DataStream(FileFormat):
    def __init__(self, serializer: EventSerializer) -> None:
        self.serializer = serializer

    def begin(self) -> bytes:
        return self.serializer.begin()

    def batch(self, events: list[Event], now_ms: int) -> bytes:
        return self.serializer.serialize(events)

    def end(self) -> bytes:
        return self.serializer.end()


class CompressedStream(DataStream):
    """Each piece of the file (header, batch, trailer) is one complete codec stream."""

    def __init__(self, serializer: EventSerializer, codec: Codec) -> None:
        super().__init__(serializer)
        self.codec = codec

    def _c(self, data: bytes) -> bytes:
        return self.codec.compress(data) if data else b""

    def begin(self) -> bytes:
        return self._c(super().begin())

    def batch(self, events: list[Event], now_ms: int) -> bytes:
        return self._c(super().batch(events, now_ms))

    def end(self) -> bytes:
        return self._c(super().end())


LONG_WRITABLE = "org.apache.hadoop.io.LongWritable"
BYTES_WRITABLE = "org.apache.hadoop.io.BytesWritable"
TEXT = "org.apache.hadoop.io.Text"
SYNC_ESCAPE = struct.pack(">i", -1)
_KEY_LEN = vint(8)
_INT = struct.Struct(">i")
_LONG = struct.Struct(">q")


#: A record's length, key length and LongWritable key; with a BytesWritable's length.
_RECORD = struct.Struct(">iiq")
_BYTES_RECORD = struct.Struct(">iiqi")
_MAX_LONG = (1 << 63) - 1


def _stamp(e: Event, now_ms: int) -> int:
    """The record's key: the `timestamp` header, else (absent or not a long) the batch's time."""
    ts = e.headers.get("timestamp")
    if ts is not None:
        try:
            v = int(ts)
        except ValueError:
            return now_ms
        if -_MAX_LONG - 1 <= v <= _MAX_LONG:
            return v
    return now_ms


def _key(e: Event, now_ms: int) -> bytes:
    return _LONG.pack(_stamp(e, now_ms))


class SequenceFile(FileFormat):
    """Hadoop SequenceFile version 6 (see the module doc)."""

    def __init__(
        self,
        write_format: Literal["Writable", "Text"],
        codec: Codec | None,
        compression: Literal["NONE", "RECORD", "BLOCK"],
        sync: bytes | None = None,
    ) -> None:
        self.text_values = write_format == "Text"
        self.codec = codec
        self.compression = compression if codec is not None else "NONE"
        # Hadoop derives its marker from an MD5 of a UID and the time; random is as good.
        self.sync = sync or os.urandom(16)

    def begin(self) -> bytes:
        compressed = self.compression != "NONE"
        parts = [
            b"SEQ\x06",
            text(LONG_WRITABLE),
            text(TEXT if self.text_values else BYTES_WRITABLE),
            b"\x01" if compressed else b"\x00",
            b"\x01" if self.compression == "BLOCK" else b"\x00",
        ]
        if compressed:
            assert self.codec is not None
            parts.append(text(self.codec.hadoop_class))
        parts.append(_INT.pack(0))  # no metadata
        parts.append(self.sync)
        return b"".join(parts)

    def _value(self, body: bytes) -> bytes:
        if self.text_values:
            return vint(len(body)) + body
        return _INT.pack(len(body)) + body

    def batch(self, events: list[Event], now_ms: int) -> bytes:
        if self.compression == "BLOCK":
            return self._block(events, now_ms)
        out = [SYNC_ESCAPE, self.sync]
        append = out.append
        if self.compression == "RECORD":
            assert self.codec is not None
            compress = self.codec.compress
            value = self._value
            for e in events:
                v = compress(value(e.body))
                append(_RECORD.pack(8 + len(v), 8, _stamp(e, now_ms)))
                append(v)
            return b"".join(out)
        if self.text_values:
            rec = _RECORD.pack
            for e in events:
                b = e.body
                v = vint(len(b))
                append(rec(8 + len(v) + len(b), 8, _stamp(e, now_ms)) + v + b)
            return b"".join(out)
        pack = _BYTES_RECORD.pack
        for e in events:
            b = e.body
            n = len(b)
            stamp = now_ms if e.headers.get("timestamp") is None else _stamp(e, now_ms)
            # One bytes per record (header + body): fewer list items beats the copy.
            append(pack(12 + n, 8, stamp, n) + b)
        return b"".join(out)

    def _block(self, events: list[Event], now_ms: int) -> bytes:
        assert self.codec is not None
        compress = self.codec.compress
        values = [self._value(e.body) for e in events]
        bufs = (
            _KEY_LEN * len(events),
            b"".join([_key(e, now_ms) for e in events]),
            b"".join([vint(len(v)) for v in values]),
            b"".join(values),
        )
        out = [SYNC_ESCAPE, self.sync, vint(len(events))]
        for b in bufs:
            c = compress(b)
            out.append(vint(len(c)))
            out.append(c)
        return b"".join(out)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_format(
    file_type: str,
    serializer: EventSerializer | None,
    codec: Codec | None,
    write_format: Any,
    compression: Any,
) -> FileFormat:
    """The format of one new file. Raises ValueError for a combination that cannot be."""
    if file_type == "SequenceFile":
        return SequenceFile(write_format, codec, compression)
    assert serializer is not None
    if file_type == "CompressedStream":
        if codec is None:
            raise ValueError("fileType CompressedStream needs hdfs.codeC")
        return CompressedStream(serializer, codec)
    return DataStream(serializer)


# -- recovery: where the last whole batch of a file killed mid-write ends -----------------
#: (file object opened for reading, its size) → the length up to the last whole batch.
GoodLength = Callable[[BinaryIO, int], int]
_CHUNK = 1 << 20


def _tail_find(fo: BinaryIO, size: int, needle: bytes) -> int:
    """The offset just past the last `needle` in the file, or 0."""
    end = size
    while end > 0:
        start = max(0, end - _CHUNK - len(needle))
        fo.seek(start)
        i = fo.read(end - start).rfind(needle)
        if i >= 0:
            return start + i + len(needle)
        end = start + len(needle) - 1 if start else 0
    return 0


def _lines(fo: BinaryIO, size: int) -> int:
    return _tail_find(fo, size, b"\n")


def _read_vint(fo: BinaryIO) -> int:
    first = fo.read(1)
    if not first:
        raise EOFError
    b = struct.unpack(">b", first)[0]
    if b >= -112:
        return int(b)
    neg = b < -120
    n = -(b + 120) if neg else -(b + 112)
    raw = fo.read(n)
    if len(raw) < n:
        raise EOFError
    v = int.from_bytes(raw, "big")
    return v ^ -1 if neg else v


def _sequence_file(fo: BinaryIO, size: int) -> int:
    """Walk records (or blocks) from the header on; the end of the last whole one."""
    fo.seek(0)
    if fo.read(4) != b"SEQ\x06":
        return size  # not ours: leave it
    try:
        for _ in range(2):
            fo.seek(max(0, _read_vint(fo)), 1)
        compressed, block = fo.read(1) == b"\x01", fo.read(1) == b"\x01"
        if compressed:
            fo.seek(_read_vint(fo), 1)
        for _ in range(struct.unpack(">i", fo.read(4))[0] * 2):
            fo.seek(_read_vint(fo), 1)
        fo.seek(16, 1)
        good = fo.tell()
        while good < size:
            if block:
                fo.seek(20, 1)  # escape + sync
                if _read_vint(fo) < 0:
                    break
                for _ in range(4):
                    n = _read_vint(fo)
                    if n < 0:
                        raise EOFError
                    fo.seek(n, 1)
            else:
                raw = fo.read(4)
                if len(raw) < 4:
                    break
                n = struct.unpack(">i", raw)[0]
                if n < -1:
                    break
                fo.seek(16 if n == -1 else 4 + n, 1)
            if fo.tell() > size:
                break
            good = fo.tell()
    except (EOFError, struct.error):
        pass
    return good


def _members(make: Callable[[], Any]) -> GoodLength:
    """Concatenated gzip/bzip2/zlib streams: the end of the last complete one."""

    def good(fo: BinaryIO, size: int) -> int:
        fo.seek(0)
        d = make()
        offset = last = 0  # offset: where `buf` starts in the file
        buf = b""
        while True:
            if not buf:
                buf = fo.read(64 * 1024)  # small reads: bounded output per call
                if not buf:
                    return last
            try:
                d.decompress(buf)
            except (OSError, ValueError, EOFError, zlib.error):
                return last
            if d.eof:
                last = offset + len(buf) - len(d.unused_data)
                offset, buf = last, d.unused_data
                d = make()
            else:
                offset += len(buf)
                buf = b""

    return good


def _blocks(fo: BinaryIO, size: int) -> int:
    """Hadoop block streams (Snappy, LZ4): raw length, then one chunk per block here."""
    fo.seek(0)
    good = 0
    while good + 8 <= size:
        fo.seek(good + 4)
        n = struct.unpack(">i", fo.read(4))[0]
        if n < 0 or good + 8 + n > size:
            break
        good += 8 + n
    return good


def _avro(fo: BinaryIO, size: int) -> int:
    """An Avro container: the end of the last block (each ends in the header's sync)."""
    from fastavro.read import reader

    fo.seek(0)
    try:
        sync = reader(fo)._header["sync"]
    except Exception:  # noqa: BLE001 - a header torn at the start: nothing to keep
        return 0
    return _tail_find(fo, size, sync)


def good_length(
    file_type: str, serializer: str, append_newline: bool, codec: Codec | None
) -> GoodLength | None:
    """How to find the last whole batch of a file of this kind, or None (leave it)."""
    if file_type == "SequenceFile":
        return _sequence_file
    if file_type == "CompressedStream" and codec is not None:
        if codec.name == "gzip":
            return _members(lambda: zlib.decompressobj(31))
        if codec.name == "bzip2":
            return _members(bz2.BZ2Decompressor)
        if codec.name in ("default", "deflate"):
            return _members(zlib.decompressobj)
        if codec.name in ("snappy", "lz4"):
            return _blocks
        return None
    if serializer in ("text", "header_and_text"):
        return _lines if append_newline else None
    if serializer == "avro_event":
        return _avro
    return None
