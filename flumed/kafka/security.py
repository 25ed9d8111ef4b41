"""Kafka TLS and SASL: Kafka's `ssl.*` keys (PEM files or JKS/JCEKS/PKCS12 keystores)
become an `ssl.SSLContext` at start; `sasl.jaas.config` gives the PLAIN/SCRAM
credentials (a small JAAS parser)."""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flumed import keystores

if TYPE_CHECKING:
    from flumed.kafka.options import ClientOptions


#: TLS keys, read by `tls_options`.
SSL_KEYS = {
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.truststore.password",
    "ssl.truststore.certificates",
    "ssl.keystore.location",
    "ssl.keystore.type",
    "ssl.keystore.password",
    "ssl.key.password",
    "ssl.keystore.certificate.chain",
    "ssl.keystore.key",
    "ssl.endpoint.identification.algorithm",
    "ssl.disableTLSHostnameVerification",
    "ssl.protocol",
    "ssl.enabled.protocols",
}

_TLS_VERSIONS = {
    "TLSV1.2": ssl.TLSVersion.TLSv1_2,
    "TLSV1.3": ssl.TLSVersion.TLSv1_3,
}


@dataclass(frozen=True)
class TlsOptions:
    """What `build_ssl_context` needs; file paths are read at start, not at load."""

    cafile: str | None = None
    cadata: str | None = None
    certfile: str | None = None
    key_password: str | None = None
    truststore_password: str | None = None
    keystore_password: str | None = None
    check_hostname: bool = True
    min_version: ssl.TLSVersion | None = None
    max_version: ssl.TLSVersion | None = None


_JAAS_MODULE = re.compile(r"^\s*([\w.$]+)\s+(required|requisite|sufficient|optional)\b")
_JAAS_OPTION = re.compile(r"""(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;"]+))""")


def parse_jaas(text: str) -> tuple[str, dict[str, str]]:
    """Split a `sasl.jaas.config` value into its login module class and its options.

    Raises:
        ValueError: it does not start with `<LoginModule class> required`.
    """
    m = _JAAS_MODULE.match(text)
    if m is None:
        raise ValueError("expected '<LoginModule class> required key=\"value\" ...;'")
    opts: dict[str, str] = {}
    for om in _JAAS_OPTION.finditer(text, m.end()):
        val = om.group(2) if om.group(2) is not None else om.group(3)
        opts[om.group(1)] = re.sub(r"\\(.)", r"\1", val)
    return m.group(1), opts


def sasl_options(props: Mapping[str, Any], pre: str, out: ClientOptions) -> None:
    """Called by `client_options`: the SASL keyword arguments into `out`."""
    proto = out.kwargs.get("security_protocol", "PLAINTEXT")
    mech = out.kwargs.get("sasl_mechanism", "GSSAPI")  # Kafka's default mechanism
    jaas = props.get("sasl.jaas.config")
    if not proto.startswith("SASL_"):
        if jaas is not None or "sasl_mechanism" in out.kwargs:
            out.ignored.append(f"'{pre}sasl.*' keys are ignored: security.protocol is {proto}")
        return
    out.kwargs["sasl_mechanism"] = mech
    if mech == "GSSAPI":
        if jaas is not None:
            out.ignored.append(
                f"'{pre}sasl.jaas.config' is ignored for GSSAPI: the Kerberos ticket comes "
                "from the environment (kinit, KRB5CCNAME)"
            )
        return
    if jaas is None:
        out.problems.append(
            f"key '{pre}sasl.jaas.config': required for sasl.mechanism {mech} "
            '(… required username="…" password="…";)'
        )
        return
    try:
        module, opts = parse_jaas(str(jaas))
    except ValueError as e:
        out.problems.append(f"key '{pre}sasl.jaas.config': {e}")
        return
    want = "PlainLoginModule" if mech == "PLAIN" else "ScramLoginModule"
    if not module.endswith(want):
        out.problems.append(
            f"key '{pre}sasl.jaas.config': sasl.mechanism {mech} needs {want}, got {module}"
        )
        return
    if "username" not in opts or "password" not in opts:
        out.problems.append(f"key '{pre}sasl.jaas.config': username and password are both required")
        return
    out.kwargs["sasl_plain_username"] = opts["username"]
    out.kwargs["sasl_plain_password"] = opts["password"]


def tls_options(props: Mapping[str, Any], pre: str, out: ClientOptions) -> TlsOptions:
    """Called by `client_options`: what the `ssl.*` keys ask for (pure; problems into `out`)."""

    def get(k: str) -> str | None:
        v = props.get(k)
        return None if v is None else str(v).strip()

    cafile = cadata = certfile = None
    # PEM files, or Java keystores (JKS/JCEKS/PKCS12, found by content: flumed.keystores).
    if get("ssl.truststore.location"):
        cafile = get("ssl.truststore.location")
    if get("ssl.truststore.certificates"):
        cadata = get("ssl.truststore.certificates")
    if get("ssl.keystore.location"):
        certfile = get("ssl.keystore.location")
    if get("ssl.keystore.key") or get("ssl.keystore.certificate.chain"):
        out.problems.append(
            f"key '{pre}ssl.keystore.key': inline keys are not supported; put the PEM key and "
            "certificate chain in one file and name it in ssl.keystore.location"
        )
    key_password = get("ssl.key.password") or get("ssl.keystore.password")
    truststore_password = get("ssl.truststore.password")
    keystore_password = get("ssl.keystore.password")
    check_hostname = True
    algo = props.get("ssl.endpoint.identification.algorithm")
    if algo is not None and str(algo).strip() == "":
        check_hostname = False
    if str(props.get("ssl.disableTLSHostnameVerification", "")).strip().lower() == "true":
        check_hostname = False
    versions: list[ssl.TLSVersion] = []
    for k in ("ssl.enabled.protocols", "ssl.protocol"):
        raw = get(k)
        if not raw:
            continue
        for name in raw.split(","):
            tv = _TLS_VERSIONS.get(name.strip().upper())
            if tv is None and name.strip().upper() != "TLS":
                out.problems.append(
                    f"key '{pre}{k}': unsupported protocol {name.strip()!r} "
                    "(TLSv1.2 and TLSv1.3 are supported)"
                )
            elif tv is not None:
                versions.append(tv)
        if versions:
            break
    return TlsOptions(
        cafile=cafile,
        cadata=cadata,
        certfile=certfile,
        key_password=key_password,
        truststore_password=truststore_password,
        keystore_password=keystore_password,
        check_hostname=check_hostname,
        min_version=min(versions) if versions else None,
        max_version=max(versions) if versions else None,
    )


def build_ssl_context(t: TlsOptions) -> ssl.SSLContext:
    """A client SSL context. Reads the PEM files (call from start(), not at load).

    Raises:
        OSError, ssl.SSLError: a file cannot be read or holds no usable certificate/key.
    """
    cafile, cadata = t.cafile, t.cadata
    if cafile and keystores.is_java_keystore(cafile):
        cadata = (cadata or "") + keystores.read_truststore(cafile, t.truststore_password)
        cafile = None
    ctx = ssl.create_default_context(cafile=cafile, cadata=cadata)
    ctx.check_hostname = t.check_hostname
    if t.certfile and keystores.is_java_keystore(t.certfile):
        material = keystores.read_keystore(t.certfile, t.keystore_password, t.key_password)
        keystores.load_key_material(ctx, material)
    elif t.certfile:
        ctx.load_cert_chain(t.certfile, password=t.key_password)
    if t.min_version is not None:
        ctx.minimum_version = t.min_version
    if t.max_version is not None:
        ctx.maximum_version = t.max_version
    return ctx
