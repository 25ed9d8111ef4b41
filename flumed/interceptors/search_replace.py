"""Interceptor `search_replace`: regex search and replace on the body.

Keys as Flume's SearchAndReplaceInterceptor: `searchPattern` (required, a Java
regex), `replaceString` ("" — Java replacement syntax: `$1`, `${name}`, `\\$`),
`charset` ("UTF-8"). Bytes that are not valid in the charset pass through unchanged
(Python's surrogateescape), where Java would replace them with U+FFFD.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Any

from flumed.config.keys import key
from flumed.event import Event
from flumed.interceptors._java import compile_regex, regex_problem, replacement
from flumed.interceptors.base import Interceptor


@dataclass(frozen=True, slots=True)
class SearchReplaceConfig:
    searchPattern: str = key()
    replaceString: str = key("")
    charset: str = key("UTF-8")

    def check(self) -> list[str]:
        if not self.searchPattern:
            return ["key 'searchPattern': must not be empty"]
        out = regex_problem("searchPattern", self.searchPattern)
        if not out:
            try:
                replacement(self.replaceString, compile_regex(self.searchPattern))
            except ValueError as e:
                out.append(f"key 'replaceString': {e}, got {self.replaceString!r}")
        try:
            codecs.lookup(self.charset)
        except LookupError:
            out.append(f"key 'charset': unknown charset {self.charset!r}")
        return out


class SearchAndReplaceInterceptor(Interceptor):
    Config = SearchReplaceConfig
    config: SearchReplaceConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.regex: re.Pattern[str] = compile_regex(config.searchPattern)
        self.template = replacement(config.replaceString, self.regex)
        self.charset = codecs.lookup(config.charset).name

    def intercept(self, events: list[Event]) -> list[Event]:
        sub, template, cs = self.regex.sub, self.template, self.charset
        for e in events:
            e.body = sub(template, e.body.decode(cs, "surrogateescape")).encode(
                cs, "surrogateescape"
            )
        return events
