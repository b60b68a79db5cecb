"""The upstream hop over real TLS: a private CA in upstream.ca_bundle, a clear refusal without it,
and a client certificate for an upstream that requires one. The upstream is the AMP stand-in
(which checks every signature) behind a TLS front with certificates from a throwaway CA."""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import httpx
import pytest
from support.amp_standin import AmpStandin
from support.certs import Authority, Pki
from support.gateway import gateway_client, gateway_settings
from support.netproxy import TlsFront, server_context
from support.testenv import AMP_REGION

from gateway.config import ConfigError

QUERY = {"query": "demo_num_cpus"}


def tls_settings(amp: AmpStandin, front: TlsFront, host: str = "127.0.0.1", **upstream: Any):  # type: ignore[no-untyped-def]
    url = f"https://{host}:{front.port}/workspaces/ws-test1"
    return gateway_settings(
        amp,
        raw={
            "workspaces": [{"id": "ws-test1", "url": url, "region": AMP_REGION}],
            "upstream": {"retry_base": "10ms", **upstream},
        },
    )


async def _query_once_through(amp: AmpStandin, front: TlsFront, pki: Pki) -> httpx.Response:
    """One query through a gateway that trusts the test CA, to `front`, which is stopped after."""
    try:
        async with gateway_client(tls_settings(amp, front, ca_bundle=str(pki.ca_file))) as client:
            return await client.get("/api/v1/query", params=QUERY)
    finally:
        front.stop()


async def test_a_private_ca_in_ca_bundle_verifies_the_upstream(
    fresh_amp: AmpStandin, aws_env: dict[str, str], amp_tls: TlsFront, pki: Pki, no_proxy_env: object
) -> None:
    settings = tls_settings(fresh_amp, amp_tls, ca_bundle=str(pki.ca_file))
    async with gateway_client(settings) as client:
        answer = await client.get("/api/v1/query", params=QUERY)
    assert answer.status_code == 200, answer.text
    (received,) = fresh_amp.requests
    assert received.signature_valid
    assert received.header("host") == f"127.0.0.1:{amp_tls.port}"


@pytest.mark.parametrize("bundle", [None, "stranger"])
async def test_an_upstream_the_gateway_does_not_trust_is_a_clear_502_and_not_retried(
    fresh_amp: AmpStandin,
    aws_env: dict[str, str],
    amp_tls: TlsFront,
    pki: Pki,
    no_proxy_env: object,
    bundle: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # None: the system's store (which does not know the test CA); "stranger": another CA only.
    upstream = {"ca_bundle": str(pki.stranger_ca_file)} if bundle else {}
    handshakes = amp_tls.handshakes
    async with gateway_client(tls_settings(fresh_amp, amp_tls, **upstream)) as client:
        answer = await client.get("/api/v1/query", params=QUERY)
    assert answer.status_code == 502, answer.text
    body = answer.json()
    assert body["errorType"] == "unavailable"
    error = body["error"]
    assert f"the upstream of ws-test1 (127.0.0.1:{amp_tls.port}) presented a certificate" in error
    assert "unable to get local issuer certificate" in error
    assert "set upstream.ca_bundle" in error
    assert "TLS verification failed" in caplog.text
    assert amp_tls.handshakes == handshakes  # no retries, and nothing reached the stand-in
    assert fresh_amp.requests == []


async def test_the_host_name_is_verified_too(
    fresh_amp: AmpStandin,
    aws_env: dict[str, str],
    pki: Pki,
    no_proxy_env: object,
    tmp_path: Any,
) -> None:
    # A certificate the CA issued for another name: trusted issuer, wrong host.
    other = pki.ca.issue(tmp_path / "other", "elsewhere.example", hosts=("elsewhere.example",))
    front = TlsFront(int(fresh_amp.url.rsplit(":", 1)[1]), server_context(str(other.cert), str(other.key)))
    answer = await _query_once_through(fresh_amp, front.start(), pki)
    assert answer.status_code == 502
    assert "IP address mismatch" in answer.json()["error"]


async def test_a_client_certificate_is_presented_to_an_upstream_that_requires_one(
    fresh_amp: AmpStandin, aws_env: dict[str, str], amp_mtls: TlsFront, pki: Pki, no_proxy_env: object
) -> None:
    settings = tls_settings(
        fresh_amp,
        amp_mtls,
        ca_bundle=str(pki.ca_file),
        client_cert=str(pki.client.cert),
        client_key=str(pki.client.key),
    )
    async with gateway_client(settings) as client:
        answer = await client.get("/api/v1/query", params=QUERY)
    assert answer.status_code == 200, answer.text
    assert [r.signature_valid for r in fresh_amp.requests] == [True]


@pytest.mark.parametrize(
    ("version", "alert"),
    [
        (ssl.TLSVersion.TLSv1_3, "TLSV13_ALERT_CERTIFICATE_REQUIRED"),
        (ssl.TLSVersion.TLSv1_2, "SSLV3_ALERT_HANDSHAKE_FAILURE"),
    ],
)
async def test_without_the_client_certificate_the_refusal_says_what_to_set(
    fresh_amp: AmpStandin,
    aws_env: dict[str, str],
    amp: AmpStandin,
    pki: Pki,
    no_proxy_env: object,
    version: ssl.TLSVersion,
    alert: str,
) -> None:
    context = server_context(str(pki.server.cert), str(pki.server.key), client_ca=str(pki.ca_file))
    context.maximum_version = version
    front = TlsFront(int(amp.url.rsplit(":", 1)[1]), context).start()
    answer = await _query_once_through(fresh_amp, front, pki)
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert f"refused the TLS handshake ({alert})" in error
    assert "set upstream.client_cert and upstream.client_key" in error
    assert fresh_amp.requests == []
    # The front's thread records the refusal after its alert went out: the gateway may have
    # answered first.
    deadline = time.monotonic() + 5
    while not front.refused and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert len(front.refused) == 1  # not retried


def test_a_client_certificate_from_another_ca_does_not_load_with_a_wrong_key(
    fresh_amp: AmpStandin, pki: Pki, tmp_path: Any
) -> None:
    # The key of another pair: refused at start-up, naming the key.
    other = Authority.create("x").issue(tmp_path / "x", "x", client=True)
    with pytest.raises(
        ConfigError, match=r"^upstream\.client_key: .* is not the key of upstream\.client_cert"
    ):
        gateway_settings(
            fresh_amp,
            raw={"upstream": {"client_cert": str(pki.client.cert), "client_key": str(other.key)}},
        )
