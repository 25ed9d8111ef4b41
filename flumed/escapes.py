"""Flume's escape sequences for paths and names built from events (Flume's BucketPath).

One implementation for every component that formats a name from an event: the hdfs
sink's `hdfs.path` and `hdfs.filePrefix`, and the `%{header}` form that the Kafka
sink's topic uses (`escape_headers`).

Escapes, as BucketPath:

- `%{name}`: the value of header `name` (word characters, `.` and `-`); a missing header
  gives the empty string, as in Flume.
- `%[localhost]`, `%[IP]`, `%[FQDN]`: this host's name, address and canonical name,
  looked up once (`host_values()`; a sink calls it in `start()`, off the loop).
- `%t` the `timestamp` header as it is (milliseconds), `%s` seconds since the epoch, and
  the date fields of Java's SimpleDateFormat in English: `%a` (Mon) `%A` (Monday) `%b`
  (Jan) `%B` (January) `%c` (Mon Jan 2 15:04:05 2006) `%d` (02) `%e` (2) `%D`
  (01/02/06) `%H` (15) `%I` (03) `%j` (002, day of the year) `%k` (15) `%l` (3) `%m`
  (01) `%n` (1) `%M` (04) `%p` (PM) `%S` (05) `%y` (06) `%Y` (2006) `%z` (-0700);
  `%%` is a percent sign. An unknown `%x` gives the empty string, as in Flume.

The time is the event's `timestamp` header (ms), or, with `useLocalTimeStamp`, the
clock of the sink when it formats the batch. A time escape with neither raises
MissingTimestamp, whose message names `hdfs.useLocalTimeStamp` and the timestamp
interceptor. `round`/`roundValue`/`roundUnit` round the time down (in `timeZone`) before
formatting, except `%t`, which Flume leaves raw.

`safe=True` (paths): a header value may hold `/` (a deeper directory, as in Flume) but
its `.` and `..` segments become `_` and NUL bytes become `_`, so no event can name a
file outside the directory the template starts in.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flumed.errors import FlumedError

#: BucketPath.TAG_REGEX: `%x`, `%%`, `%{header}`, `%[static]`.
TAG = re.compile(r"%(\w|%)|%\{([\w.-]+)\}|%\[(\w+)\]")

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_STATIC = {"localhost": 0, "ip": 1, "fqdn": 2}

RoundUnit = Literal["second", "minute", "hour"]
#: Milliseconds in a round unit, and the largest roundValue Flume accepts for it.
_UNIT_MS = {"second": 1000, "minute": 60_000, "hour": 3_600_000}
ROUND_LIMITS = {"second": 60, "minute": 60, "hour": 24}


class EscapeError(FlumedError):
    """An event cannot be placed: the batch is rolled back and retried (retriable, as
    Flume's sink rolls back and backs off)."""

    retriable = True


class MissingTimestamp(EscapeError):
    """A time escape met an event without a usable `timestamp` header."""


def _hour12(h: int) -> int:
    return h % 12 or 12


def _zone_name(d: dt.datetime) -> str:
    off = d.utcoffset() or dt.timedelta(0)
    minutes = int(off.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}{minutes % 60:02d}"


#: The date escapes: SimpleDateFormat pattern as Flume maps it → formatter.
_DATE: dict[str, Callable[[dt.datetime], str]] = {
    "a": lambda d: _DAYS[d.weekday()][:3],
    "A": lambda d: _DAYS[d.weekday()],
    "b": lambda d: _MONTHS[d.month - 1][:3],
    "B": lambda d: _MONTHS[d.month - 1],
    "c": lambda d: (
        f"{_DAYS[d.weekday()][:3]} {_MONTHS[d.month - 1][:3]} {d.day} "
        f"{d.hour:02d}:{d.minute:02d}:{d.second:02d} {d.year}"
    ),
    "d": lambda d: f"{d.day:02d}",
    "e": lambda d: str(d.day),
    "D": lambda d: f"{d.month:02d}/{d.day:02d}/{d.year % 100:02d}",
    "H": lambda d: f"{d.hour:02d}",
    "I": lambda d: f"{_hour12(d.hour):02d}",
    "j": lambda d: f"{d.timetuple().tm_yday:03d}",
    "k": lambda d: str(d.hour),
    "l": lambda d: str(_hour12(d.hour)),
    "m": lambda d: f"{d.month:02d}",
    "M": lambda d: f"{d.minute:02d}",
    "n": lambda d: str(d.month),
    "p": lambda d: "AM" if d.hour < 12 else "PM",
    "S": lambda d: f"{d.second:02d}",
    "y": lambda d: f"{d.year % 100:02d}",
    "Y": lambda d: str(d.year),
    "z": _zone_name,
}
#: Escapes whose value changes within a minute (the cache key must hold seconds).
_SECOND_FIELDS = frozenset("cSst")


@functools.cache
def host_values() -> tuple[str, str, str]:
    """(host name, IP address, canonical name) of this host, as Java's InetAddress
    .getLocalHost(); looked up once. May block on DNS: call it off the event loop."""
    name = socket.gethostname()
    try:
        ip = socket.gethostbyname(name)
    except OSError:
        ip = "127.0.0.1"
    try:
        fqdn = socket.getfqdn(name)
    except OSError:
        fqdn = name
    return name, ip, fqdn


def parse_time_zone(name: str | None) -> dt.tzinfo | None:
    """A Java time zone ID (`America/Los_Angeles`, `UTC`, `GMT+05:30`) as a tzinfo;
    None (or empty) is the local zone.

    Raises:
        ValueError: unknown ID (Java would silently use GMT; flumed refuses).
    """
    if not name:
        return None
    m = re.fullmatch(r"(?:GMT|UTC)([+-])(\d{1,2})(?::?(\d{2}))?", name)
    if m:
        minutes = int(m.group(2)) * 60 + int(m.group(3) or 0)
        sign = -1 if m.group(1) == "-" else 1
        return dt.timezone(dt.timedelta(minutes=sign * minutes), name)
    if name in ("GMT", "UTC", "Z"):
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown time zone {name!r}") from e


def _safe(value: str) -> str:
    """A header value made harmless inside a path (see the module doc)."""
    if "." not in value and "\0" not in value:
        return value
    value = value.replace("\0", "_")
    return "/".join("_" if s in (".", "..") else s for s in value.split("/"))


def escape_headers(template: str, headers: Mapping[str, str]) -> str:
    """Only the `%{header}` escapes (the Kafka topic form); everything else stays."""
    if "%{" not in template:
        return template
    return re.sub(r"%\{([\w.-]+)\}", lambda m: headers.get(m.group(1), ""), template)


class Template:
    """A compiled escape template. Build once (pure: no I/O), render per batch.

    `render_many(headers, now_ms)` renders one string per event; events that share the
    same header values and the same time (to the field the template shows) are
    rendered once. Not thread-safe; one user at a time.

    Raises (constructor):
        ValueError: an unknown `%[...]` escape or a bad round setting.
    """

    def __init__(
        self,
        text: str,
        *,
        time_zone: str | None = None,
        round: bool = False,
        round_value: int = 1,
        round_unit: RoundUnit = "second",
        use_local_timestamp: bool = False,
        safe: bool = False,
    ) -> None:
        self.text = text
        self.tz = parse_time_zone(time_zone)
        self.round = round
        if round and not 1 <= round_value <= ROUND_LIMITS[round_unit]:
            raise ValueError(
                f"roundValue must be 1..{ROUND_LIMITS[round_unit]} for roundUnit "
                f"{round_unit}, got {round_value}"
            )
        self.round_value = round_value
        self.round_unit = round_unit
        self.use_local_timestamp = use_local_timestamp
        self.safe = safe
        # Parts: a literal str, or (kind, arg) with kind "h" header, "s" static, "t" time.
        self.parts: list[str | tuple[str, str]] = []
        headers: list[str] = []
        pos = 0
        seconds = False
        for m in TAG.finditer(text):
            if m.start() > pos:
                self.parts.append(text[pos : m.start()])
            pos = m.end()
            ch, header, static = m.group(1), m.group(2), m.group(3)
            if header is not None:
                self.parts.append(("h", header))
                if header not in headers:
                    headers.append(header)
            elif static is not None:
                if static.lower() not in _STATIC:
                    raise ValueError(
                        f"unknown escape %[{static}] in {text!r}: known %[localhost], %[IP], "
                        "%[FQDN]"
                    )
                self.parts.append(("s", static.lower()))
            elif ch == "%":
                self.parts.append("%")
            elif ch in _DATE or ch in "st":
                self.parts.append(("t", ch))
                seconds = seconds or ch in _SECOND_FIELDS
            # Any other %x renders as "" (Flume's default case).
        if pos < len(text):
            self.parts.append(text[pos:])
        self.headers: tuple[str, ...] = tuple(headers)
        self.needs_time = any(isinstance(p, tuple) and p[0] == "t" for p in self.parts)
        self.raw_time = any(p == ("t", "t") for p in self.parts)
        # The cache key holds the time to this many ms: every field the template shows
        # is constant within such a slot (zone offsets are whole minutes).
        self._slot = 1000 if seconds else 60_000
        first = TAG.search(text)
        #: The text before the first escape (all of it when there is none).
        self.literal_prefix = text[: first.start()] if first else text

    # -- rendering ---------------------------------------------------------------------
    def _datetime(self, ts: int) -> dt.datetime:
        d = dt.datetime.fromtimestamp(ts / 1000, self.tz or None)
        if self.tz is None:
            d = d.astimezone()
        if self.round:
            n = self.round_value
            if self.round_unit == "second":
                d = d.replace(second=d.second - d.second % n, microsecond=0)
            elif self.round_unit == "minute":
                d = d.replace(minute=d.minute - d.minute % n, second=0, microsecond=0)
            else:
                d = d.replace(hour=d.hour - d.hour % n, minute=0, second=0, microsecond=0)
        return d

    def _render(self, values: Sequence[str | None], ts: int | None, raw_ts: str) -> str:
        out: list[str] = []
        d: dt.datetime | None = None
        hv = dict(zip(self.headers, values, strict=True))
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
                continue
            kind, arg = p
            if kind == "h":
                v = hv[arg] or ""
                out.append(_safe(v) if self.safe else v)
            elif kind == "s":
                out.append(host_values()[_STATIC[arg]])
            elif arg == "t":
                out.append(raw_ts)
            else:
                assert ts is not None
                if d is None:
                    d = self._datetime(ts)
                if arg == "s":
                    out.append(str(int(d.timestamp())))
                else:
                    out.append(_DATE[arg](d))
        return "".join(out)

    def render(self, headers: Mapping[str, str], now_ms: int) -> str:
        """One event's string. Raises MissingTimestamp (see the module doc)."""
        return self.render_many([headers], now_ms)[0]

    def render_many(self, headers: Sequence[Mapping[str, str]], now_ms: int) -> list[str]:
        """One string per header map, in order. Events that share their header values
        (and time slot) share one rendering; per event this costs a few dict lookups.

        Raises:
            MissingTimestamp: a time escape and an event without a numeric `timestamp`
                header (and no useLocalTimeStamp); the message says which and what to do.
        """
        names = self.headers
        if not self.needs_time or self.use_local_timestamp:
            # The time (if any) is the same for the whole batch: only headers vary.
            raw = str(now_ms)
            if not names:
                return [self._render((), now_ms, raw)] * len(headers)
            cache: dict[object, str] = {}
            out: list[str] = []
            if len(names) == 1:
                name = names[0]
                for h in headers:
                    v = h.get(name)
                    s = cache.get(v)
                    if s is None:
                        s = cache[v] = self._render((v,), now_ms, raw)
                    out.append(s)
                return out
            for h in headers:
                vs = tuple([h.get(n) for n in names])
                s = cache.get(vs)
                if s is None:
                    s = cache[vs] = self._render(vs, now_ms, raw)
                out.append(s)
            return out
        slot = self._slot
        keep_raw = self.raw_time
        tcache: dict[tuple[object, ...], str] = {}
        out = []
        for h in headers:
            raw_ts = h.get("timestamp")
            try:
                ts = int(raw_ts)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise self._missing(raw_ts) from None
            values = tuple([h.get(n) for n in names])
            k = (ts // slot, raw_ts if keep_raw else None, values)
            s = tcache.get(k)
            if s is None:
                s = tcache[k] = self._render(values, ts, raw_ts)  # type: ignore[arg-type]
            out.append(s)
        return out

    def _missing(self, raw: str | None) -> MissingTimestamp:
        what = "no 'timestamp' header" if raw is None else f"a 'timestamp' header of {raw!r}"
        return MissingTimestamp(
            f"an event has {what} (milliseconds expected), and the path {self.text!r} has a "
            "time escape: add a timestamp interceptor to the source, or set "
            "hdfs.useLocalTimeStamp = true"
        )
