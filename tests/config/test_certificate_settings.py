"""tls.cert_file/key_file and upstream.ca_bundle/client_cert/client_key: both-or-neither, files
that exist and load; otherwise start-up stops with one line naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from support.certs import Pki

from gateway.config import ConfigError, Settings, build_settings

URL = "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


def build(raw: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Settings:
    return build_settings({"upstream_url": URL, **(raw or {})}, env or {})


def fails(raw: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        build(raw, env)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_no_tls_by_default() -> None:
    settings = build()
    assert not settings.tls.enabled and settings.tls.cert_file is None
    assert settings.upstream.ca_bundle is None and settings.upstream.client_cert is None


def test_server_pair_from_yaml_and_from_the_environment(pki: Pki, tmp_path: Path) -> None:
    cert, key = str(pki.server.cert), str(pki.server.key)
    settings = build({"tls": {"cert_file": cert, "key_file": key}})
    assert settings.tls.enabled and (settings.tls.cert_file, settings.tls.key_file) == (cert, key)
    other = pki.ca.issue(tmp_path / "other", "localhost")
    env = {"GATEWAY_TLS_CERT_FILE": str(other.cert), "GATEWAY_TLS_KEY_FILE": str(other.key)}
    settings = build({"tls": {"cert_file": cert, "key_file": key}}, env)  # the environment wins
    assert (settings.tls.cert_file, settings.tls.key_file) == (str(other.cert), str(other.key))


def test_server_pair_errors(pki: Pki, tmp_path: Path) -> None:
    cert, key = str(pki.server.cert), str(pki.server.key)
    assert fails({"tls": {"cert_file": cert}}) == (
        "tls.key_file: required with tls.cert_file (a certificate and its key, both or neither)"
    )
    assert fails(env={"GATEWAY_TLS_KEY_FILE": key}).startswith(
        "GATEWAY_TLS_CERT_FILE: required with GATEWAY_TLS_KEY_FILE"
    )
    missing = str(tmp_path / "missing.pem")
    assert fails(env={"GATEWAY_TLS_CERT_FILE": missing, "GATEWAY_TLS_KEY_FILE": key}) == (
        f"GATEWAY_TLS_CERT_FILE: {missing}: No such file or directory"
    )
    assert fails({"tls": {"cert_file": str(tmp_path), "key_file": key}}) == (
        f"tls.cert_file: {tmp_path} is a directory, not a file"
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert fails({"tls": {"cert_file": str(garbage), "key_file": key}}) == (
        f"tls.cert_file: {garbage} holds no PEM certificate"
    )
    assert fails({"tls": {"cert_file": cert, "key_file": cert}}) == (
        f"tls.key_file: {cert} holds no PEM private key"
    )
    assert fails({"tls": {"cert_file": cert, "key_file": str(pki.client.key)}}) == (
        f"tls.key_file: {pki.client.key} is not the key of tls.cert_file {cert}"
    )
    assert fails({"tls": {"cert_file": cert, "key_file": key, "ca_file": cert}}).startswith(
        "tls.ca_file: unknown setting"
    )


def test_an_encrypted_key_is_refused_rather_than_asked_for(pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.server.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    message = fails({"tls": {"cert_file": str(pki.server.cert), "key_file": str(encrypted)}})
    assert message.startswith("tls.key_file: the private key is encrypted")


def test_upstream_files(pki: Pki) -> None:
    upstream = {
        "ca_bundle": str(pki.ca_file),
        "client_cert": str(pki.client.cert),
        "client_key": str(pki.client.key),
    }
    settings = build({"upstream": upstream})
    assert settings.upstream.ca_bundle == str(pki.ca_file)
    assert (settings.upstream.client_cert, settings.upstream.client_key) == (
        str(pki.client.cert),
        str(pki.client.key),
    )
    env = {
        "GATEWAY_UPSTREAM_CA_BUNDLE": str(pki.stranger_ca_file),
        "GATEWAY_UPSTREAM_CLIENT_CERT": str(pki.server.cert),
        "GATEWAY_UPSTREAM_CLIENT_KEY": str(pki.server.key),
    }
    settings = build({"upstream": upstream}, env)
    assert settings.upstream.ca_bundle == str(pki.stranger_ca_file)
    assert settings.upstream.client_cert == str(pki.server.cert)


def test_aws_ca_bundle_is_the_upstreams_too_unless_ca_bundle_is_set(pki: Pki) -> None:
    assert build(env={"AWS_CA_BUNDLE": str(pki.ca_file)}).upstream.ca_bundle == str(pki.ca_file)
    settings = build(
        {"upstream": {"ca_bundle": str(pki.stranger_ca_file)}}, {"AWS_CA_BUNDLE": str(pki.ca_file)}
    )
    assert settings.upstream.ca_bundle == str(pki.stranger_ca_file)


def test_upstream_file_errors(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "bundle.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    assert fails({"upstream": {"ca_bundle": str(garbage)}}) == (
        f"upstream.ca_bundle: {garbage} holds no PEM certificate"
    )
    assert fails(env={"AWS_CA_BUNDLE": str(garbage)}) == f"AWS_CA_BUNDLE: {garbage} holds no PEM certificate"
    missing = tmp_path / "nothing.pem"
    assert fails(env={"GATEWAY_UPSTREAM_CA_BUNDLE": str(missing)}) == (
        f"GATEWAY_UPSTREAM_CA_BUNDLE: {missing}: No such file or directory"
    )
    assert fails({"upstream": {"client_cert": str(pki.client.cert)}}) == (
        "upstream.client_key: required with upstream.client_cert (a certificate and its key, both or neither)"
    )
    assert fails({"upstream": {"client_cert": str(pki.client.cert), "client_key": str(pki.server.key)}}) == (
        f"upstream.client_key: {pki.server.key} is not the key of upstream.client_cert {pki.client.cert}"
    )
