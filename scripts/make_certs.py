#!/usr/bin/env python3
"""Make a demo CA, a server certificate and client certificates with SPIFFE IDs, for mTLS with mcp-policy.

    make_certs.py --out DIR [--client NAME=spiffe://... ...] [--days N]

Writes DIR/ca.pem (the CA certificate), DIR/server.pem and DIR/server.key (for 127.0.0.1 and localhost), and for
each --client NAME=URI: DIR/NAME.pem and DIR/NAME.key, a client certificate whose URI SAN is URI (the principal
mcp-policy reads with `callers.peer_certificate`). The CA key is not kept: nothing more can be signed later.

envoy/examples/mtls/ was made with:
    .venv/bin/python scripts/make_certs.py --out envoy/examples/mtls --days 36500 \\
        --client ci=spiffe://cluster.local/ns/ci/sa/builder --client admin=spiffe://cluster.local/ns/ml/sa/admin
Those are DEMO keys, published in this repository: never use them for anything real.
tests/e2e/test_callers.py makes its own, with this script, in a temporary directory.
"""
from __future__ import annotations

import argparse
import datetime
import ipaddress
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key, issuer: x509.Name, issuer_key, days: int, *, ca: bool = False,
          sans: list[x509.GeneralName] | None = None, usage=None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(issuer)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, encipher_only=False,
                                          decipher_only=False), critical=True)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make(out: pathlib.Path, clients: dict[str, str], days: int = 1) -> None:
    """The CA, the server certificate and one client certificate per NAME → URI SAN, written to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mcp-policy demo CA")])
    ca = _cert("mcp-policy demo CA", ca_key, ca_name, ca_key, days, ca=True)
    (out / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_key = _key()
    server = _cert("localhost", server_key, ca_name, ca_key, days,
                   sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                   usage=ExtendedKeyUsageOID.SERVER_AUTH)
    (out / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (out / "server.key").write_bytes(_pem_key(server_key))
    for name, uri in clients.items():
        key = _key()
        cert = _cert(name, key, ca_name, ca_key, days, sans=[x509.UniformResourceIdentifier(uri)],
                     usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        (out / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (out / f"{name}.key").write_bytes(_pem_key(key))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--client", action="append", default=[], metavar="NAME=URI")
    ap.add_argument("--days", type=int, default=1)
    args = ap.parse_args()
    clients = dict(c.split("=", 1) for c in args.client)
    make(args.out, clients, args.days)


if __name__ == "__main__":
    main()
