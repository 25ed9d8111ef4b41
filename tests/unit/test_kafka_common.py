"""Kafka options in Flume's spelling, Flume's Avro event wrapping, and config loading."""

from __future__ import annotations

import io
import ssl
from pathlib import Path

import avro.io
import avro.schema
import pytest
import trustme

from flumed.config.graph import build_agent
from flumed.config.loader import load_document
from flumed.errors import ConfigError
from flumed.event import Event
from flumed.kafka.codec import FLUME_EVENT_SCHEMA, decode_flume_event, encode_flume_event
from flumed.kafka.options import client_options
from flumed.kafka.security import build_ssl_context, parse_jaas
from flumed.sinks.kafka import KafkaSink
from flumed.sources.kafka import KafkaSource

# -- client options --------------------------------------------------------------------------


def test_producer_keys_map_to_aiokafka():
    o = client_options(
        {
            "acks": "-1",
            "linger.ms": "5",
            "batch.size": 65536,
            "max.request.size": "2097152",
            "compression.type": "none",
            "request.timeout.ms": "3000",
            "client.id": "me",
            "enable.idempotence": "true",
            "key.serializer": "org.apache.kafka.common.serialization.StringSerializer",
        },
        "producer",
    )
    assert o.problems == []
    assert o.ignored == []
    assert o.kwargs == {
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 65536,
        "max_request_size": 2097152,
        "compression_type": None,
        "request_timeout_ms": 3000,
        "client_id": "me",
        "enable_idempotence": True,
    }
    assert client_options({"acks": "1"}, "producer").kwargs == {"acks": 1}


def test_consumer_keys_map_to_aiokafka():
    o = client_options(
        {
            "auto.offset.reset": "EARLIEST",
            "max.poll.records": "100",
            "session.timeout.ms": "6000",
            "partition.assignment.strategy": "org.apache.kafka.clients.consumer.RangeAssignor",
            "group.id": "read by the component itself",
        },
        "consumer",
    )
    assert o.problems == []
    assert o.kwargs["auto_offset_reset"] == "earliest"
    assert o.kwargs["max_poll_records"] == 100
    assert o.kwargs["session_timeout_ms"] == 6000
    (assignor,) = o.kwargs["partition_assignment_strategy"]
    assert assignor.__name__ == "RangePartitionAssignor"


def test_bad_values_are_problems_naming_the_key():
    o = client_options(
        {"acks": "2", "linger.ms": "soon", "compression.type": "brotli"}, "producer", "sink k1"
    )
    assert len(o.problems) == 3
    assert "sink k1: key 'kafka.producer.acks'" in o.problems[0]
    assert "'kafka.producer.linger.ms'" in o.problems[1]
    assert "brotli" in o.problems[2]


def test_keys_without_equivalent_are_warned_not_fatal():
    o = client_options(
        {
            "buffer.memory": "1",
            "transactional.id": "t",
            "enable.auto.commit": "true",
            "bootstrap.servers": "x:1",
        },
        "consumer",
    )
    assert o.problems == []
    assert len(o.ignored) == 4
    assert any("buffer.memory" in w and "no aiokafka equivalent" in w for w in o.ignored)


def test_sasl_plain_from_jaas_config():
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="alice" password="s3cr\\"et";'
    )
    o = client_options(
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.jaas.config": jaas,
        },
        "producer",
    )
    assert o.problems == []
    assert o.kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert o.kwargs["sasl_mechanism"] == "PLAIN"
    assert o.kwargs["sasl_plain_username"] == "alice"
    assert o.kwargs["sasl_plain_password"] == 's3cr"et'
    assert o.tls is None


