"""One TLS key set for every TLS-capable source, Flume's spellings as aliases."""

from __future__ import annotations

import pytest

from flumed.config.keys import parse
from flumed.errors import ConfigError
from flumed.sources.avro import AvroSourceConfig
from flumed.sources.http import HTTPSourceConfig
from flumed.sources.multiport_syslogtcp import MultiportSyslogTcpConfig
from flumed.sources.syslogtcp import SyslogTcpConfig
from flumed.sources.thrift import ThriftSourceConfig

BASE = {
    AvroSourceConfig: {"bind": "h", "port": "1"},
    ThriftSourceConfig: {"bind": "h", "port": "1"},
    SyslogTcpConfig: {"port": "1"},
    MultiportSyslogTcpConfig: {"ports": "1 2"},
    HTTPSourceConfig: {"port": "1"},
}


@pytest.mark.parametrize("cls", list(BASE))
def test_flume_spellings_land_on_the_same_keys(cls) -> None:  # type: ignore[no-untyped-def]
    flume = {
        "enableSSL": "true",
        "keystore": "/etc/tls/chain.pem",
        "keystore-key": "/etc/tls/key.pem",
        "keystore-password": "secret",
        "excludeProtocols": "SSLv3 TLSv1",
    }
    cfg = parse(cls, {**BASE[cls], **flume}, "r")
    assert cfg.ssl is True
    assert cfg.certificate == "/etc/tls/chain.pem"
    assert cfg.key_file == "/etc/tls/key.pem"
    assert cfg.key_password == "secret"
    assert cfg.exclude_protocols == ["SSLv3", "TLSv1"]
    # and every listening source has the connection limits
    assert cfg.maxConnections >= 1 and cfg.frame_timeout > 0


@pytest.mark.parametrize("cls", list(BASE))
def test_java_keystores_are_refused_with_the_way_out(cls) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="Java keystores are not read"):
        parse(cls, {**BASE[cls], "ssl": "true", "keystore": "/etc/tls/server.jks"}, "r")
    with pytest.raises(ConfigError, match="keystore-type 'PKCS12'"):
        parse(cls, {**BASE[cls], "keystore-type": "PKCS12"}, "r")


def test_cipher_suite_keys_are_accepted_and_ignored(caplog) -> None:  # type: ignore[no-untyped-def]
    parse(AvroSourceConfig, {**BASE[AvroSourceConfig], "include-cipher-suites": "X"}, "r")
    assert "include-cipher-suites" in caplog.text and "ignored" in caplog.text
