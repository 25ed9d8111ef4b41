"""Java keystores made by `keytool` (JKS, JCEKS, PKCS12) give the TLS contexts PEM files
give: a real handshake each way; wrong passwords are named; the key never sits on disk
readable by others (issue 16, point 2)."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from flumed import keystores, tls
from flumed.errors import ComponentStartError

pytestmark = pytest.mark.skipif(
    shutil.which("keytool") is None, reason="keytool (Java) is not installed"
)

PW = "changeit"


def keytool(*args: str) -> None:
    subprocess.run(["keytool", *args], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """Keystores of every type, and truststores holding their certificates."""
    d = tmp_path_factory.mktemp("stores")
    out: dict[str, Path] = {}
    for kind, alg in (("JKS", "RSA"), ("JCEKS", "RSA"), ("PKCS12", "EC")):
        ks = d / f"server.{kind.lower()}"
        keytool(
            *("-genkeypair", "-alias", "srv", "-keyalg", alg, "-dname", "CN=localhost"),
            *("-ext", "SAN=dns:localhost,ip:127.0.0.1", "-validity", "2"),
            *("-storetype", kind, "-keystore", str(ks), "-storepass", PW, "-keypass", PW),
        )
        out[f"keystore-{kind}"] = ks
        der = d / f"{kind}.der"
        keytool("-exportcert", "-alias", "srv", "-keystore", str(ks), "-storepass", PW,
                "-file", str(der))  # fmt: skip
        for tkind in ("JKS", "PKCS12"):
            ts = d / f"trust-{kind}.{tkind.lower()}"
            keytool(
                *("-importcert", "-noprompt", "-alias", "ca", "-file", str(der)),
                *("-storetype", tkind, "-keystore", str(ts), "-storepass", "trustpw"),
            )
            out[f"truststore-{kind}-{tkind}"] = ts
    return out


async def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> bytes:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(await r.readexactly(5))
        await w.drain()
        w.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        r, w = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        w.write(b"hello")
        data = await r.readexactly(5)
        w.close()
        return data
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("kind", ["JKS", "JCEKS", "PKCS12"])
@pytest.mark.parametrize("tkind", ["JKS", "PKCS12"])
async def test_handshake_with_keytool_keystore_and_truststore(stores, kind, tkind):
    server_ctx = tls.start_server_context("source r1", str(stores[f"keystore-{kind}"]), None, PW)
    client_ctx = tls.start_client_context(
        "sink k1", str(stores[f"truststore-{kind}-{tkind}"]), False,
        truststore_password="trustpw",
    )  # fmt: skip
    assert await handshake(server_ctx, client_ctx) == b"hello"


async def test_a_truststore_without_that_certificate_refuses_the_server(stores):
    server_ctx = tls.server_context(str(stores["keystore-JKS"]), None, PW)
    other = tls.client_context(str(stores["truststore-PKCS12-JKS"]), False,
                               truststore_password="trustpw")  # fmt: skip
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(server_ctx, other)


def test_wrong_passwords_are_named(stores):
    with pytest.raises(keystores.KeystoreError, match="wrong keystore password"):
        keystores.read_keystore(stores["keystore-JKS"], "nope")
    with pytest.raises(keystores.KeystoreError, match=r"PKCS12 .wrong password"):
        keystores.read_keystore(stores["keystore-PKCS12"], "nope")
    with pytest.raises(ComponentStartError, match=r"source r1: cannot load TLS certificate .*jks"):
        tls.start_server_context("source r1", str(stores["keystore-JKS"]), None, "nope")


def test_a_truststore_is_not_a_keystore(stores):
    with pytest.raises(keystores.KeystoreError, match="no private key entry"):
        keystores.read_keystore(stores["truststore-JKS-JKS"], "trustpw")


def test_pem_files_still_work(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(key))
    cert.cert_chain_pems[0].write_to_path(str(chain))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    s = tls.server_context(str(chain), str(key), None)
    c = tls.client_context(str(ca_file), False)
    assert asyncio.run(handshake(s, c)) == b"hello"


def test_key_files_are_private_and_removed_at_once(stores):
    seen: list[tuple[str, int, int]] = []

    class Watching(ssl.SSLContext):
        def load_cert_chain(self, certfile, keyfile=None, password=None):  # type: ignore[override]
            for f in (certfile, keyfile):
                seen.append((f, stat.S_IMODE(os.stat(f).st_mode), 0))
            seen.append(
                (
                    os.path.dirname(keyfile),
                    stat.S_IMODE(os.stat(os.path.dirname(keyfile)).st_mode),
                    1,
                )
            )
            assert b"ENCRYPTED PRIVATE KEY" in Path(keyfile).read_bytes()
            return super().load_cert_chain(certfile, keyfile, password)

    before = set(Path(tempfile.gettempdir()).glob("flumed-tls-*"))
    ctx = Watching(ssl.PROTOCOL_TLS_SERVER)
    keystores.load_key_material(ctx, keystores.read_keystore(stores["keystore-JKS"], PW))
    files = [(f, mode) for f, mode, is_dir in seen if not is_dir]
    dirs = [(f, mode) for f, mode, is_dir in seen if is_dir]
    assert files and all(mode == 0o600 for _, mode in files)
    assert dirs and all(mode == 0o700 for _, mode in dirs)
    assert not any(os.path.exists(f) for f, _ in files + dirs)
    assert set(Path(tempfile.gettempdir()).glob("flumed-tls-*")) == before
