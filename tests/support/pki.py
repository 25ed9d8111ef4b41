"""Test certificates (trustme): one CA and a certificate for 127.0.0.1/localhost, as PEM
files, made when asked; the `pki` fixture of tests/conftest.py gives one set a test."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Pki:
    """PEM file paths: `ca` (trusted), `chain` (certificate chain), `key` (its private
    key), `server` (key and chain in one file), `other_ca` (a CA that signed nothing)."""

    ca: str
    chain: str
    key: str
    server: str
    other_ca: str
    authority: trustme.CA

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting `ca`."""
        ctx = ssl.create_default_context()
        self.authority.configure_trust(ctx)
        return ctx


def make_pki(d: Path, *names: str) -> Pki:
    """A CA and a certificate for `names` (default localhost/127.0.0.1), made now,
    written into `d`."""
    ca = trustme.CA()
    cert = ca.issue_cert(*(names or ("localhost", "127.0.0.1")))
    pki = Pki(
        str(d / "ca.pem"),
        str(d / "chain.pem"),
        str(d / "key.pem"),
        str(d / "server.pem"),
        str(d / "other.pem"),
        ca,
    )
    ca.cert_pem.write_to_path(pki.ca)
    cert.private_key_pem.write_to_path(pki.key)
    Path(pki.chain).write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    cert.private_key_and_cert_chain_pem.write_to_path(pki.server)
    trustme.CA().cert_pem.write_to_path(pki.other_ca)
    return pki
