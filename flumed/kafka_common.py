"""What the Kafka source, sink and channel share.

- Client options: Flume passes `kafka.producer.*` / `kafka.consumer.*` through to the
  Java client in Kafka's own spelling (`linger.ms`, `security.protocol`,
  `sasl.jaas.config` ...). `client_options()` maps them to aiokafka keyword arguments;
  a key with no aiokafka equivalent is warned about and ignored, never fatal.
- TLS and SASL: Kafka's `ssl.*` keys (PEM files; Java keystores cannot be read) become
  an `ssl.SSLContext` at start; `sasl.jaas.config` gives the PLAIN/SCRAM credentials.
- Flume's Avro event wrapping (`useFlumeEventFormat`, `parseAsFlumeEvent`): the binary
  encoding of one `AvroFlumeEvent` record, with no container and no schema header.
- `produce()`: whole batches per partition through aiokafka's batch API, returning only
  when every record is acknowledged.
- Counters with the extra names of Flume's KafkaSourceCounter, KafkaSinkCounter and
  KafkaChannelCounter.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import fastavro
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from flumed.counters import ChannelCounter, SinkCounter, SourceCounter
from flumed.event import Event

log = logging.getLogger("flumed.kafka")

Role = Literal["producer", "consumer"]

# -- Flume's Avro event wrapping -----------------------------------------------------------

FLUME_EVENT_SCHEMA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "AvroFlumeEvent",
        "namespace": "org.apache.flume.source.avro",
        "fields": [
            {"name": "headers", "type": {"type": "map", "values": "string"}},
            {"name": "body", "type": "bytes"},
        ],
    }
)


def encode_flume_event(event: Event) -> bytes:
    """An event as Flume's KafkaSink/KafkaChannel write it: one binary AvroFlumeEvent."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(
        buf, FLUME_EVENT_SCHEMA, {"headers": event.headers, "body": event.body}
    )
    return buf.getvalue()


def decode_flume_event(data: bytes) -> Event:
    """The inverse of `encode_flume_event`.

    Raises:
        ValueError: `data` is not one complete AvroFlumeEvent.
    """
    buf = io.BytesIO(data)
    try:
        rec: Any = fastavro.schemaless_reader(buf, FLUME_EVENT_SCHEMA, None)
    except (EOFError, ValueError, UnicodeDecodeError, IndexError, TypeError) as e:
        raise ValueError(f"not a Flume Avro event: {e}") from None
    if buf.tell() != len(data):
        raise ValueError(f"not a Flume Avro event: {len(data) - buf.tell()} bytes left over")
    return Event(rec["body"], rec["headers"])


# -- counters with Flume's Kafka names -----------------------------------------------------


class KafkaSourceCounter(SourceCounter):
    NAMES = (*SourceCounter.NAMES, "KafkaEventGetTimer", "KafkaCommitTimer", "KafkaEmptyCount")
    KafkaEventGetTimer: int
    KafkaCommitTimer: int
    KafkaEmptyCount: int


class KafkaSinkCounter(SinkCounter):
    NAMES = (*SinkCounter.NAMES, "KafkaEventSendTimer", "RollbackCount")
    KafkaEventSendTimer: int
    RollbackCount: int


class KafkaChannelCounter(ChannelCounter):
    NAMES = (
        *ChannelCounter.NAMES,
        "KafkaEventGetTimer",
        "KafkaEventSendTimer",
        "KafkaCommitTimer",
        "RollbackCount",
        "EventPutErrorCount",
        "EventTakeErrorCount",
    )
    EventPutErrorCount: int
    EventTakeErrorCount: int
    KafkaEventGetTimer: int
    KafkaEventSendTimer: int
    KafkaCommitTimer: int
    RollbackCount: int


def describe(e: BaseException) -> str:
    """`Type: message`, once (aiokafka's messages often start with their type already)."""
    name, msg = type(e).__name__, str(e)
    if not msg:
        return name
    return msg if msg.startswith(name) else f"{name}: {msg}"


def elapsed_ms(t0: float) -> int:
    return int((time.perf_counter() - t0) * 1000)


