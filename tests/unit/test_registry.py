"""The registry: every row imports, is the right kind of class, and every Flume class
name it declares resolves to it; `--list-types` prints the rows; the README lists them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from flumed import registry
from flumed.channels.base import Channel
from flumed.config.graph import build_agent
from flumed.config.properties import properties_to_document
from flumed.errors import ConfigError
from flumed.interceptors.base import Interceptor
from flumed.routing.selectors import ChannelSelector
from flumed.serializers.base import EventSerializer
from flumed.sinks.base import Sink
from flumed.sinks.runner import SinkProcessor
from flumed.sources.base import Source

BASES: dict[str, type] = {
    "sources": Source,
    "channels": Channel,
    "sinks": Sink,
    "interceptors": Interceptor,
    "sinkprocessors": SinkProcessor,
    "selectors": ChannelSelector,
    "serializers": EventSerializer,
}
ROWS = [(kind, row) for kind, table in registry.TABLES.items() for row in table.values()]
#: Types flumed has that Flume does not (no Flume class to name).
BEYOND_FLUME = {"amqp"}
README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_kind_has_a_base():
    assert set(BASES) == set(registry.TABLES)


@pytest.mark.parametrize(("kind", "row"), ROWS, ids=[f"{k}:{r.name}" for k, r in ROWS])
def test_row_imports_and_is_a_component(kind, row):
    cls = registry.resolve(kind, row.name, BASES[kind])
    assert issubclass(cls, BASES[kind])
    assert row.description.endswith("."), row
    assert row.flume or row.name in BEYOND_FLUME, f"{row.name} names no Flume class"
    for flume in row.flume:
        assert registry.resolve(kind, flume) is cls
        assert registry.resolve(kind, flume.upper()) is cls
    if kind in ("sources", "channels", "sinks", "interceptors"):
        assert isinstance(cls.Config, type)


def test_unknown_flume_class_says_it_is_not_available():
    with pytest.raises(registry.UnknownTypeError) as e:
        registry.resolve("sources", "org.apache.flume.source.NoSuchSource")
    msg = str(e.value)
    assert "Flume's org.apache.flume.source.NoSuchSource is not available in flumed" in msg
    assert "netcat" in msg and "No module named" not in msg


def test_non_component_object_is_refused():
    with pytest.raises(registry.UnknownTypeError, match="is not a Source"):
        registry.resolve("sources", "flumed.sources.netcat:NetcatConfig", Source)


FLUME_GROUP = """
a1.sources = r1
a1.channels = c1 c2
a1.sinks = k1 k2
a1.sinkgroups = g1
a1.sources.r1.type = org.apache.flume.source.NetcatSource
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = 0
a1.sources.r1.channels = c1 c2
a1.sources.r1.selector.type = {selector}
a1.sources.r1.selector.header = dc
a1.sources.r1.selector.default = c1
a1.channels.c1.type = org.apache.flume.channel.MemoryChannel
a1.channels.c2.type = memory
a1.sinks.k1.type = org.apache.flume.sink.LoggerSink
a1.sinks.k1.channel = c1
a1.sinks.k2.type = null
a1.sinks.k2.channel = c2
a1.sinkgroups.g1.sinks = k1 k2
a1.sinkgroups.g1.processor.type = {processor}
"""


@pytest.mark.parametrize(
    ("selector", "processor", "want_sel", "want_proc"),
    [
        (
            "org.apache.flume.channel.MultiplexingChannelSelector",
            "org.apache.flume.sink.FailoverSinkProcessor",
            "multiplexing",
            "FailoverSinkProcessor",
        ),
        (
            "org.apache.flume.channel.ReplicatingChannelSelector",
            "org.apache.flume.sink.LoadBalancingSinkProcessor",
            "replicating",
            "LoadBalancingSinkProcessor",
        ),
    ],
)
def test_flume_selector_and_processor_classes_load(selector, processor, want_sel, want_proc):
    text = FLUME_GROUP.format(selector=selector, processor=processor)
    if want_sel == "replicating":
        text = text.replace("a1.sources.r1.selector.header = dc\n", "").replace(
            "a1.sources.r1.selector.default = c1\n", ""
        )
    spec = build_agent(properties_to_document(text), "a1", "flume.conf")
    assert spec.sources["r1"].selector.type == want_sel
    assert spec.sinkgroups["g1"].processor_cls.__name__ == want_proc


def test_validate_refuses_non_component_type(tmp_path):
    conf = tmp_path / "a.toml"
    conf.write_text(
        '[agents.a1.sources.r1]\ntype = "flumed.sources.netcat:NetcatConfig"\n'
        'channels = ["c1"]\n[agents.a1.channels.c1]\ntype = "memory"\n'
    )
    with pytest.raises(ConfigError) as e:
        from flumed.config.loader import load_document

        build_agent(load_document(conf), "a1", str(conf))
    assert any("is not a Source" in p and "source r1" in p for p in e.value.problems)


def test_list_types_prints_short_name_flume_class_and_description():
    r = subprocess.run(
        [sys.executable, "-m", "flumed", "validate", "--list-types"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for _kind, row in ROWS:
        line = next((ln for ln in r.stdout.splitlines() if ln.split()[:1] == [row.name]), None)
        assert line is not None, row.name
        assert row.description in r.stdout
    assert "org.apache.flume.sink.hdfs" not in r.stdout or "hdfs" in registry.SINKS


def test_readme_component_table_lists_every_type():
    text = README.read_text()
    table = {}
    for kind in ("channels", "sources", "sinks", "interceptors"):
        m = re.search(rf"^\| {kind} \| (.+?) \|", text, re.M)
        assert m, f"README has no row for {kind}"
        table[kind] = set(re.findall(r"`([a-z_0-9]+)`", m.group(1)))
    for kind, names in table.items():
        assert names == set(registry.TABLES[kind]), kind


def test_flumes_short_names_and_java_classes_read_as_such():
    """Issue 16 point 5: Flume's types flumed lacks are named as Flume's, and a Java class
    name is not reported as a broken Python install only."""
    from flumed.sinks.base import Sink
    from flumed.sources.base import Source

    with pytest.raises(registry.UnknownTypeError) as ei:
        registry.resolve("sinks", "irc", Sink)
    assert "Flume's sink type 'irc' is not available in flumed" in str(ei.value)
    assert "available sinks: " in str(ei.value)
    with pytest.raises(registry.UnknownTypeError) as ei:
        registry.resolve("sources", "org.example.MySource", Source)
    msg = str(ei.value)
    assert "No module named 'org'" in msg and "a Java class does not run here" in msg
    assert "built-in sources: " in msg
