"""The test infrastructure itself: backfilled data, and stand-ins that really reject."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import botocore.auth
import botocore.session
import httpx
import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from support.amp_standin import AmpStandin
from support.promdata import LE_STRINGS, DataWindow, generate_openmetrics
from support.prometheus import PrometheusServer
from support.sigv4_verify import SIGNATURE_MISMATCH, canonical_query, canonical_uri
from support.sts_standin import StsStandin
from support.testenv import (
    EXTERNAL_ID,
    EXTERNAL_ROLE_ARN,
    ROLE_ARN,
    WEB_IDENTITY_TOKEN,
    WEB_ROLE_ARN,
)

DATA_MD = Path(__file__).resolve().parents[2] / "shared" / "promql-compliance" / "DATA.md"


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client


def sign(
    method: str,
    url: str,
    *,
    key: str,
    secret: str,
    token: str | None = None,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    region: str = "us-east-1",
    service: str = "aps",
) -> AWSRequest:
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    SigV4Auth(Credentials(key, secret, token), service, region).add_auth(request)
    return request


def send(http: httpx.Client, request: AWSRequest, **changes: Any) -> httpx.Response:
    """Send a signed request, optionally replacing url/body/headers after signing."""
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    headers.update(changes.get("headers", {}))
    return http.request(
        request.method,
        changes.get("url", request.url),
        headers=headers,
        content=changes.get("body", request.body or b""),
    )


def query_url(amp: AmpStandin, promql: str, at: float, workspace: str = "ws-test1") -> str:
    return f"{amp.workspace_url(workspace)}/api/v1/query?query={quote(promql, safe='')}&time={at}"


def assert_aws_error(response: httpx.Response, status: int, errortype: str, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["x-amzn-errortype"] == errortype
    uuid.UUID(response.headers["x-amzn-requestid"])
    assert response.headers["content-type"] == "application/json"
    assert orjson.loads(response.content)["message"].startswith(message), response.text


def result(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = orjson.loads(response.content)
    assert body["status"] == "success"
    return list(body["data"]["result"])


def prom_query(http: httpx.Client, prometheus: PrometheusServer, promql: str) -> list[Any]:
    at = prometheus.data_end - 60
    response = http.get(f"{prometheus.url}/api/v1/query", params={"query": promql, "time": at})
    return result(response)


# -- backfilled data ------------------------------------------------------------------------


def test_data_window_reaches_now(prometheus: PrometheusServer) -> None:
    # The last sample is the last interval boundary at or before the moment it was started.
    assert (
        prometheus.asked_end - prometheus.interval
        < prometheus.data_end
        <= prometheus.asked_end
        <= time.time()
    )
    assert prometheus.data_end - prometheus.data_start == 3 * 3600
    assert prometheus.data_end % prometheus.interval == 0


def test_series_counts(http: httpx.Client, prometheus: PrometheusServer) -> None:
    expectations = {
        "count(demo_memory_usage_bytes)": "12",
        "count(demo_cpu_usage_seconds_total)": "9",
        "count(demo_num_cpus == 4)": "3",
        "count(demo_api_request_duration_seconds_bucket)": str(3 * 9 * 26),
        'count(http_requests_total{job="recommender"})': "12",
        'count(node_network_transmit_bytes_total{job="node",device="eth0"})': "2",
        "count(demo_batch_last_success_timestamp_seconds)": "3",
        "sum(resets(demo_cpu_usage_seconds_total[3h]))": "0",
    }
    for promql, expected in expectations.items():
        assert prom_query(http, prometheus, promql)[0]["value"][1] == expected, promql


def test_histogram_le_strings_match_data_md(http: httpx.Client, prometheus: PrometheusServer) -> None:
    series = prom_query(http, prometheus, "count by (le) (demo_api_request_duration_seconds_bucket)")
    les = {s["metric"]["le"] for s in series}
    assert les == set(LE_STRINGS)
    if DATA_MD.exists():
        documented = re.findall(r"^([0-9.]+(?: [0-9.]+)+(?: \+Inf)?)$", DATA_MD.read_text(), re.M)
        assert set(" ".join(documented).split()) == les


def test_intermittent_metric_only_in_even_minutes() -> None:
    text = generate_openmetrics(DataWindow(start=1_700_000_000, end=1_700_000_600, interval=15))
    stamps = [int(line.split()[-1]) for line in text.splitlines() if line.startswith("demo_int")]
    assert stamps and all((t // 60) % 2 == 0 for t in stamps)
    assert text.endswith("# EOF\n")
    again = generate_openmetrics(DataWindow(start=1_700_000_000, end=1_700_000_600, interval=15))
    assert again == text


# -- AMP stand-in: accepted requests ----------------------------------------------------------


def test_signed_get_returns_prometheus_answer(
    http: httpx.Client, prometheus: PrometheusServer, fresh_amp: AmpStandin
) -> None:
    amp = fresh_amp
    at = prometheus.data_end
    request = sign("GET", query_url(amp, "count(demo_memory_usage_bytes)", at), **_keys(amp))
    response = send(http, request)
    assert result(response)[0]["value"] == [at, "12"]
    direct = http.get(
        f"{prometheus.url}/api/v1/query",
        params={"query": "count(demo_memory_usage_bytes)", "time": at},
    )
    assert response.content == direct.content
    uuid.UUID(response.headers["x-amzn-requestid"])
    [record] = amp.requests
    assert record.signature_valid and record.forwarded and record.workspace == "ws-test1"
    assert record.raw_path == b"/workspaces/ws-test1/api/v1/query"
    assert record.raw_query == f"query=count%28demo_memory_usage_bytes%29&time={at}".encode()


def test_signed_post_form_and_encoded_params(
    http: httpx.Client, prometheus: PrometheusServer, fresh_amp: AmpStandin
) -> None:
    amp = fresh_amp
    promql = 'sum by (type) (demo_memory_usage_bytes{job="demo"})'
    body = f"query={quote(promql, safe='')}"
    body += f"&time={prometheus.data_end}"
    request = sign(
        "POST",
        f"{amp.workspace_url('ws-test2')}/api/v1/query",
        body=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        **_keys(amp),
    )
    assert len(result(send(http, request))) == 4
    assert amp.requests[-1].body == body.encode()
    label_url = f"{amp.workspace_url('ws-test1')}/api/v1/label/type/values"
    values = orjson.loads(send(http, sign("GET", label_url, **_keys(amp))).content)["data"]
    assert values == ["buffers", "cached", "free", "used"]


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_large_range_answer_is_byte_identical(
    http: httpx.Client, prometheus: PrometheusServer, fresh_amp: AmpStandin, encoding: str
) -> None:
    params = (
        f"query=demo_api_request_duration_seconds_bucket&start={prometheus.data_end - 3600}"
        f"&end={prometheus.data_end}&step=15"
    )
    direct = httpx.get(f"{prometheus.url}/api/v1/query_range?{params}", headers={"Accept-Encoding": encoding})
    url = f"{fresh_amp.workspace_url('ws-test1')}/api/v1/query_range?{params}"
    request = sign("GET", url, headers={"Accept-Encoding": encoding}, **_keys(fresh_amp))
    response = http.send(http.build_request("GET", url, headers=dict(request.headers.items())), stream=True)
    raw = b"".join(response.iter_raw())
    assert response.status_code == 200
    assert len(raw) > 100_000 or encoding == "gzip"
    assert response.headers.get("content-encoding") == direct.headers.get("content-encoding")
    assert httpx.Response(200, headers=response.headers, content=raw).read() == direct.content


def test_gzip_passes_through(http: httpx.Client, prometheus: PrometheusServer, fresh_amp: AmpStandin) -> None:
    url = query_url(fresh_amp, "demo_num_cpus", prometheus.data_end)
    request = sign("GET", url, headers={"Accept-Encoding": "gzip"}, **_keys(fresh_amp))
    response = send(http, request)
    assert response.headers["content-encoding"] == "gzip"
    assert len(result(response)) == 3


def test_concurrent_keepalive_clients(prometheus: PrometheusServer, fresh_amp: AmpStandin) -> None:
    request = sign("GET", query_url(fresh_amp, "demo_num_cpus", prometheus.data_end), **_keys(fresh_amp))
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}

    async def client() -> list[int]:
        async with httpx.AsyncClient() as c:
            return [(await c.get(request.url, headers=headers)).status_code for _ in range(10)]

    async def run() -> list[list[int]]:
        return await asyncio.gather(*(client() for _ in range(16)))

    statuses = [s for batch in asyncio.run(run()) for s in batch]
    assert statuses == [200] * 160
    assert len(fresh_amp.forwarded) == 160


# -- AMP stand-in: rejected requests ------------------------------------------------------------


def test_missing_authorization(http: httpx.Client, fresh_amp: AmpStandin) -> None:
    response = http.get(query_url(fresh_amp, "up", time.time()))
    assert_aws_error(response, 403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    assert not fresh_amp.requests[-1].signature_valid and not fresh_amp.forwarded


def test_tampered_query_string(
    http: httpx.Client, prometheus: PrometheusServer, fresh_amp: AmpStandin
) -> None:
    url = query_url(fresh_amp, "demo_num_cpus", prometheus.data_end)
    request = sign("GET", url, **_keys(fresh_amp))
    response = send(http, request, url=url.replace("demo_num_cpus", "demo_disk_usage_bytes"))
    assert_aws_error(response, 403, "InvalidSignatureException", SIGNATURE_MISMATCH)
    assert fresh_amp.forwarded == []


def test_plus_for_space_in_signed_query_is_rejected(http: httpx.Client, fresh_amp: AmpStandin) -> None:
    # botocore signs a pre-built query string as-is; AWS decodes '+' to a space and
    # re-encodes it as %20, so the signatures differ (the awscurl#197 class of bug).
    url = f"{fresh_amp.workspace_url('ws-test1')}/api/v1/query?query=sum+(demo_num_cpus)"
    response = send(http, sign("GET", url, **_keys(fresh_amp)))
    assert_aws_error(response, 403, "InvalidSignatureException", SIGNATURE_MISMATCH)
    fixed = url.replace("sum+(demo_num_cpus)", quote("sum (demo_num_cpus)", safe=""))
    assert send(http, sign("GET", fixed, **_keys(fresh_amp))).status_code == 200


def test_tampered_body(http: httpx.Client, fresh_amp: AmpStandin) -> None:
    url = f"{fresh_amp.workspace_url('ws-test1')}/api/v1/query"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    request = sign("POST", url, body=b"query=demo_num_cpus", headers=form, **_keys(fresh_amp))
    response = send(http, request, body=b"query=demo_num_cpus*2")
    assert_aws_error(response, 403, "InvalidSignatureException", SIGNATURE_MISMATCH)


def test_tampered_signed_header(http: httpx.Client, fresh_amp: AmpStandin) -> None:
    url = query_url(fresh_amp, "demo_num_cpus", time.time())
    request = sign("GET", url, headers={"X-Amz-Target": "a"}, **_keys(fresh_amp))
    response = send(http, request, headers={"X-Amz-Target": "b"})
    assert_aws_error(response, 403, "InvalidSignatureException", SIGNATURE_MISMATCH)


def test_wrong_secret(http: httpx.Client, fresh_amp: AmpStandin) -> None:
    url = query_url(fresh_amp, "demo_num_cpus", time.time())
    request = sign("GET", url, key=fresh_amp.access_key, secret="not-the-secret")
    assert_aws_error(send(http, request), 403, "InvalidSignatureException", SIGNATURE_MISMATCH)


def test_unknown_access_key(http: httpx.Client, fresh_amp: AmpStandin) -> None:
    url = query_url(fresh_amp, "demo_num_cpus", time.time())
    request = sign("GET", url, key="AKIAUNKNOWN000000000", secret=fresh_amp.secret_key)
    assert_aws_error(
        send(http, request),
        403,
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )


@pytest.mark.parametrize(
    ("region", "service", "message"),
    [
        ("us-west-2", "aps", "Credential should be scoped to a valid region"),
        ("us-east-1", "execute-api", "Credential should be scoped to correct service: 'aps'"),
    ],
)
def test_wrong_scope(
    http: httpx.Client, fresh_amp: AmpStandin, region: str, service: str, message: str
) -> None:
    url = query_url(fresh_amp, "demo_num_cpus", time.time())
    request = sign("GET", url, region=region, service=service, **_keys(fresh_amp))
    assert_aws_error(send(http, request), 403, "InvalidSignatureException", message)


def test_old_signature_date(
    http: httpx.Client, fresh_amp: AmpStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=6)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: old)
    request = sign("GET", query_url(fresh_amp, "demo_num_cpus", time.time()), **_keys(fresh_amp))
    monkeypatch.undo()
    response = send(http, request)
    assert_aws_error(response, 403, "InvalidSignatureException", "Signature expired: ")
    assert "- 5 min.)" in orjson.loads(response.content)["message"]


def test_temporary_credentials_need_their_token(http: httpx.Client, fresh_amp: AmpStandin) -> None:
    fresh_amp.add_credentials("ASIATEMPORARY0000001", "temp-secret", "token-1", time.time() + 600)
    url = query_url(fresh_amp, "demo_num_cpus", time.time())
    keys = {"key": "ASIATEMPORARY0000001", "secret": "temp-secret"}
    assert send(http, sign("GET", url, token="token-1", **keys)).status_code == 200
    invalid = "The security token included in the request is invalid."
    without = send(http, sign("GET", url, **keys))
    assert_aws_error(without, 403, "UnrecognizedClientException", invalid)
    wrong = send(http, sign("GET", url, token="token-2", **keys))
    assert_aws_error(wrong, 403, "UnrecognizedClientException", invalid)


def test_expired_temporary_credentials(http: httpx.Client, fresh_amp: AmpStandin) -> None:
    fresh_amp.add_credentials("ASIAEXPIRED000000001", "old-secret", "old-token", time.time() - 1)
    url = query_url(fresh_amp, "demo_num_cpus", time.time())
    request = sign("GET", url, key="ASIAEXPIRED000000001", secret="old-secret", token="old-token")
    assert_aws_error(
        send(http, request),
        403,
        "ExpiredTokenException",
        "The security token included in the request is expired",
    )


def test_unknown_workspace(http: httpx.Client, fresh_amp: AmpStandin) -> None:
    url = query_url(fresh_amp, "demo_num_cpus", time.time(), workspace="ws-nope")
    response = send(http, sign("GET", url, **_keys(fresh_amp)))
    assert_aws_error(response, 404, "ResourceNotFoundException", "Workspace not found")


def test_buildinfo_is_not_found_like_amp(http: httpx.Client, fresh_amp: AmpStandin) -> None:
    url = f"{fresh_amp.workspace_url('ws-test1')}/api/v1/status/buildinfo"
    assert send(http, sign("GET", url, **_keys(fresh_amp))).status_code == 404


# -- fault injection ------------------------------------------------------------------------------


def test_injected_throttling_then_cleared(
    http: httpx.Client, prometheus: PrometheusServer, fresh_amp: AmpStandin
) -> None:
    url = query_url(fresh_amp, "demo_num_cpus", prometheus.data_end)
    fresh_amp.inject(status=429, count=2, errortype="ThrottlingException", message="Rate exceeded")
    for _ in range(2):
        response = send(http, sign("GET", url, **_keys(fresh_amp)))
        assert_aws_error(response, 429, "ThrottlingException", "Rate exceeded")
    assert send(http, sign("GET", url, **_keys(fresh_amp))).status_code == 200
    assert [r.status for r in fresh_amp.requests] == [429, 429, 200]
    assert len(fresh_amp.forwarded) == 1

    fresh_amp.inject(status=503, count=None)
    assert send(http, sign("GET", url, **_keys(fresh_amp))).status_code == 503
    fresh_amp.reset()
    assert send(http, sign("GET", url, **_keys(fresh_amp))).status_code == 200
    assert len(fresh_amp.requests) == 1


def test_injected_delay(http: httpx.Client, prometheus: PrometheusServer, fresh_amp: AmpStandin) -> None:
    url = query_url(fresh_amp, "demo_num_cpus", prometheus.data_end)
    fresh_amp.inject_delay(0.3, count=1)
    started = time.monotonic()
    assert send(http, sign("GET", url, **_keys(fresh_amp))).status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert send(http, sign("GET", url, **_keys(fresh_amp))).status_code == 200
    assert time.monotonic() - started < 0.3


def test_injected_custom_body(http: httpx.Client, fresh_amp: AmpStandin) -> None:
    envelope = b'{"status":"error","errorType":"execution","error":"query hit the limit"}'
    fresh_amp.inject(status=422, body=envelope, path_contains="query_range")
    url = f"{fresh_amp.workspace_url('ws-test1')}/api/v1/query_range?query=up&start=1&end=2&step=1"
    response = send(http, sign("GET", url, **_keys(fresh_amp)))
    assert response.status_code == 422 and response.content == envelope


# -- STS stand-in -----------------------------------------------------------------------------


def _sts_client(sts: StsStandin, amp: AmpStandin) -> Any:
    return botocore.session.Session().create_client(
        "sts",
        endpoint_url=sts.url,
        region_name="us-east-1",
        aws_access_key_id=amp.access_key,
        aws_secret_access_key=amp.secret_key,
    )


def test_assume_role_credentials_work_on_amp(
    http: httpx.Client, prometheus: PrometheusServer, fresh_amp: AmpStandin, fresh_sts: StsStandin
) -> None:
    fresh_sts.issued_duration = 900
    answer = _sts_client(fresh_sts, fresh_amp).assume_role(
        RoleArn=ROLE_ARN, RoleSessionName="gateway", DurationSeconds=3600
    )
    creds = answer["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    remaining = creds["Expiration"].timestamp() - time.time()
    assert 880 < remaining <= 900
    assert answer["AssumedRoleUser"]["Arn"].endswith(":assumed-role/amp-query/gateway")
    [call] = fresh_sts.calls
    assert (call.action, call.role_arn, call.session_name) == ("AssumeRole", ROLE_ARN, "gateway")
    assert call.caller_access_key == fresh_amp.access_key and call.duration_seconds == 3600

    url = query_url(fresh_amp, "count(demo_num_cpus)", prometheus.data_end)
    keys = {"key": creds["AccessKeyId"], "secret": creds["SecretAccessKey"]}
    ok = send(http, sign("GET", url, token=creds["SessionToken"], **keys))
    assert result(ok)[0]["value"][1] == "3"
    no_token = send(http, sign("GET", url, **keys))
    assert no_token.status_code == 403


def test_external_id_is_enforced(fresh_amp: AmpStandin, fresh_sts: StsStandin) -> None:
    client = _sts_client(fresh_sts, fresh_amp)
    for extra in ({}, {"ExternalId": "wrong"}):
        with pytest.raises(ClientError) as info:
            client.assume_role(RoleArn=EXTERNAL_ROLE_ARN, RoleSessionName="sess", **extra)
        assert info.value.response["Error"]["Code"] == "AccessDenied"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    client.assume_role(RoleArn=EXTERNAL_ROLE_ARN, RoleSessionName="sess", ExternalId=EXTERNAL_ID)
    assert [c.external_id for c in fresh_sts.calls] == [None, "wrong", EXTERNAL_ID]
    assert [c.ok for c in fresh_sts.calls] == [False, False, True]


def test_sts_rejects_bad_signature(fresh_amp: AmpStandin, fresh_sts: StsStandin) -> None:
    client = botocore.session.Session().create_client(
        "sts",
        endpoint_url=fresh_sts.url,
        region_name="us-east-1",
        aws_access_key_id=fresh_amp.access_key,
        aws_secret_access_key="wrong-secret",
    )
    with pytest.raises(ClientError) as info:
        client.assume_role(RoleArn=ROLE_ARN, RoleSessionName="sess")
    assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    [call] = fresh_sts.calls
    assert call.error_code == "SignatureDoesNotMatch" and call.issued_access_key is None


def test_sts_endpoint_from_environment(
    aws_env: dict[str, str], fresh_sts: StsStandin, tmp_path: Path
) -> None:
    client = botocore.session.Session().create_client("sts")
    identity = client.get_caller_identity()
    assert identity["UserId"] == aws_env["AWS_ACCESS_KEY_ID"]
    web = client.assume_role_with_web_identity(
        RoleArn=WEB_ROLE_ARN, RoleSessionName="irsa", WebIdentityToken=WEB_IDENTITY_TOKEN
    )
    assert web["Credentials"]["SessionToken"]
    assert [c.action for c in fresh_sts.calls] == ["GetCallerIdentity", "AssumeRoleWithWebIdentity"]
    assert fresh_sts.calls[-1].caller_access_key is None  # unsigned, as in AWS


def _keys(amp: AmpStandin) -> dict[str, str]:
    return {"key": amp.access_key, "secret": amp.secret_key}


def test_canonical_forms_follow_the_spec() -> None:
    assert canonical_uri(b"/workspaces/ws-1/api/v1/label/a%2Cb/values") == (
        "/workspaces/ws-1/api/v1/label/a%252Cb/values"
    )
    assert canonical_uri(b"/a/./b//c/../d/") == "/a/b/d/"
    assert canonical_query(b"b=2&a=%7Bx%7D&a=1&c") == "a=%7Bx%7D&a=1&b=2&c="
    assert canonical_query(b"q=a+b~c*") == "q=a%20b~c%2A"


def test_botocore_assume_role_profile_refreshes_through_standin(
    aws_env: dict[str, str], fresh_sts: StsStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    config.write_text(
        "[profile amp]\n"
        f"role_arn = {EXTERNAL_ROLE_ARN}\n"
        f"external_id = {EXTERNAL_ID}\n"
        "role_session_name = gateway\n"
        "credential_source = Environment\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    fresh_sts.issued_duration = 120  # under botocore's 10 min mandatory refresh window
    credentials = botocore.session.Session(profile="amp").get_credentials()
    first = credentials.get_frozen_credentials()
    second = credentials.get_frozen_credentials()
    assert first.access_key.startswith("ASIA") and first.token
    assert second.access_key != first.access_key
    calls = fresh_sts.calls_for("AssumeRole")
    assert [(c.role_arn, c.external_id, c.session_name) for c in calls] == [
        (EXTERNAL_ROLE_ARN, EXTERNAL_ID, "gateway")
    ] * 2
