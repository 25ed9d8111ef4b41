"""Interceptor `remove_header`: removes headers by name, by list, or by regex.

Keys as Flume's RemoveHeaderInterceptor: `withName` (one header), `fromList` (names
split by `fromListSeparator`, a regex, default `\\s*,\\s*`), `matching` (a regex the
whole header name must match). Any combination may be given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flumed.config.keys import key
from flumed.event import Event
from flumed.interceptors._java import compile_regex, regex_problem
from flumed.interceptors.base import Interceptor

#: Header names seen per interceptor whose regex verdict is cached (names repeat).
_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class RemoveHeaderConfig:
    withName: str | None = key(None)
    fromList: str | None = key(None)
    fromListSeparator: str = key(r"\s*,\s*")
    matching: str | None = key(None)

    def check(self) -> list[str]:
        out = regex_problem("fromListSeparator", self.fromListSeparator)
        if self.matching is not None:
            out += regex_problem("matching", self.matching)
        return out


class RemoveHeaderInterceptor(Interceptor):
    Config = RemoveHeaderConfig
    config: RemoveHeaderConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.with_name = config.withName
        names: set[str] = set()
        if config.fromList is not None:
            names = set(compile_regex(config.fromListSeparator).split(config.fromList))
        self.regex: re.Pattern[str] | None = (
            compile_regex(config.matching) if config.matching is not None else None
        )
        # name -> remove?; filled lazily for the regex, seeded with the list.
        self._verdict: dict[str, bool] = dict.fromkeys(names, True)
        self._by_list = bool(names) or self.regex is not None

    def _remove(self, header: str) -> bool:
        v = self._verdict.get(header)
        if v is None:
            v = self.regex is not None and self.regex.fullmatch(header) is not None
            if len(self._verdict) < _CACHE_MAX:
                self._verdict[header] = v
        return v

    def intercept(self, events: list[Event]) -> list[Event]:
        with_name = self.with_name
        by_list = self._by_list
        remove = self._remove
        for e in events:
            h = e.headers
            if with_name is not None:
                h.pop(with_name, None)
            if by_list and h:
                for k in [k for k in h if remove(k)]:
                    del h[k]
        return events
