"""File-channel encryption keys (issue 16, point 3): Flume's `encryption.*` keys checked,
AES keys read from a JCEKS store made by keytool, AES-GCM blobs, rotation."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from flumed.channels.file_crypto import (
    EncryptionConfig,
    EncryptionConfigError,
    KeyRing,
    MissingKeyError,
    blob_key,
    is_encrypted,
)

needs_keytool = pytest.mark.skipif(
    shutil.which("keytool") is None, reason="keytool (Java) is not installed"
)


def genseckey(store: Path, alias: str, storepass: str, keypass: str, bits: int = 128) -> None:
    subprocess.run(
        [
            *("keytool", "-genseckey", "-alias", alias, "-keyalg", "AES"),
            *("-keysize", str(bits), "-storetype", "JCEKS", "-keystore", str(store)),
            *("-storepass", storepass, "-keypass", keypass),
        ],
        check=True,
        capture_output=True,
    )


def flume_keys(d: Path, active: str, keys: str, **extra: str) -> dict[str, str]:
    (d / "store.password").write_text("store-pass\n")
    return {
        "activeKey": active,
        "cipherProvider": "AESCTRNOPADDING",
        "keyProvider": "JCEKSFILE",
        "keyProvider.keyStoreFile": str(d / "keys.jceks"),
        "keyProvider.keyStorePasswordFile": str(d / "store.password"),
        "keyProvider.keys": keys,
        **extra,
    }


@needs_keytool
def test_rotation_reads_old_batches_with_the_old_key(tmp_path):
    store = tmp_path / "keys.jceks"
    genseckey(store, "key-0", "store-pass", "store-pass")
    (tmp_path / "key-1.password").write_text("key-1-pass\n")
    genseckey(store, "key-1", "store-pass", "key-1-pass", bits=256)
    c0, problems = EncryptionConfig.from_prefix(flume_keys(tmp_path, "key-0", "key-0"))
    assert problems == [] and c0 is not None
    old = c0.load(b"c1").encrypt(b"secret body 0")
    assert is_encrypted(old) and blob_key(old) == "key-0" and b"secret" not in old
    c1, problems = EncryptionConfig.from_prefix(
        flume_keys(
            tmp_path,
            "key-1",
            "key-0 key-1",
            **{"keyProvider.keys.key-1.passwordFile": str(tmp_path / "key-1.password")},
        )
    )
    assert problems == [] and c1 is not None
    ring = c1.load(b"c1")
    new = ring.encrypt(b"secret body 1")
    assert blob_key(new) == "key-1"
    assert ring.decrypt(old) == b"secret body 0"
    assert ring.decrypt(new) == b"secret body 1"
    # Without key-0 in the ring, the old batch is refused, naming the key.
    only_new = KeyRing("key-1", {"key-1": ring.keys["key-1"]}, b"c1")
    with pytest.raises(MissingKeyError, match="key 'key-0', which is not in"):
        only_new.decrypt(old)
    # Another channel's blob does not authenticate here.
    with pytest.raises(ValueError, match="does not authenticate"):
        KeyRing("key-0", {"key-0": ring.keys["key-0"]}, b"c2").decrypt(old)


@needs_keytool
def test_wrong_passwords_and_missing_keys_are_named(tmp_path):
    store = tmp_path / "keys.jceks"
    genseckey(store, "key-0", "store-pass", "store-pass")
    conf, _ = EncryptionConfig.from_prefix(flume_keys(tmp_path, "key-9", "key-9"))
    assert conf is not None
    with pytest.raises(EncryptionConfigError, match=r"holds no key 'key-9' \(it holds: key-0\)"):
        conf.load()
    (tmp_path / "store.password").write_text("nope")
    conf = EncryptionConfig("key-0", str(store), str(tmp_path / "store.password"), ("key-0",), {})
    with pytest.raises(EncryptionConfigError, match="wrong keystore password"):
        conf.load()
    conf = EncryptionConfig("key-0", str(store), str(tmp_path / "absent"), ("key-0",), {})
    with pytest.raises(EncryptionConfigError, match="keyStorePasswordFile: cannot read"):
        conf.load()


def test_wrong_key_same_alias_does_not_decrypt():
    a = KeyRing("k", {"k": b"a" * 16})
    b = KeyRing("k", {"k": b"b" * 16})
    with pytest.raises(ValueError, match="is not the one it was written with"):
        b.decrypt(a.encrypt(b"x"))
    blob = bytearray(a.encrypt(b"payload"))
    blob[-1] ^= 1
    with pytest.raises(ValueError, match="damaged"):
        a.decrypt(bytes(blob))


def test_config_problems_name_the_keys(tmp_path):
    conf, problems = EncryptionConfig.from_prefix(
        {
            "activeKey": "key-1",
            "cipherProvider": "AESCBC",
            "keyProvider": "KMS",
            "keyProvider.keys": "key-0",
            "keyProvider.keys.key-7.passwordFile": "/x",
            "keyProvider.bogus": "1",
        }
    )
    assert conf is None
    text = "\n".join(problems)
    assert "unknown key 'encryption.keyProvider.bogus'" in text
    assert "key 'encryption.cipherProvider': 'AESCBC'" in text
    assert "key 'encryption.keyProvider': KMS; expected JCEKSFILE" in text
    assert "missing required key 'encryption.keyProvider.keyStoreFile'" in text
    assert "key 'encryption.activeKey': 'key-1' is not in encryption.keyProvider.keys" in text
    assert "keys.key-7.passwordFile': 'key-7' is not in" in text
    assert EncryptionConfig.from_prefix({}) == (None, [])
