"""The byte-stream layers (zlib, TLS over memory BIOs, both orders) and ipFilterRules."""

from __future__ import annotations

import ssl
import zlib
from pathlib import Path

import pytest

from flumed.rpc.ipfilter import IpFilter, parse_rules
from flumed.rpc.stream import (
    INFLATE_STEP,
    LayerStack,
    StreamError,
    ZlibLayer,
    build_layers,
)
from flumed.tls import client_context, server_context
from tests.support.pki import Pki


class TestZlib:
    def test_stream_is_zlib_with_sync_flushes(self) -> None:
        # What Netty's JZlibEncoder(level) sends: one RFC 1950 stream, sync-flushed.
        layer = ZlibLayer(6)
        a, b = layer.encode(b"first pack"), layer.encode(b"second pack")
        assert a[0] == 0x78  # zlib header
        assert a.endswith(b"\x00\x00\xff\xff") and b.endswith(b"\x00\x00\xff\xff")
        d = zlib.decompressobj()
        assert d.decompress(a) == b"first pack"  # each write decodes on its own
        assert d.decompress(b) == b"second pack"

    def test_decodes_a_peer_stream_in_any_split(self) -> None:
        c = zlib.compressobj(9, zlib.DEFLATED, 15)
        wire = c.compress(b"x" * 100_000) + c.flush(zlib.Z_SYNC_FLUSH)
        wire += c.compress(b"tail") + c.flush(zlib.Z_SYNC_FLUSH)
        layer = ZlibLayer()
        out = b"".join(p for i in range(0, len(wire), 7) for p in layer.decode(wire[i : i + 7]))
        assert out == b"x" * 100_000 + b"tail"

    def test_inflates_in_bounded_steps(self) -> None:
        c = zlib.compressobj(9, zlib.DEFLATED, 15)
        bomb = c.compress(b"\0" * (20 * INFLATE_STEP)) + c.flush(zlib.Z_SYNC_FLUSH)
        pieces = list(ZlibLayer().decode(bomb))
        assert max(map(len, pieces)) <= INFLATE_STEP
        assert sum(map(len, pieces)) == 20 * INFLATE_STEP

    def test_garbage_and_raw_deflate_refused(self) -> None:
        with pytest.raises(StreamError, match="bad deflate"):
            list(ZlibLayer().decode(b"\x00\x00\x00\x01garbage"))
        c = zlib.compressobj(6, zlib.DEFLATED, -15)  # raw deflate: no zlib header
        with pytest.raises(StreamError):
            list(ZlibLayer().decode(c.compress(b"abc") + c.flush(zlib.Z_SYNC_FLUSH)))


@pytest.fixture
def pki(pki: Pki) -> dict[str, str]:
    """The shared test PKI (tests/conftest.py), by the names these tests use."""
    return {"ca": pki.ca, "chain": pki.chain, "key": pki.key, "other_ca": pki.other_ca}


def _pair(
    server_ctx: ssl.SSLContext | None,
    client_ctx: ssl.SSLContext | None,
    deflate: bool,
    order: str = "outside-ssl",
) -> tuple[LayerStack, LayerStack, list[bytes], list[bytes]]:
    """Two stacks wired back to back through lists standing in for the wire."""
    to_server: list[bytes] = []
    to_client: list[bytes] = []
    level = 6 if deflate else None
    srv = LayerStack(
        build_layers(deflate_level=level, ssl_context=server_ctx, server_side=True, order=order),
        to_client.append,
    )
    cli = LayerStack(
        build_layers(
            deflate_level=level,
            ssl_context=client_ctx,
            server_side=False,
            server_hostname="localhost",
            order=order,
        ),
        to_server.append,
    )
    return srv, cli, to_server, to_client


def _pump(srv: LayerStack, cli: LayerStack, to_server: list[bytes], to_client: list[bytes]):
    got_server, got_client = [], []
    for _ in range(20):
        if not to_server and not to_client:
            break
        while to_server:
            got_server += srv.from_wire(to_server.pop(0))
        while to_client:
            got_client += cli.from_wire(to_client.pop(0))
    return b"".join(got_server), b"".join(got_client)


