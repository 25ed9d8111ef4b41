"""Logging around aiokafka: `describe()` for an aiokafka error in one line, and the
filter that keeps aiokafka's own reconnection errors from flooding the journal.

The filter is a `logging.Filter` on aiokafka's loggers (flumed does not make those
calls, so `flumed.logs.RateLimitedLog` cannot wrap them); it is keyed by message
template, one line per template every 10 s.
"""

from __future__ import annotations

import logging
import time


def describe(e: BaseException) -> str:
    """`Type: message`, once (aiokafka's messages often start with their type already)."""
    name, msg = type(e).__name__, str(e)
    if not msg:
        return name
    return msg if msg.startswith(name) else f"{name}: {msg}"


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
