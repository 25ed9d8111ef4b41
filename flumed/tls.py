"""TLS from PEM files or Java keystores, with Flume's keys, for sources and sinks: one
key set each side.

`ServerTlsKeys` is the key set every TLS-capable source includes (`syslogtcp`,
`multiport_syslogtcp`, `http`, `avro`, `thrift`), Flume's spellings as aliases:

- `ssl` (alias `enableSSL`; false): serve TLS.
- `certificate` (alias `keystore`): Flume's Java keystore (JKS, JCEKS or PKCS12, read by
  flumed.keystores), or a PEM file with the server certificate (and its chain).
- `key` (alias `keystore-key`): PEM file with the private key (may be the certificate file).
- `key-password` (aliases `keystore-password`, `keystorePassword`): the keystore's
  password, or the PEM key's passphrase.
- `keystore-type` (PEM): PEM, JKS, JCEKS or PKCS12; the file's content decides.
- `exclude-protocols` (alias `excludeProtocols`; `SSLv3`) / `include-protocols`:
  space-separated protocol names (`TLSv1`, `TLSv1.1`, `TLSv1.2`, `TLSv1.3`); they set the
  lowest and highest version.
- `exclude-cipher-suites` / `include-cipher-suites`: Java suite names, honoured through
  OpenSSL's names (flumed.tls_ciphers).

`ClientTlsKeys` is the sinks' side: `ssl`, `truststore` (a PEM CA file or a Java
truststore; else the system CAs), `truststore-password`, `truststore-type`,
`trust-all-certs`, `ssl-verify-hostname`, and the protocol and cipher-suite keys.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from ssl import SSLContext  # the key sets below have a field named `ssl`

from flumed import keystores
from flumed.config.keys import key
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
    """A server-side context from PEM files or a Java keystore (call from `start()`: it
    reads them). `ciphers`: Flume's (include-, exclude-cipher-suites), Java names.

    Raises:
        OSError / ssl.SSLError / ValueError (KeystoreError): a file is missing or invalid.
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
    `trust_all`. Raises OSError / ssl.SSLError / ValueError (KeystoreError)."""
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
    """`server_context` for a component's `start()`.

    Raises:
        ComponentStartError: naming `who` and the files that could not be loaded.
    """
    try:
        return server_context(certificate, key, password, include, exclude, ciphers)
    except (OSError, ssl.SSLError, ValueError) as e:
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
    except (OSError, ssl.SSLError, ValueError) as e:
        raise ComponentStartError(f"{who}: cannot load truststore {cafile!r}: {e}") from e


# -- the key sets ------------------------------------------------------------------------

#: `keystore-type` / `truststore-type` values accepted (the content decides, see keystores).
STORE_TYPES = ("PEM", "JKS", "JCEKS", "PKCS12")

#: Flume TLS keys accepted without effect; merge into a config's IGNORED. (None today:
#: keystores and cipher suites are honoured.)
TLS_IGNORED: dict[str, str] = {}
CLIENT_TLS_IGNORED: dict[str, str] = {}


@dataclass(frozen=True, kw_only=True)
class ServerTlsKeys:
    """The TLS keys of a TLS-capable source (a dataclass mixin; see the module doc)."""

    ssl: bool = key(False, aliases=("enableSSL",), doc="Serve TLS.")
    certificate: str | None = key(
        None, aliases=("keystore",), doc="PEM certificate (chain) file, with ssl."
    )
    key_file: str | None = key(
        None, name="key", aliases=("keystore-key",), doc="PEM private key file, with ssl."
    )
    key_password: str | None = key(
        None, name="key-password", aliases=("keystore-password", "keystorePassword")
    )
    keystore_type: str = key(
        "PEM", name="keystore-type", doc="PEM, JKS, JCEKS or PKCS12 (the content decides)."
    )
    exclude_protocols: list[str] = key(
        ["SSLv3"], name="exclude-protocols", aliases=("excludeProtocols",)
    )
    include_protocols: list[str] = key([], name="include-protocols")
    include_cipher_suites: list[str] = key(
        [], name="include-cipher-suites", doc="Java suite names (flumed.tls_ciphers)."
    )
    exclude_cipher_suites: list[str] = key([], name="exclude-cipher-suites")

    def tls_problems(self, cert_key: str = "certificate") -> list[str]:
        """Config check of these keys (pure). `cert_key`: the certificate's key name as
        the source's Flume documentation spells it (`keystore` for thrift)."""
        problems = []
        if self.keystore_type.upper() not in STORE_TYPES:
            problems.append(
                f"key 'keystore-type': {self.keystore_type!r}; expected one of "
                + ", ".join(STORE_TYPES)
            )
        if self.ssl and not self.certificate:
            # Each source's wording as before: "key 'certificate'" / Flume thrift's 'keystore'.
            named = "key 'certificate'" if cert_key == "certificate" else f"'{cert_key}'"
            alias = "keystore" if cert_key == "certificate" else "certificate"
            problems.append(
                f"ssl = true needs {named} (a Java keystore, or a PEM file with the "
                f"certificate chain; alias '{alias}')"
            )
        return (
            problems
            + protocol_problems(self.include_protocols, self.exclude_protocols)
            + cipher_problems(self.include_cipher_suites, self.exclude_cipher_suites)
        )

    def server_ssl(self, who: str) -> SSLContext | None:
        """The server context for `start()`, None without ssl. Raises ComponentStartError."""
        if not self.ssl:
            return None
        assert self.certificate is not None
        return start_server_context(
            who,
            self.certificate,
            self.key_file,
            self.key_password,
            self.include_protocols,
            self.exclude_protocols,
            (self.include_cipher_suites, self.exclude_cipher_suites),
        )