class _RepeatFilter(logging.Filter):
    """Lets one record per message template through every `interval` seconds.

    aiokafka logs an ERROR line at every reconnection attempt (every retry.backoff.ms)
    while a broker is down; the outage stays visible, without flooding the journal.
    """

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        k = (record.name, record.msg)
        now = time.monotonic()
        last = self._last.get(k)
        if last is not None and now - last < self.interval:
            return False
        self._last[k] = now
        return True


def _quiet_aiokafka() -> None:
    """Attach the repeat filter to every aiokafka logger (filters are not inherited)."""
    f = _RepeatFilter()
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if name.split(".", 1)[0] == "aiokafka" and isinstance(lg, logging.Logger):
            lg.addFilter(f)


_quiet_aiokafka()


# -- client options: Kafka's Java keys → aiokafka ------------------------------------------


def _int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("expected an integer")
    if isinstance(v, int):
        return v
    try:
        return int(str(v).strip())
    except ValueError:
        raise ValueError("expected an integer") from None


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "false"):
        return s == "true"
    raise ValueError("expected true or false")


def _str(v: Any) -> str:
    return str(v).strip()


def _choice(*choices: str, upper: bool = True) -> Callable[[Any], str]:
    def conv(v: Any) -> str:
        s = str(v).strip()
        s = s.upper() if upper else s.lower()
        if s not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return s

    return conv


def _acks(v: Any) -> int | str:
    s = str(v).strip().lower()
    if s in ("all", "-1"):
        return "all"
    if s in ("0", "1"):
        return int(s)
    raise ValueError("expected all, -1, 0 or 1")


def _compression(v: Any) -> str | None:
    s = str(v).strip().lower()
    if s == "none":
        return None
    if s not in ("gzip", "snappy", "lz4", "zstd"):
        raise ValueError("expected none, gzip, snappy, lz4 or zstd")
    return s


def _assignors(v: Any) -> tuple[Any, ...]:
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

    known = {
        "range": RangePartitionAssignor,
        "roundrobin": RoundRobinPartitionAssignor,
        "sticky": StickyPartitionAssignor,
    }
    out = []
    for name in str(v).split(","):
        # Java names them by class: org.apache.kafka.clients.consumer.RangeAssignor ...
        short = name.strip().rsplit(".", 1)[-1].lower().removesuffix("assignor")
        if short not in known:
            raise ValueError(
                f"unknown assignor {name.strip()!r}; expected RangeAssignor, "
                "RoundRobinAssignor or StickyAssignor"
            )
        out.append(known[short])
    return tuple(out)


_Conv = Callable[[Any], Any]

#: Java key → (aiokafka keyword, converter), for producers and consumers alike.
_COMMON: dict[str, tuple[str, _Conv]] = {
    "client.id": ("client_id", _str),
    "request.timeout.ms": ("request_timeout_ms", _int),
    "retry.backoff.ms": ("retry_backoff_ms", _int),
    "metadata.max.age.ms": ("metadata_max_age_ms", _int),
    "connections.max.idle.ms": ("connections_max_idle_ms", _int),
    "security.protocol": (
        "security_protocol",
        _choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    ),
    "sasl.mechanism": (
        "sasl_mechanism",
        _choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"),
    ),
    "sasl.kerberos.service.name": ("sasl_kerberos_service_name", _str),
}

_PRODUCER: dict[str, tuple[str, _Conv]] = {
    "acks": ("acks", _acks),
    "linger.ms": ("linger_ms", _int),
    "batch.size": ("max_batch_size", _int),
    "max.request.size": ("max_request_size", _int),
    "compression.type": ("compression_type", _compression),
    "enable.idempotence": ("enable_idempotence", _bool),
}

