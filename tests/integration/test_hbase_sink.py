"""The `hbase` / `hbase2` / `asynchbase` sinks against the HBase REST gateway test double
(tests/support/http_servers.py, written from the HBase reference guide's REST section;
no real HBase runs here): Flume's row keys and cells for the Simple and Regex
serializers, increments (coalesced or not), JSON and XML CellSets, retries within the
take, refused rows found by halving and set aside, and 100,000 numbered events through a
gateway failing at random."""

from __future__ import annotations

import json
import logging
import re
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
from flumed.sinks.hbase import AsyncHBaseSink, HBase2Sink, HBaseSink
from tests.support.http_servers import HBaseRestServer, random_policy
from tests.util import free_port, wait_until


async def make_channel(capacity: int = 10_000) -> MemoryChannel:
    ch = MemoryChannel("c1", MemoryChannelConfig(capacity=capacity, transactionCapacity=capacity))
    await ch.start()
    return ch


async def put(ch: MemoryChannel, events: list[Event]) -> None:
    async with ch.transaction() as tx:
        await tx.put_batch(events)


def config(cls: type = HBaseSink, **keys: Any) -> Any:
    base = {"table": "t1", "columnFamily": "cf"}
    return parse(cls.Config, flatten({**base, **keys}), "sink k1")


async def make_sink(ch: MemoryChannel, url: str, cls: type = HBaseSink, **keys: Any) -> Any:
    sink = cls("k1", config(cls, **{"rest": {"url": url}, **keys}))
    sink.channel = ch
    sink.retry_backoff = Backoff(0.01, 0.05)
    await sink.start()
    return sink


def dead_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"rest": {"url": "rest1:8080"}}, "key 'rest.url'"),
        ({"rest": {"url": "http://r"}, "serializer": {"": "com.acme.Mine"}}, "key 'serializer'"),
        ({"rest": {"url": "http://r"}, "serializer": {"suffix": "hash"}}, "serializer.suffix"),
        ({"rest": {"url": "http://r"}, "serializer": {"regex": "x"}},
         "unknown key 'serializer.regex'"),
        ({"rest": {"url": "http://r"},
          "serializer": {"": "org.apache.flume.sink.hbase.RegexHbaseEventSerializer",
                         "colNames": "a,b", "rowKeyIndex": "1"}}, "must be ROW_KEY"),
        ({"rest": {"url": "http://r"},
          "serializer": {"": "RegexHbaseEventSerializer", "colNames": "ROW_KEY",
                         "rowKeyIndex": "1"}}, "must be less than"),
        ({"rest": {"url": "http://r"},
          "serializer": {"": "RegexHbaseEventSerializer", "regex": "(unclosed"}},
         "key 'serializer.regex'"),
        ({"rest": {"url": "http://r"},
          "serializer": {"": "RegexHbaseEventSerializer", "charset": "klingon"}},
         "unknown charset"),
    ],
)  # fmt: skip
def test_bad_config_names_the_key(keys, message):
    with pytest.raises(ConfigError, match=message):
        config(**keys)


def test_table_and_family_are_required():
    with pytest.raises(ConfigError) as e:
        parse(HBaseSink.Config, {"rest.url": "http://r"}, "sink k1")
    assert "missing required key 'table'" in str(e.value)
    assert "missing required key 'columnFamily'" in str(e.value)


def test_zookeeper_keys_warn_naming_rest_url(caplog):
    with caplog.at_level(logging.WARNING):
        c = config(zookeeperQuorum="zk1:2181", znodeParent="/hbase", timeout="1000",
                   enableWal="false", rest={"url": "http://r:8080"})  # fmt: skip
    assert c.requestTimeout == 1000
    assert "key 'zookeeperQuorum' is not used" in caplog.text and "'rest.url'" in caplog.text
    assert "key 'znodeParent' is not used" in caplog.text


# -- Flume's rows and cells -------------------------------------------------------------------


@pytest.mark.parametrize("cls", [HBaseSink, HBase2Sink, AsyncHBaseSink])
async def test_simple_serializer_rows_and_increments(cls):
    async with HBaseRestServer() as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, cls)
        await put(ch, [Event(b"body%d" % i) for i in range(3)])
        assert await sink.process() is Status.READY
        rows = srv.cells["t1"]
        assert len(rows) == 3
        for row, cells in rows.items():
            assert re.fullmatch(rb"default" + UUID.encode(), row), row
            assert list(cells) == [b"cf:pCol"]
        assert sorted(c[b"cf:pCol"] for c in rows.values()) == [b"body0", b"body1", b"body2"]
        # Flume: one increment of incRow/cf:iCol per event, one request each.
        assert srv.increments == Counter({(b"incRow", b"cf:iCol"): 3})
        assert srv.increment_requests == 3
        await sink.stop()


