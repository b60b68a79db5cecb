"""Throwaway certificate authorities and certificates for the TLS tests (the `cryptography` package).

ca = Authority.create("test CA")
ca.write(tmp_path / "ca.pem")
pair = ca.issue(tmp_path / "server", "localhost")      # pair.cert, pair.key: PEM files
client = ca.issue(tmp_path / "client", "gateway", client=True)
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path
    serial: int

    def replace(self, other: Pair) -> None:
        """Put `other`'s files in place of these, each with one rename (as a secret volume does)."""
        for source, target in ((other.cert, self.cert), (other.key, self.key)):
            staged = target.with_name(target.name + ".new")
            staged.write_bytes(source.read_bytes())
            os.replace(staged, target)


@dataclass(frozen=True)
class Authority:
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str = "amp-gateway test CA") -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(name, key, cert)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def issue(
        self,
        directory: Path,
        common_name: str,
        hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
        *,
        client: bool = False,
    ) -> Pair:
        """A leaf certificate and its key in `directory` (cert.pem, key.pem): for a server
        answering as `hosts`, or for a client (`client=True`)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        serial = x509.random_serial_number()
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 7 * _DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if names and not client:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / "cert.pem", directory / "key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return Pair(cert_path, key_path, serial)


def serial_of(der: bytes) -> int:
    """The serial number of a DER certificate (what `SSLSocket.getpeercert(True)` gives)."""
    return int(x509.load_der_x509_certificate(der).serial_number)


@dataclass(frozen=True)
class Pki:
    """A CA, a server pair (localhost, 127.0.0.1) and a client pair it issued, and a CA that
    issued nothing of them."""

    ca: Authority
    ca_file: Path
    server: Pair
    client: Pair
    stranger_ca_file: Path

    @classmethod
    def create(cls, root: Path) -> Pki:
        ca = Authority.create()
        return cls(
            ca=ca,
            ca_file=ca.write(root / "ca.pem"),
            server=ca.issue(root / "server", "localhost"),
            client=ca.issue(root / "client", "amp-gateway", client=True),
            stranger_ca_file=Authority.create("another CA").write(root / "stranger.pem"),
        )


def presented_serial(port: int, ca_file: Path, host: str = "localhost") -> int:
    """The serial of the certificate a new TLS connection to 127.0.0.1:`port` is shown, verified
    against `ca_file` for `host`."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return serial_of(der)
