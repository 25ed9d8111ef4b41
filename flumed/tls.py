"""Server-side TLS for sources, from PEM files, with Flume's protocol keys.

Flume reads a Java keystore (`keystore`, `keystore-password`, `keystore-type`); flumed
reads a PEM certificate chain and a PEM private key instead. The keys, shared by the
sources that offer TLS (`syslogtcp`, `multiport_syslogtcp`, `http`):

- `ssl` (false): serve TLS.
- `certificate`: PEM file with the server certificate (and its chain).
- `key`: PEM file with the private key (may be the certificate file itself).
- `key-password`: the key's passphrase, if it is encrypted.
- `exclude-protocols` (`SSLv3`) / `include-protocols`: space-separated protocol names
  (`TLSv1`, `TLSv1.1`, `TLSv1.2`, `TLSv1.3`); they set the lowest and highest version.

A Flume `keystore` is refused with a message saying how to convert it.
"""

from __future__ import annotations

import ssl

_VERSIONS: dict[str, ssl.TLSVersion] = {
    "tlsv1": ssl.TLSVersion.TLSv1,
    "tlsv1.1": ssl.TLSVersion.TLSv1_1,
    "tlsv1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1.3": ssl.TLSVersion.TLSv1_3,
}
_ORDER = ["tlsv1", "tlsv1.1", "tlsv1.2", "tlsv1.3"]
_SSL_ONLY = {"sslv2", "sslv3", "sslv2hello"}


def _allowed(include: list[str], exclude: list[str]) -> tuple[list[str], list[str]]:
    """(allowed versions in order, problems)."""
    problems = []
    for name in (*include, *exclude):
        low = name.lower()
        if low not in _VERSIONS and low not in _SSL_ONLY:
            problems.append(f"unknown TLS protocol {name!r} (known: TLSv1 TLSv1.1 TLSv1.2 TLSv1.3)")
    inc = {n.lower() for n in include} if include else set(_ORDER)
    exc = {n.lower() for n in exclude}
    allowed = [v for v in _ORDER if v in inc and v not in exc]
    return allowed, problems


def check_tls(
    enabled: bool,
    certificate: str | None,
    keystore: str | None,
    include: list[str],
    exclude: list[str],
) -> list[str]:
    """Validate TLS keys without touching files. Returns the problems found."""
    problems: list[str] = []
    if keystore:
        problems.append(
            "key 'keystore': Java keystores are not read by flumed; export the certificate "
            "and key as PEM (e.g. `keytool -importkeystore -deststoretype PKCS12` then "
            "`openssl pkcs12 -nodes`) and set 'certificate' and 'key'"
        )
    if not enabled:
        return problems
    if not certificate:
        problems.append("ssl = true needs key 'certificate' (a PEM file)")
    allowed, bad = _allowed(include, exclude)
    problems += bad
    if not bad:
        if not allowed:
            problems.append("include-protocols/exclude-protocols leave no TLS version enabled")
        elif len(allowed) != _ORDER.index(allowed[-1]) - _ORDER.index(allowed[0]) + 1:
            problems.append("include-protocols/exclude-protocols must leave a contiguous range")
    return problems


def server_context(
    certificate: str,
    key: str | None,
    password: str | None,
    include: list[str],
    exclude: list[str],
) -> ssl.SSLContext:
    """Build the server context (reads the files; call from `start()`).

    Raises:
        OSError / ssl.SSLError: a file is missing or not a valid certificate or key.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certificate, key or None, password or None)
    allowed, _ = _allowed(include, exclude)
    if allowed:
        # Versions older than TLS 1.2 only when asked for by name in include-protocols:
        # Python's default floor is TLS 1.2, and Flume's default (exclude SSLv3 only)
        # would otherwise lower it.
        explicit = {n.lower() for n in include}
        floor = _ORDER.index("tlsv1.2")
        wanted = [v for v in allowed if _ORDER.index(v) >= floor or v in explicit]
        lowest = wanted[0] if wanted else allowed[0]
        if lowest in explicit or _VERSIONS[lowest] > ctx.minimum_version:
            ctx.minimum_version = _VERSIONS[lowest]
        if allowed[-1] != "tlsv1.3":
            ctx.maximum_version = _VERSIONS[allowed[-1]]
    return ctx
