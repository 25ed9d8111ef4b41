"""Kafka tests run against a real tansu broker (tests/integration/kafka_broker.py)."""

from tests.integration.kafka_broker import kafka_broker, tansu  # noqa: F401
