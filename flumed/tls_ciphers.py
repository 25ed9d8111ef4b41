"""Flume's `include-cipher-suites` / `exclude-cipher-suites`: Java (IANA) suite names
mapped to OpenSSL's, applied to an `ssl.SSLContext`.

Java names a suite `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256` (or `SSL_...` for old ones);
OpenSSL calls it `ECDHE-RSA-AES128-GCM-SHA256`. `to_openssl` translates the families
Java offers (ECDHE/DHE/RSA key exchange, ECDSA/RSA/DSS, AES, ChaCha20, Camellia, ARIA,
3DES; GCM, CCM, CBC). TLS 1.3 suites (`TLS_AES_128_GCM_SHA256` ...) keep their name, but
Python's ssl module cannot restrict them: they are accepted and always enabled when TLS
1.3 is (restrict the protocol with `include-protocols` to pin a 1.2 suite).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from functools import cache

TLS13 = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
         "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"}  # fmt: skip

_KX = {
    "ECDHE_ECDSA": "ECDHE-ECDSA-",
    "ECDHE_RSA": "ECDHE-RSA-",
    "DHE_RSA": "DHE-RSA-",
    "DHE_DSS": "DHE-DSS-",
    "RSA": "",
    "DH_anon": "ADH-",
    "ECDH_anon": "AECDH-",
}


def _bulk(part: str) -> str | None:
    """`AES_128_GCM_SHA256` -> `AES128-GCM-SHA256` (the part after WITH_)."""
    if part == "CHACHA20_POLY1305_SHA256":
        return "CHACHA20-POLY1305"
    if part == "3DES_EDE_CBC_SHA":
        return "DES-CBC3-SHA"
    bits = part.split("_")
    if len(bits) < 3 or bits[0] not in ("AES", "CAMELLIA", "ARIA"):
        return None
    algo = bits[0] + bits[1]
    mode, rest = bits[2], bits[3:]
    if mode == "GCM":
        return f"{algo}-GCM-{'-'.join(rest)}"
    if mode == "CCM":
        return f"{algo}-CCM8" if rest == ["8"] else f"{algo}-CCM"
    if mode == "CBC" and len(rest) == 1:
        return f"{algo}-{rest[0]}"
    return None


def to_openssl(java: str) -> str | None:
    """OpenSSL's name for a Java suite name, None when unknown."""
    name = java.strip()
    if name in TLS13:
        return name
    if name.startswith("SSL_"):
        name = "TLS_" + name[4:]
    if not name.startswith("TLS_") or "_WITH_" not in name:
        return None
    kx, bulk = name[4:].split("_WITH_", 1)
    prefix, suffix = _KX.get(kx), _bulk(bulk)
    if prefix is None or suffix is None:
        return None
    if kx == "ECDHE_RSA" and suffix.startswith("ARIA"):
        return "ECDHE-" + suffix  # OpenSSL's spelling of the RSA-signed ARIA suites
    if prefix == "ECDHE-RSA-" and suffix == "DES-CBC3-SHA":
        return "ECDHE-RSA-DES-CBC3-SHA"
    return prefix + suffix


@cache
def _available() -> frozenset[str]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    return frozenset(c["name"] for c in ctx.get_ciphers())


def cipher_problems(include: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """Config check: every name maps to a suite this OpenSSL has (pure)."""
    problems = []
    for key, names in (("include-cipher-suites", include), ("exclude-cipher-suites", exclude)):
        for n in names:
            o = to_openssl(n)
            if o is None or o not in _available():
                problems.append(f"key '{key}': unknown or unavailable cipher suite {n!r}")
    return problems


def apply_ciphers(ctx: ssl.SSLContext, include: Sequence[str], exclude: Sequence[str]) -> None:
    """Limit the TLS 1.2 suites of `ctx`: only `include` (when given), never `exclude`.

    Raises ssl.SSLError when nothing is left."""
    if not include and not exclude:
        return
    drop = {to_openssl(n) for n in exclude}
    if include:
        wanted = [o for n in include if (o := to_openssl(n)) and o not in TLS13]
    else:
        wanted = [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]
    names = [n for n in wanted if n and n not in drop]
    if not names:
        raise ssl.SSLError("include-cipher-suites/exclude-cipher-suites leave no TLS 1.2 suite")
    ctx.set_ciphers(":".join(names))
