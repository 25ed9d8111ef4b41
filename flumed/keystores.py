"""Java keystores (JKS, JCEKS, PKCS12) read into what Python's ssl module takes.

Flume users hold their TLS keys in Java keystores; flumed reads them as they are:

- `read_keystore(path, password, key_password)`: the first private key entry and its
  certificate chain, as PEM (`KeyMaterial`).
- `read_truststore(path, password)`: every certificate of a store, as one PEM string
  for `SSLContext.load_verify_locations(cadata=...)`.
- `load_key_material(ctx, material)`: `ssl.SSLContext.load_cert_chain` only reads files,
  so the chain and the key are written to a private directory (0700, files 0600) and
  removed before this returns. The key written there is itself encrypted with a random
  one-time passphrase, so not even that short-lived file holds a clear private key.
- `read_secret_keys(path, password)`: JCEKS secret-key entries (Hadoop credential
  stores, the file channel's key store).

The store type is found from the file's magic number (JKS `FEEDFEED`, JCEKS `CECECECE`,
else PKCS12), as Java's keystore.type.compat does; `keystore-type` need not match.
Reading uses pyjks (JKS/JCEKS) and cryptography (PKCS12, PEM output).
Raises KeystoreError naming the file and what went wrong.
"""

from __future__ import annotations

import os
import secrets
import shutil
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

_JKS_MAGIC = b"\xfe\xed\xfe\xed"
_JCEKS_MAGIC = b"\xce\xce\xce\xce"


class KeystoreError(ValueError):
    """A keystore cannot be read: missing, wrong password, no usable entry."""


@dataclass(frozen=True)
class KeyMaterial:
    """A certificate chain and its private key, PEM; the key encrypted with `password`."""

    chain_pem: bytes
    key_pem: bytes
    password: bytes


def store_type(path: str | os.PathLike[str]) -> str | None:
    """ "JKS", "JCEKS", "PKCS12" for a Java keystore, None for a PEM (text) file.

    Raises OSError when the file cannot be read (as ssl's own loaders do)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == _JKS_MAGIC:
        return "JKS"
    if head == _JCEKS_MAGIC:
        return "JCEKS"
    if head[:1] == b"\x30":  # DER SEQUENCE: a PKCS12 file
        return "PKCS12"
    return None


def is_java_keystore(path: str | os.PathLike[str]) -> bool:
    """True for a JKS/JCEKS/PKCS12 file; False for PEM text. Raises OSError."""
    return store_type(path) is not None


def _kind(path: str) -> str | None:
    try:
        return store_type(path)
    except OSError as e:
        raise KeystoreError(f"{path!r}: cannot read: {e.strerror or e}") from None


def _pw(password: str | None) -> str:
    return password if password is not None else ""


def _load_jks(path: str, password: str | None) -> Any:
    import jks  # pyjks

    try:
        return jks.KeyStore.load(path, _pw(password), try_decrypt_keys=False)
    except jks.util.KeystoreSignatureException:
        raise KeystoreError(f"{path!r}: wrong keystore password") from None
    except (jks.util.KeystoreException, ValueError, EOFError) as e:
        raise KeystoreError(f"{path!r}: not a readable JKS/JCEKS keystore: {e}") from None


def _cert_pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def _encrypted_key_pem(key: Any, password: bytes) -> bytes:
    """A private key (any of cryptography's types) as encrypted PKCS8 PEM."""
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    return pem


def read_keystore(
    path: str | os.PathLike[str], password: str | None, key_password: str | None = None
) -> KeyMaterial:
    """The private key entry of a keystore (the first by alias) and its chain.

    `key_password` defaults to `password` (keytool's default). Raises KeystoreError.
    """
    p = os.fspath(path)
    kind = _kind(p)
    once = secrets.token_hex(24).encode()
    if kind == "PKCS12":
        try:
            data = Path(p).read_bytes()
            key, cert, extra = pkcs12.load_key_and_certificates(
                data, _pw(password).encode() or None
            )
        except (ValueError, OSError) as e:
            raise KeystoreError(f"{p!r}: cannot read PKCS12 (wrong password?): {e}") from None
        if key is None or cert is None:
            raise KeystoreError(f"{p!r}: no private key entry in the PKCS12 keystore")
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [cert, *(extra or [])])
        return KeyMaterial(chain, _encrypted_key_pem(key, once), once)
    if kind is None:
        raise KeystoreError(f"{p!r}: not a Java keystore (JKS, JCEKS or PKCS12)")
    ks = _load_jks(p, password)
    if not ks.private_keys:
        raise KeystoreError(f"{p!r}: no private key entry in the {kind} keystore")
    alias = sorted(ks.private_keys)[0]
    entry = ks.private_keys[alias]
    try:
        entry.decrypt(key_password if key_password is not None else _pw(password))
    except Exception as e:  # noqa: BLE001 - pyjks raises its own DecryptionFailureException and others
        raise KeystoreError(
            f"{p!r}: cannot decrypt key {alias!r} (wrong key password?): {e}"
        ) from None
    key = serialization.load_der_private_key(entry.pkey_pkcs8, None)
    chain = b"".join(_cert_pem(der) for _, der in entry.cert_chain)
    return KeyMaterial(chain, _encrypted_key_pem(key, once), once)


