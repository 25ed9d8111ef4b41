"""Interceptor `regex_extractor`: regex groups of the body into headers.

Keys as Flume's RegexExtractorInterceptor: `regex` (required) and `serializers`,
the named serializers in order, group 1 to the first, group 2 to the second...
Each has `name` (the header) and optional `type`:

- `org.apache.flume.interceptor.RegexExtractorInterceptorPassThroughSerializer`
  (the default, also `DEFAULT`): the group's text as it is;
- `org.apache.flume.interceptor.RegexExtractorInterceptorMillisSerializer` with
  `pattern`, a Java SimpleDateFormat/Joda pattern: the group parsed as a time,
  in epoch milliseconds (local time unless the pattern has a zone `Z`).

In TOML the serializers are a table of names, in order::

    [agents.a1.sources.r1.interceptors.i1.serializers.s1]
    name = "level"

and a properties file's `serializers = s1 s2` + `serializers.s1.name = level` arrives
the same way. The body is decoded as UTF-8 and searched (Java's `find()`). A group
that did not take part in the match sets no header. A value the millis serializer
cannot parse sets no header and is logged (rate-limited); the event goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flumed.config.keys import group_named, key, prefix
from flumed.event import Event
from flumed.interceptors._java import compile_regex, regex_problem
from flumed.interceptors.base import Interceptor
from flumed.logs import RateLimitedLog

log = logging.getLogger("flumed.interceptors.regex_extractor")

PASS_THROUGH = "org.apache.flume.interceptor.RegexExtractorInterceptorPassThroughSerializer"
MILLIS = "org.apache.flume.interceptor.RegexExtractorInterceptorMillisSerializer"
_TYPES = {"DEFAULT": PASS_THROUGH, PASS_THROUGH: PASS_THROUGH, MILLIS: MILLIS}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

# Runs of one pattern letter → strptime directive, by run length (None: any length).
_LETTERS: dict[str, Callable[[int], str | None]] = {
    "y": lambda n: "%y" if n == 2 else "%Y",
    "M": lambda n: "%m" if n <= 2 else ("%b" if n == 3 else "%B"),
    "d": lambda n: "%d" if n <= 2 else None,
    "H": lambda n: "%H" if n <= 2 else None,
    "h": lambda n: "%I" if n <= 2 else None,
    "m": lambda n: "%M" if n <= 2 else None,
    "s": lambda n: "%S" if n <= 2 else None,
    "S": lambda n: "%f" if n <= 6 else None,
    "Z": lambda n: "%z" if n <= 2 else None,
    "a": lambda n: "%p" if n == 1 else None,
    "E": lambda n: "%a" if n <= 3 else "%A",
}


def java_date_pattern(pattern: str) -> str:
    """A Java SimpleDateFormat/Joda pattern as a `strptime` format.

    Supports y M d H h m s S Z a E and 'quoted text'.

    Raises:
        ValueError: naming the letter that has no strptime equivalent.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "'":
            end = pattern.find("'", i + 1)
            if end < 0:
                raise ValueError("unterminated quote")
            text = pattern[i + 1 : end] if end > i + 1 else "'"  # '' is a quote
            out.append(text.replace("%", "%%"))
            i = end + 1
        elif c.isalpha():
            j = i
            while j < n and pattern[j] == c:
                j += 1
            conv = _LETTERS.get(c)
            directive = conv(j - i) if conv else None
            if directive is None:
                raise ValueError(f"pattern letters {pattern[i:j]!r} are not supported")
            out.append(directive)
            i = j
        else:
            out.append("%%" if c == "%" else c)
            i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class SerializerSpec:
    header: str
    type: str
    pattern: str | None


