"""The http source with a real aiohttp client: JSON and blob handlers, a class-path
handler, status codes, push-back (503), HTTPS."""

from __future__ import annotations

import json

import aiohttp
from aiohttp import web

from flumed.event import Event
from flumed.sources.http import HTTPBadRequest, HTTPSource
from tests.support.harness import SourceHarness, on_uvloop
from tests.support.pki import Pki

JSON = "application/json"


def batch(n: int, start: int = 0) -> str:
    return json.dumps(
        [{"headers": {"seq": str(i)}, "body": f"event {i}"} for i in range(start, start + n)]
    )


async def post(url: str, data: bytes | str, ctype: str = JSON, **kw) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, data=data, headers={"Content-Type": ctype}, **kw) as r,
    ):
        return r.status, await r.text()


@on_uvloop
async def test_json_batch_is_committed_before_200() -> None:
    async with SourceHarness(HTTPSource, {"bind": "127.0.0.1", "port": 0}) as h:
        url = f"http://127.0.0.1:{h.source.port}/any/path"
        body = [
            {"headers": {"host": "web1", "n": 3, "ok": True, "gone": None}, "body": "hello"},
            {"body": "no headers"},
            {"headers": {"a": "b"}},
        ]
        status, text = await post(url, json.dumps(body))
        assert (status, text) == (200, "")
        # 200 means committed: the events are in the channel now, without waiting.
        events = await h.take()
        c = h.source.counter
    assert [(e.headers, e.body) for e in events] == [
        ({"host": "web1", "n": "3", "ok": "true"}, b"hello"),
        ({}, b"no headers"),
        ({"a": "b"}, b""),
    ]
    assert (c.AppendBatchAcceptedCount, c.EventAcceptedCount) == (1, 3)


@on_uvloop
async def test_bad_requests_get_400_with_the_reason_and_cost_nothing_else() -> None:
    async with SourceHarness(HTTPSource, {"bind": "127.0.0.1", "port": 0}) as h:
        url = f"http://127.0.0.1:{h.source.port}/"
        cases = [
            ('[{"body": "x"', JSON, "invalid JSON"),
            ('{"body": "x"}', JSON, "expected a JSON array"),
            ('[{"body": {"nested": 1}}]', JSON, "event 0: body must be a string"),
            ('[{"headers": {"k": [1]}, "body": "x"}]', JSON, "header 'k' must be a string"),
            ("[]", "application/json; charset=ISO-8859-1", "unsupported charset"),
            (b"\xff\xfe[", JSON, "not valid UTF-8"),
            ("", JSON, "invalid JSON"),
        ]
        for data, ctype, reason in cases:
            status, text = await post(url, data, ctype)
            assert status == 400, (data, text)
            assert reason in text, (data, text)
        # Still serving everyone else.
        assert await post(url, batch(2)) == (200, "")
        events = await h.take()
        c = h.source.counter
    assert [e.body for e in events] == [b"event 0", b"event 1"]
    assert c.EventReadFail == len(cases)


@on_uvloop
async def test_charsets_as_java_encodes_them() -> None:
    async with SourceHarness(HTTPSource, {"bind": "127.0.0.1", "port": 0}) as h:
        url = f"http://127.0.0.1:{h.source.port}/"
        doc = json.dumps([{"body": "é"}], ensure_ascii=False)
        assert (await post(url, doc.encode("utf-16-be"), JSON + "; charset=UTF-16"))[0] == 200
        assert (await post(url, doc.encode("utf-16"), JSON + "; charset=utf-16"))[0] == 200
        assert (await post(url, doc.encode("utf-32-be"), JSON + "; charset=UTF-32"))[0] == 200
        bodies = [e.body for e in await h.take()]
    # Java's String.getBytes("UTF-16") writes a big-endian BOM; "UTF-32" none.
    assert bodies == [b"\xfe\xff\x00\xe9", b"\xfe\xff\x00\xe9", b"\x00\x00\x00\xe9"]