def test_sasl_scram_and_mismatched_or_missing_jaas():
    scram = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="u" password="p";'
    )
    ok = client_options(
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": scram,
        },
        "consumer",
    )
    assert ok.problems == []
    assert ok.kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert ok.tls is not None  # SASL_SSL is TLS too
    wrong = client_options(
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.jaas.config": scram,
        },
        "producer",
    )
    assert "needs PlainLoginModule" in wrong.problems[0]
    missing = client_options(
        {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN"}, "producer"
    )
    assert "sasl.jaas.config': required" in missing.problems[0]
    with pytest.raises(ValueError):
        parse_jaas('username="u"')


def test_tls_options_and_context(tmp_path: Path):
    ca = trustme.CA()
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(ca_pem)
    client = ca.issue_cert("flumed-client")
    keystore = tmp_path / "client.pem"
    keystore.write_bytes(
        client.private_key_pem.bytes() + b"".join(c.bytes() for c in client.cert_chain_pems)
    )
    o = client_options(
        {
            "security.protocol": "SSL",
            "ssl.truststore.location": str(ca_pem),
            "ssl.truststore.type": "PEM",
            "ssl.keystore.location": str(keystore),
            "ssl.keystore.type": "PEM",
            "ssl.endpoint.identification.algorithm": "",
            "ssl.enabled.protocols": "TLSv1.2,TLSv1.3",
        },
        "producer",
    )
    assert o.problems == []
    assert o.tls is not None
    assert o.tls.check_hostname is False
    ctx = build_ssl_context(o.tls)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    kwargs = o.build(bootstrap_servers=["h:1"])
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    flume = client_options(
        {"security.protocol": "SSL", "ssl.disableTLSHostnameVerification": "true"}, "consumer"
    )
    assert flume.tls is not None and flume.tls.check_hostname is False


def test_java_keystores_are_taken_with_their_passwords():
    """JKS/PKCS12 stores are read at start (flumed.keystores; see test_keystores.py)."""
    o = client_options(
        {
            "security.protocol": "SSL",
            "ssl.truststore.location": "/etc/kafka/truststore.jks",
            "ssl.truststore.password": "tpw",
            "ssl.keystore.location": "/k.p12",
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.password": "kpw",
        },
        "producer",
    )
    assert o.problems == []
    assert o.tls is not None
    assert (o.tls.cafile, o.tls.truststore_password) == ("/etc/kafka/truststore.jks", "tpw")
    assert (o.tls.certfile, o.tls.keystore_password) == ("/k.p12", "kpw")


def test_ssl_keys_ignored_without_tls():
    o = client_options({"ssl.truststore.location": "/x.pem"}, "producer")
    assert o.tls is None
    assert "security.protocol is PLAINTEXT" in o.ignored[0]


# -- Flume's Avro event wrapping -------------------------------------------------------------


def _apache_avro_encode(headers: dict[str, str], body: bytes) -> bytes:
    schema = avro.schema.parse(
        '{"type":"record","name":"AvroFlumeEvent","namespace":"org.apache.flume.source.avro",'
        '"fields":[{"name":"headers","type":{"type":"map","values":"string"}},'
        '{"name":"body","type":"bytes"}]}'
    )
    buf = io.BytesIO()
    avro.io.DatumWriter(schema).write(
        {"headers": headers, "body": body}, avro.io.BinaryEncoder(buf)
    )
    return buf.getvalue()


@pytest.mark.parametrize(
    ("headers", "body"),
    [({}, b""), ({"k": "v"}, b"hi"), ({"topic": "t", "ü": "ß" * 70}, bytes(range(256)) * 3)],
)
def test_flume_event_encoding_matches_apache_avro(headers, body):
    data = encode_flume_event(Event(body, headers))
    assert data == _apache_avro_encode(headers, body)
    assert decode_flume_event(data) == Event(body, headers)


def test_flume_event_decoding_rejects_garbage():
    assert FLUME_EVENT_SCHEMA["name"].endswith("AvroFlumeEvent")
    with pytest.raises(ValueError, match="not a Flume Avro event"):
        decode_flume_event(b"\xff\xff\xff\xff\xff")
    with pytest.raises(ValueError, match="left over"):
        decode_flume_event(encode_flume_event(Event(b"x")) + b"junk")


# -- configuration: both file forms ---------------------------------------------------------

PROPERTIES = """
a1.sources = r1
a1.channels = c1
a1.sinks = k1
a1.sources.r1.type = org.apache.flume.source.kafka.KafkaSource
a1.sources.r1.channels = c1
a1.sources.r1.kafka.bootstrap.servers = 127.0.0.1:9092,127.0.0.1:9093
a1.sources.r1.kafka.topics = t1,t2
a1.sources.r1.kafka.topics.regex = ^logs-.*
a1.sources.r1.kafka.consumer.group.id = g1
a1.sources.r1.kafka.consumer.auto.offset.reset = earliest
a1.channels.c1.type = org.apache.flume.channel.kafka.KafkaChannel
a1.channels.c1.kafka.bootstrap.servers = 127.0.0.1:9092
a1.channels.c1.kafka.topic = chan
a1.channels.c1.kafka.pollTimeout = 250
a1.channels.c1.kafka.producer.acks = 1
a1.sinks.k1.type = org.apache.flume.sink.kafka.KafkaSink
a1.sinks.k1.channel = c1
a1.sinks.k1.kafka.bootstrap.servers = 127.0.0.1:9092
a1.sinks.k1.kafka.topic = out
a1.sinks.k1.kafka.producer.linger.ms = 5
a1.sinks.k1.header.h1 = kh1
"""

TOML = """
[agents.a1.sources.r1]
type = "kafka"
channels = ["c1"]
"kafka.bootstrap.servers" = "127.0.0.1:9092,127.0.0.1:9093"
"kafka.topics" = "t1,t2"
"kafka.topics.regex" = "^logs-.*"

[agents.a1.sources.r1.kafka.consumer]
"group.id" = "g1"
"auto.offset.reset" = "earliest"

[agents.a1.channels.c1]
type = "kafka"
kafka = { bootstrap = { servers = "127.0.0.1:9092" }, topic = "chan", pollTimeout = 250 }
"kafka.producer.acks" = "1"

[agents.a1.sinks.k1]
type = "kafka"
channel = "c1"
"kafka.bootstrap.servers" = "127.0.0.1:9092"
"kafka.topic" = "out"
header = { h1 = "kh1" }

[agents.a1.sinks.k1.kafka.producer]
"linger.ms" = 5
"""


@pytest.mark.parametrize(("suffix", "text"), [(".properties", PROPERTIES), (".toml", TOML)])
def test_kafka_components_load_from_both_forms(tmp_path: Path, suffix: str, text: str):
    path = tmp_path / f"agent{suffix}"
    path.write_text(text)
    spec = build_agent(load_document(path), "a1", str(path))
    src = spec.sources["r1"]
    assert src.cls is KafkaSource
    assert src.config.topics_regex == "^logs-.*"
    assert src.config.topic_list() == ["t1", "t2"]
    assert src.config.group_id == "g1"
    assert src.config.options().kwargs["auto_offset_reset"] == "earliest"
    ch = spec.channels["c1"].config
    assert (ch.topic, ch.pollTimeout, ch.options()[0].kwargs["acks"]) == ("chan", 250, 1)
    sink = spec.sinks["k1"]
    assert sink.cls is KafkaSink
    assert sink.config.topic == "out"
    assert sink.config.header == {"h1": "kh1"}
    assert sink.config.options().kwargs["linger_ms"] == 5


def test_config_errors_name_the_key(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text(
        """
[agents.a1.sources.r1]
type = "kafka"
channels = ["c1"]
"kafka.bootstrap.servers" = "nohostport"
"kafka.consumer.acks" = "all"
"kafka.consumer.max.poll.records" = "many"
[agents.a1.channels.c1]
type = "memory"
[agents.a1.sinks.k1]
type = "kafka"
channel = "c1"
"kafka.bootstrap.servers" = "h:1"
"kafka.topic" = "bad topic!"
"kafka.producre.acks" = "all"
"""
    )
    with pytest.raises(ConfigError) as ei:
        build_agent(load_document(path), "a1", str(path))
    text = str(ei.value)
    assert "source r1: key 'kafka.bootstrap.servers': expected host:port" in text
    assert "one of the keys 'kafka.topics', 'kafka.topics.regex' is required" in text
    assert "'kafka.consumer.max.poll.records': expected an integer" in text
    assert "sink k1: unknown key 'kafka.producre.acks'" in text
