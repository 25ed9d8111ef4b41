"""Deprecated keys Flume 1.10 still reads (issue 16, point 4): read under their new name
with a warning naming it, as Flume's translateOldProperties does."""

from __future__ import annotations

import logging

import pytest

from flumed.channels.kafka import KafkaChannelConfig
from flumed.config.keys import parse
from flumed.errors import ConfigError
from flumed.sinks.kafka import KafkaSinkConfig
from flumed.sources.kafka import KafkaSourceConfig


def test_kafka_sink_old_keys(caplog):
    with caplog.at_level(logging.WARNING):
        c = parse(
            KafkaSinkConfig,
            {"brokerList": "h:9092", "topic": "t1", "batchSize": "7", "requiredAcks": "all"},
            "f: agent a1: sink k1",
        )
    assert (c.bootstrap_servers, c.topic, c.flumeBatchSize) == ("h:9092", "t1", 7)
    assert c.producer == {"acks": "all"}
    for old, new in (
        ("brokerList", "kafka.bootstrap.servers"),
        ("topic", "kafka.topic"),
        ("batchSize", "flumeBatchSize"),
        ("requiredAcks", "kafka.producer.acks"),
    ):
        assert f"f: agent a1: sink k1: key '{old}' is deprecated; read as '{new}'" in caplog.text


def test_new_key_wins_over_the_old_one(caplog):
    with caplog.at_level(logging.WARNING):
        c = parse(KafkaSinkConfig, {"kafka.topic": "new", "topic": "old",
                                    "kafka.bootstrap.servers": "h:1"}, "k1")  # fmt: skip
    assert c.topic == "new"
    assert "key 'topic' is deprecated and ignored, because 'kafka.topic' is set" in caplog.text


def test_kafka_flume_batch_size_points_to_flume_batch_size(caplog):
    with caplog.at_level(logging.WARNING):
        c = parse(
            KafkaSinkConfig,
            {"kafka.bootstrap.servers": "h:1", "kafka.flumeBatchSize": "20"},
            "k1",
        )
    assert c.flumeBatchSize == 100  # Flume ignores it too
    assert "key 'kafka.flumeBatchSize' is not a Kafka or Flume setting" in caplog.text
    assert "'flumeBatchSize'" in caplog.text


def test_kafka_source_and_channel_old_keys(caplog):
    with caplog.at_level(logging.WARNING):
        s = parse(
            KafkaSourceConfig,
            {"kafka.bootstrap.servers": "h:1", "topic": "t1", "groupId": "g"},
            "r1",
        )
        ch = parse(
            KafkaChannelConfig,
            {"brokerList": "h:1", "topic": "t2", "groupId": "g2", "zookeeperConnect": "z:2181"},
            "c1",
        )
    assert (s.topic_list(), s.group_id) == (["t1"], "g")
    assert (ch.bootstrap_servers, ch.topic, ch.group_id) == ("h:1", "t2", "g2")
    assert "key 'groupId' is deprecated; read as 'kafka.consumer.group.id'" in caplog.text
    assert "key 'zookeeperConnect' is deprecated; flumed does not look the brokers up" in (
        caplog.text
    )


def test_zookeeper_only_source_says_what_to_set():
    with pytest.raises(ConfigError) as ei:
        parse(KafkaSourceConfig, {"zookeeperConnect": "z:2181", "kafka.topics": "t"}, "r1")
    assert "missing required key 'kafka.bootstrap.servers'" in str(ei.value)
