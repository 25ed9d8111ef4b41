"""Interceptor `host`: the agent's host address or name in a header.

Keys as Flume's HostInterceptor: `preserveExisting` (false), `useIP` (true: the IP
address the host name resolves to; false: the canonical host name), `hostHeader`
("host"). The value is looked up once, when the agent builds the interceptor; when
the lookup fails, as in Flume, a warning is logged and no header is set.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any

from flumed.config.keys import key
from flumed.event import Event
from flumed.interceptors.base import Interceptor

log = logging.getLogger("flumed.interceptors.host")


@dataclass(frozen=True, slots=True)
class HostConfig:
    preserveExisting: bool = key(False)
    useIP: bool = key(True)
    hostHeader: str = key("host")


def local_host(use_ip: bool) -> str | None:
    """Java's InetAddress.getLocalHost(): its address, or its canonical name."""
    try:
        name = socket.gethostname()
        return socket.gethostbyname(name) if use_ip else socket.getfqdn(name)
    except OSError as e:
        log.warning("Could not get the local host address: %s; no host header is set.", e)
        return None


class HostInterceptor(Interceptor):
    Config = HostConfig
    config: HostConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self.host = local_host(config.useIP)

    def intercept(self, events: list[Event]) -> list[Event]:
        host = self.host
        if host is None:
            return events
        header = self.config.hostHeader
        if self.config.preserveExisting:
            for e in events:
                e.headers.setdefault(header, host)
        else:
            for e in events:
                e.headers[header] = host
        return events
