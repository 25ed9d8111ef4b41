"""Component types by name: one table per kind, resolved lazily.

A type is looked up case-insensitively in its table, then as one of Apache Flume's
class names (so a Flume config's `org.apache.flume.sink.kafka.KafkaSink` works), then
in the entry-point group `flumed.<kind>` of installed plugins, and finally, when it
contains `:` or `.`, as a Python class path (`mypkg.sinks:MySink` or `mypkg.sinks.MySink`).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

SOURCES: dict[str, str] = {
    "netcat": "flumed.sources.netcat:NetcatSource",
    "netcatudp": "flumed.sources.netcatudp:NetcatUdpSource",
    "seq": "flumed.sources.seq:SequenceGeneratorSource",
    "exec": "flumed.sources.exec:ExecSource",
    "taildir": "flumed.sources.taildir:TaildirSource",
    "spooldir": "flumed.sources.spooldir:SpoolDirectorySource",
    "syslogtcp": "flumed.sources.syslogtcp:SyslogTcpSource",
    "syslogudp": "flumed.sources.syslogudp:SyslogUdpSource",
    "multiport_syslogtcp": "flumed.sources.multiport_syslogtcp:MultiportSyslogTcpSource",
    "http": "flumed.sources.http:HTTPSource",
    "avro": "flumed.sources.avro:AvroSource",
    "thrift": "flumed.sources.thrift:ThriftSource",
    "kafka": "flumed.sources.kafka:KafkaSource",
}

CHANNELS: dict[str, str] = {
    "memory": "flumed.channels.memory:MemoryChannel",
    "file": "flumed.channels.file:FileChannel",
    "kafka": "flumed.channels.kafka:KafkaChannel",
}

SINKS: dict[str, str] = {
    "logger": "flumed.sinks.logger:LoggerSink",
    "null": "flumed.sinks.null:NullSink",
    "file_roll": "flumed.sinks.file_roll:RollingFileSink",
    "avro": "flumed.sinks.avro:AvroSink",
    "thrift": "flumed.sinks.thrift:ThriftSink",
    "kafka": "flumed.sinks.kafka:KafkaSink",
}

INTERCEPTORS: dict[str, str] = {
    "timestamp": "flumed.interceptors.timestamp:TimestampInterceptor",
    "host": "flumed.interceptors.host:HostInterceptor",
    "static": "flumed.interceptors.static:StaticInterceptor",
    "remove_header": "flumed.interceptors.remove_header:RemoveHeaderInterceptor",
    "uuid": "flumed.interceptors.uuid:UUIDInterceptor",
    "regex_filter": "flumed.interceptors.regex_filter:RegexFilteringInterceptor",
    "regex_extractor": "flumed.interceptors.regex_extractor:RegexExtractorInterceptor",
    "search_replace": "flumed.interceptors.search_replace:SearchAndReplaceInterceptor",
}

SINK_PROCESSORS: dict[str, str] = {
    "default": "flumed.sinks.runner:DefaultSinkProcessor",
    "failover": "flumed.sinks.failover:FailoverSinkProcessor",
    "load_balance": "flumed.sinks.load_balance:LoadBalancingSinkProcessor",
}

SERIALIZERS: dict[str, str] = {
    "text": "flumed.serializers.text:TextSerializer",
    "header_and_text": "flumed.serializers.header_and_text:HeaderAndTextSerializer",
    "avro_event": "flumed.serializers.avro_event:AvroEventSerializer",
}

#: Apache Flume's class names and aliases for the same components.
FLUME_CLASSES: dict[str, str] = {
    "org.apache.flume.source.netcatsource": "netcat",
    "org.apache.flume.source.netcatudpsource": "netcatudp",
    "org.apache.flume.source.sequencegeneratorsource": "seq",
    "org.apache.flume.channel.memorychannel": "memory",
    "org.apache.flume.sink.loggersink": "logger",
    "org.apache.flume.sink.nullsink": "null",
    "org.apache.flume.sink.rollingfilesink": "file_roll",
    "org.apache.flume.interceptor.timestampinterceptor$builder": "timestamp",
    "org.apache.flume.interceptor.hostinterceptor$builder": "host",
    "org.apache.flume.interceptor.staticinterceptor$builder": "static",
    "org.apache.flume.interceptor.removeheaderinterceptor$builder": "remove_header",
    "org.apache.flume.sink.solr.morphline.uuidinterceptor$builder": "uuid",
    "org.apache.flume.interceptor.regexfilteringinterceptor$builder": "regex_filter",
    "org.apache.flume.interceptor.regexextractorinterceptor$builder": "regex_extractor",
    "org.apache.flume.interceptor.searchandreplaceinterceptor$builder": "search_replace",
    "org.apache.flume.serialization.bodytexteventserializer$builder": "text",
    "org.apache.flume.serialization.headerandbodytexteventserializer$builder": "header_and_text",
    "org.apache.flume.serialization.flumeeventavroeventserializer$builder": "avro_event",
    "org.apache.flume.source.avrosource": "avro",
    "org.apache.flume.source.thriftsource": "thrift",
    "org.apache.flume.source.execsource": "exec",
    "org.apache.flume.source.taildir.taildirsource": "taildir",
    "org.apache.flume.source.spooldirectorysource": "spooldir",
    "org.apache.flume.source.syslogtcpsource": "syslogtcp",
    "org.apache.flume.source.syslogudpsource": "syslogudp",
    "org.apache.flume.source.multiportsyslogtcpsource": "multiport_syslogtcp",
    "org.apache.flume.source.http.httpsource": "http",
    "org.apache.flume.source.kafka.kafkasource": "kafka",
    "org.apache.flume.channel.file.filechannel": "file",
    "org.apache.flume.channel.kafka.kafkachannel": "kafka",
    "org.apache.flume.sink.avrosink": "avro",
    "org.apache.flume.sink.thriftsink": "thrift",
    "org.apache.flume.sink.kafka.kafkasink": "kafka",
    "org.apache.flume.sink.failoversinkprocessor": "failover",
    "org.apache.flume.sink.loadbalancingsinkprocessor": "load_balance",
    "org.apache.flume.sink.defaultsinkprocessor": "default",
    "org.apache.flume.channel.replicatingchannelselector": "replicating",
    "org.apache.flume.channel.multiplexingchannelselector": "multiplexing",
}

TABLES: dict[str, dict[str, str]] = {
    "sources": SOURCES,
    "channels": CHANNELS,
    "sinks": SINKS,
    "interceptors": INTERCEPTORS,
    "sinkprocessors": SINK_PROCESSORS,
    "serializers": SERIALIZERS,
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


def import_path(kind: str, type_name: str) -> str:
    """The import string for a type name, without importing it.

    Raises:
        UnknownTypeError: naming the kind, the type and the known types.
    """
    table = TABLES[kind]
    t = type_name.strip()
    low = t.lower()
    if low in table:
        return table[low]
    alias = FLUME_CLASSES.get(low)
    if alias is not None and alias in table:
        return table[alias]
    for ep in entry_points(group=f"flumed.{kind}"):
        if ep.name.lower() == low:
            return ep.value
    if ":" in t or "." in t:
        return t
    raise UnknownTypeError(
        f"unknown {kind[:-1]} type {type_name!r}; known types: {', '.join(sorted(table))}"
    )


def resolve(kind: str, type_name: str) -> Any:
    """Import and return the class for a type name.

    Raises:
        UnknownTypeError: the name is unknown or its class cannot be imported.
    """
    path = import_path(kind, type_name)
    try:
        return import_from_string(path)
    except (ImportError, AttributeError, ValueError) as e:
        raise UnknownTypeError(f"{kind[:-1]} type {type_name!r}: cannot import {path}: {e}") from e
