"""Interceptors: Flume's keys and behaviour, config errors, and chains loaded from files."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from flumed import registry
from flumed.config.graph import build_agent
from flumed.config.keys import flatten, parse
from flumed.config.loader import load_document
from flumed.errors import ConfigError
from flumed.event import Event
from flumed.interceptors.base import Interceptor


def make(type_name: str, **keys: Any) -> Interceptor:
    """Build an interceptor the way the agent does: registry, flat keys, parse."""
    cls = registry.resolve("interceptors", type_name)
    config = parse(cls.Config, flatten(keys), f"interceptor {type_name}")
    return cls("i1", config)


def config_error(type_name: str, **keys: Any) -> str:
    cls = registry.resolve("interceptors", type_name)
    with pytest.raises(ConfigError) as info:
        parse(cls.Config, flatten(keys), "interceptor i1")
    return str(info.value)


def evs(*bodies: str, **headers: str) -> list[Event]:
    return [Event(b.encode(), dict(headers)) for b in bodies]


# -- timestamp -----------------------------------------------------------------------


def test_timestamp_sets_epoch_millis():
    before = int(time.time() * 1000)
    out = make("timestamp").intercept(evs("a", "b"))
    after = int(time.time() * 1000)
    for e in out:
        assert before <= int(e.headers["timestamp"]) <= after


def test_timestamp_overwrites_unless_preserve_existing():
    out = make("timestamp", headerName="ts").intercept(evs("a", ts="1"))
    assert out[0].headers["ts"] != "1"
    out = make("timestamp", headerName="ts", preserveExisting=True).intercept(
        evs("a", ts="1") + evs("b")
    )
    assert out[0].headers["ts"] == "1"
    assert out[1].headers["ts"].isdigit()


def test_timestamp_accepts_flume_class_name_and_property_strings():
    i = make("org.apache.flume.interceptor.TimestampInterceptor$Builder", preserveExisting="true")
    assert i.intercept(evs("a", timestamp="7"))[0].headers["timestamp"] == "7"


# -- host ----------------------------------------------------------------------------


def test_host_uses_ip_by_default():
    ip = socket.gethostbyname(socket.gethostname())
    out = make("host").intercept(evs("a", host="old"))
    assert out[0].headers["host"] == ip


def test_host_name_and_custom_header_and_preserve():
    name = socket.getfqdn(socket.gethostname())
    i = make("host", useIP=False, hostHeader="hostname", preserveExisting=True)
    out = i.intercept(evs("a") + evs("b", hostname="keep"))
    assert out[0].headers["hostname"] == name
    assert out[1].headers["hostname"] == "keep"


# -- static --------------------------------------------------------------------------


def test_static_defaults_preserve_existing():
    out = make("static").intercept(evs("a") + evs("b", key="mine"))
    assert out[0].headers == {"key": "value"}
    assert out[1].headers == {"key": "mine"}


def test_static_overwrite():
    i = make("static", key="dc", value="eu-1", preserveExisting=False)
    assert i.intercept(evs("a", dc="us"))[0].headers == {"dc": "eu-1"}


# -- remove_header -------------------------------------------------------------------


def test_remove_header_with_name_list_and_regex():
    i = make("remove_header", withName="a", fromList="b , c,d", matching="x-.*")
    e = Event(b"", {"a": "1", "b": "2", "c": "3", "d": "4", "x-y": "5", "keep": "6", "ax-": "7"})
    assert i.intercept([e])[0].headers == {"keep": "6", "ax-": "7"}


def test_remove_header_matching_is_whole_name_and_custom_separator():
    i = make("remove_header", fromList="p|q", fromListSeparator=r"\|", matching="tmp")
    out = i.intercept([Event(b"", {"p": "", "q": "", "tmp": "", "tmp2": "", "p|q": ""})])
    assert out[0].headers == {"tmp2": "", "p|q": ""}


def test_remove_header_bad_regex_names_key():
    msg = config_error("remove_header", matching="(unclosed")
    assert "interceptor i1: key 'matching': invalid regular expression" in msg
    assert "key 'fromListSeparator'" in config_error("remove_header", fromListSeparator="[")


# -- uuid ----------------------------------------------------------------------------


def test_uuid_unique_prefixed_and_preserved():
    i = make("uuid", prefix="web-")
    out = i.intercept(evs("a", "b") + evs("c", id="given"))
    ids = [e.headers["id"] for e in out]
    assert ids[2] == "given"
    assert ids[0] != ids[1]
    for v in ids[:2]:
        assert v.startswith("web-")
        assert uuid.UUID(v[4:]).version == 4


def test_uuid_overwrite_and_header_name():
    out = make("uuid", headerName="eid", preserveExisting=False).intercept(evs("a", eid="x"))
    assert uuid.UUID(out[0].headers["eid"])


# -- regex_filter --------------------------------------------------------------------


def test_regex_filter_keeps_matching_by_default():
    i = make("regex_filter", regex="ERROR|WARN")
    out = i.intercept(evs("INFO ok", "x ERROR y", "WARN z"))
    assert [e.body for e in out] == [b"x ERROR y", b"WARN z"]


def test_regex_filter_exclude_events():
    i = make("regex_filter", regex=r"^DEBUG\b", excludeEvents=True)
    out = i.intercept(evs("DEBUG a", "INFO b", "DEBUGGER c"))
    assert [e.body for e in out] == [b"INFO b", b"DEBUGGER c"]


def test_regex_filter_defaults_keep_everything_and_exclude_drops_all():
    batch = evs("a", "")
    assert make("regex_filter").intercept(batch) == batch
    assert make("regex_filter", excludeEvents=True).intercept(evs("a", "")) == []


def test_regex_filter_decodes_utf8_and_survives_invalid_bytes():
    i = make("regex_filter", regex="é")
    out = i.intercept([Event("café".encode()), Event(b"\xff\xfe caf"), Event(b"cafe")])
    assert [e.body for e in out] == ["café".encode()]


def test_regex_filter_bad_regex():
    assert "key 'regex': invalid regular expression '*x'" in config_error(
        "regex_filter", regex="*x"
    )


# -- regex_extractor -----------------------------------------------------------------


def test_regex_extractor_groups_to_headers_in_order():
    i = make(
        "regex_extractor",
        regex=r"^(\w+) \[(\w+)\] (\d+)",
        serializers={"s1": {"name": "host"}, "s2": {"name": "level"}},
    )
    out = i.intercept(evs("web1 [WARN] 42 disk", "no match here"))
    assert out[0].headers == {"host": "web1", "level": "WARN"}
    assert out[1].headers == {}


def test_regex_extractor_java_named_groups_and_missing_group():
    i = make(
        "regex_extractor",
        regex=r"(?<a>x)?(y)",
        serializers={"s1": {"name": "a"}, "s2": {"name": "b"}},
    )
    assert i.intercept(evs("xy", "y"))[0].headers == {"a": "x", "b": "y"}
    assert i.intercept(evs("y"))[0].headers == {"b": "y"}


def test_regex_extractor_millis_serializer():
    millis = "org.apache.flume.interceptor.RegexExtractorInterceptorMillisSerializer"
    i = make(
        "regex_extractor",
        regex=r"^(\S+ \S+) (\S+ [+-]\d{4})",
        serializers={
            "s1": {"name": "local", "type": millis, "pattern": "yyyy-MM-dd HH:mm:ss.SSS"},
            "s2": {"name": "utc", "type": millis, "pattern": "yyyy-MM-dd'T'HH:mm:ss Z"},
        },
    )
    out = i.intercept(evs("2024-03-01 12:30:45.123 2024-03-01T12:30:45 +0000 rest"))
    local = datetime(2024, 3, 1, 12, 30, 45, 123000).astimezone()
    assert out[0].headers["local"] == str(int(local.timestamp() * 1000))
    assert out[0].headers["utc"] == "1709296245000"


def test_regex_extractor_unparseable_time_sets_no_header_and_keeps_event():
    millis = "org.apache.flume.interceptor.RegexExtractorInterceptorMillisSerializer"
    i = make(
        "regex_extractor",
        regex=r"^(\S+) (\S+)",
        serializers={
            "s1": {"name": "t", "type": millis, "pattern": "yyyyMMdd"},
            "s2": {"name": "w"},
        },
    )
    out = i.intercept(evs("notadate word", "20240301 ok"))
    assert out[0].headers == {"w": "word"}
    assert out[1].headers["w"] == "ok" and out[1].headers["t"].isdigit()
    assert i.failures == 1


def test_regex_extractor_config_errors():
    assert "missing required key 'regex'" in config_error(
        "regex_extractor", serializers={"s1": {"name": "x"}}
    )
    assert "missing required key 'serializers'" in config_error("regex_extractor", regex="(a)")
    msg = config_error("regex_extractor", regex="(a)", serializers={"s1": {"type": "DEFAULT"}})
    assert "key 'serializers.s1': missing required key 'name'" in msg
    msg = config_error(
        "regex_extractor", regex="(a)", serializers={"s1": {"name": "x"}, "s2": {"name": "y"}}
    )
    assert "2 serializers but the regex has only 1 group(s)" in msg
    msg = config_error("regex_extractor", regex="(a", serializers={"s1": {"name": "x"}})
    assert "key 'regex': invalid regular expression" in msg
    millis = "org.apache.flume.interceptor.RegexExtractorInterceptorMillisSerializer"
    msg = config_error(
        "regex_extractor",
        regex="(a)",
        serializers={"s1": {"name": "x", "type": millis, "pattern": "yyyy QQ"}},
    )
    assert "key 'serializers.s1.pattern': pattern letters 'QQ' are not supported" in msg
    msg = config_error("regex_extractor", regex="(a)", serializers={"s1": {"name": "x", "t": 1}})
    assert "key 'serializers.s1.t': unknown key" in msg
    msg = config_error("regex_extractor", regex="(a)", serializers="s1")
    assert "expected a table of named serializers" in msg


# -- search_replace ------------------------------------------------------------------


def test_search_replace_java_replacement_syntax():
    i = make("search_replace", searchPattern=r"(\w+)@(?<dom>\w+)", replaceString=r"$1 at ${dom} \$")
    assert i.intercept(evs("mail bob@example now"))[0].body == b"mail bob at example $ now"


def test_search_replace_defaults_delete_and_keep_invalid_bytes():
    i = make("search_replace", searchPattern=r"\d+")
    out = i.intercept([Event(b"a1b22\xffc333")])
    assert out[0].body == b"ab\xffc"


def test_search_replace_charset():
    i = make("search_replace", searchPattern="é", replaceString="e", charset="ISO-8859-1")
    assert i.intercept([Event("café".encode("latin-1"))])[0].body == b"cafe"


def test_search_replace_config_errors():
    assert "missing required key 'searchPattern'" in config_error("search_replace")
    assert "key 'searchPattern': must not be empty" in config_error(
        "search_replace", searchPattern=""
    )
    assert "key 'searchPattern': invalid regular expression" in config_error(
        "search_replace", searchPattern="a)"
    )
    assert "key 'replaceString': no group 2" in config_error(
        "search_replace", searchPattern="(a)", replaceString="$2"
    )
    assert "key 'charset': unknown charset 'nope'" in config_error(
        "search_replace", searchPattern="a", charset="nope"
    )


def test_unknown_key_is_an_error():
    assert "interceptor i1: unknown key 'headername'" in config_error("timestamp", headername="x")


# -- chains loaded from files --------------------------------------------------------

CHAIN_TOML = r"""
[agents.a1.sources.r1]
type = "netcat"
bind = "127.0.0.1"
port = 0
channels = ["c1"]