_CONSUMER: dict[str, tuple[str, _Conv]] = {
    "auto.offset.reset": ("auto_offset_reset", _choice("earliest", "latest", "none", upper=False)),
    "fetch.min.bytes": ("fetch_min_bytes", _int),
    "fetch.max.bytes": ("fetch_max_bytes", _int),
    "fetch.max.wait.ms": ("fetch_max_wait_ms", _int),
    "max.partition.fetch.bytes": ("max_partition_fetch_bytes", _int),
    "max.poll.records": ("max_poll_records", _int),
    "max.poll.interval.ms": ("max_poll_interval_ms", _int),
    "session.timeout.ms": ("session_timeout_ms", _int),
    "heartbeat.interval.ms": ("heartbeat_interval_ms", _int),
    "isolation.level": (
        "isolation_level",
        _choice("read_uncommitted", "read_committed", upper=False),
    ),
    "check.crcs": ("check_crcs", _bool),
    "client.rack": ("client_rack", _str),
    "group.instance.id": ("group_instance_id", _str),
    "exclude.internal.topics": ("exclude_internal_topics", _bool),
    "partition.assignment.strategy": ("partition_assignment_strategy", _assignors),
}

#: Keys flumed sets itself or that mean nothing to a Python client: ignored quietly
#: (Flume users commonly carry them over from Java configurations).
_QUIET = {
    "key.serializer",
    "value.serializer",
    "key.deserializer",
    "value.deserializer",
}

#: TLS keys, read by `_tls_options`.
_SSL_KEYS = {
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.truststore.password",
    "ssl.truststore.certificates",
    "ssl.keystore.location",
    "ssl.keystore.type",
    "ssl.keystore.password",
    "ssl.key.password",
    "ssl.keystore.certificate.chain",
    "ssl.keystore.key",
    "ssl.endpoint.identification.algorithm",
    "ssl.disableTLSHostnameVerification",
    "ssl.protocol",
    "ssl.enabled.protocols",
}

_TLS_VERSIONS = {
    "TLSV1.2": ssl.TLSVersion.TLSv1_2,
    "TLSV1.3": ssl.TLSVersion.TLSv1_3,
}


@dataclass(frozen=True)
class TlsOptions:
    """What `build_ssl_context` needs; file paths are read at start, not at load."""

    cafile: str | None = None
    cadata: str | None = None
    certfile: str | None = None
    key_password: str | None = None
    check_hostname: bool = True
    min_version: ssl.TLSVersion | None = None
    max_version: ssl.TLSVersion | None = None


@dataclass
class ClientOptions:
    """aiokafka keyword arguments for one client, and what was wrong or ignored."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    tls: TlsOptions | None = None
    problems: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def build(self, **extra: Any) -> dict[str, Any]:
        """The keyword arguments, with the SSL context built (reads the PEM files).

        Raises:
            OSError, ssl.SSLError: a certificate or key file cannot be read or used.
        """
        out = dict(self.kwargs)
        if self.tls is not None:
            out["ssl_context"] = build_ssl_context(self.tls)
        out.update(extra)
        return out


_JAAS_MODULE = re.compile(r"^\s*([\w.$]+)\s+(required|requisite|sufficient|optional)\b")
_JAAS_OPTION = re.compile(r"""(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;"]+))""")


def parse_jaas(text: str) -> tuple[str, dict[str, str]]:
    """Split a `sasl.jaas.config` value into its login module class and its options.

    Raises:
        ValueError: it does not start with `<LoginModule class> required`.
    """
    m = _JAAS_MODULE.match(text)
    if m is None:
        raise ValueError("expected '<LoginModule class> required key=\"value\" ...;'")
    opts: dict[str, str] = {}
    for om in _JAAS_OPTION.finditer(text, m.end()):
        val = om.group(2) if om.group(2) is not None else om.group(3)
        opts[om.group(1)] = re.sub(r"\\(.)", r"\1", val)
    return m.group(1), opts


