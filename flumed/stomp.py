"""A small STOMP 1.2 client on asyncio streams, for the `jms` source.

Python has no JMS; ActiveMQ, Artemis and RabbitMQ all serve STOMP, which carries what a
JMS consumer needs: subscriptions with client-individual acknowledgement, selectors
(ActiveMQ), durable topic subscriptions, and the messages' properties as headers.

Frames are `COMMAND\\nkey:value\\n...\\n\\nbody\\0`. Header values escape `\\\\`, `\\n`,
`\\r` and `:` (STOMP 1.2); a body with a `content-length` header may hold NULs. Bounds:
a frame's headers may not pass MAX_HEADER_BYTES and its body MAX_FRAME_BYTES (a broker
that sends more is a protocol error, not memory spent).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from flumed.errors import FlumedError

MAX_HEADER_BYTES = 64 * 1024
MAX_FRAME_BYTES = 64 * 1024 * 1024

_ESCAPES = {"\\\\": "\\", "\\n": "\n", "\\r": "\r", "\\c": ":"}


class StompError(FlumedError):
    """The broker answered ERROR, closed the connection, or broke the protocol."""

    retriable = True


@dataclass(slots=True)
class Frame:
    command: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace(":", "\\c")


def _unescape(v: str) -> str:
    if "\\" not in v:
        return v
    out, i = [], 0
    while i < len(v):
        if v[i] == "\\" and i + 1 < len(v):
            out.append(_ESCAPES.get(v[i : i + 2], v[i : i + 2]))
            i += 2
        else:
            out.append(v[i])
            i += 1
    return "".join(out)


def encode(command: str, headers: Mapping[str, str], body: bytes = b"") -> bytes:
    """One frame's bytes (CONNECT headers are not escaped, as STOMP 1.2 says)."""
    esc = (lambda s: s) if command == "CONNECT" else _escape
    lines = [command] + [f"{esc(k)}:{esc(v)}" for k, v in headers.items()]
    if body:
        lines.append(f"content-length:{len(body)}")
    return ("\n".join(lines) + "\n\n").encode() + body + b"\0"


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """Read one frame, skipping heart-beat newlines.

    Raises:
        StompError: the connection closed or the frame is malformed or too large.
    """
    try:
        while True:
            head = await reader.readuntil(b"\n\n")
            stripped = head.lstrip(b"\r\n")
            if stripped:
                break
    except asyncio.LimitOverrunError:
        raise StompError(f"a STOMP frame's headers pass {MAX_HEADER_BYTES} bytes") from None
    except asyncio.IncompleteReadError:
        raise StompError("the broker closed the connection") from None
    lines = stripped.decode("utf-8", "replace").split("\n")
    command = lines[0].rstrip("\r")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        line = line.rstrip("\r")
        if not line:
            continue
        k, _, v = line.partition(":")
        # The first of repeated headers wins (STOMP 1.2).
        headers.setdefault(_unescape(k), _unescape(v))
    try:
        if "content-length" in headers:
            n = int(headers["content-length"])
            if not 0 <= n <= MAX_FRAME_BYTES:
                raise StompError(f"a STOMP frame body of {n} bytes is refused")
            body = await reader.readexactly(n + 1)
            if body[-1:] != b"\0":
                raise StompError("a STOMP frame does not end with NUL after content-length")
            body = body[:-1]
        else:
            body = (await reader.readuntil(b"\0"))[:-1]
    except asyncio.LimitOverrunError:
        raise StompError("a STOMP frame without content-length is too long") from None
    except asyncio.IncompleteReadError:
        raise StompError("the broker closed the connection") from None
    except ValueError:
        raise StompError("a STOMP frame has a bad content-length header") from None
    if command == "ERROR":
        raise StompError(
            f"the broker answered ERROR: {headers.get('message', '')} "
            f"{body.decode('utf-8', 'replace').strip()}".strip()
        )
    return Frame(command, headers, body)


class StompConnection:
    """One connection: `connect()`, `subscribe()`, `frames()` via `read()`, `ack()`,
    `close()`. Used by one task (the source's reader); writes are whole frames."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        virtual_host: str = "/",
    ) -> None:
        self.host = host
        self.port = port
        #: The CONNECT frame's `host` header: RabbitMQ reads it as the virtual host,
        #: ActiveMQ ignores it.
        self.virtual_host = virtual_host
        self.ssl_context = ssl_context
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.server = ""

    async def connect(
        self, login: str = "", passcode: str = "", client_id: str = "", timeout: float = 10.0
    ) -> None:
        """Open the connection and log in.

        Raises:
            OSError: the broker cannot be reached. StompError: it refused.
        """
        async with asyncio.timeout(timeout):
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.ssl_context, limit=MAX_HEADER_BYTES
            )
            headers = {"accept-version": "1.2", "host": self.virtual_host, "heart-beat": "0,0"}
            if login:
                headers["login"] = login
                headers["passcode"] = passcode
            if client_id:
                headers["client-id"] = client_id
            self.writer.write(encode("CONNECT", headers))
            frame = await read_frame(self.reader)
        if frame.command != "CONNECTED":
            raise StompError(f"expected CONNECTED, got {frame.command}")
        self.server = frame.headers.get("server", "")

    def send_frame(self, command: str, headers: Mapping[str, str], body: bytes = b"") -> None:
        assert self.writer is not None
        self.writer.write(encode(command, headers, body))

    async def read(self) -> Frame:
        assert self.reader is not None
        return await read_frame(self.reader)

    def ack_all(self, ack_ids: list[str]) -> None:
        """Acknowledge messages (client-individual): all ACK frames in one write."""
        assert self.writer is not None
        self.writer.write(b"".join(encode("ACK", {"id": a}) for a in ack_ids))

    async def drain(self) -> None:
        assert self.writer is not None
        await self.writer.drain()

    async def close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is None:
            return
        try:
            writer.write(encode("DISCONNECT", {}))
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 2)
        except (OSError, TimeoutError, ssl.SSLError):
            writer.transport.abort()
