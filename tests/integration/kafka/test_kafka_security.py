"""TLS and SASL/PLAIN options, in Kafka's spelling, against a real broker.

This tansu build serves neither TLS nor SASL/PLAIN itself, so the broker advertises a
proxy in the test that adds them (tests/integration/kafka_broker.py): the Kafka
protocol, the TLS handshake and the SASL exchange are all real.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from flumed.agent import Agent
from flumed.channels.memory import MemoryChannel, MemoryChannelConfig
from flumed.config.graph import build_agent
from flumed.config.keys import parse
from flumed.errors import DeliveryError
from flumed.event import Event
from flumed.sinks.kafka import KafkaSink, KafkaSinkConfig
from tests.integration.kafka.support import read_json_lines
from tests.integration.kafka_broker import SaslPlainProxy, TansuBroker, TcpProxy, create_topics
from tests.util import free_port, wait_until

JAAS = "org.apache.kafka.common.security.plain.PlainLoginModule required"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def tls_files(tmp_path: Path) -> Iterator[tuple[ssl.SSLContext, Path]]:
    """A server context for the proxy, and the CA file clients trust."""
    ca = trustme.CA()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(ca_pem)
    yield server, ca_pem


def _round_trip_conf(bootstrap: str, topic: str, out: Path, client_keys: str) -> dict:
    """seq → memory → kafka sink → topic → kafka source → memory → JSON lines, with the
    same client keys for the producer and the consumer."""
    producer = client_keys.replace("@", "kafka.producer.")
    consumer = client_keys.replace("@", "kafka.consumer.")
    return tomllib.loads(f"""
[agents.a1.sources.seq]
type = "seq"
totalEvents = 100
batchSize = 50
channels = ["c1"]

[agents.a1.channels.c1]
type = "memory"

[agents.a1.sinks.out]
type = "kafka"
channel = "c1"
"kafka.bootstrap.servers" = "{bootstrap}"
"kafka.topic" = "{topic}"
{producer}

[agents.a1.sources.in]
type = "kafka"
channels = ["c2"]
"kafka.bootstrap.servers" = "{bootstrap}"
"kafka.topics" = "{topic}"
"kafka.consumer.group.id" = "{_name("g")}"
"kafka.consumer.auto.offset.reset" = "earliest"
batchDurationMillis = 100
backoffSleepIncrement = 50
maxBackoffSleep = 200
{consumer}

[agents.a1.channels.c2]
type = "memory"

[agents.a1.sinks.file]
type = "tests.integration.kafka.support:JsonLinesSink"
channel = "c2"
path = "{out}"
""")


async def _round_trip(doc: dict, out: Path) -> None:
    agent = Agent(build_agent(doc, "a1", "test"))
    await agent.start()
    try:
        await wait_until(lambda: len(read_json_lines(out)) >= 100, 60, "100 events back")
    finally:
        await agent.stop()
    assert sorted(int(r["b"]) for r in read_json_lines(out)) == list(range(100))


async def _sink_attempt(bootstrap: str, **keys: str) -> KafkaSink:
    """One process() of a Kafka sink with `keys`; returns the sink (for its counters)."""
    ch = MemoryChannel("c1", MemoryChannelConfig())
    await ch.start()
    sink = KafkaSink(
        "k1", parse(KafkaSinkConfig, {"kafka.bootstrap.servers": bootstrap, **keys}, "t")
    )
    sink.channel = ch
    await sink.start()
    try:
        async with ch.transaction() as tx:
            await tx.put_batch([Event(b"x")])
        with pytest.raises(DeliveryError, match="cannot reach Kafka"):
            await sink.process()
        assert ch.size == 1  # rolled back, nothing lost
    finally:
        await sink.stop()
        await ch.stop()
    return sink


async def test_tls_with_pem_truststore(tansu, tls_files, tmp_path):
    server_ctx, ca_pem = tls_files
    proxy_port = free_port()
    broker: TansuBroker = tansu(advertised_port=proxy_port)
    proxy = TcpProxy(broker.port, port=proxy_port, ssl_context=server_ctx).start()
    try:
        topic = _name("tls")
        client = ssl.create_default_context(cafile=str(ca_pem))
        await create_topics(
            broker.bootstrap, {topic: 1}, security_protocol="SSL", ssl_context=client
        )
        keys = f"""
