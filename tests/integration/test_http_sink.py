"""The `http` sink against a real aiohttp server in the test: Flume's per-status
backoff/rollback/incrementMetrics lookup (exact code, class, default), batch formats,
headers, TLS, auth, gzip, dead/slow/resetting endpoints, the dead-letter file, and
100,000 numbered events through a server failing at random: nothing lost."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flumed.agent import Agent
from flumed.channels.memory import MemoryChannel, MemoryChannelConfig
from flumed.config.graph import build_agent
from flumed.config.keys import flatten, parse
from flumed.errors import ConfigError, DeliveryError
from flumed.event import Event
from flumed.lifecycle import Backoff
from flumed.sinks.base import Status
from flumed.sinks.http import HttpSink
from tests.support.http_servers import Recorder, random_policy
from tests.util import free_port, wait_until


async def make_channel(capacity: int = 10_000) -> MemoryChannel:
    ch = MemoryChannel("c1", MemoryChannelConfig(capacity=capacity, transactionCapacity=capacity))
    await ch.start()
    return ch


async def put(ch: MemoryChannel, events: list[Event]) -> None:
    async with ch.transaction() as tx:
        await tx.put_batch(events)


async def drain(ch: MemoryChannel) -> list[bytes]:
    async with ch.transaction() as tx:
        return [e.body for e in await tx.take_batch(ch.capacity, 0)]


def config(**keys: Any) -> Any:
    return parse(HttpSink.Config, flatten(keys), "sink k1")


async def make_sink(ch: MemoryChannel, url: str, **keys: Any) -> HttpSink:
    sink = HttpSink("k1", config(endpoint=url, **keys))
    sink.channel = ch
    sink._backoff = Backoff(0.01, 0.02)  # the commit-and-back-off wait, short for tests
    await sink.start()
    return sink


# -- configuration ----------------------------------------------------------------------


def test_flume_keys_and_defaults():
    c = config(endpoint="http://h:1/x")
    assert (c.connectTimeout, c.requestTimeout, c.acceptHeader, c.batchSize) == (
        5000,
        5000,
        "text/plain",
        1,
    )
    assert (c.defaultBackoff, c.defaultRollback, c.defaultIncrementMetrics) == (
        True,
        True,
        False,
    )


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"endpoint": "ftp://h/"}, "not an http:// or https:// URL"),
        ({"endpoint": "http://h/", "backoff": {"4X": "true"}}, "key 'backoff.4X'"),
        ({"endpoint": "http://h/", "rollback": {"503": "maybe"}}, "expected true or false"),
        ({"endpoint": "http://h/", "batch": {"format": "xml"}}, "batch.format"),
        ({"endpoint": "http://h/", "password": "p"}, "need 'username'"),
    ],
)
def test_bad_config_names_the_key(keys, message):
    with pytest.raises(ConfigError, match=message):
        config(**keys)


@pytest.mark.parametrize(
    ("keys", "status", "want"),
    [
        # (backoff, rollback, incrementMetrics) as Flume's findOverrideValue picks them
        ({}, 200, (False, False, True)),
        ({}, 503, (True, True, False)),
        ({}, 404, (True, True, False)),
        ({"defaultBackoff": False, "defaultRollback": False}, 500, (False, False, False)),
        ({"defaultIncrementMetrics": True}, 418, (True, True, True)),
        ({"backoff": {"4XX": "false"}}, 404, (False, True, False)),
        ({"backoff": {"4XX": "false", "404": "true"}}, 404, (True, True, False)),
        ({"backoff": {"4XX": "false", "404": "true"}}, 400, (False, True, False)),
        ({"rollback": {"4xx": "false"}, "incrementMetrics": {"4XX": "true"}}, 400,
         (True, False, True)),
        ({"rollback": {"2XX": "true"}}, 201, (False, True, True)),
        ({"rollback": {"200": "true"}, "backoff": {"200": "true"}}, 200, (True, True, True)),
        ({"incrementMetrics": {"200": "false"}}, 200, (False, False, False)),
    ],
)  # fmt: skip
def test_decision_exact_code_then_class_then_default(keys, status, want):
    sink = HttpSink("k1", config(endpoint="http://h/", **keys))
    assert sink.decide(status) == want


# -- one event per request (Flume) -------------------------------------------------------


async def test_each_event_posted_alone_with_flume_headers():
    async with Recorder() as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url + "/in", batchSize=3)
        await put(ch, [Event(b"a"), Event(b""), Event(b"c")])
        assert await sink.process() is Status.READY
        assert [b for _, b in srv.received] == [b"a", b"c"]  # the empty body is not sent
        h = srv.received[0][0]
        assert (h["Content-Type"], h["Accept"]) == ("text/plain", "text/plain")
        assert sink.counter.EventDrainSuccessCount == 2
        assert ch.size == 0
        await sink.stop()


@pytest.mark.parametrize(
    ("keys", "status", "committed", "raises", "metric"),
    [
        ({}, 200, True, False, 1),
        ({}, 503, False, True, 0),  # rollback + backoff: DeliveryError, runner backs off
        ({"backoff": {"503": "false"}}, 503, False, False, 0),  # rollback, retry at once
        ({"rollback": {"4XX": "false"}}, 400, True, False, 0),  # commit + backoff
        ({"rollback": {"4XX": "false"}, "incrementMetrics": {"4XX": "true"}}, 404, True, False, 1),
        ({"rollback": {"2XX": "true"}, "backoff": {"2XX": "false"}}, 200, False, False, 1),
    ],
)  # fmt: skip
async def test_status_paths_commit_rollback_backoff_metrics(
    keys, status, committed, raises, metric, tmp_path
):
    async with Recorder(lambda n, r, b: status) as srv:
        ch = await make_channel()
        dead = tmp_path / "dead.jsonl"
        sink = await make_sink(ch, srv.url, deadLetter={"path": str(dead)}, **keys)
        await put(ch, [Event(b"x1", {"k": "v"})])
        if raises:
            with pytest.raises(DeliveryError, match=f"HTTP {status}"):
                await sink.process()
        else:
            result = await sink.process()
            _b, _r, _m = sink.decide(status)
            assert result is (Status.BACKOFF if _b and not _r else Status.READY)
        assert ch.size == (0 if committed else 1)
        assert sink.counter.EventDrainSuccessCount == metric
        lines = dead.read_text().splitlines() if dead.exists() else []
        if committed and not 200 <= status < 300:
            assert [json.loads(x)["body"] for x in lines] == ["x1"]
            assert json.loads(lines[0])["status"] == status
            assert sink.counter.EventDeadLetterCount == 1
        else:
            assert lines == []
        await sink.stop()


async def test_rollback_of_the_first_request_rolls_the_take_back():
    async with Recorder(lambda n, r, b: 503 if b == b"0" else 200) as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, batchSize=5)
        await put(ch, [Event(b"%d" % i) for i in range(5)])
        with pytest.raises(DeliveryError):
            await sink.process()
        assert [b for _, b in srv.received] == [b"0"]
        assert await drain(ch) == [b"0", b"1", b"2", b"3", b"4"]
        await sink.stop()


async def test_later_event_is_resent_in_place_not_the_whole_take():
    tries: Counter[bytes] = Counter()

    def policy(n: int, r: Any, b: bytes) -> Any:
        tries[b] += 1
        if b == b"2" and tries[b] <= 2:
            return 503
        if b == b"3" and tries[b] == 1:
            return "reset"
        return 200

    async with Recorder(policy) as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, batchSize=5)
        await put(ch, [Event(b"%d" % i) for i in range(5)])
        assert await sink.process() is Status.READY
        assert [b for _, b in srv.received] == [b"0", b"1", b"2", b"2", b"2", b"3", b"3", b"4"]
        assert srv.accepted == [b"0", b"1", b"2", b"3", b"4"] and ch.size == 0
        assert sink.counter.EventRetryCount == 3
        await sink.stop()


async def test_stop_during_in_place_resends_rolls_the_take_back():
    import asyncio

    async with Recorder(lambda n, r, b: 503 if b == b"2" else 200) as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, batchSize=5)
        await put(ch, [Event(b"%d" % i) for i in range(5)])
        task = asyncio.create_task(sink.process())
        await wait_until(lambda: srv.requests >= 6, 30, "a few resends")
        await sink.stop()
        with pytest.raises(DeliveryError):
            await task
        assert await drain(ch) == [b"0", b"1", b"2", b"3", b"4"]


# -- batch mode ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ndjson", "json_array"])
async def test_batch_formats(fmt):
    async with Recorder() as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, batchSize=10, batch={"format": fmt})
        events = [Event(b"e%d" % i, {"n": str(i)}) for i in range(3)] + [Event(b"\xff\xfe")]
        await put(ch, events)
        assert await sink.process() is Status.READY
        (headers, body), = srv.received  # fmt: skip
        if fmt == "ndjson":
            assert headers["Content-Type"] == "application/x-ndjson"
            docs = [json.loads(x) for x in body.decode().splitlines()]
        else:
            assert headers["Content-Type"] == "application/json"
            docs = json.loads(body)
        assert docs == [
            {"headers": {"n": "0"}, "body": "e0"},
            {"headers": {"n": "1"}, "body": "e1"},
            {"headers": {"n": "2"}, "body": "e2"},
            {"headers": {}, "body_base64": "//4="},
        ]
        assert sink.counter.EventDrainSuccessCount == 4
        await sink.stop()


async def test_headers_escapes_auth_gzip_and_content_type():
    async with Recorder() as srv:
        ch = await make_channel()
        sink = await make_sink(
            ch,
            srv.url,
            headers={"X-Host": "%{host}", "X-Static": "s"},
            contentTypeHeader="application/octet-stream",
            username="u",
            password="p",
            compression="gzip",
        )
        await put(
            ch, [Event(b"payload", {"host": "web1"}), Event(b"p2", {"host": "a\r\nX-Evil: 1"})]
        )
        await sink.process()
        await sink.process()
        (h, body), (h2, _) = srv.received  # fmt: skip
        assert h2["X-Host"] == "a  X-Evil: 1" and "X-Evil" not in h2
        # aiohttp's server decompresses by Content-Encoding: a plain body would be a 400.
        assert body == b"payload"
        assert h["Content-Encoding"] == "gzip"
        assert (h["X-Host"], h["X-Static"]) == ("web1", "s")
        assert h["Content-Type"] == "application/octet-stream"
        assert h["Authorization"] == "Basic dTpw"
        await sink.stop()


async def test_https_with_ca_file(tmp_path):
    import trustme  # a test dependency

    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    server_ctx = __import__("ssl").create_default_context(__import__("ssl").Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    srv = Recorder()
    srv.ssl_context = server_ctx
    async with srv:
        assert srv.url.startswith("https://")
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, caFile=str(ca_file))
        await put(ch, [Event(b"secret")])
        assert await sink.process() is Status.READY
        assert srv.accepted == [b"secret"]
        await sink.stop()
        # Without the CA the certificate is refused: rolled back, nothing lost.
        sink = await make_sink(ch, srv.url)
        await put(ch, [Event(b"again")])
        with pytest.raises(DeliveryError, match="no server answered"):
            await sink.process()
        assert ch.size == 1
        await sink.stop()


# -- dead, slow, resetting endpoints ------------------------------------------------------


async def test_dead_endpoint_rolls_back():
    ch = await make_channel()
    sink = await make_sink(ch, f"http://127.0.0.1:{free_port()}/", batch={"format": "ndjson"},
                           batchSize=10)  # fmt: skip
    await put(ch, [Event(b"%d" % i) for i in range(10)])
    with pytest.raises(DeliveryError, match="no server answered"):
        await sink.process()
    assert ch.size == 10
    assert sink.counter.EventWriteFail == 1 and sink.counter.ConnectionFailedCount == 1
    await sink.stop()


async def test_slow_endpoint_times_out_and_rolls_back():
    async with Recorder(lambda n, r, b: "hang" if n == 0 else 200) as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, requestTimeout=200)
        await put(ch, [Event(b"slow")])
        with pytest.raises(DeliveryError, match="timed out"):
            await sink.process()
        assert ch.size == 1
        assert await sink.process() is Status.READY
        assert srv.accepted == [b"slow"] and ch.size == 0
        await sink.stop()


async def test_connection_reset_rolls_back():
    async with Recorder(lambda n, r, b: "reset" if n == 0 else 200) as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url)
        await put(ch, [Event(b"r")])
        with pytest.raises(DeliveryError):
            await sink.process()
        assert ch.size == 1
        assert await sink.process() is Status.READY
        assert srv.accepted == [b"r"]
        await sink.stop()


async def test_redirect_is_an_answer_not_followed():
    async with Recorder(lambda n, r, b: (302, b"") if r.path == "/in" else 200) as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url + "/in")
        await put(ch, [Event(b"x")])
        with pytest.raises(DeliveryError, match="HTTP 302"):
            await sink.process()  # Flume's defaults for a 3XX: roll back, back off
        assert srv.requests == 1 and ch.size == 1
        await sink.stop()


async def test_oversized_answer_counts_as_no_answer(monkeypatch):
    from flumed.sinks import httpclient

    monkeypatch.setattr(httpclient, "MAX_ANSWER", 1000)
    async with Recorder(lambda n, r, b: (200, b"x" * 5000)) as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url)
        await put(ch, [Event(b"x")])
        with pytest.raises(DeliveryError, match="answer larger than 1000 bytes"):
            await sink.process()
        assert ch.size == 1
        await sink.stop()


# -- nothing lost at volume ---------------------------------------------------------------

TOTAL = 100_000


def _agent_doc(url: str, fmt: str, batch: int) -> dict:
    return {
        "agents": {
            "a1": {
                "sources": {
                    "r1": {"type": "seq", "totalEvents": TOTAL, "batchSize": 1000,
                           "channels": ["c1"]}
                },
                "channels": {
                    "c1": {"type": "memory", "capacity": 20_000, "transactionCapacity": 1000}
                },
                "sinks": {
                    "k1": {"type": "http", "channel": "c1", "endpoint": url, "batchSize": batch,
                           "batch": {"format": fmt}, "requestTimeout": 2000}
                },
            }
        }
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["ndjson", "json_array"])
async def test_100k_numbered_events_through_a_failing_server(fmt):
    policy = random_policy(7, 0.05, [503, 500, 429, "reset", 502])
    async with Recorder(lambda n, r, b: policy() or 200) as srv:
        agent = Agent(build_agent(_agent_doc(srv.url, fmt, 1000), "a1", "test"))
        await agent.start()
        sink = agent.sinks["k1"]
        seen: Counter[int] = Counter()

        def numbers() -> int:
            while srv.accepted:
                body = srv.accepted.pop()
                docs = (
                    [json.loads(x) for x in body.splitlines()]
                    if fmt == "ndjson"
                    else json.loads(body)
                )
                seen.update(int(d["body"]) for d in docs)
            return len(seen)

        try:
            await wait_until(lambda: numbers() >= TOTAL, timeout=240, what="every number")
        finally:
            await agent.stop()
        assert set(seen) == set(range(TOTAL))
        dups = sum(c - 1 for c in seen.values())
        # Each failed request resends at most its own batch.
        assert dups <= sink.counter.EventWriteFail * 1000
        assert srv.requests > TOTAL // 1000  # the failures happened


def test_passwordfile_missing_is_a_start_error(tmp_path: Path):
    import asyncio

    from flumed.errors import ComponentStartError

    sink = HttpSink(
        "k1", config(endpoint="http://h/", username="u", passwordFile=str(tmp_path / "none"))
    )
    with pytest.raises(ComponentStartError, match="passwordFile"):
        asyncio.run(sink.start())


@pytest.mark.slow
async def test_one_event_per_request_through_a_failing_server():
    """Flume's mode (a POST per event), takes of 100, 5% of answers 503/500/429 set to
    roll back without backoff (as Flume's `backoff.5XX = false` does): every number
    arrives; a rolled-back take resends at most its 100 events."""
    total = 5_000
    policy = random_policy(13, 0.05, [503, 500, 429])
    async with Recorder(lambda n, r, b: policy() or 200) as srv:
        doc = _agent_doc(srv.url, "none", 100)
        doc["agents"]["a1"]["sources"]["r1"]["totalEvents"] = total
        sink_keys = doc["agents"]["a1"]["sinks"]["k1"]
        sink_keys["backoff"] = {"5XX": "false", "429": "false"}
        agent = Agent(build_agent(doc, "a1", "test"))
        await agent.start()
        sink = agent.sinks["k1"]
        try:
            await wait_until(lambda: len(set(srv.accepted)) >= total, 120, "every number")
        finally:
            await agent.stop()
        seen = Counter(int(b) for b in srv.accepted)
        assert set(seen) == set(range(total))
        assert srv.failed_requests > 0
        assert sum(c - 1 for c in seen.values()) <= srv.failed_requests * 100
        assert sink.counter.EventDrainSuccessCount == len(srv.accepted)