def client_options(props: Mapping[str, Any], role: Role, where: str = "") -> ClientOptions:
    """Map `kafka.<role>.*` keys (the `kafka.<role>.` prefix removed) to aiokafka.

    Pure: no file is read here. `where` prefixes problems and warnings.
    """
    out = ClientOptions()
    table = {**_COMMON, **(_PRODUCER if role == "producer" else _CONSUMER)}
    pre = f"kafka.{role}."
    for k, v in props.items():
        if k in table:
            name, conv = table[k]
            try:
                out.kwargs[name] = conv(v)
            except ValueError as e:
                out.problems.append(f"key '{pre}{k}': {e}, got {v!r}")
        elif k in _QUIET or k in _SSL_KEYS or k == "sasl.jaas.config":
            continue
        elif k == "bootstrap.servers":
            out.ignored.append(f"'{pre}{k}' is overridden by 'kafka.bootstrap.servers'")
        elif k == "group.id":
            pass  # read by the component as kafka.consumer.group.id
        elif k == "enable.auto.commit":
            if str(v).strip().lower() == "true":
                out.ignored.append(
                    f"'{pre}{k}' is ignored: offsets are committed only after the batch is "
                    "in the channel"
                )
        elif k == "transactional.id":
            out.ignored.append(f"'{pre}{k}': Kafka transactions are not supported; ignored")
        else:
            out.ignored.append(f"'{pre}{k}' has no aiokafka equivalent and is ignored")
    _sasl_options(props, pre, out)
    proto = out.kwargs.get("security_protocol", "PLAINTEXT")
    if proto in ("SSL", "SASL_SSL"):
        out.tls = _tls_options(props, pre, out)
    elif any(k in props for k in _SSL_KEYS):
        out.ignored.append(f"'{pre}ssl.*' keys are ignored: security.protocol is {proto}")
    if where:
        out.problems = [f"{where}: {p}" for p in out.problems]
        out.ignored = [f"{where}: {p}" for p in out.ignored]
    return out


def _sasl_options(props: Mapping[str, Any], pre: str, out: ClientOptions) -> None:
    proto = out.kwargs.get("security_protocol", "PLAINTEXT")
    mech = out.kwargs.get("sasl_mechanism", "GSSAPI")  # Kafka's default mechanism
    jaas = props.get("sasl.jaas.config")
    if not proto.startswith("SASL_"):
        if jaas is not None or "sasl_mechanism" in out.kwargs:
            out.ignored.append(f"'{pre}sasl.*' keys are ignored: security.protocol is {proto}")
        return
    out.kwargs["sasl_mechanism"] = mech
    if mech == "GSSAPI":
        if jaas is not None:
            out.ignored.append(
                f"'{pre}sasl.jaas.config' is ignored for GSSAPI: the Kerberos ticket comes "
                "from the environment (kinit, KRB5CCNAME)"
            )
        return
    if jaas is None:
        out.problems.append(
            f"key '{pre}sasl.jaas.config': required for sasl.mechanism {mech} "
            '(… required username="…" password="…";)'
        )
        return
    try:
        module, opts = parse_jaas(str(jaas))
    except ValueError as e:
        out.problems.append(f"key '{pre}sasl.jaas.config': {e}")
        return
    want = "PlainLoginModule" if mech == "PLAIN" else "ScramLoginModule"
    if not module.endswith(want):
        out.problems.append(
            f"key '{pre}sasl.jaas.config': sasl.mechanism {mech} needs {want}, got {module}"
        )
        return
    if "username" not in opts or "password" not in opts:
        out.problems.append(f"key '{pre}sasl.jaas.config': username and password are both required")
        return
    out.kwargs["sasl_plain_username"] = opts["username"]
    out.kwargs["sasl_plain_password"] = opts["password"]


