"""Syslog parsing (RFC 3164, RFC 5424) into Flume's headers, and RFC 6587 TCP framing.

Shared by `syslogtcp`, `syslogudp` and `multiport_syslogtcp`. The rules are Apache
Flume's (SyslogUtils for syslogtcp/syslogudp, SyslogParser for multiport_syslogtcp),
including the header-name difference between the two families:

==================  ==========================  ==========================
header              syslogtcp / syslogudp       multiport_syslogtcp
==================  ==========================  ==========================
priority            ``priority``                ``Priority``
version             ``version``                 ``Version``
``timestamp``       only when the message has   always (``-`` → receive time)
                    one
``host``            only when not ``-``         always (``-`` kept)
invalid message     ``Facility``/``Severity``   only ``flume.syslog.status``
                    ``0`` + status ``Invalid``  = ``Invalid``
unknown shape with  ``Facility``/``Severity``,  status ``Invalid``
a valid ``<PRI>``   raw body
==================  ==========================  ==========================

Beyond Flume, RFC 5424 messages (those with a VERSION) also get the headers
``app-name``, ``procid``, ``msgid`` and ``structured-data`` (rsyslog's property names),
each only when not the nil value ``-``. The body stays Flume's: everything after the
HOSTNAME field.

Speed: `SyslogParser.parse()` takes a whole batch of messages. The common RFC 5424 and
RFC 3164 shapes are split with one `bytes.split` per message and dictionary look-ups
(PRI token, host, the second of a stamp); anything else goes through
`ReferenceSyslogParser`, the plain statement of the rules, which a differential test
holds the fast path to, header by header and byte by byte.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable
from typing import Any, Literal

from flumed.event import Event

STATUS = "flume.syslog.status"
INVALID = "Invalid"
INCOMPLETE = "Incomplete"

APP_NAME = "app-name"
PROCID = "procid"
MSGID = "msgid"
STRUCTURED_DATA = "structured-data"

KEEP_FIELDS = ("priority", "version", "timestamp", "hostname")

Flavor = Literal["syslogtcp", "multiport"]

# Flume's SyslogUtils shapes (matched against the whole message), as bytes patterns.
# `\s` and `\w` are ASCII classes here, as in Java's default mode.
_TS5424 = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:[+-]\d\d:\d\d|Z)?"
_RE_5424 = re.compile(
    rb"<(\d{1,3})>(\d?)\s?(?:(" + _TS5424 + rb")|-)\s(?:([\w][\w.@-]*)|-)\s(.*)\Z", re.S
)
_RE_3164 = re.compile(
    rb"<(\d{1,3})>(?:(\d)?\s?)([A-Z][a-z][a-z]\s{1,2}\d{1,2}\s\d\d:\d\d:\d\d)\s"
    rb"([\w][\w.@-]*)\s(.*)\Z",
    re.S,
)
_RE_TS5424 = re.compile(
    rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?([+-]\d\d:\d\d|Z)?\Z",
)
_RE_HOST = re.compile(rb"[\w][\w.@-]*\Z")
# The RFC 3164 stamps the fast path takes: exactly 15 bytes ("Mar 15 ..." / "Mar  5 ...").
_RE_TS3164_15 = re.compile(rb"[A-Z][a-z][a-z](?: \d\d|  \d) \d\d:\d\d:\d\d\Z")
# Three digits → the same as str (looking one up also checks they are digits).
_MILLIS = {f"{i:03d}".encode(): f"{i:03d}" for i in range(1000)}
#: A look-up default that no cached value equals.
_MISSING: Any = object()
# STRUCTURED-DATA: one or more [SD-ID params], where quoted values may hold \" \] \\.
_RE_SD = re.compile(rb'(?:\[[^\]"]*(?:"(?:[^"\\]|\\.)*"[^\]"]*)*\])+', re.S)

_MONTHS = {
    m.encode(): i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}

#: How long cached timestamp conversions live (RFC 3164 years are inferred from "now").
_CACHE_TTL = 60.0
_CACHE_MAX = 4096


def _pri_tokens() -> dict[bytes, tuple[str, str, str, str | None]]:
    """`<PRI>` and `<PRI>V` → (facility, severity, priority, version), for PRI 0-191."""
    out: dict[bytes, tuple[str, str, str, str | None]] = {}
    for p in range(192):
        fac, sev, pri = str(p // 8), str(p % 8), str(p)
        out[b"<%d>" % p] = (fac, sev, pri, None)
        for v in range(1, 10):
            out[b"<%d>%d" % (p, v)] = (fac, sev, pri, str(v))
    return out


_PRI_TOKENS = _pri_tokens()


def parse_keep_fields(value: str) -> tuple[bool, frozenset[str]]:
    """Flume's `keepFields`: (keep the whole line, subset of fields to put back).

    `none`/`false` → nothing; `all`/`true` → the whole original line; otherwise the
    fields named among priority, version, timestamp, hostname (matched as substrings,
    as Flume does).
    """
    v = value.strip().lower()
    if v in ("", "none", "false"):
        return False, frozenset()
    if v in ("all", "true"):
        return True, frozenset()
    return False, frozenset(f for f in KEEP_FIELDS if f in v)


class ReferenceSyslogParser:
    """The straightforward parse: each message on its own, by the full regular expressions.

    It states the rules; `SyslogParser` must give the same result for every input (a
    differential test runs both over a large corpus). One parser serves any number of
    connections of one source (it keeps only caches). `flavor` picks the header rules
    (see the module docstring); `utc3164` parses RFC 3164 stamps as UTC (Flume's
    multiport source) instead of local time (Flume's SyslogUtils). `clock` returns the
    current time in seconds (tests pin it).
    """

    def __init__(
        self,
        keep_fields: str = "none",
        flavor: Flavor = "syslogtcp",
        utc3164: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keep_all, self.keep = parse_keep_fields(keep_fields)
        self.flavor = flavor
        self.utc3164 = utc3164
        self.clock = clock
        self._pri_key = "Priority" if flavor == "multiport" else "priority"
        self._ver_key = "Version" if flavor == "multiport" else "version"
        # prefix19 + zone → (epoch seconds or None if not a date, its str when > 0)
        self._epochs5424: dict[bytes, tuple[int | None, str | None]] = {}
        self._ts3164: dict[bytes, str | None] = {}
        self._expires = 0.0

    # -- caches ----------------------------------------------------------------------
    def _caches(self) -> list[dict[Any, Any]]:
        return [self._epochs5424, self._ts3164]

    def _refresh(self) -> None:
        """Once per batch: drop caches that are old (year inference) or too big."""
        now = time.monotonic()
        caches = self._caches()
        if now >= self._expires or any(len(c) > _CACHE_MAX for c in caches):
            self._expires = now + _CACHE_TTL
            for c in caches:
                c.clear()

    def ts5424(self, t: bytes) -> str | None:
        """An RFC 3339 stamp → epoch milliseconds as a decimal string; None if invalid.

        Fractions are scaled to milliseconds (".5" is 500 ms) and truncated past three
        digits; a stamp without a zone is local time, as in Flume.
        """
        m = _RE_TS5424.match(t)
        if m is None:
            return None
        prefix, frac, zone = m.groups()
        zone = zone or b""
        key = prefix + zone
        hit = self._epochs5424.get(key)
        if hit is None:
            hit = self._epochs5424[key] = self._epoch5424(prefix, zone)
        secs, text = hit
        if secs is None:
            return None
        ms = int((frac + b"00")[:3]) if frac else 0
        if text is not None:
            return f"{text}{ms:03d}"
        return str(secs * 1000 + ms)

    @staticmethod
    def _epoch5424(prefix: bytes, zone: bytes) -> tuple[int | None, str | None]:
        try:
            st = time.strptime(prefix.decode("ascii"), "%Y-%m-%dT%H:%M:%S")
        except ValueError:
            return None, None
        if zone == b"":
            secs = int(time.mktime((*st[:8], -1)))
        else:
            secs = calendar.timegm(st)
            if zone != b"Z":
                off = (int(zone[1:3]) * 60 + int(zone[4:6])) * 60
                secs += -off if zone[:1] == b"+" else off
        return secs, (str(secs) if secs > 0 else None)

    def ts3164(self, t: bytes) -> str | None:
        """`Mmm dd HH:MM:SS` → epoch ms string, the year inferred as Flume does.

        The year is the one that puts the stamp between 11 months before and 1 month
        after now. Returns None for a stamp that is not a date (e.g. `Feb 30`).
        """
        if t in self._ts3164:
            return self._ts3164[t]
        out = self._ts3164[t] = self._epoch3164(t)
        return out

    def _epoch3164(self, t: bytes) -> str | None:
        parts = t.split()
        mon = _MONTHS.get(parts[0])
        if mon is None or len(parts) != 3:
            return None
        day = int(parts[1])
        hh, mm, ss = (int(x) for x in parts[2].split(b":"))
        now = self.clock()
        year = time.gmtime(now).tm_year if self.utc3164 else time.localtime(now).tm_year

        def epoch(y: int) -> float | None:
            tt = (y, mon, day, hh, mm, ss, 0, 0, -1)
            try:
                if not (1 <= day <= calendar.monthrange(y, mon)[1]) or hh > 23 or mm > 59:
                    return None
                return float(calendar.timegm(tt)) if self.utc3164 else time.mktime(tt)
            except (OverflowError, ValueError):
                return None

        secs = epoch(year)
        if secs is None:
            return None
        month = 31 * 86400  # Flume compares with calendar months; a day either way is moot
        if secs > now + month:
            secs = epoch(year - 1)
        elif secs < now - 11 * month:
            secs = epoch(year + 1)
        return None if secs is None else str(int(secs) * 1000)

    # -- parsing ---------------------------------------------------------------------
    def parse(self, lines: list[bytes]) -> tuple[list[Event], int]:
        """Parse a batch of messages (no framing bytes). Returns (events, invalid count).

        Never raises on bad input: an invalid message becomes an event with the
        `flume.syslog.status` header, as in Flume.
        """
        self._refresh()
        out = [self._parse_one(ln) for ln in lines]
        return out, sum(STATUS in e.headers for e in out)

    def _parse_one(self, ln: bytes) -> Event:
        """Any message, by the full rules of the flavor."""
        multiport = self.flavor == "multiport"
        if ln[:1] != b"<" or (gt := ln.find(b">", 1, 5)) < 2 or not ln[1:gt].isdigit():
            if multiport:
                return Event(ln, {STATUS: INVALID})
            return Event(ln, {"Facility": "0", "Severity": "0", STATUS: INVALID})
        pri = int(ln[1:gt])
        # After <PRI>, RFC 5424's shape has a digit, a space or "-"; a letter starts an
        # RFC 3164 stamp ("Mar"), so that regex alone is tried.
        m = None if ln[gt + 1 : gt + 2].isalpha() else _RE_5424.match(ln)
        is5424 = m is not None
        if m is None:
            m = _RE_3164.match(ln)
        if m is None:
            if multiport:
                return Event(ln, {STATUS: INVALID})
            return Event(ln, {"Facility": str(pri // 8), "Severity": str(pri % 8)})
        pri_b, ver_b, ts_b, host_b, msg = m.groups()
        hdr = {"Facility": str(pri // 8), "Severity": str(pri % 8), self._pri_key: pri_b.decode()}
        if ver_b:
            hdr[self._ver_key] = ver_b.decode()
        tsv = None
        if ts_b is not None:
            tsv = self.ts5424(ts_b) if is5424 else self.ts3164(ts_b)
        if tsv is None and multiport:
            tsv = str(int(self.clock() * 1000))
        if tsv is not None:
            hdr["timestamp"] = tsv
        host = host_b.decode("ascii") if host_b is not None else None
        if host is not None:
            hdr["host"] = host
        elif multiport:
            hdr["host"] = "-"
        if ver_b and is5424:
            parts = msg.split(b" ", 3)
            if len(parts) >= 3:
                _rfc5424_fields(hdr, [b"", b"", b"", *parts])
        if self.keep_all:
            body = ln
        else:
            body = msg
            if self.keep:
                body = self._put_back(body, pri_b, ver_b, ts_b, host_b)
            if not body:
                body = ln
        return Event(body, hdr)

    def _put_back(
        self, msg: bytes, pri: bytes, ver: bytes | None, ts: bytes | None, host: bytes | None
    ) -> bytes:
        """keepFields subset: `<PRI>VERSION TIMESTAMP HOSTNAME msg`, the chosen ones.

        Flume writes `null` for a nil timestamp or host; flumed writes the `-` the
        message had.
        """
        keep = self.keep
        out = b""
        if "priority" in keep:
            out += b"<" + pri + b">"
        if "version" in keep and ver:
            out += ver + b" "
        if "timestamp" in keep:
            out += (ts or b"-") + b" "
        if "hostname" in keep:
            out += (host or b"-") + b" "
        return out + msg


class SyslogParser(ReferenceSyslogParser):
    """The parse the sources run: the reference's result, faster on the common shapes.

    The common shapes are taken apart with one `bytes.split` per message and dictionary
    look-ups: the `<PRI>V` (or `<PRI>Mmm`) token gives a ready header dict to copy,
    the host, APP-NAME, PROCID and MSGID tokens are decoded once while they repeat, a
    stamp equal to the previous message's reuses its value, and an RFC 5424 stamp of a
    known second only appends its milliseconds. Whatever does not fit exactly (and
    every `keepFields` subset) goes through the reference rules.
    """

    def __init__(
        self,
        keep_fields: str = "none",
        flavor: Flavor = "syslogtcp",
        utc3164: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(keep_fields, flavor, utc3164, clock)
        # Valid token → str (host names; APP-NAME, PROCID, MSGID).
        self._hosts: dict[bytes, str] = {}
        self._tokens: dict[bytes, str] = {}
        # RFC 5424 prefix19 + zone → epoch seconds as str (only stamps after 1970).
        self._secs5424: dict[bytes, str] = {}
        # Checked 15-byte RFC 3164 stamp → epoch ms str (None: not a date).
        self._stamps3164: dict[bytes, str | None] = {}
        # (<PRI>V, HOST, APP-NAME, PROCID, MSGID) → headers, `timestamp` in its place.
        self._heads: dict[tuple[bytes, ...], dict[str, str]] = {}
        # `<PRI>` / `<PRI>V` token → the headers it gives (copied per message, one C
        # call); `<PRI>Mmm` the same for RFC 3164.
        self._t5424: dict[bytes, dict[str, str]] = {}
        self._t3164: dict[bytes, dict[str, str]] = {}
        for tok, (fac, sev, pri, ver) in _PRI_TOKENS.items():
            t = {"Facility": fac, "Severity": sev, self._pri_key: pri}
            if ver is not None:
                t[self._ver_key] = ver
            else:
                for mon in _MONTHS:
                    self._t3164[tok + mon] = t
            self._t5424[tok] = t

    def _caches(self) -> list[dict[Any, Any]]:
        return [
            *super()._caches(),
            self._hosts,
            self._tokens,
            self._secs5424,
            self._stamps3164,
            self._heads,
        ]

    def _head(self, tmpl: dict[str, str], key: tuple[bytes, ...]) -> dict[str, str] | None:
        """The headers of an RFC 5424 message with this (<PRI>V, HOST, APP-NAME, PROCID,
        MSGID) and a stamp (an empty placeholder, so that it keeps its place); None when
        the host is not valid. Cached."""
        _, host, app, pid, mid = key
        if host == b"-":
            h: str | None = "-" if self.flavor == "multiport" else ""
        else:
            h = self._host(host)
        if h is None:
            return None
        hdr = tmpl.copy()
        hdr["timestamp"] = ""
        if h:
            hdr["host"] = h
        if app != b"-":
            hdr[APP_NAME] = app.decode("utf-8", "replace")
        if pid != b"-":
            hdr[PROCID] = pid.decode("utf-8", "replace")
        if mid != b"-":
            hdr[MSGID] = mid.decode("utf-8", "replace")
        self._heads[key] = hdr
        return hdr

    def _host(self, b: bytes) -> str | None:
        """A valid HOSTNAME token as str, else None."""
        h = self._hosts.get(b)
        if h is None:
            if _RE_HOST.match(b) is None:
                return None
            h = self._hosts[b] = b.decode("ascii")
        return h

    def _stamp5424(self, ts: bytes) -> str | None:
        """`ts5424`, remembering the second of a stamp with a 3- or 6-digit fraction
        (rsyslog's and logger's) so that the next one of that second is a look-up."""
        if ts == b"-":
            return ""
        v = self.ts5424(ts)
        if v is not None and len(v) > 3 and not v.startswith("-"):
            m = _RE_TS5424.match(ts)
            if m is not None and m.group(2) is not None and len(m.group(2)) in (3, 6):
                self._secs5424[m.group(1) + (m.group(3) or b"")] = v[:-3]
        return v

    def _stamp3164(self, t: bytes) -> str | None:
        """A 15-byte `Mmm dd HH:MM:SS` (or `Mmm  d`) → `ts3164`; None if not that shape
        or not a date."""
        v = self.ts3164(t) if _RE_TS3164_15.match(t) else None
        self._stamps3164[t] = v
        return v

    def parse(self, lines: list[bytes]) -> tuple[list[Event], int]:
        """As `ReferenceSyslogParser.parse` (same events, same count), faster."""
        self._refresh()
        if self.keep:
            return super().parse(lines)
        keep_all = self.keep_all
        multiport = self.flavor == "multiport"
        t5424 = self._t5424.get
        t3164 = self._t3164.get
        hosts = self._hosts.get
        secs = self._secs5424.get
        stamps3164 = self._stamps3164.get
        heads = self._heads.get
        tokens = self._tokens
        token = tokens.get
        ver_key = self._ver_key
        clock = self.clock
        slow = self._parse_one
        last_ts = b"\0"
        last_tsv: str | None = None
        millis = _MILLIS.get
        sec_at = sec_zone = b"\0"
        sec_n = 0
        sec_text: str | None = None
        out: list[Event] = []
        add = out.append
        bad = 0
        for ln in lines:
            parts = ln.split(b" ", 6)
            p0 = parts[0]
            tmpl = t5424(p0)
            if tmpl is not None:
                # RFC 5424: "<PRI>V TS HOST APP PROCID MSGID rest" (or "<PRI> TS HOST rest").
                if len(parts) < 4:
                    add(ev := slow(ln))
                    bad += STATUS in ev.headers
                    continue
                ts = parts[1]
                if ts == last_ts:
                    tsv = last_tsv
                else:
                    tsv = None
                    n = len(ts)
                    if n >= 24 and ts[19] == 46:  # '.': a fraction
                        fe = n - 1 if ts[-1] == 90 else (n - 6 if ts[-3] == 58 else n)
                        if fe == 26 or fe == 23:
                            # Same second and zone as the stamp before: no look-up.
                            if n == sec_n and ts.startswith(sec_at) and ts.endswith(sec_zone):
                                text = sec_text
                            else:
                                sec_at, sec_zone, sec_n = ts[:19], ts[fe:], n
                                text = sec_text = secs(sec_at + sec_zone)
                            ms = millis(ts[20:23])
                            if (
                                text is not None
                                and ms is not None
                                and (fe == 23 or ts[23:26] in _MILLIS)
                            ):
                                tsv = text + ms
                    if tsv is None:
                        tsv = self._stamp5424(ts)
                        sec_n = 0  # it may have learnt this second: look it up next time
                    last_ts = ts
                    last_tsv = tsv
                host = parts[2]
                if tsv and len(parts) >= 6 and ver_key in tmpl:
                    # The full shape: PRI, host, APP-NAME, PROCID and MSGID repeat
                    # together; their headers come ready, the stamp in its place.
                    key = (p0, host, parts[3], parts[4], parts[5])
                    full = heads(key)
                    if full is None:
                        full = self._head(tmpl, key)
                    if full is not None:
                        hdr = full.copy()
                        hdr["timestamp"] = tsv
                        if len(parts) == 7 and parts[6][:1] == b"[":
                            _structured_data(hdr, parts[6])
                        if keep_all:
                            add(Event(ln, hdr))
                        else:
                            add(Event(ln[len(p0) + len(ts) + len(host) + 3 :] or ln, hdr))
                        continue
                if host == b"-":
                    h: str | None = "-" if multiport else ""
                else:
                    h = hosts(host)
                    if h is None:
                        h = self._host(host)
                if tsv is None or h is None:
                    add(ev := slow(ln))
                    bad += STATUS in ev.headers
                    continue
                hdr = tmpl.copy()
                if tsv:
                    hdr["timestamp"] = tsv
                elif multiport:
                    hdr["timestamp"] = str(int(clock() * 1000))
                if h:
                    hdr["host"] = h
                if len(parts) >= 6 and ver_key in tmpl:
                    app, pid, mid = parts[3], parts[4], parts[5]
                    if app != b"-":
                        v = token(app)
                        if v is None:
                            v = tokens[app] = app.decode("utf-8", "replace")
                        hdr[APP_NAME] = v
                    if pid != b"-":
                        v = token(pid)
                        if v is None:
                            v = tokens[pid] = pid.decode("utf-8", "replace")
                        hdr[PROCID] = v
                    if mid != b"-":
                        v = token(mid)
                        if v is None:
                            v = tokens[mid] = mid.decode("utf-8", "replace")
                        hdr[MSGID] = v
                    if len(parts) == 7 and parts[6][:1] == b"[":
                        _structured_data(hdr, parts[6])
                if keep_all:
                    add(Event(ln, hdr))
                else:
                    add(Event(ln[len(p0) + len(ts) + len(host) + 3 :] or ln, hdr))
                continue
            tmpl = t3164(p0)
            if tmpl is not None and len(parts) > 4:
                # RFC 3164: "<PRI>Mmm dd HH:MM:SS HOST rest"; a one-digit day has two
                # spaces before it, so one more (empty) part.
                hi = 3 if parts[1] else 4
                at = len(p0) - 3
                if len(parts) > hi + 1 and ln[at + 15 : at + 16] == b" ":
                    st = ln[at : at + 15]
                    tsv = stamps3164(st, _MISSING)
                    if tsv is _MISSING:
                        tsv = self._stamp3164(st)
                    host = parts[hi]
                    h = hosts(host)
                    if h is None:
                        h = self._host(host)
                    if tsv is not None and h is not None:
                        hdr = tmpl.copy()
                        hdr["timestamp"] = tsv
                        hdr["host"] = h
                        if keep_all:
                            add(Event(ln, hdr))
                        else:
                            add(Event(ln[at + 17 + len(host) :] or ln, hdr))
                        continue
            add(ev := slow(ln))
            bad += STATUS in ev.headers
        return out, bad


def _rfc5424_fields(hdr: dict[str, str], parts: list[bytes]) -> None:
    """APP-NAME, PROCID, MSGID (parts[3:6]) and STRUCTURED-DATA (start of parts[6])."""
    a, p, m = parts[3], parts[4], parts[5]
    if a != b"-":
        hdr[APP_NAME] = a.decode("utf-8", "replace")
    if p != b"-":
        hdr[PROCID] = p.decode("utf-8", "replace")
    if m != b"-":
        hdr[MSGID] = m.decode("utf-8", "replace")
    if len(parts) > 6 and parts[6][:1] == b"[":
        _structured_data(hdr, parts[6])


def _structured_data(hdr: dict[str, str], rest: bytes) -> None:
    sd = _RE_SD.match(rest)
    if sd is not None:
        hdr[STRUCTURED_DATA] = sd.group().decode("utf-8", "replace")


class SyslogFramer:
    """Splits one TCP stream into messages (RFC 6587), with Flume's `eventSize` rule.

    The framing is read from the first byte of the stream: a digit means octet
    counting (`LEN SP MSG`), anything else newline-terminated messages. An octet-counted
    stream whose next frame does not start with a digit falls back to newlines for the
    rest of the connection. In newline mode a `\\r` before the `\\n` is dropped and empty
    lines are skipped; an octet-counted frame loses one trailing newline, as rsyslog's
    receivers drop it (rsyslog's forwarding templates end with one).

    A message longer than `event_size` bytes is cut: each full piece of `event_size`
    bytes becomes its own message flagged incomplete (Flume's `Incomplete` status) and
    the remainder the next message, as in Flume. Memory per connection stays below
    about `event_size` bytes beyond the chunk being split.
    """

    NEWLINE = 1
    OCTET = 2

    def __init__(self, event_size: int) -> None:
        self.size = event_size
        self.mode = 0
        self.rest = b""
        self.frame_left = 0  # octet mode: bytes of an oversized frame still to come
        self.piece = b""  # octet mode: the part of the current oversized piece so far

    def feed(self, data: bytes) -> tuple[list[bytes], list[int]]:
        """Add received bytes. Returns (complete messages, indexes of cut ones)."""
        lines: list[bytes] = []
        cut: list[int] = []
        if self.mode == 0:
            data = self.rest + data if self.rest else data
            stripped = data.lstrip(b"\r\n")
            if not stripped:
                self.rest = b""
                return lines, cut
            self.rest = b""
            data = stripped
            self.mode = self.OCTET if 48 <= data[0] <= 57 else self.NEWLINE
        if self.mode == self.OCTET:
            data = self._octets(data, lines, cut)
            if self.mode == self.OCTET:
                return lines, cut
        self._newlines(data, lines, cut)
        return lines, cut

    def close(self) -> tuple[list[bytes], list[int]]:
        """At end of stream: an unterminated message becomes a last event (a truncated
        octet-counted frame is flagged incomplete), so nothing received is dropped."""
        lines: list[bytes] = []
        cut: list[int] = []
        if self.mode == self.OCTET:
            if self.frame_left:
                tail = self.piece
            else:
                sp = self.rest.find(b" ")
                tail = self.rest[sp + 1 :] if sp >= 0 else b""
            if tail:
                cut.append(0)
        else:
            tail = self.rest[:-1] if self.rest[-1:] == b"\r" else self.rest
        if tail:
            lines.append(tail)
        self.rest = self.piece = b""
        self.frame_left = 0
        return lines, cut

    def _newlines(self, data: bytes, lines: list[bytes], cut: list[int]) -> None:
        if self.rest:
            data = self.rest + data
        got = data.split(b"\n")
        rest = got.pop()
        if b"\r" in data:
            got = [ln[:-1] if ln[-1:] == b"\r" else ln for ln in got]
        if not all(got):
            got = [ln for ln in got if ln]
        size = self.size
        if got and max(map(len, got)) > size:
            for ln in got:
                self._add_cut(ln, lines, cut, final=True)
        else:
            lines.extend(got)
        if len(rest) > size:
            rest = self._add_cut(rest, lines, cut, final=False)
        self.rest = rest

    def _add_cut(self, ln: bytes, lines: list[bytes], cut: list[int], final: bool) -> bytes:
        """Add `ln` cut into pieces of `size`. With `final`, the remainder is added too;
        otherwise it is returned (it may still grow)."""
        size = self.size
        i = 0
        n = len(ln)
        while n - i > size:
            cut.append(len(lines))
            lines.append(ln[i : i + size])
            i += size
        if final:
            if i < n:
                lines.append(ln[i:])
            return b""
        return ln[i:]

    def _octets(self, data: bytes, lines: list[bytes], cut: list[int]) -> bytes:
        """Octet-counted frames. Returns what is left for newline mode (if it switched)."""
        buf = self.rest + data if self.rest else data
        self.rest = b""
        size = self.size
        pos = 0
        n = len(buf)
        while pos < n:
            if self.frame_left:
                take = min(self.frame_left, n - pos)
                self.piece += buf[pos : pos + take]
                pos += take
                self.frame_left -= take
                while len(self.piece) >= size and (self.frame_left or len(self.piece) > size):
                    cut.append(len(lines))
                    lines.append(self.piece[:size])
                    self.piece = self.piece[size:]
                if self.frame_left == 0:
                    last = self.piece
                    if last[-1:] == b"\n":
                        last = last[:-2] if last[-2:] == b"\r\n" else last[:-1]
                    if last:
                        lines.append(last)
                    self.piece = b""
                continue
            c = buf[pos]
            if c == 10 or c == 13:  # tolerate newlines between frames
                pos += 1
                continue
            if not 48 <= c <= 57:
                self.mode = self.NEWLINE
                return buf[pos:]
            sp = buf.find(b" ", pos, pos + 11)
            if sp < 0:
                if n - pos >= 11 or not buf[pos:].isdigit():
                    self.mode = self.NEWLINE
                    return buf[pos:]
                self.rest = buf[pos:]
                return b""
            digits = buf[pos:sp]
            if not digits.isdigit():
                self.mode = self.NEWLINE
                return buf[pos:]
            length = int(digits)
            start = sp + 1
            if length <= size:
                end = start + length
                if end > n:
                    self.rest = buf[pos:]
                    return b""
                if length:
                    msg = buf[start:end]
                    if msg[-1] == 10:  # a trailing LF is not part of it (rsyslog sends one)
                        msg = msg[:-2] if msg[-2:] == b"\r\n" else msg[:-1]
                    if msg:
                        lines.append(msg)
                pos = end
            else:
                self.frame_left = length
                pos = start
        return b""
