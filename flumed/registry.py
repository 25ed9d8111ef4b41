"""Component types by name: one row per type, resolved lazily.

Each built-in type is declared once, as a `TypeInfo` row: its short name, its import
path, Apache Flume's class name(s) for it, and a one-line description (printed by
`flumed validate --list-types`). Apache Flume's class names are derived from the rows.

A type is looked up case-insensitively by short name, then as one of Flume's class names
(so a Flume config's `org.apache.flume.sink.kafka.KafkaSink` works), then in the
entry-point group `flumed.<kind>` of installed plugins, and finally, when it contains `:`
or `.`, as a Python class path (`mypkg.sinks:MySink` or `mypkg.sinks.MySink`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """One built-in type: short name, `module:Class`, Flume class names, description."""

    name: str
    path: str
    flume: tuple[str, ...] = ()
    description: str = ""


def T(name: str, path: str, flume: str | tuple[str, ...] = (), description: str = "") -> TypeInfo:
    return TypeInfo(name, path, (flume,) if isinstance(flume, str) else flume, description)


def _table(*rows: TypeInfo) -> dict[str, TypeInfo]:
    return {r.name: r for r in rows}


_S = "org.apache.flume.source."
_K = "org.apache.flume.sink."
_C = "org.apache.flume.channel."
_I = "org.apache.flume.interceptor."

SOURCES = _table(
    T(
        "netcat",
        "flumed.sources.netcat:NetcatSource",
        _S + "NetcatSource",
        "Lines from TCP connections, one event per line.",
    ),
    T(
        "netcatudp",
        "flumed.sources.netcatudp:NetcatUdpSource",
        _S + "NetcatUdpSource",
        "One event per UDP datagram.",
    ),
    T(
        "seq",
        "flumed.sources.seq:SequenceGeneratorSource",
        _S + "SequenceGeneratorSource",
        "Numbered events, for tests and benchmarks.",
    ),
    T(
        "exec",
        "flumed.sources.exec:ExecSource",
        _S + "ExecSource",
        "Lines from a command's standard output.",
    ),
    T(
        "taildir",
        "flumed.sources.taildir:TaildirSource",
        _S + "taildir.TaildirSource",
        "Follows files matching patterns, saving positions.",
    ),
    T(
        "spooldir",
        "flumed.sources.spooldir:SpoolDirectorySource",
        _S + "SpoolDirectorySource",
        "Reads complete files dropped into a directory.",
    ),
    T(
        "syslogtcp",
        "flumed.sources.syslogtcp:SyslogTcpSource",
        _S + "SyslogTcpSource",
        "Syslog (RFC 3164/5424) over TCP.",
    ),
    T(
        "syslogudp",
        "flumed.sources.syslogudp:SyslogUdpSource",
        _S + "SyslogUDPSource",
        "Syslog (RFC 3164/5424) over UDP.",
    ),
    T(
        "stress",
        "flumed.sources.stress:StressSource",
        _S + "StressSource",
        "Fixed-size events as fast as possible or at a set rate, for load tests.",
    ),
    T(
        "multiport_syslogtcp",
        "flumed.sources.multiport_syslogtcp:MultiportSyslogTcpSource",
        _S + "MultiportSyslogTCPSource",
        "Syslog over TCP on several ports.",
    ),
    T(
        "http",
        "flumed.sources.http:HTTPSource",
        _S + "http.HTTPSource",
        "Events POSTed over HTTP (JSON or blob handlers).",
    ),
    T(
        "amqp",
        "flumed.sources.amqp:AmqpSource",
        (),
        "Consumes a RabbitMQ (AMQP 0-9-1) queue; acks after the channel commit.",
    ),
    T(
        "avro",
        "flumed.sources.avro:AvroSource",
        _S + "AvroSource",
        "Flume's Avro RPC server (the next hop of an avro sink).",
    ),
    T(
        "thrift",
        "flumed.sources.thrift:ThriftSource",
        _S + "ThriftSource",
        "Flume's Thrift RPC server.",
    ),
    T(
        "scribe",
        "flumed.sources.scribe:ScribeSource",
        _S + "scribe.ScribeSource",
        "Scribe's Log calls over framed binary Thrift; category as a header.",
    ),
    T(
        "jms",
        "flumed.sources.jms:JMSSource",
        _S + "jms.JMSSource",
        "A JMS queue or topic, spoken over STOMP (ActiveMQ, Artemis, RabbitMQ).",
    ),
    T(
        "kafka",
        "flumed.sources.kafka:KafkaSource",
        _S + "kafka.KafkaSource",
        "Consumes Kafka topics.",
    ),
)

CHANNELS = _table(
    T(
        "memory",
        "flumed.channels.memory:MemoryChannel",
        _C + "MemoryChannel",
        "A bounded in-process queue; fast, lost on a crash.",
    ),
    T(
        "file",
        "flumed.channels.file:FileChannel",
        _C + "file.FileChannel",
        "A durable channel on SQLite (WAL); survives kill -9.",
    ),
    T(
        "jdbc",
        "flumed.channels.jdbc:JdbcChannel",
        _C + "jdbc.JdbcChannel",
        "Events in a PostgreSQL or MySQL/MariaDB table, shared by agents.",
    ),
    T(
        "spillablememory",
        "flumed.channels.spillablememory:SpillableMemoryChannel",
        _C + "SpillableMemoryChannel",
        "Memory first, spilling into a file channel when memory is full.",
    ),
    T(
        "kafka",
        "flumed.channels.kafka:KafkaChannel",
        _C + "kafka.KafkaChannel",
        "A Kafka topic as the channel, shared by agents.",
    ),
)

SINKS = _table(
    T("logger", "flumed.sinks.logger:LoggerSink", _K + "LoggerSink", "Logs events at INFO."),
    T("null", "flumed.sinks.null:NullSink", _K + "NullSink", "Discards every event."),
    T(
        "file_roll",
        "flumed.sinks.file_roll:RollingFileSink",
        _K + "RollingFileSink",
        "Writes events to files in one directory, rolled by time.",
    ),
    T(
        "amqp",
        "flumed.sinks.amqp:AmqpSink",
        (),
        "Publishes to a RabbitMQ (AMQP 0-9-1) exchange with publisher confirms.",
    ),
    T(
        "avro",
        "flumed.sinks.avro:AvroSink",
        _K + "AvroSink",
        "Sends batches over Flume's Avro RPC (to an avro source).",
    ),
    T(
        "thrift",
        "flumed.sinks.thrift:ThriftSink",
        _K + "ThriftSink",
        "Sends batches over Flume's Thrift RPC.",
    ),
    T(
        "hdfs",
        "flumed.sinks.hdfs:HDFSEventSink",
        _K + "hdfs.HDFSEventSink",
        "Writes events into bucketed, rolled files, local or on HDFS (WebHDFS).",
    ),
    T(
        "kafka",
        "flumed.sinks.kafka:KafkaSink",
        _K + "kafka.KafkaSink",
        "Publishes events to Kafka topics.",
    ),
    T(
        "http",
        "flumed.sinks.http:HttpSink",
        _K + "http.HttpSink",
        "POSTs events to an HTTP endpoint, one per request or batched.",
    ),
    T(
        "elasticsearch",
        "flumed.sinks.elasticsearch:ElasticSearchSink",
        _K + "elasticsearch.ElasticSearchSink",
        "Indexes events into Elasticsearch/OpenSearch (_bulk), with a dead-letter file.",
    ),
    T(
        "hbase",
        "flumed.sinks.hbase:HBaseSink",
        _K + "hbase.HBaseSink",
        "Rows and counters into HBase, through the HBase REST gateway.",
    ),
    T(
        "hbase2",
        "flumed.sinks.hbase:HBase2Sink",
        _K + "hbase2.HBase2Sink",
        "Flume's HBase2Sink: as hbase, through the HBase REST gateway.",
    ),
    T(
        "asynchbase",
        "flumed.sinks.hbase:AsyncHBaseSink",
        _K + "hbase.AsyncHBaseSink",
        "Flume's AsyncHBaseSink: as hbase, through the HBase REST gateway.",
    ),
)

INTERCEPTORS = _table(
    T(
        "timestamp",
        "flumed.interceptors.timestamp:TimestampInterceptor",
        _I + "TimestampInterceptor$Builder",
        "Adds the `timestamp` header (ms).",
    ),
    T(
        "host",
        "flumed.interceptors.host:HostInterceptor",
        _I + "HostInterceptor$Builder",
        "Adds the host name or IP as a header.",
    ),
    T(
        "static",
        "flumed.interceptors.static:StaticInterceptor",
        _I + "StaticInterceptor$Builder",
        "Adds a fixed header.",
    ),
    T(
        "remove_header",
        "flumed.interceptors.remove_header:RemoveHeaderInterceptor",
        _I + "RemoveHeaderInterceptor$Builder",
        "Removes headers by name or regex.",
    ),
    T(
        "uuid",
        "flumed.interceptors.uuid:UUIDInterceptor",
        "org.apache.flume.sink.solr.morphline.UUIDInterceptor$Builder",
        "Adds a UUID header.",
    ),
    T(
        "regex_filter",
        "flumed.interceptors.regex_filter:RegexFilteringInterceptor",
        _I + "RegexFilteringInterceptor$Builder",
        "Keeps or drops events whose body matches.",
    ),
    T(
        "regex_extractor",
        "flumed.interceptors.regex_extractor:RegexExtractorInterceptor",
        _I + "RegexExtractorInterceptor$Builder",
        "Turns regex groups of the body into headers.",
    ),
    T(
        "search_replace",
        "flumed.interceptors.search_replace:SearchAndReplaceInterceptor",
        _I + "SearchAndReplaceInterceptor$Builder",
        "Rewrites the body with a regex.",
    ),
)

SINK_PROCESSORS = _table(
    T(
        "default",
        "flumed.sinks.runner:DefaultSinkProcessor",
        _K + "DefaultSinkProcessor",
        "One sink, called as it is.",
    ),
    T(
        "failover",
        "flumed.sinks.failover:FailoverSinkProcessor",
        _K + "FailoverSinkProcessor",
        "The highest-priority healthy sink; failed sinks penalised.",
    ),
    T(
        "load_balance",
        "flumed.sinks.load_balance:LoadBalancingSinkProcessor",
        _K + "LoadBalancingSinkProcessor",
        "Round-robin or random over sinks, with backoff.",
    ),
)

SELECTORS = _table(
    T(
        "replicating",
        "flumed.routing.selectors:ReplicatingSelector",
        _C + "ReplicatingChannelSelector",
        "Every event to every channel.",
    ),
    T(
        "load_balancing",
        "flumed.routing.selectors:LoadBalancingSelector",
        _C + "LoadBalancingChannelSelector",
        "Each event to one channel, round robin or random.",
    ),
    T(
        "multiplexing",
        "flumed.routing.selectors:MultiplexingSelector",
        _C + "MultiplexingChannelSelector",
        "Channels chosen by a header's value.",
    ),
)

SERIALIZERS = _table(
    T(
        "text",
        "flumed.serializers.text:TextSerializer",
        "org.apache.flume.serialization.BodyTextEventSerializer$Builder",
        "The body, one line.",
    ),
    T(
        "header_and_text",
        "flumed.serializers.header_and_text:HeaderAndTextSerializer",
        "org.apache.flume.serialization.HeaderAndBodyTextEventSerializer$Builder",
        "Headers, then the body, one line.",
    ),
    T(
        "avro_event",
        "flumed.serializers.avro_event:AvroEventSerializer",
        "org.apache.flume.serialization.FlumeEventAvroEventSerializer$Builder",
        "An Avro container of Flume events.",
    ),
)

TABLES: dict[str, dict[str, TypeInfo]] = {
    "sources": SOURCES,
    "channels": CHANNELS,
    "sinks": SINKS,
    "interceptors": INTERCEPTORS,
    "sinkprocessors": SINK_PROCESSORS,
    "selectors": SELECTORS,
    "serializers": SERIALIZERS,
}


def flume_classes(kind: str) -> dict[str, str]:
    """Flume class name (lower-cased) → short name, for one kind."""
    return {f.lower(): row.name for row in TABLES[kind].values() for f in row.flume}


#: Apache Flume's own short type names (FlumeUserGuide 1.10.1) that flumed has no row for:
#: named as Flume's, not as a typo. (A row, once added, wins over this list.)
FLUME_SHORT_NAMES = {
    "sources": frozenset(),
    "channels": frozenset({"spillablememory"}),
    "sinks": frozenset(
        {"hdfs", "hive", "irc", "hbase", "hbase2", "asynchbase", "http", "elasticsearch"}
    ),
    "interceptors": frozenset(),
    "sinkprocessors": frozenset(),
}


class UnknownTypeError(LookupError):
    """No component of that kind has that type name."""


def import_from_string(path: str) -> Any:
    """Import `module:attr` or `module.attr`."""
    if ":" in path:
        module, _, attr = path.partition(":")
    else:
        module, _, attr = path.rpartition(".")
    mod = importlib.import_module(module)
    obj: Any = mod
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def canonical(kind: str, type_name: str) -> str | None:
    """The short name of a built-in type given by short name or Flume class, else None."""
    low = type_name.strip().lower()
    if low in TABLES[kind]:
        return low
    return flume_classes(kind).get(low)


def _known(kind: str) -> str:
    return ", ".join(sorted(TABLES[kind]))


def import_path(kind: str, type_name: str) -> str:
    """The import string for a type name, without importing it.

    Raises:
        UnknownTypeError: naming the kind, the type and the known types.
    """
    table = TABLES[kind]
    t = type_name.strip()
    short = canonical(kind, t)
    if short is not None:
        return table[short].path
    low = t.lower()
    for ep in entry_points(group=f"flumed.{kind}"):
        if ep.name.lower() == low:
            return str(ep.value)
    if low.startswith("org.apache.flume."):
        # A Flume class flumed does not have: say so instead of failing an import of `org`.
        raise UnknownTypeError(
            f"Flume's {t} is not available in flumed; available {kind}: {_known(kind)}"
        )
    if ":" in t or "." in t:
        return t
    if low in FLUME_SHORT_NAMES.get(kind, ()):
        raise UnknownTypeError(
            f"Flume's {kind[:-1]} type {t!r} is not available in flumed; available {kind}: "
            f"{_known(kind)}"
        )
    raise UnknownTypeError(f"unknown {kind[:-1]} type {type_name!r}; known types: {_known(kind)}")


def resolve(kind: str, type_name: str, base: type | None = None) -> Any:
    """Import and return the class for a type name.

    With `base`, the object must be a subclass of it (a `type` naming a config dataclass or
    a function is a config error, not a crash later).

    Raises:
        UnknownTypeError: the name is unknown, its class cannot be imported, or it is not
            a `base`.
    """
    path = import_path(kind, type_name)
    try:
        obj = import_from_string(path)
    except (ImportError, AttributeError, ValueError) as e:
        hint = ""
        if isinstance(e, ModuleNotFoundError) and e.name == path.split(".")[0].split(":")[0]:
            # `org.example.MySource`: a Java class name, most likely.
            hint = (
                f" (flumed runs Python classes, package.module:Class; a Java class does not "
                f"run here; built-in {kind}: {_known(kind)})"
            )
        raise UnknownTypeError(
            f"{kind[:-1]} type {type_name!r}: cannot import {path}: {e}{hint}"
        ) from e
    if base is not None and not (isinstance(obj, type) and issubclass(obj, base)):
        raise UnknownTypeError(
            f"{kind[:-1]} type {type_name!r}: {path} is not a {base.__name__} "
            f"(a {kind[:-1]} class is needed)"
        )
    return obj
