"""Keys of the avro source and sink: Flume's spelling, checks at load time, and a Flume
`.properties` tier configuration accepted as it is."""

from __future__ import annotations

import logging

import pytest

from flumed.config.graph import build_agent
from flumed.config.properties import properties_to_document
from flumed.errors import ConfigError
from flumed.sinks.avro import AvroSink
from flumed.sources.avro import AvroSource

FLUME_TIER = """
# A Flume web-server agent forwarding to a collector, and the collector.
web.sources = r1
web.channels = c1
web.sinks = k1
web.sources.r1.type = netcat
web.sources.r1.bind = 127.0.0.1
web.sources.r1.port = 44444
web.sources.r1.channels = c1
web.channels.c1.type = memory
web.sinks.k1.type = org.apache.flume.sink.AvroSink
web.sinks.k1.channel = c1
web.sinks.k1.hostname = collector.example
web.sinks.k1.port = 4545
web.sinks.k1.batch-size = 500
web.sinks.k1.compression-type = deflate
web.sinks.k1.compression-level = 9
web.sinks.k1.connect-timeout = 5000
web.sinks.k1.reset-connection-interval = 600

col.sources = r1
col.channels = c1
col.sinks = k1
col.sources.r1.type = avro
col.sources.r1.bind = 0.0.0.0
col.sources.r1.port = 4545
col.sources.r1.threads = 8
col.sources.r1.compression-type = deflate
col.sources.r1.ipFilter = true
col.sources.r1.ipFilterRules = allow:ip:10.*,allow:name:localhost,deny:ip:*
col.sources.r1.channels = c1
col.channels.c1.type = memory
col.sinks.k1.type = logger
col.sinks.k1.channel = c1
"""


def test_flume_properties_tier(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    doc = properties_to_document(FLUME_TIER)
    web = build_agent(doc, "web", "tier.properties")
    sink = web.sinks["k1"]
    assert sink.cls is AvroSink
    cfg = sink.config
    assert (cfg.hostname, cfg.port, cfg.batch_size) == ("collector.example", 4545, 500)
    assert (cfg.compression_type, cfg.compression_level) == ("deflate", 9)
    assert cfg.connect_timeout == 5000 and cfg.reset_connection_interval == 600
    col = build_agent(doc, "col", "tier.properties")
    src = col.sources["r1"]
    assert src.cls is AvroSource
    assert src.config.ipFilter and src.config.compression_type == "deflate"
    assert "threads' has no meaning" in caplog.text


def _agent(source: dict | None = None, sink: dict | None = None) -> None:
    a: dict = {"channels": {"c": {"type": "memory"}}}
    if source is not None:
        a["sources"] = {"r": {"type": "avro", "bind": "127.0.0.1", "channels": ["c"], **source}}
    if sink is not None:
        a["sinks"] = {"k": {"type": "avro", "channel": "c", **sink}}
    build_agent({"agents": {"a": a}}, "a", "f.toml")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({}, "missing required key 'port'"),
        ({"port": 1, "ssl": True}, "needs key 'certificate' .a Java keystore, or a PEM"),
        ({"port": 1, "ipFilter": True}, "needs 'ipFilterRules'"),
        ({"port": 1, "ipFilter": True, "ipFilterRules": "allow:10.*"}, "ipFilterRules"),
        ({"port": 1, "compression-type": "gzip"}, "key 'compression-type'"),
        ({"port": 1, "include-protocols": "TLSv1.2 SSLv9"}, "unknown TLS protocol 'SSLv9'"),
        ({"port": 1, "include-protocols": "TLSv1.1 TLSv1.3"}, "contiguous range"),
        ({"port": 1, "max-frame-bytes": 10}, "must be >= 1024"),
        ({"port": 1, "keystore-pasword": "x"}, "unknown key 'keystore-pasword'"),
    ],
)
def test_source_errors(source: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        _agent(source=source)
    assert "source r" in str(e.value)


@pytest.mark.parametrize(
    ("sink", "message"),
    [
        ({"port": 1}, "missing required key 'hostname'"),
        ({"hostname": "h", "port": 0}, "must be >= 1"),
        ({"hostname": "h", "port": 1, "request-timeout": 500}, "must be >= 1000"),
        ({"hostname": "h", "port": 1, "compression-level": 10}, "must be <= 9"),
        ({"hostname": "h", "port": 1, "truststore-type": "BKS"}, "'BKS'; expected one of"),
        ({"hostname": "h", "port": 1, "batch-size": 0}, "must be >= 1"),
    ],
)
def test_sink_errors(sink: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        _agent(sink=sink)
    assert "sink k" in str(e.value)