async def test_coalesced_increments_are_one_request_per_row():
    async with HBaseRestServer() as srv:
        ch = await make_channel()
        keys = {"payloadColumn": "", "incrementRow": "hits"}
        sink = await make_sink(ch, srv.url, coalesceIncrements=True, batchSize=50,
                               serializer=keys)  # fmt: skip
        await put(ch, [Event(b"x")] * 50)
        await sink.process()
        assert srv.increments == Counter({(b"hits", b"cf:iCol"): 50})
        assert srv.increment_requests == 1 and srv.put_rows == 0
        await sink.stop()


@pytest.mark.parametrize(
    ("suffix", "pattern"),
    [
        ("timestamp", rb"p-\d{13}"),
        ("random", rb"p--?\d{1,19}"),
        ("nano", rb"p-\d+"),
        ("uuid", rb"p-" + UUID.encode()),
    ],
)
async def test_simple_row_key_suffixes(suffix, pattern):
    async with HBaseRestServer() as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, serializer={"rowPrefix": "p-", "suffix": suffix,
                                                        "incrementColumn": ""})  # fmt: skip
        await put(ch, [Event(b"v")])
        await sink.process()
        (row,) = srv.cells["t1"]
        assert re.fullmatch(pattern, row), row
        assert srv.increment_requests == 0
        await sink.stop()


REGEX = "org.apache.flume.sink.hbase.RegexHbaseEventSerializer"


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_regex_serializer_row_key_columns_and_headers(fmt, tmp_path):
    dead = tmp_path / "dead.jsonl"
    async with HBaseRestServer() as srv:
        ch = await make_channel()
        sink = await make_sink(
            ch, srv.url, rest={"url": srv.url, "format": fmt}, deadLetter={"path": str(dead)},
            serializer={"": REGEX, "regex": r"(\w+) (WARN|INFO) (.*)",
                        "colNames": "ROW_KEY,level,msg", "rowKeyIndex": "0",
                        "depositHeaders": "true", "regexIgnoreCase": "true"},
        )  # fmt: skip
        await put(ch, [Event(b"r1 warn disk\nfull", {"host": "h1"}), Event(b"no match here")])
        assert await sink.process() is Status.READY
        assert srv.cells["t1"] == {
            b"r1": {b"cf:level": b"warn", b"cf:msg": b"disk\nfull", b"cf:host": b"h1"}
        }
        assert srv.content_types[-1] == ("text/xml" if fmt == "xml" else "application/json")
        (line,) = dead_lines(dead)
        assert line["body"] == "no match here" and "does not match" in line["error"]
        assert sink.counter.EventDeadLetterCount == 1
        await sink.stop()


async def test_regex_generated_row_key_is_flumes():
    async with HBaseRestServer() as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, serializer={"": "RegexHBase2EventSerializer"})
        await put(ch, [Event(b"a"), Event(b"b")])
        await sink.process()
        rows = sorted(srv.cells["t1"])
        for row in rows:
            assert re.fullmatch(rb"\d{13}-[A-Za-z0-9]{10}-\d+", row), row
        nonces = sorted(int(r.rsplit(b"-", 1)[1]) for r in rows)
        assert nonces[1] == nonces[0] + 1
        assert sorted(c[b"cf:payload"] for c in srv.cells["t1"].values()) == [b"a", b"b"]
        await sink.stop()


# -- failures -------------------------------------------------------------------------------


async def test_missing_table_or_family_backs_off_before_taking():
    async with HBaseRestServer(families={"t1": {"other"}}) as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, table="nope")
        await put(ch, [Event(b"x")])
        with pytest.raises(DeliveryError, match="table 'nope' does not exist"):
            await sink.process()
        await sink.stop()
        sink = await make_sink(ch, srv.url)
        with pytest.raises(DeliveryError, match="no column family 'cf'"):
            await sink.process()
        assert ch.size == 1
        await sink.stop()


