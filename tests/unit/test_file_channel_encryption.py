"""The file channel encrypted at rest with Flume's `encryption.*` keys (issue 16 point 3):
no body or header in clear in the database or its WAL, keys rotate, a missing or wrong
key refuses to start. Keys are made by keytool (a JCEKS store, as Flume's guide says)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from flumed.channels.file import FileChannel, FileChannelConfig
from flumed.config.keys import parse
from flumed.errors import ChannelError
from flumed.event import Event

pytestmark = pytest.mark.skipif(
    shutil.which("keytool") is None, reason="keytool (Java) is not installed"
)

MARK = b"SECRET-BODY-"


def genseckey(store: Path, alias: str, storepass: str = "store-pass") -> None:
    subprocess.run(
        [
            *("keytool", "-genseckey", "-alias", alias, "-keyalg", "AES", "-keysize", "128"),
            *("-storetype", "JCEKS", "-keystore", str(store)),
            *("-storepass", storepass, "-keypass", storepass),
        ],
        check=True,
        capture_output=True,
    )


def enc_keys(keys: Path, active: str, listed: str) -> dict[str, str]:
    pw = keys.parent / "store.password"
    pw.write_text("store-pass\n")
    return {
        "encryption.activeKey": active,
        "encryption.cipherProvider": "AESCTRNOPADDING",
        "encryption.keyProvider": "JCEKSFILE",
        "encryption.keyProvider.keyStoreFile": str(keys),
        "encryption.keyProvider.keyStorePasswordFile": str(pw),
        "encryption.keyProvider.keys": listed,
    }


def channel(d: Path, enc: dict[str, str]) -> FileChannel:
    flat = {"dataDirs": str(d), "minimumRequiredSpace": "0", **enc}
    return FileChannel("c1", parse(FileChannelConfig, flat, "a1: channel c1"))


def events(lo: int, hi: int) -> list[Event]:
    return [Event(MARK + b"%06d" % i, {"secret-header": f"HDR-{i:06d}"}) for i in range(lo, hi)]


async def put(ch: FileChannel, lo: int, hi: int) -> None:
    for start in range(lo, hi, 100):
        async with ch.transaction() as tx:
            await tx.put_batch(events(start, min(start + 100, hi)))


async def take_all(ch: FileChannel) -> list[bytes]:
    out: list[bytes] = []
    while True:
        async with ch.transaction() as tx:
            got = await tx.take_batch(500)
        if not got:
            return out
        out += [e.body for e in got]


def on_disk(d: Path) -> bytes:
    return b"".join(p.read_bytes() for p in d.rglob("*") if p.is_file())


async def test_plain_channel_stores_bodies_in_clear(tmp_path):
    """The control: the search below finds bodies when they are there."""
    ch = channel(tmp_path / "data", {})
    await ch.start()
    await put(ch, 0, 300)
    assert MARK in on_disk(tmp_path / "data")
    await ch.stop()


async def test_encrypted_at_rest_rotation_and_refusals(tmp_path):
    keys = tmp_path / "keys.jceks"
    genseckey(keys, "key-0")
    data = tmp_path / "data"
    ch = channel(data, enc_keys(keys, "key-0", "key-0"))
    await ch.start()
    await put(ch, 0, 500)
    # While running: the WAL holds the commits.
    disk = on_disk(data)
    assert any(p.name.endswith("-wal") for p in data.rglob("*"))
    assert MARK not in disk and b"HDR-" not in disk and b"secret-header" not in disk
    await ch.stop()
    disk = on_disk(data)
    assert MARK not in disk and b"HDR-" not in disk

    # Rotate: key-1 active, key-0 still listed to read the old batches.
    genseckey(keys, "key-1")
    ch = channel(data, enc_keys(keys, "key-1", "key-0 key-1"))
    await ch.start()
    await put(ch, 500, 800)
    assert MARK not in on_disk(data)
    taken = await take_all(ch)
    assert taken == [MARK + b"%06d" % i for i in range(800)]
    await put(ch, 800, 900)  # written with key-1 only
    await ch.stop()

    # key-1 left out of the ring: refused at start, naming the key.
    ch = channel(data, enc_keys(keys, "key-0", "key-0"))
    with pytest.raises(ChannelError, match="encrypted with key 'key-1', which is not in"):
        await ch.start()
    # Encryption keys removed over encrypted data: refused, never read as plain.
    ch = channel(data, {})
    with pytest.raises(ChannelError, match=r"holds encrypted batches .* no encryption"):
        await ch.start()
    # The right alias from another key store: the wrong key, refused.
    other = tmp_path / "other.jceks"
    genseckey(other, "key-1")
    ch = channel(data, enc_keys(other, "key-1", "key-1"))
    with pytest.raises(ChannelError, match="not the one it was written with"):
        await ch.start()
    # A key store that is not there.
    ch = channel(data, enc_keys(tmp_path / "absent.jceks", "key-1", "key-1"))
    with pytest.raises(ChannelError, match=r"Channel c1: encryption: .*absent\.jceks"):
        await ch.start()
    # And the right ring still reads everything.
    ch = channel(data, enc_keys(keys, "key-1", "key-0 key-1"))
    await ch.start()
    assert await take_all(ch) == [MARK + b"%06d" % i for i in range(800, 900)]
    await ch.stop()
