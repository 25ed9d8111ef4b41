"""The `elasticsearch` sink against the `_bulk` test double (tests/support/http_servers.py,
written from the public `_bulk` documentation; no real Elasticsearch runs here): Flume's
documents and index names, per-item retries within one take, the dead-letter file,
whole-request failures, the host list, and 100,000 numbered events through a server
failing at random."""

from __future__ import annotations

import json
import logging
import random
import time
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
from flumed.sinks.elasticsearch import (
    ElasticSearchSink,
    JavaDateFormat,
    dynamic_document,
    logstash_document,
)
from tests.support.http_servers import BulkServer, random_policy
from tests.util import free_port, wait_until

TS = 1325376000123  # 2012-01-01T00:00:00.123Z


async def make_channel(capacity: int = 10_000) -> MemoryChannel:
    ch = MemoryChannel("c1", MemoryChannelConfig(capacity=capacity, transactionCapacity=capacity))
    await ch.start()
    return ch


async def put(ch: MemoryChannel, events: list[Event]) -> None:
    async with ch.transaction() as tx:
        await tx.put_batch(events)


def config(**keys: Any) -> Any:
    return parse(ElasticSearchSink.Config, flatten(keys), "sink k1")


async def make_sink(ch: MemoryChannel, hosts: str, **keys: Any) -> ElasticSearchSink:
    sink = ElasticSearchSink("k1", config(hostNames=hosts, **keys))
    sink.channel = ch
    sink.retry_backoff = Backoff(0.01, 0.05)
    await sink.start()
    return sink


def dead_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


# -- Flume's documents ---------------------------------------------------------------------


def test_logstash_document_as_flumes_round_trip_test():
    # The event of Flume's TestElasticSearchLogStashEventSerializer.testRoundTrip.
    headers = {
        "timestamp": str(TS),
        "source": "flume_tail_src",
        "host": "test@localhost",
        "src_path": "/tmp/test",
        "headerNameOne": "headerValueOne",
        "headerNameTwo": "headerValueTwo",
        "type": "sometype",
    }
    doc = json.loads(logstash_document(Event(b"test body", headers)))
    assert doc == {
        "@message": "test body",
        "@timestamp": "2012-01-01T00:00:00.123Z",
        "@source": "flume_tail_src",
        "@type": "sometype",
        "@source_host": "test@localhost",
        "@source_path": "/tmp/test",
        "@fields": headers,
    }


def test_logstash_document_json_body_and_at_headers():
    headers = {"timestamp": str(TS), "@timestamp": "x", "host": " ", "meta": '{"k": [1, 2]}'}
    doc = json.loads(logstash_document(Event(b'{"level":"warn","n":1}', headers)))
    assert doc == {
        "@message": {"level": "warn", "n": 1},  # a JSON body is embedded, as Flume does
        # no @timestamp (the @timestamp header is set) and no @source_host (blank host)
        "@fields": {"timestamp": str(TS), "@timestamp": "x", "host": " ", "meta": {"k": [1, 2]}},
    }
    assert json.loads(logstash_document(Event(b"{not json"))) == {
        "@message": "{not json",
        "@fields": {},
    }
    assert json.loads(logstash_document(Event(b"bad \xff byte"))) == {
        "@message": "bad \ufffd byte",
        "@fields": {},
    }


def test_dynamic_document():
    doc = json.loads(dynamic_document(Event(b"hello", {"a": "1", "b": '{"x":true}'})))
    assert doc == {"body": "hello", "a": "1", "b": {"x": True}}


@pytest.mark.parametrize(
    ("pattern", "tz", "want"),
    [
        ("yyyy-MM-dd", "Etc/UTC", "2012-01-01"),
        ("yyyy.MM.dd", "America/New_York", "2011.12.31"),
        ("yy-M-d H:mm:ss.SSS", "Etc/UTC", "12-1-1 0:00:00.123"),
        ("yyyy-MM-dd'T'HH'h' EEE MMM Z", "Europe/Berlin", "2012-01-01T01h Sun Jan +0100"),
        ("EEEE MMMM D hh a ''", "Etc/UTC", "Sunday January 1 12 AM '"),
    ],
)
def test_java_date_format(pattern, tz, want):
    assert JavaDateFormat(pattern, tz).format(TS) == want


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"hostNames": "h", "serializer": "com.acme.Mine"}, "key 'serializer'"),
        ({"hostNames": "h", "indexNameBuilder": "x.Other"}, "key 'indexNameBuilder'"),
        ({"hostNames": "h", "indexNameBuilder": {"dateFormat": "yyyy-QQ"}}, "letter 'Q'"),
        ({"hostNames": "h", "indexNameBuilder": {"timeZone": "Mars/Base"}}, "unknown time zone"),
        ({"hostNames": " , "}, "no host given"),
        ({"hostNames": "h", "deadLetter": {"dir": "/x"}}, "deadLetter.dir"),
    ],
)
def test_bad_config_names_the_key(keys, message):
    with pytest.raises(ConfigError, match=message):
        config(**keys)


