"""HTTPS_PROXY, HTTP_PROXY and NO_PROXY for the upstream hop, through a real HTTP proxy, with
the SigV4 stand-in checking that the signature (and its Host) is still the upstream's; and the
STS hop, which botocore sends through the same proxies and verifies with AWS_CA_BUNDLE."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from support.amp_standin import AmpStandin
from support.certs import Pki
from support.gateway import gateway_client, gateway_settings
from support.netproxy import Proxy, TlsFront
from support.sts_standin import StsStandin
from support.testenv import AMP_REGION, ROLE_ARN

from gateway.config import AwsSettings, Workspace
from gateway.pipeline.credentials import CredentialError, CredentialSource
from gateway.pipeline.send import proxy_for

QUERY = {"query": "demo_num_cpus"}


def _settings(amp: AmpStandin, url: str, **upstream: Any):  # type: ignore[no-untyped-def]
    return gateway_settings(
        amp,
        raw={
            "workspaces": [{"id": "ws-test1", "url": url, "region": AMP_REGION}],
            "upstream": {"retry_base": "10ms", **upstream},
        },
    )


async def _query(settings: Any) -> Any:
    async with gateway_client(settings) as client:
        return await client.get("/api/v1/query", params=QUERY)


async def test_https_upstream_goes_through_the_https_proxy_with_the_upstreams_signature(
    fresh_amp: AmpStandin,
    aws_env: dict[str, str],
    amp_tls: TlsFront,
    pki: Pki,
    proxy: Proxy,
    no_proxy_env: pytest.MonkeyPatch,
) -> None:
    no_proxy_env.setenv("HTTPS_PROXY", proxy.url)
    no_proxy_env.setenv("NO_PROXY", "example.com,.internal")  # not this host
    url = f"https://localhost:{amp_tls.port}/workspaces/ws-test1"
    answer = await _query(_settings(fresh_amp, url, ca_bundle=str(pki.ca_file)))
    assert answer.status_code == 200, answer.text
    assert [(a.method, a.target) for a in proxy.asked] == [("CONNECT", f"localhost:{amp_tls.port}")]
    assert proxy.asked[0].headers["host"] == f"localhost:{amp_tls.port}"
    (received,) = fresh_amp.requests
    assert received.signature_valid
    assert received.header("host") == f"localhost:{amp_tls.port}"  # the upstream's, not the proxy's


async def test_no_proxy_naming_the_host_goes_direct(
    fresh_amp: AmpStandin,
    aws_env: dict[str, str],
    amp_tls: TlsFront,
    pki: Pki,
    proxy: Proxy,
    no_proxy_env: pytest.MonkeyPatch,
) -> None:
    no_proxy_env.setenv("https_proxy", proxy.url)
    no_proxy_env.setenv("no_proxy", "169.254.169.254, localhost")
    url = f"https://localhost:{amp_tls.port}/workspaces/ws-test1"
    answer = await _query(_settings(fresh_amp, url, ca_bundle=str(pki.ca_file)))
    assert answer.status_code == 200, answer.text
    assert proxy.asked == []
    assert [r.signature_valid for r in fresh_amp.requests] == [True]


async def test_http_upstream_goes_through_the_http_proxy_and_proxy_credentials_are_sent_not_logged(
    fresh_amp: AmpStandin,
    aws_env: dict[str, str],
    proxy: Proxy,
    no_proxy_env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="gateway")
    no_proxy_env.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://egress:s3cret-pw@"))
    no_proxy_env.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # for https URLs only: unused here
    answer = await _query(_settings(fresh_amp, fresh_amp.workspace_url("ws-test1")))
    assert answer.status_code == 200, answer.text
    (asked,) = proxy.asked
    assert (asked.method, asked.target) == ("POST", f"{fresh_amp.url}/workspaces/ws-test1/api/v1/query")
    assert asked.headers["proxy-authorization"] == "Basic " + base64.b64encode(b"egress:s3cret-pw").decode()
    assert [r.signature_valid for r in fresh_amp.requests] == [True]
    assert "through the proxy http://127.0.0.1" in caplog.text
    assert "s3cret-pw" not in caplog.text


async def test_an_unreachable_proxy_is_an_unreachable_upstream(
    fresh_amp: AmpStandin, aws_env: dict[str, str], no_proxy_env: pytest.MonkeyPatch
) -> None:
    no_proxy_env.setenv("HTTP_PROXY", "127.0.0.1:9")  # no scheme: http://, as curl takes it
    answer = await _query(_settings(fresh_amp, fresh_amp.workspace_url("ws-test1"), retries=0))
    assert answer.status_code == 503
    assert "unreachable" in answer.json()["error"]
    assert fresh_amp.requests == []


@pytest.mark.parametrize(
    ("url", "env", "expected"),
    [
        (
            "https://aps-workspaces.us-east-1.amazonaws.com/x",
            {"HTTPS_PROXY": "http://p:3128"},
            "http://p:3128",
        ),
        (
            "https://a.example/x",
            {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:1"},
            "http://lower:1",
        ),
        ("https://a.example/x", {"HTTP_PROXY": "http://p:1"}, None),  # http's proxy is for http URLs
        ("http://a.example/x", {"HTTP_PROXY": "p:3128"}, "http://p:3128"),
        ("https://a.example/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None),
        ("https://a.example/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "xample"}, "http://p:1"),
        ("https://a.example/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example"}, None),  # a domain
        ("https://a.example/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "a.example"}, None),
        ("https://b.a.example/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".a.example"}, None),
        ("https://b.a.example/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*.a.example"}, None),
        ("https://ba.example/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "a.example"}, "http://p:1"),
        ("https://a.example/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "a.example:443"}, None),
        (
            "https://a.example:8443/x",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "a.example:443"},
            "http://p:1",
        ),
        ("https://10.1.2.3/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, None),
        ("https://11.1.2.3/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, "http://p:1"),
        ("https://[fd00::1]/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "fd00::/8"}, None),
        ("https://[fd00::1]:8443/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "[fd00::1]:8443"}, None),
        ("https://A.Example/x", {"HTTPS_PROXY": "http://p:1", "no_proxy": "a.EXAMPLE"}, None),
    ],
)
def test_which_proxy_an_upstream_url_takes(url: str, env: dict[str, str], expected: str | None) -> None:
    assert proxy_for(url, env) == expected


# ---------------------------------------------------------------- the STS hop (botocore's own)


async def _assume(sts_url: str) -> None:
    source = CredentialSource(AwsSettings(sts_region=AMP_REGION, sts_endpoint=sts_url))
    await source.get(Workspace(id="ws-test1", url="http://unused", region=AMP_REGION, role_arn=ROLE_ARN))


async def test_sts_calls_go_through_the_environments_proxy(
    fresh_sts: StsStandin, aws_env: dict[str, str], proxy: Proxy, no_proxy_env: pytest.MonkeyPatch
) -> None:
    no_proxy_env.setenv("HTTP_PROXY", proxy.url)
    await _assume(fresh_sts.url)
    assert [a.method for a in proxy.asked] == ["POST"]
    assert proxy.asked[0].target.startswith(fresh_sts.url)
    assert len(fresh_sts.calls_for("AssumeRole")) == 1


async def test_sts_over_tls_is_verified_with_aws_ca_bundle(
    fresh_sts: StsStandin,
    aws_env: dict[str, str],
    sts_tls: TlsFront,
    pki: Pki,
    no_proxy_env: pytest.MonkeyPatch,
) -> None:
    url = f"https://localhost:{sts_tls.port}"
    with pytest.raises(CredentialError, match="SSL"):
        await _assume(url)  # the system's store does not know the test CA
    no_proxy_env.setenv("AWS_CA_BUNDLE", str(pki.ca_file))
    await _assume(url)
    assert len(fresh_sts.calls_for("AssumeRole")) == 1
