"""Inbound TLS: the gateway under uvicorn presenting `tls.cert_file`/`tls.key_file` through the
context `gateway.tls` builds, and taking a rotated pair without a restart, as cert-manager
rotates a secret in place. A pair that does not load (mismatched, half written) is not taken.

Both ways of serving are run: uvicorn's `ssl_context_factory` (what workers under uvicorn's
supervisor use: the worker builds the context and watches from its own loop), and a context
handed to uvicorn with an explicit watcher task."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from support import certs
from support.amp_standin import AmpStandin
from support.certs import Pair, Pki
from support.gateway import gateway_settings
from support.netutil import bound_socket

from gateway import tls as gateway_tls
from gateway.app import create_app
from gateway.config import Settings
from gateway.tls import ReloadingCertificate, server_tls, use_in_uvicorn, uvicorn_ssl_context

INTERVAL = 0.05  # the watcher's look at the files; production's is 5 s


class TlsGateway:
    """The gateway as a worker runs it: uvicorn in its own thread and loop, the certificate
    watched from that loop; `factory`: through uvicorn's ssl_context_factory, else through
    use_in_uvicorn and a watcher task of our own."""

    def __init__(self, settings: Settings, factory: bool) -> None:
        self._sock = bound_socket()
        self.port = int(self._sock.getsockname()[1])
        self.served: ReloadingCertificate | None = None
        if factory:
            tls: dict[str, object] = {
                "ssl_certfile": settings.tls.cert_file,
                "ssl_keyfile": settings.tls.key_file,
                "ssl_context_factory": uvicorn_ssl_context,
            }
        else:
            self.served, tls = server_tls(settings), {}
        config = uvicorn.Config(
            create_app(settings),
            lifespan="on",
            access_log=False,
            log_level="warning",
            http="httptools",
            **tls,
        )
        if self.served is not None:
            use_in_uvicorn(config, self.served.context)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        watcher = asyncio.create_task(self.served.watch(INTERVAL)) if self.served else None
        try:
            await self._server.serve(sockets=[self._sock])
        finally:
            if watcher is not None:
                watcher.cancel()

    def __enter__(self) -> TlsGateway:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()


def _client_context(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_file))


def presented_serial(port: int, pki: Pki) -> int:
    """The serial of the certificate a new connection is shown (verified against the test CA)."""
    return certs.presented_serial(port, pki.ca_file)


def eventually(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(INTERVAL)
    return False


@pytest.fixture
def live_pair(pki: Pki, tmp_path: Path) -> Pair:
    """A copy of the test server pair in files that the test may replace."""
    live = Pair(tmp_path / "live" / "tls.crt", tmp_path / "live" / "tls.key", pki.server.serial)
    live.cert.parent.mkdir()
    live.replace(pki.server)
    return live


@pytest.fixture(params=["factory", "own context"])
def gateway(
    request: pytest.FixtureRequest,
    fresh_amp: AmpStandin,
    aws_env: dict[str, str],
    live_pair: Pair,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TlsGateway]:
    monkeypatch.setattr(gateway_tls, "WATCH_INTERVAL", INTERVAL)
    settings = gateway_settings(
        fresh_amp, raw={"tls": {"cert_file": str(live_pair.cert), "key_file": str(live_pair.key)}}
    )
    with TlsGateway(settings, factory=request.param == "factory") as served:
        yield served


def test_the_gateway_serves_https_with_its_certificate(
    gateway: TlsGateway, pki: Pki, fresh_amp: AmpStandin
) -> None:
    base = f"https://localhost:{gateway.port}"
    with httpx.Client(verify=_client_context(pki), base_url=base, timeout=30) as client:
        assert client.get("/-/healthy").status_code == 200
        answer = client.get("/api/v1/query", params={"query": "demo_num_cpus"})
    assert answer.status_code == 200, answer.text
    assert [r.signature_valid for r in fresh_amp.requests] == [True]
    assert presented_serial(gateway.port, pki) == pki.server.serial
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{base}/-/healthy", verify=ssl.create_default_context())  # not a public CA's


def test_a_rotated_certificate_is_presented_to_new_connections_without_a_restart(
    gateway: TlsGateway, pki: Pki, live_pair: Pair, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="gateway.tls")
    base = f"https://localhost:{gateway.port}"
    with httpx.Client(verify=_client_context(pki), base_url=base, timeout=30) as before:
        assert before.get("/-/healthy").status_code == 200  # a connection opened before the rotation
        rotated = pki.ca.issue(tmp_path / "rotated", "localhost")
        live_pair.replace(rotated)
        assert eventually(lambda: presented_serial(gateway.port, pki) == rotated.serial)
        assert before.get("/-/healthy").status_code == 200  # still served, on its old session
    assert "tls: loaded the new certificate" in caplog.text


def test_a_pair_that_does_not_load_is_not_taken(
    gateway: TlsGateway, pki: Pki, live_pair: Pair, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rotated = pki.ca.issue(tmp_path / "rotated", "localhost")
    # The new certificate is in place, its key not yet (two files, two renames): mismatched.
    live_pair.cert.write_bytes(rotated.cert.read_bytes())
    assert eventually(lambda: "do not load" in caplog.text)
    assert presented_serial(gateway.port, pki) == pki.server.serial  # the old pair, still whole
    # Half written: the key file cut short.
    live_pair.key.write_bytes(rotated.key.read_bytes()[:40])
    time.sleep(5 * INTERVAL)
    assert presented_serial(gateway.port, pki) == pki.server.serial
    assert caplog.text.count("do not load") == 2  # once per version of the files, not per look
    live_pair.key.write_bytes(rotated.key.read_bytes())
    assert eventually(lambda: presented_serial(gateway.port, pki) == rotated.serial)


def test_reload_if_changed_on_its_own(pki: Pki, live_pair: Pair, tmp_path: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    reloading = ReloadingCertificate(context, str(live_pair.cert), str(live_pair.key), "tls")
    assert reloading.reload_if_changed() is False  # nothing changed
    live_pair.cert.unlink()
    assert reloading.reload_if_changed() is False  # missing: kept
    live_pair.replace(pki.ca.issue(tmp_path / "rotated", "localhost"))
    assert reloading.reload_if_changed() is True
    assert reloading.reload_if_changed() is False