"@security.protocol" = "SSL"
"@ssl.truststore.location" = "{ca_pem}"
"@ssl.truststore.type" = "PEM"
"""
        out = tmp_path / "out.jsonl"
        await _round_trip(_round_trip_conf(broker.bootstrap, topic, out, keys), out)
        # A client that does not trust the broker's certificate never connects.
        other_ca = tmp_path / "other.pem"
        trustme.CA().cert_pem.write_to_path(other_ca)
        sink = await _sink_attempt(
            broker.bootstrap,
            **{
                "kafka.producer.security.protocol": "SSL",
                "kafka.producer.ssl.truststore.location": str(other_ca),
            },
        )
        assert sink.counter.ConnectionFailedCount == 1
    finally:
        proxy.stop()


@pytest.mark.skipif(shutil.which("keytool") is None, reason="keytool (Java) is not installed")
async def test_tls_with_jks_truststore_made_by_keytool(tansu, tls_files, tmp_path):
    """Flume's guide spells Kafka TLS with a `.jks` truststore and its password."""
    server_ctx, ca_pem = tls_files
    jks = tmp_path / "truststore.jks"
    subprocess.run(
        [
            *("keytool", "-importcert", "-noprompt", "-alias", "ca", "-file", str(ca_pem)),
            *("-storetype", "JKS", "-keystore", str(jks), "-storepass", "trust-pw"),
        ],
        check=True,
        capture_output=True,
    )
    proxy_port = free_port()
    broker: TansuBroker = tansu(advertised_port=proxy_port)
    proxy = TcpProxy(broker.port, port=proxy_port, ssl_context=server_ctx).start()
    try:
        topic = _name("jks")
        client = ssl.create_default_context(cafile=str(ca_pem))
        await create_topics(
            broker.bootstrap, {topic: 1}, security_protocol="SSL", ssl_context=client
        )
        keys = f"""
"@security.protocol" = "SSL"
"@ssl.truststore.location" = "{jks}"
"@ssl.truststore.password" = "trust-pw"
"""
        out = tmp_path / "out.jsonl"
        await _round_trip(_round_trip_conf(broker.bootstrap, topic, out, keys), out)
    finally:
        proxy.stop()


async def test_sasl_plain_with_jaas_config(tansu, tmp_path):
    proxy_port = free_port()
    broker: TansuBroker = tansu(advertised_port=proxy_port)
    proxy = SaslPlainProxy(broker.port, {"alice": "alice-secret"}, port=proxy_port).start()
    try:
        topic = _name("sasl")
        client = {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": "alice",
            "sasl_plain_password": "alice-secret",
        }
        await create_topics(broker.bootstrap, {topic: 1}, **client)
        keys = f"""
"@security.protocol" = "SASL_PLAINTEXT"
"@sasl.mechanism" = "PLAIN"
"@sasl.jaas.config" = '{JAAS} username="alice" password="alice-secret";'
"""
        out = tmp_path / "out.jsonl"
        await _round_trip(_round_trip_conf(broker.bootstrap, topic, out, keys), out)
        assert proxy.authenticated and set(proxy.authenticated) == {"alice"}
        # A wrong password, and no SASL at all, are both turned away.
        rejected = proxy.rejected
        await _sink_attempt(
            broker.bootstrap,
            **{
                "kafka.producer.security.protocol": "SASL_PLAINTEXT",
                "kafka.producer.sasl.mechanism": "PLAIN",
                "kafka.producer.sasl.jaas.config": f'{JAAS} username="alice" password="nope";',
            },
        )
        await _sink_attempt(broker.bootstrap, **{"kafka.producer.request.timeout.ms": "1000"})
        assert proxy.rejected >= rejected + 2
    finally:
        proxy.stop()
