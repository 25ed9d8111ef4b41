"""Kafka client options: Flume passes `kafka.producer.*` / `kafka.consumer.*` through to
the Java client in Kafka's own spelling (`linger.ms`, `security.protocol`,
`sasl.jaas.config` ...). `client_options()` maps them to aiokafka keyword arguments; a key
with no aiokafka equivalent is warned about and ignored, never fatal. The TLS and SASL
keys are read by flumed.kafka.security.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from flumed.kafka.security import (
    SSL_KEYS,
    TlsOptions,
    build_ssl_context,
    sasl_options,
    tls_options,
)

log = logging.getLogger("flumed.kafka")

Role = Literal["producer", "consumer"]


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
        elif k in _QUIET or k in SSL_KEYS or k == "sasl.jaas.config":
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
    sasl_options(props, pre, out)
    proto = out.kwargs.get("security_protocol", "PLAINTEXT")
    if proto in ("SSL", "SASL_SSL"):
        out.tls = tls_options(props, pre, out)
    elif any(k in props for k in SSL_KEYS):
        out.ignored.append(f"'{pre}ssl.*' keys are ignored: security.protocol is {proto}")
    if where:
        out.problems = [f"{where}: {p}" for p in out.problems]
        out.ignored = [f"{where}: {p}" for p in out.ignored]
    return out


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


def client_problems(servers: str, *opts: ClientOptions) -> list[str]:
    """Config check of a Kafka component's `kafka.bootstrap.servers` and client options
    (pure); the keys they ignore are warned about here, once."""
    problems = servers_problems(servers)
    for o in opts:
        problems += o.problems
    log_options(opts)
    return problems