@on_uvloop
async def test_full_channel_answers_503_then_the_retry_succeeds() -> None:
    conf = {"bind": "127.0.0.1", "port": 0}
    async with SourceHarness(HTTPSource, conf, capacity=5, transaction_capacity=5,
                             keep_alive=0.05) as h:  # fmt: skip
        url = f"http://127.0.0.1:{h.source.port}/"
        assert await post(url, batch(5)) == (200, "")
        status, text = await post(url, batch(3, start=5))
        assert status == 503 and "Channel might be full" in text
        assert h.channel.size == 5
        first = await h.take()
        assert await post(url, batch(3, start=5)) == (200, "")
        rest = await h.take()
        c = h.source.counter
    seqs = [e.headers["seq"] for e in first + rest]
    assert seqs == [str(i) for i in range(8)]  # nothing lost, nothing twice
    assert c.ChannelWriteFail == 1 and c.EventAcceptedCount == 8


@on_uvloop
async def test_body_past_max_request_size_gets_413() -> None:
    conf = {"bind": "127.0.0.1", "port": 0, "maxRequestSize": 1000}
    async with SourceHarness(HTTPSource, conf) as h:
        url = f"http://127.0.0.1:{h.source.port}/"
        status, text = await post(url, batch(100))
        assert status == 413, text
        assert await post(url, batch(1)) == (200, "")
        assert len(await h.take()) == 1


@on_uvloop
async def test_trace_and_options_are_refused() -> None:
    async with SourceHarness(HTTPSource, {"bind": "127.0.0.1", "port": 0}) as h:
        url = f"http://127.0.0.1:{h.source.port}/"
        async with aiohttp.ClientSession() as s:
            for method in ("TRACE", "OPTIONS"):
                async with s.request(method, url) as r:
                    assert r.status == 403


@on_uvloop
async def test_blob_handler() -> None:
    conf = {
        "bind": "127.0.0.1",
        "port": 0,
        "handler": "org.apache.flume.sink.solr.morphline.BlobHandler",
        "handler.maxBlobLength": "1000",
        "handler.mandatoryParameters": "name",
    }
    async with SourceHarness(HTTPSource, conf) as h:
        url = f"http://127.0.0.1:{h.source.port}/upload"
        blob = bytes(range(256)) * 3
        assert await post(f"{url}?name=a.bin&x=1&x=2", blob, "application/octet-stream") == (
            200, "",
        )  # fmt: skip
        status, text = await post(url, b"x", "text/plain")
        assert status == 400 and "name" in text
        status, _ = await post(f"{url}?name=big", b"y" * 1001, "text/plain")
        assert status == 413
        events = await h.take()
    assert len(events) == 1
    assert events[0].body == blob
    assert events[0].headers == {
        "name": "a.bin", "x": "1", "Content-Type": "application/octet-stream",
    }  # fmt: skip


class UpperHandler:
    """A class-path handler for the test: one event per line, upper-cased."""

    def __init__(self, config: dict[str, str]) -> None:
        self.tag = config.get("tag", "")

    async def parse(self, request: web.Request) -> list[Event]:
        text = await request.text()
        if not text:
            raise HTTPBadRequest("nothing to upper-case")
        return [Event(line.upper().encode(), {"tag": self.tag}) for line in text.splitlines()]


@on_uvloop
async def test_class_path_handler() -> None:
    conf = {
        "bind": "127.0.0.1",
        "port": 0,
        "handler": "tests.integration.test_http_source:UpperHandler",
        "handler.tag": "t1",
    }
    async with SourceHarness(HTTPSource, conf) as h:
        url = f"http://127.0.0.1:{h.source.port}/"
        assert await post(url, "a\nb", "text/plain") == (200, "")
        status, text = await post(url, "", "text/plain")
        assert status == 400 and "nothing to upper-case" in text
        events = await h.take()
    assert [(e.body, e.headers) for e in events] == [(b"A", {"tag": "t1"}), (b"B", {"tag": "t1"})]


@on_uvloop
async def test_https(pki: Pki) -> None:
    conf = {
        "bind": "127.0.0.1",
        "port": 0,
        "enableSSL": "true",
        "certificate": pki.chain,
        "key": pki.key,
    }
    client = pki.client_context()
    async with SourceHarness(HTTPSource, conf) as h:
        port = h.source.port
        assert await post(f"https://127.0.0.1:{port}/", batch(2), ssl=client) == (200, "")
        # Plain HTTP to the HTTPS port gets no answer; nothing is committed.
        try:
            status, _ = await post(f"http://127.0.0.1:{port}/", batch(1))
        except aiohttp.ClientError:
            status = 0
        assert status != 200
        events = await h.take()
    assert [e.body for e in events] == [b"event 0", b"event 1"]