def _serializer_specs(raw: dict[str, Any]) -> tuple[list[SerializerSpec], list[str]]:
    """Parse the `serializers.*` keys: (specs in order, problems)."""
    specs: list[SerializerSpec] = []
    problems: list[str] = []
    for sname, keys in group_named(raw).items():
        where = f"key 'serializers.{sname}'" if sname else "key 'serializers'"
        if "" in keys:
            problems.append(
                f"{where}: expected a table of named serializers, each with a 'name' "
                f'(TOML: [...interceptors.NAME.serializers.s1] name = "header"), '
                f"got {keys['']!r}"
            )
            continue
        for k in keys:
            if k not in ("name", "type", "pattern"):
                problems.append(f"key 'serializers.{sname}.{k}': unknown key")
        header = keys.get("name")
        if not isinstance(header, str) or not header:
            problems.append(f"{where}: missing required key 'name'")
            continue
        t = str(keys.get("type", "DEFAULT"))
        if t not in _TYPES:
            problems.append(
                f"key 'serializers.{sname}.type': unknown serializer {t!r}; known: "
                f"{PASS_THROUGH}, {MILLIS}"
            )
            continue
        pattern = keys.get("pattern")
        if _TYPES[t] == MILLIS:
            if not isinstance(pattern, str) or not pattern:
                problems.append(f"key 'serializers.{sname}.pattern': required by {MILLIS}")
                continue
            try:
                java_date_pattern(pattern)
            except ValueError as e:
                problems.append(f"key 'serializers.{sname}.pattern': {e}, got {pattern!r}")
                continue
        elif pattern is not None:
            problems.append(f"key 'serializers.{sname}.pattern': only {MILLIS} takes a pattern")
        specs.append(SerializerSpec(header, _TYPES[t], pattern))
    return specs, problems


@dataclass(frozen=True, slots=True)
class RegexExtractorConfig:
    regex: str = key()
    serializers: dict[str, Any] = prefix("serializers")

    def check(self) -> list[str]:
        out = regex_problem("regex", self.regex) if self.regex else ["key 'regex': is empty"]
        specs, problems = _serializer_specs(self.serializers)
        out += problems
        if not specs and not problems:
            out.append("missing required key 'serializers' (at least one, with a 'name')")
        if not out:
            groups = compile_regex(self.regex).groups
            if len(specs) > groups:
                out.append(
                    f"key 'serializers': {len(specs)} serializers but the regex has only "
                    f"{groups} group(s)"
                )
        return out


class RegexExtractorInterceptor(Interceptor):
    Config = RegexExtractorConfig
    config: RegexExtractorConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.search = compile_regex(config.regex).search
        specs, _ = _serializer_specs(config.serializers)
        self.headers = [s.header for s in specs]
        self.converters: list[Callable[[str], str] | None] = [
            None if s.type == PASS_THROUGH else self._millis(java_date_pattern(s.pattern or ""))
            for s in specs
        ]
        self.plain = all(c is None for c in self.converters)
        self._warn = RateLimitedLog(log, interval=1.0)
        self.failures = 0

    @staticmethod
    def _millis(fmt: str) -> Callable[[str], str]:
        def convert(value: str) -> str:
            dt = datetime.strptime(value, fmt)
            if dt.tzinfo is None:
                dt = dt.astimezone()  # a naive time is local time, as Joda's default zone
            return str((dt - _EPOCH) // _MS)

        return convert

    def intercept(self, events: list[Event]) -> list[Event]:
        search = self.search
        names = self.headers
        n = len(names)
        for e in events:
            m = search(e.body.decode("utf-8", "replace"))
            if m is None:
                continue
            values = m.groups()[:n]
            h = e.headers
            if self.plain:
                for name, v in zip(names, values, strict=True):
                    if v is not None:
                        h[name] = v
                continue
            for name, v, conv in zip(names, values, self.converters, strict=True):
                if v is None:
                    continue
                if conv is None:
                    h[name] = v
                    continue
                try:
                    h[name] = conv(v)
                except ValueError as err:
                    self._bad_value(name, v, err)
        return events

    def _bad_value(self, header: str, value: str, err: ValueError) -> None:
        # Counted always, logged at most once a second.
        self.failures += 1
        self._warn.warn(
            "Interceptor %s: header %s: cannot parse %r as a time (%s); header not set "
            "(%d such values so far).",
            self.name,
            header,
            value,
            err,
            self.failures,
        )
