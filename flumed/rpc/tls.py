"""TLS contexts for the RPC sources and sinks, from PEM files.

Flume reads Java keystores (`keystore`, `truststore`, JKS or PKCS12); flumed reads PEM
files under the same keys: the server's certificate chain (with its key, or the key in
a second file) and the client's file of trusted CA certificates. Java protocol names in
`include-protocols` / `exclude-protocols` map to a range of TLS versions.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
#: Java names that no OpenSSL build here offers; accepted in exclude lists.
_OBSOLETE = {"SSLv3", "SSLv2Hello"}


def protocol_problems(include: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """Config check for `include-protocols` / `exclude-protocols` (Java names)."""
    known = {*_VERSIONS, *_OBSOLETE}
    return [
        f"unknown TLS protocol {p!r} (known: {', '.join(sorted(known))})"
        for p in [*include, *exclude]
        if p not in known
    ]


def _limit_versions(ctx: ssl.SSLContext, include: Sequence[str], exclude: Sequence[str]) -> None:
    # Java names a set of protocols, OpenSSL takes a range: use the range spanning the
    # allowed versions. Without either list, Python's defaults stay (TLS 1.2 and up).
    if not include and not exclude:
        return
    allowed = [
        v for n, v in _VERSIONS.items() if (not include or n in include) and n not in exclude
    ]
    if not allowed:
        raise ValueError("include-protocols/exclude-protocols leave no TLS version")
    ctx.minimum_version = min(allowed)
    ctx.maximum_version = max(allowed)


def server_context(
    certfile: str,
    keyfile: str | None,
    password: str | None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> ssl.SSLContext:
    """A server-side context from PEM files (no client certificates asked, as Flume).

    Raises:
        OSError, ssl.SSLError: a file is missing or not PEM. ValueError: no version left.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certfile, keyfile, password)
    _limit_versions(ctx, include, exclude)
    return ctx


def client_context(
    cafile: str | None,
    trust_all: bool,
    verify_hostname: bool = True,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> ssl.SSLContext:
    """A client-side context trusting `cafile` (else the system's CAs), or anything at all
    with `trust_all` (Flume's trust-all-certs).

    Raises:
        OSError, ssl.SSLError: the CA file is missing or not PEM. ValueError: no version left.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if trust_all:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif not verify_hostname:
        ctx.check_hostname = False
    _limit_versions(ctx, include, exclude)
    return ctx
