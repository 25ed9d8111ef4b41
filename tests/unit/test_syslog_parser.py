"""The syslog parser: Flume's header rules for both source families, and its fast path."""

from __future__ import annotations

import calendar
import itertools
import random
import time

import pytest

from flumed.sources.syslog_parser import (
    INVALID,
    STATUS,
    ReferenceSyslogParser,
    SyslogParser,
    parse_keep_fields,
)

# 2024-03-15T12:00:00Z, a fixed "now" for year inference and nil stamps.
NOW = 1710504000.0


def one(p: SyslogParser, line: bytes) -> tuple[dict[str, str], bytes]:
    events, _ = p.parse([line])
    assert len(events) == 1
    return events[0].headers, events[0].body


def test_rfc5424_example_from_the_rfc() -> None:
    line = (
        b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
        b"\xef\xbb\xbf'su root' failed for lonvick on /dev/pts/8"
    )
    h, body = one(SyslogParser(), line)
    assert h == {
        "Facility": "4",
        "Severity": "2",
        "priority": "34",
        "version": "1",
        "timestamp": str(calendar.timegm((2003, 10, 11, 22, 14, 15)) * 1000 + 3),
        "host": "mymachine.example.com",
        "app-name": "su",
        "msgid": "ID47",
    }
    # Flume's body: everything after HOSTNAME.
    assert body == b"su - ID47 - \xef\xbb\xbf'su root' failed for lonvick on /dev/pts/8"


def test_rfc5424_offset_microseconds_and_structured_data() -> None:
    sd = (
        b'[exampleSDID@32473 iut="3" eventSource="Appli\\]cation" eventID="1011"]'
        b'[examplePriority@32473 class="high"]'
    )
    line = b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - " + sd + b" msg"
    h, body = one(SyslogParser(), line)
    assert h["timestamp"] == str(calendar.timegm((2003, 8, 24, 12, 14, 15)) * 1000)
    assert h["host"] == "192.0.2.1"
    assert (h["Facility"], h["Severity"], h["priority"]) == ("20", "5", "165")
    assert h["app-name"] == "myproc" and h["procid"] == "8710"
    assert "msgid" not in h
    assert h["structured-data"] == sd.decode()
    assert body == b"myproc 8710 - " + sd + b" msg"


@pytest.mark.parametrize(
    ("stamp", "ms"),
    [
        (b"2024-03-15T12:00:00Z", 0),
        (b"2024-03-15T12:00:00.5Z", 500),  # scaled (Flume's syslogtcp would read 5 ms)
        (b"2024-03-15T12:00:00.12Z", 120),
        (b"2024-03-15T12:00:00.123Z", 123),
        (b"2024-03-15T12:00:00.123456Z", 123),
        (b"2024-03-15T14:00:00.999+02:00", 999),
        (b"2024-03-15T10:30:00.001-01:30", 1),
    ],
)
def test_rfc3339_stamps(stamp: bytes, ms: int) -> None:
    p = SyslogParser()
    base = calendar.timegm((2024, 3, 15, 12, 0, 0)) * 1000
    for _ in range(2):  # the second time from the cache
        assert p.ts5424(stamp) == str(base + ms)


def test_stamp_before_1970_and_without_zone() -> None:
    p = SyslogParser()
    assert p.ts5424(b"1969-12-31T23:59:59.500Z") == "-500"
    assert p.ts5424(b"1970-01-01T00:00:00.123Z") == "123"
    local = int(time.mktime((2024, 3, 15, 12, 0, 0, 0, 0, -1))) * 1000
    assert p.ts5424(b"2024-03-15T12:00:00") == str(local)


def test_not_a_date_gives_no_timestamp_header() -> None:
    h, body = one(SyslogParser(), b"<13>1 2024-13-45T00:00:00Z host app - - - hi")
    assert "timestamp" not in h
    assert h["host"] == "host" and STATUS not in h
    assert body == b"app - - - hi"


def test_rfc3164_local_time_and_year_inference() -> None:
    p = SyslogParser(clock=lambda: NOW)
    h, body = one(p, b"<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!")
    assert h["timestamp"] == str(int(time.mktime((2024, 2, 5, 17, 32, 18, 0, 0, -1))) * 1000)
    assert (h["Facility"], h["Severity"], h["priority"], h["host"]) == ("1", "5", "13", "10.0.0.99")
    assert "version" not in h
    assert body == b"Use the BFG!"
    # More than a month ahead of "now": last year's.
    h, _ = one(p, b"<13>Dec 31 23:59:59 host x")
    assert h["timestamp"] == str(int(time.mktime((2023, 12, 31, 23, 59, 59, 0, 0, -1))) * 1000)


def test_rfc3164_year_inference_in_january_utc() -> None:
    jan = calendar.timegm((2025, 1, 2, 0, 0, 0))
    p = SyslogParser(flavor="multiport", utc3164=True, clock=lambda: jan)
    h, _ = one(p, b"<13>Dec 31 23:00:00 host x")
    assert h["timestamp"] == str(calendar.timegm((2024, 12, 31, 23, 0, 0)) * 1000)
    h, _ = one(p, b"<13>Jan 15 00:00:00 host x")
    assert h["timestamp"] == str(calendar.timegm((2025, 1, 15, 0, 0, 0)) * 1000)