def test_flume_defaults_and_hosts():
    c = config(hostNames="es1:9201, es2,https://es3:443", clusterName="prod", client="rest")
    assert c.hosts() == ["http://es1:9201", "http://es2:9200", "https://es3:443"]
    assert (c.indexName, c.indexType, c.batchSize) == ("flume", "logs", 100)
    assert config(hostNames="es1", https=True).hosts() == ["https://es1:9200"]


# -- against the _bulk double ----------------------------------------------------------------


async def test_index_names_types_and_ids():
    async with BulkServer(version="6.8.23") as srv:
        ch = await make_channel()
        sink = await make_sink(
            ch, srv.url, indexName="logs-%{app}", indexType="t_%{app}", idHeader="id",
            indexNameBuilder={"dateFormat": "yyyy.MM.dd", "timeZone": "Etc/UTC"},
        )  # fmt: skip
        day2 = str(TS + 86_400_000)
        await put(ch, [Event(b"one", {"app": "web", "timestamp": str(TS), "id": "d1"}),
                       Event(b"two", {"app": "db", "@timestamp": day2})])  # fmt: skip
        assert await sink.process() is Status.READY
        assert srv.actions[0] == {"index": {"_index": "logs-web-2012.01.01", "_type": "t_web",
                                            "_id": "d1"}}  # fmt: skip
        assert srv.actions[1] == {"index": {"_index": "logs-db-2012.01.02", "_type": "t_db"}}
        assert srv.docs[("logs-web-2012.01.01", "d1")]["@message"] == "one"
        await sink.stop()


@pytest.mark.parametrize("version", ["8.13.0", "7.17.0", "2.11.0"])
async def test_no_type_for_typeless_servers(version):
    async with BulkServer(version=version) as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, indexNameBuilder="SimpleIndexNameBuilder")
        await put(ch, [Event(b"x")])
        await sink.process()
        assert srv.actions == [{"index": {"_index": "flume"}}]
        await sink.stop()


async def test_time_based_index_uses_now_without_timestamp():
    async with BulkServer() as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url)
        day = JavaDateFormat("yyyy-MM-dd", "Etc/UTC")
        before = day.format(int(time.time() * 1000))
        await put(ch, [Event(b"x")])
        await sink.process()
        after = day.format(int(time.time() * 1000))
        assert srv.actions[0]["index"]["_index"] in {f"flume-{before}", f"flume-{after}"}
        await sink.stop()


async def test_per_item_retries_and_dead_letters_within_one_take(tmp_path):
    tried: Counter[str] = Counter()

    def items(meta: dict, doc: dict) -> int:
        n = int(doc["@message"])
        tried[doc["@message"]] += 1
        if n % 10 == 3:
            return 400  # a mapping error: never indexable
        if n % 10 in (5, 6) and tried[doc["@message"]] <= 2:
            return 429 if n % 10 == 5 else 503  # retryable, twice
        return 201

    dead = tmp_path / "dead.jsonl"
    async with BulkServer(item_policy=items) as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, batchSize=100, deadLetter={"path": str(dead)})
        await put(ch, [Event(b"%d" % i, {"n": str(i)}) for i in range(100)])
        assert await sink.process() is Status.READY
        assert ch.size == 0
        assert srv.requests == 3  # the batch, then the retryable items twice
        indexed = sorted(int(d["@message"]) for d in srv.docs.values())
        assert indexed == [i for i in range(100) if i % 10 != 3]
        lines = dead_lines(dead)
        assert sorted(int(x["body"]) for x in lines) == list(range(3, 100, 10))
        first = lines[0]
        assert first["status"] == 400 and first["error"]["type"] == "mapper_parsing_exception"
        assert first["document"] == {"@message": first["body"], "@fields": {"n": first["body"]}}
        assert first["index"].startswith("flume-") and first["headers"] == {"n": first["body"]}
        assert sink.counter.EventDeadLetterCount == 10
        assert sink.counter.EventRetryCount == 40
        assert sink.counter.EventDrainSuccessCount == 100
        await sink.stop()


