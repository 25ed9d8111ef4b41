"""What the Kafka source, sink and channel share, by concern:

- `options`: `kafka.producer.*` / `kafka.consumer.*` (Kafka's Java keys) → aiokafka.
- `security`: TLS (`ssl.*`) and SASL (`sasl.jaas.config`).
- `codec`: Flume's Avro event wrapping.
- `produce`: whole batches per partition, acknowledged (`Publisher`).
- `records`: consumed records → events.
- `counters`, `logs`: Flume's Kafka counter names; aiokafka's log lines kept quiet.
"""
