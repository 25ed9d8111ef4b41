"""Source `netcat`: newline-terminated lines over TCP, one event per line.

Keys as Flume's NetcatSource: `bind`, `port`, `max-line-length` (512),
`ack-every-event` (true: answer `OK` per line once it is committed to the channel),
`encoding` (accepted; bodies are the raw bytes).

Push-back: while a batch waits for room in the channel the connection stops reading,
so TCP pushes back on the sender; it stops reading too while the sender leaves more than
1 MiB of answers unread (and is closed after `frame-timeout` of that). Limits and
timeouts: `maxConnections`, `idle-timeout`, `frame-timeout` (flumed.sources.server).
With ack-every-event, lines the channel refused
after keep-alive are answered `FAILED: …` (the sender resends them); without it the
batch is held and offered again until it fits: nothing is dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flumed.config.keys import key, listen_claims
from flumed.errors import ChannelError, ChannelFullError
from flumed.event import Event
from flumed.logs import RateLimitedLog
from flumed.sources.server import ListenerKeys, ListeningSource
from flumed.sources.tcp import STOP_GRACE, StreamConnection, close_connections, commit_held

log = logging.getLogger("flumed.sources.netcat")


@dataclass(frozen=True, slots=True)
class NetcatConfig(ListenerKeys):
    bind: str = key()
    port: int = key(ge=0, le=65535)
    max_line_length: int = key(512, name="max-line-length", ge=1)
    ack_every_event: bool = key(True, name="ack-every-event")
    encoding: str = key("utf-8")

    def claims(self) -> list[tuple[str, str]]:
        return listen_claims(self.port)


class NetcatSource(ListeningSource):
    Config = NetcatConfig
    config: NetcatConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._log = RateLimitedLog(log, interval=1.0)

    async def start(self) -> None:
        cfg = self.config
        await self._listen(cfg.bind, [cfg.port], lambda: StreamConnection(self))
        log.info("Source %s listening on %s:%d.", self.name, cfg.bind, self.port)
        await super().start()

    async def stop(self) -> None:
        self._stopping.set()
        await self._close_listeners()
        await close_connections(self._connections, STOP_GRACE + 1)
        await super().stop()

    async def _serve(self, conn: StreamConnection) -> None:
        """Split input into lines, commit them in batches, answer, push back."""
        # As Flume's, max-line-length counts the newline.
        maxlen = self.config.max_line_length - 1
        ack = self.config.ack_every_event
        counter = self.counter
        rest = b""
        discarding = False  # inside an oversized line, up to its newline
        try:
            progressed = True
            while (data := await conn.read(bool(rest), progressed)) is not None:
                if rest:
                    data = rest + data
                lines = data.split(b"\n")
                rest = lines.pop()
                progressed = bool(lines)
                errors = 0
                if discarding and lines:
                    lines.pop(0)
                    discarding = False
                if lines and max(map(len, lines)) > maxlen:
                    kept = [ln for ln in lines if len(ln) <= maxlen]
                    errors = len(lines) - len(kept)
                    lines = kept
                if len(rest) > maxlen:
                    rest = b""
                    if not discarding:
                        errors += 1
                    discarding = True
                if errors:
                    counter.EventReadFail += errors
                    self._log.warn(
                        "Source %s: %d line(s) from %s exceed max-line-length %d and were "
                        "rejected.",
                        self.name,
                        errors,
                        conn.peer_name,
                        self.config.max_line_length,
                    )
                    if ack:
                        conn.write(
                            b"FAILED: Event exceeds the maximum length (%d chars, including "
                            b"newline)\n" % self.config.max_line_length * errors
                        )
                if lines:
                    await self._commit(conn, lines, ack)
            if rest and not discarding:
                await self._commit(conn, [rest], ack)
        finally:
            conn.close()

    async def _commit(self, conn: StreamConnection, lines: list[bytes], ack: bool) -> None:
        counter = self.counter
        counter.EventReceivedCount += len(lines)
        events = [Event(ln) for ln in lines]
        if not ack:
            # No way to tell the sender: hold the batch until the channel takes it,
            # while the connection reads nothing more (TCP pushes back).
            await commit_held(self, events, self._stopping, self._log, conn.pause)
            return
        try:
            await self.processor.process_batch(events)
        except ChannelError as e:
            counter.ChannelWriteFail += 1
            accepted = e.accepted if isinstance(e, ChannelFullError) else 0
            counter.EventAcceptedCount += accepted
            refused = len(events) - accepted
            msg = f"FAILED: {e}".replace("\n", " ").encode() + b"\n"
            conn.write(b"OK\n" * accepted + msg * refused)
            self._log.warn("Source %s: channel refused %d events: %s", self.name, refused, e)
            return
        counter.EventAcceptedCount += len(events)
        conn.write(b"OK\n" * len(events))
