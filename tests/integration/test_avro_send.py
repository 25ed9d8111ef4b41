"""`flumed send` (the counterpart of `flume-ng avro-client`) as a real process against
an Avro source: lines become events, headers are attached, and the exit status says
whether the receiver acknowledged everything."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flumed.agent import Agent
from flumed.event import Event
from tests.integration.avro_helpers import collector, drain, make_pki, start_agent
from tests.util import free_port


async def send(*args: str, stdin: bytes | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flumed",
        "send",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.fixture
async def agents() -> AsyncIterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for a in started:
        await a.stop()


async def test_file_with_headers(agents: list[Agent], tmp_path: Path) -> None:
    b = await start_agent(collector(), "b")
    agents.append(b)
    data = tmp_path / "in.txt"
    lines = [b"line %d" % i for i in range(250)] + [b"", b"crlf line\r", b"last, no newline"]
    data.write_bytes(b"\n".join(lines))
    hfile = tmp_path / "headers"
    hfile.write_text("# comment\nsource = file\nhost=web1\n")
    port = str(b.sources["r"].port)
    rc, err = await send(
        "-H", "127.0.0.1", "-p", port, "-F", str(data), "-R", str(hfile),
        "--header", "host=web2", "--header", "q=a=b", "--batch-size", "100",
    )  # fmt: skip
    assert rc == 0, err
    assert "flumed send: 253 events in 3 batches (" in err
    assert "events/s" in err and "MB/s" in err
    headers = {"source": "file", "host": "web2", "q": "a=b"}
    expected = [Event(ln.removesuffix(b"\r"), headers) for ln in lines]
    assert await drain(b.channels["c"]) == expected
    assert b.sources["r"].counter.AppendBatchAcceptedCount == 3


async def test_stdin_deflate_and_tls(agents: list[Agent], tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    source = (
        f'ssl = true\ncertificate = "{pki.chain}"\nkey = "{pki.key}"\n'
        '"compression-type" = "deflate"'
    )
    b = await start_agent(collector(source=source), "b")
    agents.append(b)
    port = str(b.sources["r"].port)
    body = b"".join(b"%d\n" % i for i in range(1000))
    rc, err = await send(
        "-H", "localhost", "-p", port, "--ssl", "--truststore", pki.ca,
        "--compression-type", "deflate", stdin=body,
    )  # fmt: skip
    assert rc == 0, err
    assert [e.body for e in await drain(b.channels["c"])] == body.split()
    # Without the CA the server's certificate is refused.
    rc, err = await send(
        "-H", "localhost", "-p", port, "--ssl", "--compression-type", "deflate", stdin=b"x\n"
    )  # fmt: skip
    assert rc == 1 and "CERTIFICATE_VERIFY_FAILED" in err


async def test_failures_exit_non_zero(agents: list[Agent]) -> None:
    rc, err = await send("-H", "127.0.0.1", "-p", str(free_port()), stdin=b"a\nb\n")
    assert rc == 1 and "cannot connect to 127.0.0.1" in err
    full = {"capacity": 10, "transactionCapacity": 10, "keep-alive": 0.1}
    b = await start_agent(collector(channel=full), "b")
    agents.append(b)
    port = str(b.sources["r"].port)
    rc, err = await send("-H", "127.0.0.1", "-p", port, stdin=b"x\n" * 100)
    assert rc == 1 and "answered FAILED" in err
    assert b.sources["r"].counter.ChannelWriteFail == 1
    rc, err = await send("-H", "127.0.0.1", "-p", port, "-F", "/nonexistent/file")
    assert rc == 2 and "No such file" in err


async def test_progress_on_a_terminal(agents: list[Agent], tmp_path: Path) -> None:
    b = await start_agent(collector(), "b")
    agents.append(b)
    data = tmp_path / "big.txt"
    data.write_bytes(b"".join(b"line %d\n" % i for i in range(5000)))
    main_fd, term_fd = os.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flumed", "send", "-H", "127.0.0.1",
        "-p", str(b.sources["r"].port), "-F", str(data), "--batch-size", "500",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=term_fd,
    )  # fmt: skip
    os.close(term_fd)
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    out = b""
    while True:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(main_fd)
    assert b"\r500 events, " in out and b"%), " in out and b"events/s" in out, out
    assert b"flumed send: 5,000 events in 10 batches" in out
    assert len(await drain(b.channels["c"])) == 5000
