"""Flume's include-/exclude-cipher-suites (Java names) honoured through OpenSSL names
(issue 16 point 4): a real TLS 1.2 handshake picks only what the server allows."""

from __future__ import annotations

import asyncio
import ssl

import pytest
import trustme

from flumed.config.keys import parse
from flumed.errors import ConfigError
from flumed.sources.thrift import ThriftSourceConfig
from flumed.tls_ciphers import apply_ciphers, cipher_problems, to_openssl


@pytest.mark.parametrize(
    ("java", "openssl"),
    [
        ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"),
        ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"),
        ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"),
        ("TLS_DHE_RSA_WITH_AES_128_CBC_SHA", "DHE-RSA-AES128-SHA"),
        ("TLS_RSA_WITH_AES_256_CBC_SHA256", "AES256-SHA256"),
        ("TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256"),
        ("SSL_RSA_WITH_3DES_EDE_CBC_SHA", "DES-CBC3-SHA"),
        ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "ECDHE-RSA-AES128-SHA256"),
        ("TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384"),
        ("TLS_NOPE_WITH_FOO", None),
    ],
)
def test_java_names_map_to_openssl(java, openssl):
    assert to_openssl(java) == openssl


def test_config_accepts_and_checks_the_keys():
    c = parse(
        ThriftSourceConfig,
        {
            "bind": "127.0.0.1",
            "port": "0",
            "exclude-cipher-suites": "TLS_RSA_WITH_AES_128_CBC_SHA TLS_RSA_WITH_AES_256_CBC_SHA",
        },
        "r1",
    )
    assert c.exclude_cipher_suites == [
        "TLS_RSA_WITH_AES_128_CBC_SHA",
        "TLS_RSA_WITH_AES_256_CBC_SHA",
    ]
    with pytest.raises(ConfigError, match="unknown or unavailable cipher suite 'TLS_FOO'"):
        parse(
            ThriftSourceConfig, {"bind": "h", "port": "1", "include-cipher-suites": "TLS_FOO"}, "r1"
        )
    assert cipher_problems(["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"], []) == []


async def _negotiated(server: ssl.SSLContext, client: ssl.SSLContext) -> str | None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"x")
        await w.drain()
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server)
    port = srv.sockets[0].getsockname()[1]
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client,
                                             server_hostname="localhost")  # fmt: skip
        await r.readexactly(1)
        name = w.get_extra_info("cipher")[0]
        w.close()
        return name
    finally:
        srv.close()
        await srv.wait_closed()


def _pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA(key_type=trustme.KeyType.RSA)  # the suites below are RSA-signed
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost", key_type=trustme.KeyType.RSA).configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    return server, client


async def test_include_pins_the_suite_in_a_real_handshake():
    server, client = _pair()
    apply_ciphers(server, ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"], [])
    assert await _negotiated(server, client) == "ECDHE-RSA-AES128-GCM-SHA256"


async def test_exclude_refuses_the_only_suite_a_client_offers():
    server, client = _pair()
    client.set_ciphers("ECDHE-RSA-AES256-GCM-SHA384")
    assert await _negotiated(server, client) == "ECDHE-RSA-AES256-GCM-SHA384"
    server, client = _pair()
    client.set_ciphers("ECDHE-RSA-AES256-GCM-SHA384")
    apply_ciphers(server, [], ["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"])
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await _negotiated(server, client)


@pytest.mark.parametrize("typ", ["avro", "http", "syslogtcp", "multiport_syslogtcp", "thrift"])
def test_every_tls_source_takes_the_keys_alike(typ):
    from flumed import registry
    from flumed.sources.base import Source

    cls = registry.resolve("sources", typ, Source)
    base = {"port": "1", "ports": "1", "bind": "127.0.0.1"}
    keys = {k: v for k, v in base.items() if k in {f.metadata.get("name") or f.name
            for f in __import__("dataclasses").fields(cls.Config)}}  # fmt: skip
    c = parse(cls.Config, {**keys, "include-cipher-suites": "TLS_RSA_WITH_AES_128_GCM_SHA256"}, "r")
    assert c.include_cipher_suites == ["TLS_RSA_WITH_AES_128_GCM_SHA256"]
    with pytest.raises(ConfigError, match="unknown or unavailable cipher suite 'TLS_X'"):
        parse(cls.Config, {**keys, "exclude-cipher-suites": "TLS_X"}, "r")


async def test_server_context_applies_the_keys(tmp_path):
    from flumed import tls

    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    cert = ca.issue_cert("localhost", key_type=trustme.KeyType.RSA)
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(chain))
    cert.private_key_pem.write_to_path(str(key))
    server = tls.start_server_context(
        "source r1", str(chain), str(key), None,
        ciphers=(["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"], []),
    )  # fmt: skip
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    assert await _negotiated(server, client) == "ECDHE-RSA-AES256-GCM-SHA384"
