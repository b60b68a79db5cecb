"""Certificate files in the settings: the server's own pair (`tls`), and the upstream hop's CA
bundle and client pair (`upstream.ca_bundle`, `upstream.client_cert`, `upstream.client_key`).

Every file is loaded here, at start-up, the way it will be used, so that a missing, unreadable,
encrypted or mismatched file stops the gateway with one line naming its key, not at the first
handshake. The files themselves are read again by `gateway.tls` (which also reloads rotated ones).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.config.readers import ConfigError, Reader


@dataclass(frozen=True)
class TlsSettings:
    """The certificate and key the gateway presents to its clients (both or neither)."""

    cert_file: str | None = None
    key_file: str | None = None

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


@dataclass(frozen=True)
class UpstreamTls:
    ca_bundle: str | None = None  # verifies the upstream instead of the system's store
    client_cert: str | None = None  # presented to an upstream (or proxy) that asks for one
    client_key: str | None = None


def read_tls(raw: Reader, env: Mapping[str, str]) -> TlsSettings:
    raw.reject_unknown({"cert_file", "key_file"})
    cert = _path(raw, env, "cert_file", "GATEWAY_TLS_CERT_FILE")
    key = _path(raw, env, "key_file", "GATEWAY_TLS_KEY_FILE")
    _check_pair(cert, key)
    return TlsSettings(cert[1], key[1])


def read_upstream_tls(raw: Reader, env: Mapping[str, str]) -> UpstreamTls:
    """The upstream hop's files; `AWS_CA_BUNDLE` (botocore's, which STS calls use) is the CA
    bundle's default, so one variable covers both AWS hops behind a TLS-inspecting proxy."""
    bundle_name, bundle_path, _ = _path(raw, env, "ca_bundle", "GATEWAY_UPSTREAM_CA_BUNDLE")
    if bundle_path is None and env.get("AWS_CA_BUNDLE"):
        bundle_name, bundle_path = "AWS_CA_BUNDLE", env["AWS_CA_BUNDLE"]
    if bundle_path is not None:
        _readable(bundle_name, bundle_path)
        try:
            ssl.create_default_context(cafile=bundle_path)
        except (ssl.SSLError, ValueError):
            raise ConfigError(f"{bundle_name}: {bundle_path} holds no PEM certificate") from None
    cert = _path(raw, env, "client_cert", "GATEWAY_UPSTREAM_CLIENT_CERT")
    key = _path(raw, env, "client_key", "GATEWAY_UPSTREAM_CLIENT_KEY")
    _check_pair(cert, key)
    return UpstreamTls(bundle_path, cert[1], key[1])


def load_pair(context: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    """`load_cert_chain` that refuses an encrypted key instead of asking a terminal for its
    password (OpenSSL's default)."""
    context.load_cert_chain(cert_file, key_file, password=_no_password)


def _no_password() -> str:
    raise ValueError("the private key is encrypted; give it unencrypted (a Kubernetes secret is)")


# (the key as the error names it: the variable when the environment set it, else the YAML path;
#  the file's path or None; the variable)
_Named = tuple[str, str | None, str]


def _path(raw: Reader, env: Mapping[str, str], key: str, variable: str) -> _Named:
    if env.get(variable):
        return variable, env[variable], variable
    return f"{raw.prefix}{key}", raw.text(key, None) or None, variable


def _readable(name: str, path: str) -> None:
    try:
        with Path(path).open("rb"):
            pass
    except IsADirectoryError:
        raise ConfigError(f"{name}: {path} is a directory, not a file") from None
    except OSError as err:
        raise ConfigError(f"{name}: {path}: {err.strerror}") from None


def _check_pair(cert: _Named, key: _Named) -> None:
    (cert_name, cert_path, _), (key_name, key_path, _) = cert, key
    if cert_path is None and key_path is None:
        return
    if cert_path is None or key_path is None:
        given, missing = (cert, key) if key_path is None else (key, cert)
        # named as the given one was: both in the environment, or both in the file
        missing_name = missing[2] if given[0] == given[2] else missing[0]
        raise ConfigError(
            f"{missing_name}: required with {given[0]} (a certificate and its key, both or neither)"
        )
    _readable(cert_name, cert_path)
    _readable(key_name, key_path)
    if b"-----BEGIN CERTIFICATE-----" not in Path(cert_path).read_bytes():
        raise ConfigError(f"{cert_name}: {cert_path} holds no PEM certificate")
    key_text = Path(key_path).read_bytes()
    if b"PRIVATE KEY-----" not in key_text:
        raise ConfigError(f"{key_name}: {key_path} holds no PEM private key")
    try:
        load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert_path, key_path)
    except ValueError as err:
        raise ConfigError(f"{key_name}: {err}") from None
    except ssl.SSLError as err:
        if "KEY_VALUES_MISMATCH" in str(err):
            raise ConfigError(f"{key_name}: {key_path} is not the key of {cert_name} {cert_path}") from None
        raise ConfigError(
            f"{cert_name}, {key_name}: {cert_path} and {key_path} do not load as a certificate and "
            f"its key ({err.reason or err})"
        ) from None