async def test_5xx_and_resets_retried_within_the_take_with_the_same_rows():
    answers = {0: 503, 1: "reset", 2: 429}
    async with HBaseRestServer(policy=lambda n, rows: answers.get(n)) as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, batchSize=10, serializer={"incrementColumn": ""})
        await put(ch, [Event(b"%d" % i) for i in range(10)])
        assert await sink.process() is Status.READY
        assert len(srv.cells["t1"]) == 10 and srv.put_rows == 10  # no duplicate rows
        assert srv.requests == 4
        # aiohttp itself resends an idempotent PUT once when a kept-alive connection was
        # reset, so the reset may not reach the sink's own retry count.
        assert sink.counter.EventRetryCount in (2, 3)
        await sink.stop()


async def test_retries_exhausted_roll_back():
    async with HBaseRestServer(policy=lambda n, rows: 503) as srv:
        ch = await make_channel()
        sink = await make_sink(ch, srv.url, retries=2)
        await put(ch, [Event(b"x")])
        with pytest.raises(DeliveryError, match="put failed after 3 tries: HTTP 503"):
            await sink.process()
        assert ch.size == 1
        await sink.stop()


async def test_refused_rows_are_found_by_halving_and_set_aside(tmp_path):
    dead = tmp_path / "dead.jsonl"
    async with HBaseRestServer(bad_row=lambda r: r in (b"13", b"27")) as srv:
        ch = await make_channel()
        sink = await make_sink(
            ch, srv.url, batchSize=40, deadLetter={"path": str(dead)},
            serializer={"": REGEX, "regex": "((\\d+))", "colNames": "ROW_KEY,n",
                        "rowKeyIndex": "0"},
        )  # fmt: skip
        await put(ch, [Event(b"%d" % i) for i in range(40)])
        assert await sink.process() is Status.READY
        assert sorted(int(r) for r in srv.cells["t1"]) == [
            i for i in range(40) if i not in (13, 27)
        ]
        lines = dead_lines(dead)
        assert sorted(x["row"] for x in lines) == ["13", "27"]
        assert lines[0]["status"] == 400 and lines[0]["columns"] == ["cf:n"]
        assert srv.requests < 40  # halving, not one request per row
        await sink.stop()


async def test_dead_and_slow_gateways():
    async with HBaseRestServer(policy=lambda n, rows: "hang") as slow, HBaseRestServer() as good:
        ch = await make_channel()
        sink = await make_sink(ch, f"http://127.0.0.1:{free_port()},{slow.url}", timeout=300,
                               retries=0, serializer={"incrementColumn": ""})  # fmt: skip
        await put(ch, [Event(b"x")])
        with pytest.raises(DeliveryError):
            await sink.process()  # schema from the slow one, the put hangs there
        assert ch.size == 1
        await sink.stop()
        sink = await make_sink(ch, f"http://127.0.0.1:{free_port()},{good.url}",
                               serializer={"incrementColumn": ""})  # fmt: skip
        assert await sink.process() is Status.READY
        assert len(good.cells["t1"]) == 1
        await sink.stop()


# -- nothing lost at volume -------------------------------------------------------------------

TOTAL = 100_000


@pytest.mark.slow
async def test_100k_numbered_events_through_a_failing_gateway(tmp_path):
    dead = tmp_path / "dead.jsonl"
    policy = random_policy(3, 0.05, [503, 500, 429, "reset"])
    async with HBaseRestServer(
        policy=lambda n, rows: policy(), bad_row=lambda r: int(r) % 997 == 0
    ) as srv:
        doc = {
            "agents": {
                "a1": {
                    "sources": {"r1": {"type": "seq", "totalEvents": TOTAL, "batchSize": 1000,
                                       "channels": ["c1"]}},
                    "channels": {"c1": {"type": "memory", "capacity": 20_000,
                                        "transactionCapacity": 1000}},
                    "sinks": {"k1": {"type": "hbase2", "channel": "c1", "table": "t1",
                                     "columnFamily": "cf", "batchSize": 1000,
                                     "rest": {"url": srv.url}, "retries": 2,
                                     "deadLetter": {"path": str(dead)},
                                     "serializer": {"": REGEX, "regex": "((\\d+))",
                                                    "colNames": "ROW_KEY,n",
                                                    "rowKeyIndex": "0"}}},
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
        stored = {int(r): c[b"cf:n"] for r, c in srv.cells["t1"].items()}
        assert all(int(v) == k for k, v in stored.items())
        dead_rows = Counter(int(x["row"]) for x in dead_lines(dead))
        assert set(stored) | set(dead_rows) == set(range(TOTAL))
        assert set(dead_rows) == set(range(0, TOTAL, 997))
        assert all(c == 1 for c in dead_rows.values())
        # Rows written more than once: only takes that rolled back resend their rows.
        assert srv.put_rows - len(stored) <= sink.counter.EventWriteFail * 1000