[agents.a1.sources.r1.interceptors.ts]
type = "timestamp"
[agents.a1.sources.r1.interceptors.st]
type = "static"
key = "dc"
value = "eu"
[agents.a1.sources.r1.interceptors.rx]
type = "regex_extractor"
regex = '^(\w+) (\d+)'
[agents.a1.sources.r1.interceptors.rx.serializers.s2]
name = "word"
[agents.a1.sources.r1.interceptors.rx.serializers.s1]
name = "num"
[agents.a1.sources.r1.interceptors.flt]
type = "regex_filter"
regex = "drop"
excludeEvents = true

[agents.a1.channels.c1]
type = "memory"

[agents.a1.sinks.k1]
type = "null"
channel = "c1"
"""

CHAIN_PROPERTIES = r"""
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = netcat
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = 0
a1.sources.r1.channels = c1
a1.sources.r1.interceptors = ts st rx flt
a1.sources.r1.interceptors.flt.type = regex_filter
a1.sources.r1.interceptors.flt.regex = drop
a1.sources.r1.interceptors.flt.excludeEvents = true
a1.sources.r1.interceptors.rx.type = org.apache.flume.interceptor.RegexExtractorInterceptor$Builder
a1.sources.r1.interceptors.rx.regex = ^(\\w+) (\\d+)
a1.sources.r1.interceptors.rx.serializers = s2 s1
a1.sources.r1.interceptors.rx.serializers.s1.name = num
a1.sources.r1.interceptors.rx.serializers.s2.name = word
a1.sources.r1.interceptors.st.type = static
a1.sources.r1.interceptors.st.key = dc
a1.sources.r1.interceptors.st.value = eu
a1.sources.r1.interceptors.ts.type = timestamp
a1.channels.c1.type = memory
a1.sinks.k1.type = null
a1.sinks.k1.channel = c1
"""


@pytest.mark.parametrize(
    ("suffix", "text"), [(".toml", CHAIN_TOML), (".properties", CHAIN_PROPERTIES)]
)
def test_chain_loads_in_order(tmp_path: Path, suffix: str, text: str):
    path = tmp_path / f"agent{suffix}"
    path.write_text(text)
    spec = build_agent(load_document(path), "a1", str(path))
    chain = spec.sources["r1"].interceptors
    assert [i.name for i in chain] == ["ts", "st", "rx", "flt"]
    assert [i.cls.__name__ for i in chain] == [
        "TimestampInterceptor",
        "StaticInterceptor",
        "RegexExtractorInterceptor",
        "RegexFilteringInterceptor",
    ]
    # Run the chain as the channel processor does: in order, over one batch.
    icpts = [i.cls(i.name, i.config) for i in chain]
    batch = evs("hello 12 world", "drop 3 me")
    for i in icpts:
        batch = i.intercept(batch)
    assert len(batch) == 1
    h = batch[0].headers
    # serializers s2 then s1: group 1 → "word", group 2 → "num"
    assert (h["word"], h["num"], h["dc"]) == ("hello", "12", "eu")
    assert h["timestamp"].isdigit()


def test_chain_error_names_file_agent_source_interceptor_and_key(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text(CHAIN_TOML.replace('regex = "drop"', 'regex = "(drop"'))
    with pytest.raises(ConfigError) as info:
        build_agent(load_document(path), "a1", str(path))
    assert (
        f"{path}: agent a1: source r1: interceptor flt: key 'regex': invalid regular expression"
        in str(info.value)
    )