def _tls_options(props: Mapping[str, Any], pre: str, out: ClientOptions) -> TlsOptions:
    def get(k: str) -> str | None:
        v = props.get(k)
        return None if v is None else str(v).strip()

    def unsupported_store(kind: str) -> bool:
        typ = (get(f"ssl.{kind}.type") or "").upper()
        loc = get(f"ssl.{kind}.location") or ""
        if typ in ("JKS", "PKCS12") or (not typ and loc.lower().endswith((".jks", ".p12"))):
            out.problems.append(
                f"key '{pre}ssl.{kind}.location': {typ or 'JKS/PKCS12'} stores cannot be read; "
                f"convert it to PEM and set ssl.{kind}.type = PEM"
            )
            return True
        return False

    cafile = cadata = certfile = None
    if get("ssl.truststore.location") and not unsupported_store("truststore"):
        cafile = get("ssl.truststore.location")
    if get("ssl.truststore.certificates"):
        cadata = get("ssl.truststore.certificates")
    if get("ssl.keystore.location") and not unsupported_store("keystore"):
        certfile = get("ssl.keystore.location")
    if get("ssl.keystore.key") or get("ssl.keystore.certificate.chain"):
        out.problems.append(
            f"key '{pre}ssl.keystore.key': inline keys are not supported; put the PEM key and "
            "certificate chain in one file and name it in ssl.keystore.location"
        )
    key_password = get("ssl.key.password") or get("ssl.keystore.password")
    check_hostname = True
    algo = props.get("ssl.endpoint.identification.algorithm")
    if algo is not None and str(algo).strip() == "":
        check_hostname = False
    if str(props.get("ssl.disableTLSHostnameVerification", "")).strip().lower() == "true":
        check_hostname = False
    versions: list[ssl.TLSVersion] = []
    for k in ("ssl.enabled.protocols", "ssl.protocol"):
        raw = get(k)
        if not raw:
            continue
        for name in raw.split(","):
            tv = _TLS_VERSIONS.get(name.strip().upper())
            if tv is None and name.strip().upper() != "TLS":
                out.problems.append(
                    f"key '{pre}{k}': unsupported protocol {name.strip()!r} "
                    "(TLSv1.2 and TLSv1.3 are supported)"
                )
            elif tv is not None:
                versions.append(tv)
        if versions:
            break
    return TlsOptions(
        cafile=cafile,
        cadata=cadata,
        certfile=certfile,
        key_password=key_password,
        check_hostname=check_hostname,
        min_version=min(versions) if versions else None,
        max_version=max(versions) if versions else None,
    )


def build_ssl_context(t: TlsOptions) -> ssl.SSLContext:
    """A client SSL context. Reads the PEM files (call from start(), not at load).

    Raises:
        OSError, ssl.SSLError: a file cannot be read or holds no usable certificate/key.
    """
    ctx = ssl.create_default_context(cafile=t.cafile, cadata=t.cadata)
    ctx.check_hostname = t.check_hostname
    if t.certfile:
        ctx.load_cert_chain(t.certfile, password=t.key_password)
    if t.min_version is not None:
        ctx.minimum_version = t.min_version
    if t.max_version is not None:
        ctx.maximum_version = t.max_version
    return ctx


def log_options(opts: Iterable[ClientOptions]) -> None:
    for o in opts:
        for w in o.ignored:
            log.warning("%s.", w)


def split_servers(servers: str) -> list[str]:
    """`kafka.bootstrap.servers` is comma-separated host:port pairs."""
    return [s.strip() for s in servers.split(",") if s.strip()]


def servers_problems(servers: str) -> list[str]:
    hosts = split_servers(servers)
    if not hosts:
        return ["key 'kafka.bootstrap.servers': at least one host:port is required"]
    bad = [h for h in hosts if not re.match(r"^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$", h)]
    if bad:
        return [f"key 'kafka.bootstrap.servers': expected host:port, got {', '.join(bad)}"]
    return []


# -- consuming ----------------------------------------------------------------------------


async def getmany(consumer: Any, timeout: float, max_records: int) -> dict[Any, list[Any]]:
    """`consumer.getmany`, returning {} after `timeout` s even while a rebalance is in
    progress (aiokafka then waits for the new assignment with no time limit)."""
    try:
        async with asyncio.timeout(timeout + 0.05):
            return await consumer.getmany(  # type: ignore[no-any-return]
                timeout_ms=int(timeout * 1000), max_records=max_records
            )
    except TimeoutError:
        return {}


# -- producing -----------------------------------------------------------------------------

#: Kafka's legal topic names (kafka.common.internals.Topic).
LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")

#: flumed's default for `batch.size`: the sink and the channel build whole batches, so a
#: larger one means fewer produce requests (Kafka's 16 KiB default caps a batch of
#: 100-byte events at about 140 records).
DEFAULT_BATCH_BYTES = 512 * 1024

#: (topic, partition or None, key, value, headers or None, timestamp ms or None)
Record = tuple[str, int | None, bytes | None, bytes, list[tuple[str, bytes]] | None, int | None]


