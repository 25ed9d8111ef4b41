"""Interceptor `regex_filter`: keeps (or drops) events whose body matches a regex.

Keys as Flume's RegexFilteringInterceptor: `regex` (".*"), `excludeEvents` (false:
keep matching events; true: drop them). The body is decoded as UTF-8 (invalid bytes
become U+FFFD, as Java's `new String`) and searched anywhere (Java's `find()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flumed.config.keys import key
from flumed.event import Event
from flumed.interceptors._java import compile_regex, regex_problem
from flumed.interceptors.base import Interceptor


@dataclass(frozen=True, slots=True)
class RegexFilterConfig:
    regex: str = key(".*")
    excludeEvents: bool = key(False)

    def check(self) -> list[str]:
        return regex_problem("regex", self.regex)


class RegexFilteringInterceptor(Interceptor):
    Config = RegexFilterConfig
    config: RegexFilterConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.search = compile_regex(config.regex).search
        # `.*` matches every body: keeping all is a no-op, excluding drops all.
        self.matches_all = config.regex == ".*"

    def intercept(self, events: list[Event]) -> list[Event]:
        exclude = self.config.excludeEvents
        if self.matches_all:
            return [] if exclude else events
        search = self.search
        if exclude:
            return [e for e in events if search(e.body.decode("utf-8", "replace")) is None]
        return [e for e in events if search(e.body.decode("utf-8", "replace")) is not None]