def read_truststore(path: str | os.PathLike[str], password: str | None) -> str:
    """Every certificate of a JKS/JCEKS/PKCS12 store, as PEM text. Raises KeystoreError."""
    p = os.fspath(path)
    kind = _kind(p)
    pems: list[bytes] = []
    if kind == "PKCS12":
        try:
            bundle = pkcs12.load_pkcs12(Path(p).read_bytes(), _pw(password).encode() or None)
        except (ValueError, OSError) as e:
            raise KeystoreError(f"{p!r}: cannot read PKCS12 (wrong password?): {e}") from None
        certs = [c.certificate for c in bundle.additional_certs]
        if bundle.cert is not None:
            certs.insert(0, bundle.cert.certificate)
        pems = [c.public_bytes(serialization.Encoding.PEM) for c in certs]
    elif kind is None:
        raise KeystoreError(f"{p!r}: not a Java keystore (JKS, JCEKS or PKCS12)")
    else:
        ks = _load_jks(p, password)
        pems = [_cert_pem(e.cert) for e in ks.certs.values()]
        for entry in ks.private_keys.values():
            pems.extend(_cert_pem(der) for _, der in entry.cert_chain[:1])
    if not pems:
        raise KeystoreError(f"{p!r}: no certificate in the {kind} truststore")
    return b"".join(pems).decode("ascii")


def read_secret_keys(path: str | os.PathLike[str], password: str | None) -> dict[str, bytes]:
    """The secret-key entries of a JCEKS store: alias -> raw key bytes (keys protected
    by the store password, as Hadoop credential stores are). Raises KeystoreError."""
    return read_secret_keys_with(path, password, None, {})


def secret_key_aliases(path: str | os.PathLike[str], password: str | None) -> list[str]:
    """The aliases of a JCEKS store's secret keys. Raises KeystoreError."""
    return sorted(_load_jks(os.fspath(path), password).secret_keys)


def read_secret_keys_with(
    path: str | os.PathLike[str],
    password: str | None,
    aliases: Sequence[str] | None,
    key_passwords: Mapping[str, str | None],
) -> dict[str, bytes]:
    """Secret keys of a JCEKS store: `aliases` (all when None), each decrypted with its
    entry of `key_passwords`, else the store password (Flume's JCEKSFileKeyProvider).
    Aliases compare case-insensitively, as Java's. Raises KeystoreError."""
    p = os.fspath(path)
    kind = _kind(p)
    if kind != "JCEKS":
        raise KeystoreError(f"{p!r}: expected a JCEKS keystore, found {kind or 'a text file'}")
    ks = _load_jks(p, password)
    wanted = {a.lower(): a for a in aliases} if aliases is not None else None
    out: dict[str, bytes] = {}
    for alias, entry in ks.secret_keys.items():
        name = alias if wanted is None else wanted.get(alias.lower())
        if name is None:
            continue
        pw = key_passwords.get(name)
        try:
            entry.decrypt(_pw(pw if pw is not None else password))
        except Exception as e:  # noqa: BLE001 - pyjks: DecryptionFailureException, unsupported algorithms
            raise KeystoreError(
                f"{p!r}: cannot decrypt secret key {alias!r} (wrong key password?): {e}"
            ) from None
        out[name] = bytes(entry.key)
    return out


def load_key_material(ctx: ssl.SSLContext, material: KeyMaterial) -> None:
    """`ctx.load_cert_chain` from memory, through files that live only for the call.

    The directory is created 0700 and the files 0600 (owner only); both are removed
    before this returns, whether loading worked or not. Raises ssl.SSLError.
    """
    d = tempfile.mkdtemp(prefix="flumed-tls-")
    try:
        cert = os.path.join(d, "chain.pem")
        key = os.path.join(d, "key.pem")
        for name, data in ((cert, material.chain_pem), (key, material.key_pem)):
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(cert, key, material.password)
    finally:
        shutil.rmtree(d, ignore_errors=True)