class Partitioner:
    """Chooses partitions as Kafka's Java producer does.

    A record with a partition keeps it; a keyed record goes to murmur2(key) % count;
    records with neither stick to one partition until a batch's worth (batch.size) went
    there, then move to the next (Kafka's sticky partitioner, KIP-480).
    """

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def sticky(self, topic: str, partitions: list[int]) -> int:
        i = self._next.get(topic, -1) + 1
        self._next[topic] = i
        return partitions[i % len(partitions)]

    @staticmethod
    def keyed(key: bytes, partitions: list[int]) -> int:
        return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


#: Per-record overhead in a v2 record batch, roughly (length, attributes, deltas, counts).
_RECORD_OVERHEAD = 16


async def produce(
    producer: AIOKafkaProducer,
    records: Iterable[Record],
    partitioner: Partitioner,
    max_request_size: int,
    batch_size: int,
    on_bad: Callable[[str, bool], None],
) -> int:
    """Send `records` in one batch per partition and wait until Kafka acknowledged all.

    Records larger than `max_request_size` are left out and reported to
    `on_bad(what, dropped=True)`; a partition number the topic does not have is reported
    with dropped=False and the record is partitioned as if it had none. Returns how many
    records were acknowledged.

    Raises:
        aiokafka.errors.KafkaError, OSError, TimeoutError: some record was not
            acknowledged; the caller rolls back and tries again (the ones that were
            acknowledged are then sent twice).
    """
    # topic -> partition -> records; the loop keeps the current topic's state in locals,
    # since a batch mostly goes to one topic.
    groups: dict[str, dict[int, list[Record]]] = {}
    parts: dict[str, list[int]] = {}
    sticky: dict[str, list[int]] = {}  # topic -> [partition, bytes sent there]
    cur_topic: str | None = None
    plist: list[int] = []
    tgroups: dict[int, list[Record]] = {}
    st: list[int] = [0, 0]
    for rec in records:
        topic, partition, key, value, _, _ = rec
        size = len(value) if key is None else len(value) + len(key)
        if size > max_request_size:
            on_bad(
                f"a {size}-byte record for topic {topic} exceeds max.request.size "
                f"{max_request_size}; it was dropped",
                True,
            )
            continue
        if topic != cur_topic:
            if topic not in parts:
                known = sorted(await producer.partitions_for(topic))
                if not known:
                    raise ConnectionError(f"no partition of topic {topic} is known")
                parts[topic] = known
                groups[topic] = {}
                sticky[topic] = [partitioner.sticky(topic, known), 0]
            cur_topic, plist, tgroups, st = topic, parts[topic], groups[topic], sticky[topic]
        if partition is not None and partition not in plist:
            on_bad(f"topic {topic} has no partition {partition}; partitioned by key instead", False)
            partition = None
        if partition is None:
            if key is not None:
                partition = Partitioner.keyed(key, plist)
            else:
                if st[1] >= batch_size:
                    st[0], st[1] = partitioner.sticky(topic, plist), 0
                st[1] += size + _RECORD_OVERHEAD
                partition = st[0]
        g = tgroups.get(partition)
        if g is None:
            tgroups[partition] = [rec]
        else:
            g.append(rec)
    futures: list[asyncio.Future[Any]] = []
    sent = 0
    pieces = [(t, p, recs) for t, tg in groups.items() for p, recs in tg.items()]
    for topic, partition, recs in pieces:
        builder = producer.create_batch()
        n = 0
        for _, _, key, value, headers, ts in recs:
            if builder.append(key=key, value=value, timestamp=ts, headers=headers or []) is None:
                futures.append(await producer.send_batch(builder, topic, partition=partition))
                builder = producer.create_batch()
                n = 0
                # A new batch takes at least one record, whatever its size.
                builder.append(key=key, value=value, timestamp=ts, headers=headers or [])
            n += 1
        if n:
            futures.append(await producer.send_batch(builder, topic, partition=partition))
        sent += len(recs)
    if futures:
        await asyncio.wait(futures)
        # Every future's exception is looked at, so none is reported as never retrieved.
        done = [f for f in futures if not f.cancelled()]
        errors = [e for e in (f.exception() for f in done) if e is not None]
        if errors:
            raise errors[0]
        if len(done) < len(futures):
            raise ConnectionError("the producer was closed before Kafka acknowledged")
    return sent