@dataclass(frozen=True, kw_only=True)
class ClientTlsKeys:
    """The TLS keys of a TLS-capable sink (a dataclass mixin; see the module doc)."""

    ssl: bool = key(False, doc="Connect with TLS.")
    trust_all_certs: bool = key(False, name="trust-all-certs", doc="No certificate checks.")
    truststore: str | None = key(
        None, doc="Trusted CAs: a PEM file or a JKS/JCEKS/PKCS12 truststore"
    )
    truststore_type: str = key("PEM", name="truststore-type", doc="Found from the content.")
    truststore_password: str | None = key(None, name="truststore-password")
    include_protocols: list[str] = key([], name="include-protocols", doc="e.g. TLSv1.2 TLSv1.3")
    exclude_protocols: list[str] = key(["SSLv3"], name="exclude-protocols")
    include_cipher_suites: list[str] = key([], name="include-cipher-suites")
    exclude_cipher_suites: list[str] = key([], name="exclude-cipher-suites")
    ssl_verify_hostname: bool = key(
        True, name="ssl-verify-hostname", doc="Check the certificate names `hostname`."
    )

    def tls_problems(self) -> list[str]:
        problems = []
        if self.truststore_type.upper() not in STORE_TYPES:
            problems.append(
                f"key 'truststore-type': {self.truststore_type!r}; expected one of "
                + ", ".join(STORE_TYPES)
            )
        return (
            problems
            + protocol_problems(self.include_protocols, self.exclude_protocols)
            + cipher_problems(self.include_cipher_suites, self.exclude_cipher_suites)
        )

    def client_ssl(self, who: str) -> SSLContext | None:
        """The client context for `start()`, None without ssl. Raises ComponentStartError."""
        if not self.ssl:
            return None
        return start_client_context(
            who,
            self.truststore,
            self.trust_all_certs,
            self.ssl_verify_hostname,
            self.include_protocols,
            self.exclude_protocols,
            self.truststore_password,
            (self.include_cipher_suites, self.exclude_cipher_suites),
        )
