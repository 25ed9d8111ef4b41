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
def test_java_keystores_are_taken_and_odd_types_refused(cls) -> None:  # type: ignore[no-untyped-def]
    """Issue 16: Flume's keystores are read (flumed.keystores; see test_keystores.py)."""
    c = parse(cls, {**BASE[cls], "ssl": "true", "keystore": "/etc/tls/server.jks",
                    "keystore-password": "pw", "keystore-type": "JKS"}, "r")  # fmt: skip
    assert (c.certificate, c.key_password, c.tls_problems()) == ("/etc/tls/server.jks", "pw", [])
    with pytest.raises(ConfigError, match="key 'keystore-type': 'BKS'; expected one of"):
        parse(cls, {**BASE[cls], "keystore-type": "BKS"}, "r")


def test_cipher_suite_keys_are_honoured_and_checked() -> None:  # type: ignore[no-untyped-def]
    c = parse(AvroSourceConfig, {**BASE[AvroSourceConfig],
              "include-cipher-suites": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"}, "r")  # fmt: skip
    assert c.include_cipher_suites == ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]
    with pytest.raises(ConfigError, match="unknown or unavailable cipher suite 'X'"):
        parse(AvroSourceConfig, {**BASE[AvroSourceConfig], "include-cipher-suites": "X"}, "r")