async def test_items_failing_past_retries_roll_back(tmp_path):
    async with BulkServer(item_policy=lambda m, d: 503 if d["@message"] == "7" else 201) as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, retries=2)
        await put(ch, [Event(b"%d" % i) for i in range(10)])
        with pytest.raises(DeliveryError, match="1 of 10 items still refused after 2 retries"):
            await sink.process()
        assert ch.size == 10  # all back in the channel; 9 were indexed (sent again later)
        assert srv.requests == 3
        await sink.stop()


async def test_request_too_large_is_halved_and_a_huge_document_set_aside(tmp_path):
    dead = tmp_path / "dead.jsonl"
    async with BulkServer(max_content_length=2000) as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, batchSize=40, deadLetter={"path": str(dead)},
                               indexType="")  # fmt: skip
        events = [Event(b"%d" % i) for i in range(40)]
        events[17] = Event(b"x" * 5000)
        await put(ch, events)
        assert await sink.process() is Status.READY
        assert len(srv.docs) == 39
        (line,) = dead_lines(dead)
        assert line["status"] == 413 and line["body"] == "x" * 5000
        await sink.stop()


async def test_unindexable_event_goes_to_dead_letter(tmp_path):
    dead = tmp_path / "dead.jsonl"
    async with BulkServer() as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, deadLetter={"path": str(dead)})
        await put(ch, [Event(b"ok"), Event(b"bad", {"timestamp": "yesterday"})])
        assert await sink.process() is Status.READY
        assert [d["@message"] for d in srv.docs.values()] == ["ok"]
        (line,) = dead_lines(dead)
        assert line["body"] == "bad" and "not a number" in line["error"]["reason"]
        await sink.stop()


@pytest.mark.parametrize("answer", [503, 429, "reset", (500, b"{}")])
async def test_whole_request_failure_rolls_back(answer):
    async with BulkServer(request_policy=lambda n: answer if n == 0 else None) as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url)
        await put(ch, [Event(b"a"), Event(b"b")])
        with pytest.raises(DeliveryError):
            await sink.process()
        assert ch.size == 2
        assert await sink.process() is Status.READY
        assert sorted(d["@message"] for d in srv.docs.values()) == ["a", "b"]
        await sink.stop()


async def test_refused_request_rolls_back_with_the_longest_backoff():
    async with BulkServer(request_policy=lambda n: (401, b"")) as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, username="elastic", password="wrong")
        await put(ch, [Event(b"a")])
        with pytest.raises(DeliveryError, match="HTTP 401") as e:
            await sink.process()
        assert e.value.retriable is False and ch.size == 1
        assert srv.headers[0]["Authorization"] == "Basic ZWxhc3RpYzp3cm9uZw=="
        await sink.stop()


async def test_slow_server_times_out_and_next_host_is_tried():
    async with BulkServer(request_policy=lambda n: "hang") as slow, BulkServer() as good:
        ch = await make_channel()
        dead = f"http://127.0.0.1:{free_port()}"
        sink = await make_sink(ch, f"{dead},{slow.url},{good.url}", requestTimeout=300,
                               indexType="")  # fmt: skip
        await put(ch, [Event(b"a")])
        assert await sink.process() is Status.READY
        assert [d["@message"] for d in good.docs.values()] == ["a"]
        await sink.stop()


async def test_no_host_answers():
    ch = await make_channel()
    sink = await make_sink(ch, f"127.0.0.1:{free_port()}", indexType="")
    await put(ch, [Event(b"a")])
    with pytest.raises(DeliveryError, match="no server answered"):
        await sink.process()
    assert ch.size == 1
    await sink.stop()


async def test_api_key_gzip_https(tmp_path):
    import ssl

    import trustme  # a test dependency

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    srv = BulkServer()
    srv.ssl_context = server_ctx
    async with srv:
        ch = await make_channel()
        sink = await make_sink(ch, f"localhost:{srv.port}", https=True, caFile=str(ca_file),
                               apiKey="a2V5OnNlY3JldA==", compression="gzip")  # fmt: skip
        await put(ch, [Event(b"z")])
        assert await sink.process() is Status.READY
        h = srv.headers[0]
        assert h["Authorization"] == "ApiKey a2V5OnNlY3JldA=="
        assert h["Content-Encoding"] == "gzip"
        assert h["Content-Type"] == "application/x-ndjson"
        assert [d["@message"] for d in srv.docs.values()] == ["z"]
        await sink.stop()


def test_ttl_is_warned(caplog):
    with caplog.at_level(logging.WARNING):
        ElasticSearchSink("k1", config(hostNames="h", ttl="5d"))
    assert "key 'ttl' (5d) is ignored" in caplog.text


# -- nothing lost at volume ---------------------------------------------------------------------

TOTAL = 100_000