@pytest.mark.parametrize("line", [b"garbage", b"<>x", b"<1234>x", b"<a>x", b"", b"<13"])
def test_invalid_messages_are_kept_with_a_status(line: bytes) -> None:
    events, bad = SyslogParser().parse([line])
    assert bad == 1
    assert events[0].headers == {"Facility": "0", "Severity": "0", STATUS: INVALID}
    assert events[0].body == line
    events, bad = SyslogParser(flavor="multiport").parse([line])
    assert bad == 1
    assert events[0].headers == {STATUS: INVALID}
    assert events[0].body == line


def test_valid_priority_unknown_shape() -> None:
    # syslogtcp: Facility/Severity and the raw line; multiport: Invalid.
    h, body = one(SyslogParser(), b"<13>hello world")
    assert h == {"Facility": "1", "Severity": "5"}
    assert body == b"<13>hello world"
    h, body = one(SyslogParser(flavor="multiport"), b"<13>hello world")
    assert h == {STATUS: INVALID}


def test_multiport_header_names_and_nil_values() -> None:
    p = SyslogParser(flavor="multiport", utc3164=True, clock=lambda: NOW)
    h, body = one(p, b"<14>1 - - app 12 - - text")
    assert h["Priority"] == "14" and h["Version"] == "1"
    assert "priority" not in h and "version" not in h
    assert h["timestamp"] == str(int(NOW * 1000))  # the relay's time for "-"
    assert h["host"] == "-"
    assert h["app-name"] == "app" and h["procid"] == "12"
    assert body == b"app 12 - - text"
    # The syslogtcp family leaves nil stamp and host out.
    h, _ = one(SyslogParser(), b"<14>1 - - app 12 - - text")
    assert "timestamp" not in h and "host" not in h
    assert h["priority"] == "14" and h["version"] == "1"


def test_keep_fields() -> None:
    line = b"<13>1 2024-03-15T12:00:00Z host app - - - msg"
    assert one(SyslogParser("all"), line)[1] == line
    assert one(SyslogParser("true"), line)[1] == line
    assert one(SyslogParser("none"), line)[1] == b"app - - - msg"
    assert one(SyslogParser("false"), line)[1] == b"app - - - msg"
    assert one(SyslogParser("timestamp hostname"), line)[1] == (
        b"2024-03-15T12:00:00Z host app - - - msg"
    )
    assert one(SyslogParser("priority version"), line)[1] == b"<13>1 app - - - msg"
    line3164 = b"<13>Mar 15 12:00:00 host tag: msg"
    assert one(SyslogParser("priority hostname"), line3164)[1] == b"<13>host tag: msg"
    assert parse_keep_fields(" Timestamp,hostname ") == (
        False,
        frozenset({"timestamp", "hostname"}),
    )


def test_empty_message_part_keeps_the_line() -> None:
    # Flume: an empty message part leaves the whole line as the body.
    line = b"<13>1 2024-03-15T12:00:00Z host "
    h, body = one(SyslogParser(), line)
    assert body == line and h["host"] == "host"


def _corpus() -> list[bytes]:
    """Messages near the fast path's shape, including ones it must hand over."""
    rnd = random.Random(5424)
    pris = [b"<0>", b"<13>", b"<191>", b"<013>", b"<999>", b"<13>1", b"<165>1", b"<13>2", b"<>"]
    stamps = [
        b"2024-03-15T12:00:00Z",
        b"2024-03-15T12:00:00.123Z",
        b"2024-03-15T12:00:00.123456+02:00",
        b"2024-03-15T12:00:00.123-05:30",
        b"2024-03-15T12:00:00.12345Z",
        b"2024-03-15T12:00:00",
        b"2024-03-15T12:00:00.123456",
        b"2024-03-15T12:00:00+0200",
        b"2024-02-30T12:00:00Z",
        b"-",
        b"Mar 15 12:00:00",
        b"2024-03-15T12:00:00.1234567Z",
        b"2024-03-15T12:00:00.12a456Z",
    ]
    hosts = [b"host", b"h.example.com", b"-", b"_h@x-1", b"-bad", b"h\xc3\xa9", b""]
    rests = [
        b"app 12 ID - msg",
        b'app - - [a b="c"][d] msg',
        b'app - - [a b="]" c] m',
        b"app",
        b"app 1",
        b"",
        b"x\ty",
        b"app 1 2 [unterminated",
    ]
    out = []
    for pri, ts, host, rest in itertools.product(pris, stamps, hosts, rests):
        sep = rnd.choice([b" ", b" ", b" ", b"  ", b"\t"])
        out.append(pri + b" " + ts + b" " + host + sep + rest)
        out.append(pri + ts + b" " + host + b" " + rest)
    return out


def test_fast_path_agrees_with_the_full_rules() -> None:
    p = SyslogParser(clock=lambda: NOW)
    lines = _corpus()
    fast, bad = p.parse(lines)
    slow = [ReferenceSyslogParser(clock=lambda: NOW).parse([ln])[0][0] for ln in lines]
    assert bad == sum(STATUS in e.headers for e in slow)
    for ln, a, b in zip(lines, fast, slow, strict=True):
        assert (a.headers, a.body) == (b.headers, b.body), ln
    # Enough of the corpus really took the fast path for this to mean something.
    assert sum("version" in e.headers and "timestamp" in e.headers for e in fast) > 100
