"""File-channel encryption at rest: Flume's `encryption.*` keys, AES-GCM blobs, key rings.

Flume's keys (FileChannel "encryption"), read by `EncryptionConfig.from_prefix`:

- `encryption.activeKey`: alias of the key new batches are encrypted with.
- `encryption.cipherProvider`: `AESCTRNOPADDING` (Flume's only one). flumed encrypts
  with AES-GCM instead, an authenticated mode: a changed or truncated blob, or the
  wrong key, is detected rather than decrypted into garbage. The key is the same AES key.
- `encryption.keyProvider`: `JCEKSFILE`; `encryption.keyProvider.keyStoreFile` (a JCEKS
  store of AES secret keys, as `keytool -genseckey -storetype JCEKS` makes),
  `...keyStorePasswordFile` (file holding the store password),
  `...keys` (aliases that may be used: the active one and older ones, for rotation),
  `...keys.<alias>.passwordFile` (that key's password; default the store's).

A stored blob is `FLE1` + alias + NUL + 12-byte nonce + AES-GCM(ciphertext + tag); the
header is authenticated with it (and an optional `context`; the file channel passes none,
so a renamed channel still reads its data). Old batches decrypt with whichever listed key made them.
`KeyRing.decrypt` raises `MissingKeyError` for a key not in the ring (never quarantined
as damage: the channel refuses to go on) and `ValueError` for a damaged blob.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"FLE1"
NONCE = 12
_AES_SIZES = (16, 24, 32)


class EncryptionConfigError(ValueError):
    """The `encryption.*` keys are inconsistent, or the key store cannot be used."""


class MissingKeyError(LookupError):
    """A stored batch was encrypted with a key the ring does not hold."""


def is_encrypted(blob: bytes) -> bool:
    return blob[:4] == MAGIC


def blob_key(blob: bytes) -> str:
    """The alias of the key an encrypted blob was made with. Raises ValueError."""
    end = blob.find(b"\0", 4, 4 + 256)
    if not is_encrypted(blob) or end < 0:
        raise ValueError("not an encrypted batch")
    return blob[4:end].decode("utf-8", "replace")


@dataclass(frozen=True)
class KeyRing:
    """AES keys by alias; `active` encrypts, any of them decrypts."""

    active: str
    keys: Mapping[str, bytes]
    context: bytes = b""
    _aead: dict[str, AESGCM] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for alias, k in self.keys.items():
            if len(k) not in _AES_SIZES:
                raise EncryptionConfigError(
                    f"key {alias!r} is {len(k) * 8} bits; AES needs 128, 192 or 256"
                )
            self._aead[alias] = AESGCM(k)
        if self.active not in self.keys:
            raise EncryptionConfigError(f"activeKey {self.active!r} is not in the key ring")

    def encrypt(self, data: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        head = MAGIC + self.active.encode() + b"\0"
        return head + nonce + self._aead[self.active].encrypt(nonce, data, head + self.context)

    def decrypt(self, blob: bytes) -> bytes:
        """Raises MissingKeyError (key not in the ring) or ValueError (damaged/wrong key)."""
        alias = blob_key(blob)
        aead = self._aead.get(alias)
        if aead is None:
            raise MissingKeyError(
                f"a stored batch is encrypted with key {alias!r}, which is not in "
                f"encryption.keyProvider.keys ({', '.join(self.keys)})"
            )
        start = 4 + len(alias.encode()) + 1
        head, nonce, ct = blob[:start], blob[start : start + NONCE], blob[start + NONCE :]
        try:
            return aead.decrypt(nonce, ct, head + self.context)
        except InvalidTag:
            raise ValueError(
                f"batch encrypted with key {alias!r} does not authenticate: the key "
                f"{alias!r} in the key store is not the one it was written with, or the "
                "data is damaged"
            ) from None


@dataclass(frozen=True)
class EncryptionConfig:
    """Flume's `encryption.*` keys, checked (pure: no file is read)."""

    active_key: str
    key_store: str
    key_store_password_file: str | None
    keys: tuple[str, ...]
    key_password_files: Mapping[str, str]

    @staticmethod
    def from_prefix(enc: Mapping[str, Any]) -> tuple[EncryptionConfig | None, list[str]]:
        """From the `encryption.*` keys (prefix removed); None when there are none.

        Returns the config and the problems (each naming its key)."""
        if not enc:
            return None, []
        flat = {k: str(v) for k, v in enc.items()}
        problems: list[str] = []
        kp = "keyProvider"
        known = {
            "activeKey",
            "cipherProvider",
            kp,
            f"{kp}.keyStoreFile",
            f"{kp}.keyStorePasswordFile",
            f"{kp}.keys",
        }
        pwfiles: dict[str, str] = {}
        for k, v in flat.items():
            if k.startswith(f"{kp}.keys.") and k.endswith(".passwordFile"):
                pwfiles[k[len(f"{kp}.keys.") : -len(".passwordFile")]] = v
            elif k not in known:
                problems.append(f"unknown key 'encryption.{k}'")
        cipher = flat.get("cipherProvider", "AESCTRNOPADDING")
        if cipher.upper() != "AESCTRNOPADDING":
            problems.append(
                f"key 'encryption.cipherProvider': {cipher!r}; Flume's only provider is "
                "AESCTRNOPADDING (flumed encrypts with AES-GCM)"
            )
        provider = flat.get(kp, "")
        if provider.upper() != "JCEKSFILE":
            problems.append(
                f"key 'encryption.keyProvider': {provider or 'missing'}; expected JCEKSFILE"
            )
        active = flat.get("activeKey", "")
        if not active:
            problems.append("missing required key 'encryption.activeKey'")
        store = flat.get(f"{kp}.keyStoreFile", "")
        if not store:
            problems.append(f"missing required key 'encryption.{kp}.keyStoreFile'")
        keys = tuple(flat.get(f"{kp}.keys", active).split())
        if active and active not in keys:
            problems.append(
                f"key 'encryption.activeKey': {active!r} is not in encryption.{kp}.keys"
            )
        for alias in pwfiles:
            if alias not in keys:
                problems.append(
                    f"key 'encryption.{kp}.keys.{alias}.passwordFile': {alias!r} is not in "
                    f"encryption.{kp}.keys"
                )
        if problems:
            return None, problems
        return (
            EncryptionConfig(active, store, flat.get(f"{kp}.keyStorePasswordFile"), keys, pwfiles),
            [],
        )

    def load(self, context: bytes = b"") -> KeyRing:
        """Read the key store (call from `start()`). Raises EncryptionConfigError."""
        from flumed.keystores import KeystoreError, read_secret_keys_with, secret_key_aliases

        store_pw = _read_password(self.key_store_password_file, "keyStorePasswordFile")
        key_pw = {
            a: _read_password(f, f"keys.{a}.passwordFile")
            for a, f in self.key_password_files.items()
        }
        try:
            found = read_secret_keys_with(self.key_store, store_pw, self.keys, key_pw)
        except KeystoreError as e:
            raise EncryptionConfigError(f"encryption.keyProvider.keyStoreFile: {e}") from None
        missing = [a for a in self.keys if a not in found]
        if missing:
            held = secret_key_aliases(self.key_store, store_pw)
            raise EncryptionConfigError(
                f"key store {self.key_store!r} holds no key "
                + ", ".join(repr(a) for a in missing)
                + f" (it holds: {', '.join(held) or 'none'})"
            )
        return KeyRing(self.active_key, {a: found[a] for a in self.keys}, context)


def _read_password(path: str | None, key: str) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as e:
        raise EncryptionConfigError(
            f"encryption.keyProvider.{key}: cannot read {path!r}: {e.strerror or e}"
        ) from None