@pytest.mark.slow
async def test_100k_numbered_events_through_a_failing_server(tmp_path):
    rnd = random.Random(11)

    def items(meta: dict, doc: dict) -> int:
        n = int(doc["@message"])
        if n % 997 == 0:
            return 400
        r = rnd.random()
        return 429 if r < 0.01 else 503 if r < 0.02 else 201

    requests = random_policy(5, 0.03, [503, 429, "reset", (502, b"bad gateway")])
    dead = tmp_path / "dead.jsonl"
    async with BulkServer(item_policy=items, request_policy=requests) as srv:
        doc = {
            "agents": {
                "a1": {
                    "sources": {"r1": {"type": "seq", "totalEvents": TOTAL, "batchSize": 1000,
                                       "channels": ["c1"]}},
                    "channels": {"c1": {"type": "memory", "capacity": 20_000,
                                        "transactionCapacity": 1000}},
                    "sinks": {"k1": {"type": "elasticsearch", "channel": "c1",
                                     "hostNames": srv.url, "batchSize": 1000,
                                     "deadLetter": {"path": str(dead)}}},
                }
            }
        }  # fmt: skip
        agent = Agent(build_agent(doc, "a1", "test"))
        await agent.start()
        sink = agent.sinks["k1"]
        sink.retry_backoff = Backoff(0.01, 0.05)
        try:
            await wait_until(
                lambda: sink.counter.EventDrainSuccessCount >= TOTAL, timeout=240, what="all"
            )
        finally:
            await agent.stop()
        indexed = Counter(int(d["@message"]) for d in srv.docs.values())
        dead_numbers = Counter(int(x["body"]) for x in dead_lines(dead))
        assert set(indexed) | set(dead_numbers) == set(range(TOTAL))
        assert set(dead_numbers) == set(range(0, TOTAL, 997))
        assert all(c == 1 for c in dead_numbers.values())  # set aside once, then committed
        dups = sum(c - 1 for c in indexed.values())
        assert dups <= sink.counter.EventWriteFail * 1000
        assert srv.item_statuses[429] > 0 and srv.item_statuses[503] > 0


# -- a real agent process, SIGKILLed mid-stream --------------------------------------------------


@pytest.mark.slow
async def test_agent_process_sigkilled_loses_nothing(agent_factory, tmp_path):
    """netcat (acked) -> file channel -> elasticsearch in a real `flumed agent`, killed
    with SIGKILL twice while the double fails some requests: every number indexed or
    in the dead-letter file after restarts; duplicates within a batch per kill/failure."""
    import asyncio

    from tests.util import AckingSender

    total, batch = 30_000, 500
    requests = random_policy(9, 0.05, [503, "reset"])
    dead = tmp_path / "dead.jsonl"
    async with BulkServer(
        item_policy=lambda m, d: 400 if int(d["@message"]) % 1009 == 0 else 201,
        request_policy=requests,
    ) as srv:
        port = free_port()
        text = f"""
[agents.a1.sources.r1]
type = "netcat"
bind = "127.0.0.1"
port = {port}
ack-every-event = true
channels = ["c1"]
[agents.a1.channels.c1]
type = "file"
dataDirs = "{tmp_path / "data"}"
capacity = 1000000
transactionCapacity = 10000
[agents.a1.sinks.k1]
type = "elasticsearch"
channel = "c1"
hostNames = "{srv.url}"
batchSize = {batch}
indexType = ""
"deadLetter.path" = "{dead}"
"""
        agent = agent_factory(text)
        sender = AckingSender(port)
        send = asyncio.create_task(asyncio.to_thread(sender.send_range, 0, total, 180.0))
        for mark in (total // 4, total // 2):
            await wait_until(lambda m=mark: sender.acked >= m, 120, f"{mark} acks")
            await asyncio.to_thread(agent.kill)
            await asyncio.to_thread(agent.start)
        await asyncio.wait_for(send, 180)

        def settled() -> bool:
            got = {int(d["@message"]) for d in srv.docs.values()}
            got |= {int(x["body"]) for x in dead_lines(dead)}
            return got >= set(range(total))

        await wait_until(settled, 120, "every number indexed or set aside")
        assert agent.terminate() == 0
        indexed = Counter(int(d["@message"]) for d in srv.docs.values())
        dead_numbers = Counter(int(x["body"]) for x in dead_lines(dead))
        assert set(indexed) | set(dead_numbers) == set(range(total))
        assert set(dead_numbers) == set(range(0, total, 1009))
        dups = sum(c - 1 for c in indexed.values()) + sum(c - 1 for c in dead_numbers.values())
        # Each kill and each failed request can cause at most one batch to be sent again.
        assert srv.failed_requests > 0
        assert dups <= (2 + srv.failed_requests) * batch
