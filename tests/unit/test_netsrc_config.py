"""Key validation of the network sources: Flume keys accepted, unsupported ones named."""

from __future__ import annotations

import pytest

from flumed.config.keys import parse
from flumed.errors import ConfigError
from flumed.sources.http import HTTPSource
from flumed.sources.multiport_syslogtcp import MultiportSyslogTcpSource
from flumed.sources.syslogtcp import SyslogTcpSource
from flumed.sources.syslogudp import SyslogUdpSource


def problems(cls: type, conf: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as e:
        parse(cls.Config, conf, "sources.r1")
    return str(e.value)


def test_flume_syslog_keys_are_accepted() -> None:
    c = parse(
        SyslogTcpSource.Config,
        {"host": "127.0.0.1", "port": "5140", "eventSize": "4096", "keepFields": "true",
         "clientIPHeader": "ip", "clientHostnameHeader": "hn"},
        "r1",
    )  # fmt: skip
    assert (c.port, c.eventSize, c.keepFields) == (5140, 4096, "true")
    m = parse(
        MultiportSyslogTcpSource.Config,
        {"ports": "5140 5141", "charset.port.5141": "ISO-8859-1", "portHeader": "port",
         "readBufferBytes": "2048", "numProcessors": "4", "batchSize": "500"},
        "r1",
    )  # fmt: skip
    assert m.port_numbers() == [5140, 5141] and m.charset_port == {"5141": "ISO-8859-1"}
    u = parse(SyslogUdpSource.Config, {"port": 5140, "keepFields": "timestamp"}, "r1")
    assert u.maxBufferedDatagrams == 10_000


def test_unsupported_flume_features_are_named() -> None:
    text = problems(SyslogTcpSource, {"port": 1, "ssl": "true"})
    assert "needs key 'certificate' (a Java keystore, or a PEM file" in text
    text = problems(SyslogTcpSource, {"port": 1, "format.regex": "(.*)"})
    assert "format.*" in text
    text = problems(SyslogUdpSource, {"port": 1, "format.regex": "(.*)"})
    assert "format.*" in text
    assert "eventSize" in problems(SyslogTcpSource, {"port": 1, "eventSize": 5})


def test_tls_protocol_keys() -> None:
    ok = {"port": 1, "ssl": "true", "certificate": "/c.pem"}
    parse(SyslogTcpSource.Config, {**ok, "exclude-protocols": "SSLv3 TLSv1 TLSv1.1"}, "r1")
    assert "unknown TLS protocol" in problems(SyslogTcpSource, {**ok, "include-protocols": "TLS9"})
    assert "contiguous" in problems(SyslogTcpSource, {**ok, "include-protocols": "TLSv1.1 TLSv1.3"})


def test_multiport_key_problems() -> None:
    text = problems(
        MultiportSyslogTcpSource,
        {"ports": "5140 x 5140 70000", "charset.port.5150": "UTF-8", "charset.default": "nope"},
    )
    assert "'x' is not a port number" in text and "'70000' is not a port number" in text
    assert "listed twice: 5140" in text
    assert "unknown charset 'nope'" in text
    assert "charset.port.5150" in text


def test_http_keys() -> None:
    c = parse(
        HTTPSource.Config,
        {"port": 1, "enableSSL": "false", "handler": "org.apache.flume.source.http.BLOBHandler",
         "handler.maxBlobLength": "10", "HttpConfiguration.sendServerVersion": "false"},
        "r1",
    )  # fmt: skip
    assert c.handler_name == "org.apache.flume.source.http.BLOBHandler"
    assert c.handler_settings == {"maxBlobLength": "10"}
    # The TOML table form: [sources.r1.handler] type = "BlobHandler".
    t = parse(HTTPSource.Config, {"port": 1, "handler.type": "BlobHandler"}, "r1")
    assert t.handler_name == "BlobHandler" and t.handler_settings == {}
    assert "unknown handler 'XMLHandler'" in problems(
        HTTPSource, {"port": 1, "handler": "XMLHandler"}
    )
    text = problems(HTTPSource, {"port": 1, "handler": "BlobHandler", "handler.maxBlobLength": "0"})
    assert "maxBlobLength must be > 0" in text
    text = problems(HTTPSource, {"port": 1, "handler.bogus": "1"})
    assert "JSONHandler takes no settings" in text
