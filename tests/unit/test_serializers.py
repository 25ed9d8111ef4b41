"""Serializers: Flume's output shapes, read back with independent readers."""

from __future__ import annotations

import io

import avro.datafile
import avro.io
import fastavro
import pytest

from flumed.config.keys import parse
from flumed.errors import ConfigError
from flumed.event import Event
from flumed.serializers.avro_event import SCHEMA, AvroEventSerializer
from flumed.serializers.base import serializer_class, serializer_problems

EVENTS = [
    Event(b"first line", {"host": "web1", "ts": "1700000000000"}),
    Event(b"", {}),
    Event("unicode é ✓".encode(), {"k": "v=1, x"}),
    Event(b"\x00\xffbinary", {"a": ""}),
]


def make(type_name: str, **keys):
    cls = serializer_class(type_name)
    return cls(parse(cls.Config, keys, "serializer"))


def test_text_body_and_newline():
    s = make("text")
    assert s.begin() == b"" and s.end() == b""
    assert s.serialize(EVENTS) == b"first line\n\nunicode \xc3\xa9 \xe2\x9c\x93\n\x00\xffbinary\n"
    assert s.serialize([]) == b""


def test_text_without_newline_from_property_string():
    s = make("TEXT", appendNewline="false")
    assert s.serialize(EVENTS[:1] * 2) == b"first linefirst line"


def test_header_and_text_java_map_tostring():
    s = make("header_and_text")
    out = s.serialize(EVENTS).split(b"\n")
    assert out[0] == b"{host=web1, ts=1700000000000} first line"
    assert out[1] == b"{} "
    assert out[2] == "{k=v=1, x} unicode é ✓".encode()
    assert out[3] == b"{a=} \x00\xffbinary"
    assert out[4] == b""


def test_header_and_text_same_headers_rendered_per_event():
    s = make("org.apache.flume.serialization.HeaderAndBodyTextEventSerializer$Builder")
    evs = [Event(b"%d" % i, {"h": "x"}) for i in range(3)] + [Event(b"y", {"h": "z"})]
    assert s.serialize(evs) == b"{h=x} 0\n{h=x} 1\n{h=x} 2\n{h=z} y\n"


def test_write_batch_and_flush_on_a_file_object():
    s = make("text")
    buf = io.BytesIO()
    assert s.write_batch(buf, EVENTS[:1]) == len(b"first line\n")
    s.flush(buf)
    assert buf.getvalue() == b"first line\n"


def avro_file(serializer: AvroEventSerializer, *batches: list[Event]) -> bytes:
    return serializer.begin() + b"".join(serializer.serialize(b) for b in batches)


def expected_records(*batches: list[Event]) -> list[dict]:
    return [{"headers": e.headers, "body": e.body} for b in batches for e in b]


@pytest.mark.parametrize("codec", ["null", "deflate", "bzip2", "xz"])
def test_avro_event_readable_by_fastavro(codec: str):
    s = make("avro_event", compressionCodec=codec, syncIntervalBytes=16)
    r = fastavro.reader(io.BytesIO(avro_file(s, EVENTS, EVENTS[:2])))
    assert r.writer_schema == SCHEMA
    assert r.metadata["avro.codec"] == codec
    assert list(r) == expected_records(EVENTS, EVENTS[:2])


# The avro package reads null, deflate and bzip2 without extras.
@pytest.mark.parametrize("codec", ["null", "deflate", "bzip2"])
def test_avro_event_readable_by_apache_avro(codec: str):
    s = make("avro_event", compressionCodec=codec, syncIntervalBytes=16)
    data = avro_file(s, EVENTS, EVENTS[:2])
    with avro.datafile.DataFileReader(io.BytesIO(data), avro.io.DatumReader()) as dfr:
        assert dfr.meta["avro.codec"].decode() == codec
        assert dfr.datum_reader.writers_schema.fullname == "Event"
        assert list(dfr) == expected_records(EVENTS, EVENTS[:2])


def test_avro_event_each_batch_is_readable_as_soon_as_written():
    s = make("avro_event")
    head = s.begin()
    first = s.serialize(EVENTS[:1])
    # A reader of the file so far (header + the first batch) sees the first batch.
    assert [r["body"] for r in fastavro.reader(io.BytesIO(head + first))] == [b"first line"]
    second = s.serialize(EVENTS[1:])
    assert len(list(fastavro.reader(io.BytesIO(head + first + second)))) == len(EVENTS)


def test_avro_event_files_have_their_own_sync_marker():
    a, b = make("avro_event"), make("avro_event")
    assert a.begin() != b.begin()
    # Mixing batches of two files is not a valid file: blocks end with their file's marker.
    with pytest.raises(ValueError):
        list(fastavro.reader(io.BytesIO(a.begin() + b.serialize(EVENTS))))


def test_avro_event_failed_batch_is_not_repeated():
    s = make("avro_event")
    head = s.begin()
    bad = [Event(b"ok", {}), Event(b"bad", {"h": 5})]  # type: ignore[dict-item]
    with pytest.raises((TypeError, ValueError)):
        s.serialize(bad)
    good = s.serialize([Event(b"next", {})])
    assert [r["body"] for r in fastavro.reader(io.BytesIO(head + good))] == [b"next"]


def test_avro_event_config_errors():
    cls = serializer_class("avro_event")
    with pytest.raises(ConfigError, match="key 'compressionCodec': unknown codec 'lzo'"):
        parse(cls.Config, {"compressionCodec": "lzo"}, "s")
    with pytest.raises(ConfigError, match="key 'syncIntervalBytes': must be >= 1"):
        parse(cls.Config, {"syncIntervalBytes": "0"}, "s")


def test_serializer_problems_name_the_sink_key():
    assert serializer_problems("text", {}, "sink.serializer") == []
    (p,) = serializer_problems("nope", {}, "sink.serializer")
    assert p.startswith("key 'sink.serializer': unknown serializer type 'nope'")
    (p,) = serializer_problems("text", {"appendNewLine": "x"}, "sink.serializer")
    assert p == "key 'sink.serializer': unknown key 'appendNewLine' (did you mean 'appendNewline'?)"
    (p,) = serializer_problems("text", {"appendNewline": "x"}, "sink.serializer")
    assert p.startswith("key 'sink.serializer.appendNewline': expected true or false")
    (p,) = serializer_problems("flumed.event.Event", {}, "sink.serializer")
    assert "is not an EventSerializer" in p
