"""Logging helpers shared by components."""

from __future__ import annotations

import json
import logging
import os
import sys
import time


class RateLimitedLog:
    """Log at most one line per `interval` seconds, counting what was held back.

    For bad input and outages: the problem stays visible without flooding the journal;
    callers count every occurrence in their counters.
    """

    def __init__(self, logger: logging.Logger, interval: float = 5.0, burst: int = 1) -> None:
        self.logger = logger
        self.interval = interval
        #: Lines that may pass at once before the interval applies (a token bucket that
        #: refills one line per interval): distinct problems arriving together are all
        #: seen, a flood is not.
        self.burst = burst
        # None, not 0.0: the first occurrence is always logged, whatever the age of the
        # monotonic clock (a fresh VM or container starts it near zero).
        self._last: float | None = None
        self._tokens = float(burst)
        self._refill = 0.0
        self._held = 0

    def warn(self, msg: str, *args: object) -> None:
        self.log(logging.WARNING, msg, *args)

    def log(self, level: int, msg: str, *args: object, exc_info: bool = False) -> None:
        """Log `msg` unless a line went out less than `interval` s ago. `exc_info`: with
        the traceback of the exception being handled."""
        now = time.monotonic()
        if self._last is not None:
            if self.burst > 1:
                gained = (now - self._refill) / self.interval if self.interval > 0 else self.burst
                self._tokens = min(float(self.burst), self._tokens + gained)
            elif now - self._last >= self.interval:
                self._tokens = 1.0
            self._refill = now
            if self._tokens < 1.0:
                self._held += 1
                return
        self._refill = now
        self._tokens -= 1.0
        if self._held:
            msg += " (%d similar warnings held back)"
            args = (*args, self._held)
        self._last = now
        self._held = 0
        self.logger.log(level, msg, *args, exc_info=exc_info)


class OneLineFormatter(logging.Formatter):
    """One log entry, one line: newlines in messages and tracebacks become ` | `.

    journald (and grep) treat each line as an entry; a multi-line traceback would
    become many unrelated entries.
    """

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "").replace("\n", " | ")


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log shippers: time, level, logger, message (and the
    traceback as one string when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("plain", "json")


def setup_logging(level: str, fmt: str = "plain") -> None:
    """Log to stderr, one line an entry (`plain`) or one JSON object a line (`json`).
    Called once by the CLI.

    Raises:
        ValueError: an unknown level or format, naming the choices.
    """
    if level.upper() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; choose one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; choose one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        # Under systemd, journald stamps each line itself.
        text = "%(levelname)s %(name)s: %(message)s"
        if not os.environ.get("JOURNAL_STREAM"):
            text = "%(asctime)s " + text
        formatter = OneLineFormatter(text)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
