"""Fixtures for the TLS and proxy tests: a throwaway CA, TLS fronts for the AMP and STS stand-ins
(one requiring client certificates), and an HTTP proxy."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from support.amp_standin import AmpStandin
from support.certs import Pki
from support.netproxy import Proxy, TlsFront, server_context
from support.sts_standin import StsStandin


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


@pytest.fixture(scope="session")
def amp_tls(amp: AmpStandin, pki: Pki) -> Iterator[TlsFront]:
    """The AMP stand-in behind TLS: https://127.0.0.1:<port> and https://localhost:<port>."""
    front = TlsFront(_port(amp.url), server_context(str(pki.server.cert), str(pki.server.key))).start()
    yield front
    front.stop()


@pytest.fixture(scope="session")
def amp_mtls(amp: AmpStandin, pki: Pki) -> Iterator[TlsFront]:
    """The AMP stand-in behind TLS that requires a client certificate from the test CA."""
    context = server_context(str(pki.server.cert), str(pki.server.key), client_ca=str(pki.ca_file))
    front = TlsFront(_port(amp.url), context).start()
    yield front
    front.stop()


@pytest.fixture(scope="session")
def sts_tls(sts: StsStandin, pki: Pki) -> Iterator[TlsFront]:
    front = TlsFront(_port(sts.url), server_context(str(pki.server.cert), str(pki.server.key))).start()
    yield front
    front.stop()


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    server = Proxy().start()
    yield server
    server.stop()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variables from the machine; the test sets the ones it means."""
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    return monkeypatch
