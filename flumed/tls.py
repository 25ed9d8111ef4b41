"""TLS from PEM files or Java keystores, with Flume's protocol keys, for sources and sinks.

The keys, shared by the sources that offer TLS (`syslogtcp`, `multiport_syslogtcp`,
`http`, `avro`, `thrift`):

- `ssl` (false): serve TLS.
- `keystore`: Flume's Java keystore (JKS, JCEKS or PKCS12, read by flumed.keystores; the
  type is found from the content, `keystore-type` is accepted and need not match), or
- `certificate`: PEM file with the server certificate (and its chain), and
- `key`: PEM file with the private key (may be the certificate file itself).
- `key-password` (aliases `keystore-password`, `keystorePassword`): the keystore's
  password, or the PEM key's passphrase.
- `exclude-protocols` (`SSLv3`) / `include-protocols`: space-separated protocol names
  (`TLSv1`, `TLSv1.1`, `TLSv1.2`, `TLSv1.3`); they set the lowest and highest version.
- `exclude-cipher-suites` / `include-cipher-suites`: space-separated Java suite names,
  honoured through OpenSSL's names (flumed.tls_ciphers).

Sinks' truststores (`truststore`) are PEM CA files or Java truststores
(`truststore-password`).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from flumed import keystores
from flumed.errors import ComponentStartError
from flumed.tls_ciphers import apply_ciphers, cipher_problems

_ORDER = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_SSL_ONLY = {"sslv2", "sslv3", "sslv2hello"}
#: `keystore-type` / `truststore-type` values accepted (the content decides, see keystores).
STORE_TYPES = ("PEM", "JKS", "JCEKS", "PKCS12")


def _allowed(include: Sequence[str], exclude: Sequence[str]) -> tuple[list[str], list[str]]:
    """The allowed versions (Java names, in order) and the problems with the lists."""
    known = {n.lower(): n for n in _ORDER}
    problems = [
        f"unknown TLS protocol {p!r} (known: {' '.join(_ORDER)})"
        for p in (*include, *exclude)
        if p.lower() not in known and p.lower() not in _SSL_ONLY
    ]
    inc = {n.lower() for n in include} if include else set(known)
    exc = {n.lower() for n in exclude}
    return [n for n in _ORDER if n.lower() in inc and n.lower() not in exc], problems


def protocol_problems(include: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """Config check of `include-protocols` / `exclude-protocols` (pure)."""
    allowed, problems = _allowed(include, exclude)
    if problems:
        return problems
    if not allowed:
        return ["include-protocols/exclude-protocols leave no TLS version enabled"]
    if len(allowed) != _ORDER.index(allowed[-1]) - _ORDER.index(allowed[0]) + 1:
        return ["include-protocols/exclude-protocols must leave a contiguous range"]
    return []


def check_tls(
    enabled: bool,
    certificate: str | None,
    keystore: str | None,
    include: Sequence[str],
    exclude: Sequence[str],
    ciphers: tuple[Sequence[str], Sequence[str]] = ((), ()),
) -> list[str]:
    """Config check of a TLS server's keys, named as the other TLS sources name them.

    `certificate` (PEM) or `keystore` (a JKS/JCEKS/PKCS12 keystore, or PEM: the content
    decides, see flumed.keystores) names the server's certificate and key."""
    problems = []
    if enabled and not (certificate or keystore):
        problems.append("ssl = true needs key 'keystore' (Java keystore) or 'certificate' (PEM)")
    return problems + protocol_problems(include, exclude) + cipher_problems(*ciphers)


def _limit_versions(ctx: ssl.SSLContext, include: Sequence[str], exclude: Sequence[str]) -> None:
    """Java names a set of protocols; OpenSSL takes a range. Versions below TLS 1.2
    only when named in `include` (Flume's default, excluding SSLv3 only, would lower
    Python's floor of TLS 1.2)."""
    allowed, _ = _allowed(include, exclude)
    if not allowed:
        raise ValueError("include-protocols/exclude-protocols leave no TLS version enabled")
    explicit = {n.lower() for n in include}
    wanted = [n for n in allowed if _ORDER.index(n) >= 2 or n.lower() in explicit] or allowed
    if wanted[0].lower() in explicit or _VERSIONS[wanted[0]] > ctx.minimum_version:
        ctx.minimum_version = _VERSIONS[wanted[0]]
    if wanted[-1] != "TLSv1.3":
        ctx.maximum_version = _VERSIONS[wanted[-1]]


def server_context(
    certfile: str,
    keyfile: str | None,
    password: str | None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    ciphers: tuple[Sequence[str], Sequence[str]] = ((), ()),
) -> ssl.SSLContext:
    """A server-side context from PEM files (call from `start()`: it reads them).

    Raises:
        OSError / ssl.SSLError / ValueError: a file is missing or invalid.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if keystores.is_java_keystore(certfile):
        # JKS/JCEKS/PKCS12: `password` is the store's (and, as keytool makes them, the key's).
        keystores.load_key_material(ctx, keystores.read_keystore(certfile, password))
    else:
        ctx.load_cert_chain(certfile, keyfile, password)
    _limit_versions(ctx, include, exclude)
    apply_ciphers(ctx, *ciphers)
    return ctx


def client_context(
    cafile: str | None,
    trust_all: bool,
    verify_hostname: bool = True,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    truststore_password: str | None = None,
    ciphers: tuple[Sequence[str], Sequence[str]] = ((), ()),
) -> ssl.SSLContext:
    """A client-side context: the CAs of `cafile` (PEM, or a JKS/JCEKS/PKCS12 truststore
    opened with `truststore_password`; else the system's CAs), or no checks at all with
    `trust_all`. Raises OSError / ssl.SSLError / ValueError / KeystoreError."""
    if cafile is not None and keystores.is_java_keystore(cafile):
        cadata = keystores.read_truststore(cafile, truststore_password)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=cadata)
    else:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if trust_all:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif not verify_hostname:
        ctx.check_hostname = False
    _limit_versions(ctx, include, exclude)
    apply_ciphers(ctx, *ciphers)
    return ctx


def start_server_context(
    who: str,
    certificate: str,
    key: str | None,
    password: str | None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    ciphers: tuple[Sequence[str], Sequence[str]] = ((), ()),
) -> ssl.SSLContext:
    """`server_context` for a component's `start()`; `ciphers` are Flume's
    (include-cipher-suites, exclude-cipher-suites), Java names (flumed.tls_ciphers).

    Raises:
        ComponentStartError: naming `who` and the files that could not be loaded.
    """
    try:
        return server_context(certificate, key, password, include, exclude, ciphers)
    except (OSError, ssl.SSLError, ValueError, keystores.KeystoreError) as e:
        raise ComponentStartError(
            f"{who}: cannot load TLS certificate {certificate!r} (key {key or certificate!r}): {e}"
        ) from e


def start_client_context(
    who: str,
    cafile: str | None,
    trust_all: bool,
    verify_hostname: bool = True,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    truststore_password: str | None = None,
    ciphers: tuple[Sequence[str], Sequence[str]] = ((), ()),
) -> ssl.SSLContext:
    """`client_context` for a component's `start()`.

    Raises:
        ComponentStartError: naming `who` and the truststore that could not be loaded.
    """
    try:
        return client_context(
            cafile, trust_all, verify_hostname, include, exclude, truststore_password, ciphers
        )
    except (OSError, ssl.SSLError, ValueError, keystores.KeystoreError) as e:
        raise ComponentStartError(f"{who}: cannot load truststore {cafile!r}: {e}") from e