class TestTls:
    @pytest.mark.parametrize("deflate", [False, True])
    @pytest.mark.parametrize("order", ["outside-ssl", "inside-ssl"])
    def test_roundtrip(self, pki: dict[str, str], deflate: bool, order: str) -> None:
        sctx = server_context(pki["chain"], pki["key"], None)
        cctx = client_context(pki["ca"], trust_all=False)
        srv, cli, ts, tc = _pair(sctx, cctx, deflate, order)
        cli.start()
        srv.start()
        # Written before the handshake: held, then sent once it completes.
        assert cli.to_wire(b"request " * 1000) == b""
        got_s, _ = _pump(srv, cli, ts, tc)
        assert cli.ready and srv.ready
        assert got_s == b"request " * 1000
        tc.append(srv.to_wire(b"answer"))
        got_s, got_c = _pump(srv, cli, ts, tc)
        assert got_c == b"answer"

    def test_layer_order_on_the_wire(self, pki: dict[str, str]) -> None:
        sctx = server_context(pki["chain"], pki["key"], None)
        cctx = client_context(pki["ca"], trust_all=False)
        # Flume 1.10+: zlib outside TLS, so the very first bytes are a zlib header.
        _, cli, ts, _ = _pair(sctx, cctx, True, "outside-ssl")
        cli.start()
        assert ts[0][0] == 0x78
        # Flume 1.9: TLS outside, so the first bytes are a TLS handshake record.
        _, cli, ts, _ = _pair(sctx, cctx, True, "inside-ssl")
        cli.start()
        assert ts[0][0] == 0x16

    def test_untrusted_server_refused(self, pki: dict[str, str]) -> None:
        sctx = server_context(pki["chain"], pki["key"], None)
        cctx = client_context(pki["other_ca"], trust_all=False)
        srv, cli, ts, tc = _pair(sctx, cctx, False)
        cli.start()
        with pytest.raises(StreamError, match="CERTIFICATE_VERIFY_FAILED"):
            _pump(srv, cli, ts, tc)

    def test_trust_all(self, pki: dict[str, str]) -> None:
        sctx = server_context(pki["chain"], pki["key"], None)
        cctx = client_context(pki["other_ca"], trust_all=True)
        srv, cli, ts, tc = _pair(sctx, cctx, False)
        cli.start()
        _pump(srv, cli, ts, tc)
        assert cli.ready and srv.ready

    def test_plaintext_peer_refused(self, pki: dict[str, str]) -> None:
        srv, _, _, _ = _pair(server_context(pki["chain"], pki["key"], None), None, False)
        with pytest.raises(StreamError, match="TLS"):
            list(srv.from_wire(b"\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00"))

    def test_protocol_range(self, pki: dict[str, str]) -> None:
        ctx = server_context(pki["chain"], pki["key"], None, include=["TLSv1.3"])
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
        ctx = client_context(None, False, exclude=["TLSv1.3", "SSLv3"])
        assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_2
        # Flume's default (exclude SSLv3 only) keeps Python's floor of TLS 1.2.
        ctx = server_context(pki["chain"], pki["key"], None, exclude=["SSLv3"])
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        with pytest.raises(ValueError, match="no TLS version"):
            client_context(None, False, include=["TLSv1.2"], exclude=["TLSv1.2"])

    def test_missing_files(self, tmp_path: Path) -> None:
        with pytest.raises(OSError):
            server_context(str(tmp_path / "nope.pem"), None, None)


class TestIpFilter:
    def test_syntax_errors(self) -> None:
        for bad in ("allow:ip", "permit:ip:1.2.3.4", "allow:host:x", "allow:ip:", " , "):
            with pytest.raises(ValueError):
                parse_rules(bad)

    def test_first_match_wins_and_default_allows(self) -> None:
        f = IpFilter(parse_rules("allow:ip:10.0.0.1, deny:ip:10.0.*,allow:ip:192.168.?.1"))
        assert f.decide_now("10.0.0.1", None) is True
        assert f.decide_now("10.0.3.4", None) is False
        assert f.decide_now("192.168.5.1", None) is True
        assert f.decide_now("192.168.55.1", None) is True  # no rule matched: allowed
        assert f.decide_now("10.1.0.1", None) is True

    def test_glob_is_not_a_regex(self) -> None:
        f = IpFilter(parse_rules("deny:ip:127.0.0.1"))
        assert f.decide_now("127.0.0.1", None) is False
        assert f.decide_now("127a0b0c1", None) is True

    def test_localhost(self) -> None:
        f = IpFilter(parse_rules("allow:name:localhost,deny:ip:*"))
        assert f.decide_now("127.0.0.1", "127.0.0.1") is True
        assert f.decide_now("::1", "::1") is True
        assert f.decide_now("192.0.2.7", "192.0.2.7") is True  # our own address
        assert f.decide_now("192.0.2.8", "192.0.2.7") is False

    async def test_name_rules_resolve(self) -> None:
        f = IpFilter(parse_rules("deny:ip:10.*,allow:name:no-such-name.invalid,deny:ip:*"))
        assert f.decide_now("10.1.1.1", None) is False
        assert f.decide_now("127.0.0.1", None) is None  # needs the peer's name
        assert await f.decide("127.0.0.1", None) is False
