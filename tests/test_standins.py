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
from urllib.parse import quote, urlencode

import botocore.auth
import botocore.session
import httpx
import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st
from support.amp_standin import ERROR_THRESHOLD, WARNING_THRESHOLD, AmpStandin, meter, stats_span
from support.grafana_replay import (
    Panel,
    Traffic,
    Viewer,
    by_dashboard,
    by_panel,
    by_user,
    charged_by,
    go_float,
    grafana_form,
    replay_async,
)
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


# -- AMP stand-in: metering QueryMetrics ------------------------------------------------------------

RATE = 'sum by (instance) (rate(demo_cpu_usage_seconds_total{mode="user"}[1m]))'
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _range_form(prometheus: PrometheusServer, query: str = RATE, minutes: int = 30) -> dict[str, str]:
    end = prometheus.data_end - 600
    return {"query": query, "start": str(end - minutes * 60), "end": str(end), "step": "15"}


def _post(
    http: httpx.Client,
    amp: AmpStandin,
    endpoint: str,
    form: Mapping[str, str],
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    url = f"{amp.workspace_url('ws-test1')}/api/v1/{endpoint}"
    request = sign(
        "POST", url, body=urlencode(form).encode(), headers={**FORM, **(headers or {})}, **_keys(amp)
    )
    return send(http, request)


def _direct(
    http: httpx.Client,
    prometheus: PrometheusServer,
    endpoint: str,
    form: Mapping[str, str],
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    return http.post(f"{prometheus.url}/api/v1/{endpoint}", data=dict(form), headers=dict(headers or {}))


def _prometheus_samples(
    http: httpx.Client, prometheus: PrometheusServer, endpoint: str, form: Mapping[str, str]
) -> int:
    """totalQueryableSamples as Prometheus itself reports it."""
    answer = orjson.loads(_direct(http, prometheus, endpoint, {**form, "stats": "all"}).content)
    return int(answer["data"]["stats"]["samples"]["totalQueryableSamples"])


def test_samples_are_prometheus_own_stats(
    http: httpx.Client, prometheus: PrometheusServer, fresh_amp: AmpStandin
) -> None:
    at = str(prometheus.data_end - 600)
    cases = [
        ("query_range", _range_form(prometheus)),
        ("query_range", _range_form(prometheus, "demo_api_request_duration_seconds_bucket", 10)),
        ("query", {"query": "demo_api_request_duration_seconds_bucket", "time": at}),
        ("query", {"query": "rate(demo_cpu_usage_seconds_total[5m])", "time": at}),
    ]
    expected = [_prometheus_samples(http, prometheus, endpoint, form) for endpoint, form in cases]
    assert all(samples > 0 for samples in expected) and len(set(expected)) == len(expected)
    for endpoint, form in cases:
        assert _post(http, fresh_amp, endpoint, form).status_code == 200
    # and a GET, parameters in the URL
    url = query_url(fresh_amp, "demo_num_cpus", prometheus.data_end - 600)
    assert send(http, sign("GET", url, **_keys(fresh_amp))).status_code == 200
    expected.append(_prometheus_samples(http, prometheus, "query", {"query": "demo_num_cpus", "time": at}))

    assert [r.samples for r in fresh_amp.requests] == expected
    assert all(r.charged and not r.warned for r in fresh_amp.requests)
    assert fresh_amp.charged_samples() == sum(expected)
    assert fresh_amp.charged_samples(path_contains="query_range") == sum(expected[:2])
    assert fresh_amp.charged_samples(path_contains="ws-test2") == 0


def test_other_apis_and_failed_queries_are_not_charged(
    http: httpx.Client, prometheus: PrometheusServer, fresh_amp: AmpStandin
) -> None:
    labels = send(
        http, sign("GET", f"{fresh_amp.workspace_url('ws-test1')}/api/v1/labels", **_keys(fresh_amp))
    )
    assert labels.status_code == 200
    bad = _post(http, fresh_amp, "query", {"query": "rate(demo_num_cpus)"})
    assert bad.status_code == 400 and orjson.loads(bad.content)["errorType"] == "bad_data"
    fresh_amp.inject(503, path_contains="query_range")
    assert _post(http, fresh_amp, "query_range", _range_form(prometheus)).status_code == 503
    assert [(r.samples, r.charged) for r in fresh_amp.requests] == [(None, False)] * 3
    assert fresh_amp.charged_samples() == 0


@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate"])
@pytest.mark.parametrize("endpoint", ["query", "query_range"])
def test_stats_are_removed_byte_for_byte(
    http: httpx.Client, prometheus: PrometheusServer, fresh_amp: AmpStandin, encoding: str, endpoint: str
) -> None:
    form = _range_form(prometheus, "demo_api_request_duration_seconds_bucket", 60)
    if endpoint == "query":
        form = {"query": form["query"], "time": form["end"]}
    accept = {"Accept-Encoding": encoding}
    through = _post(http, fresh_amp, endpoint, form, accept)
    direct = _direct(http, prometheus, endpoint, form, accept)
    assert through.status_code == direct.status_code == 200
    assert through.headers.get("content-encoding") == direct.headers.get("content-encoding")
    assert len(direct.content) > 50_000 and b'"stats"' not in direct.content
    assert through.content == direct.content
    [record] = fresh_amp.requests
    assert record.samples == _prometheus_samples(http, prometheus, endpoint, form)


def test_stats_the_caller_asked_for_are_kept(
    http: httpx.Client, prometheus: PrometheusServer, fresh_amp: AmpStandin
) -> None:
    form = _range_form(prometheus)
    for asked in ("all", "true"):
        through = _post(http, fresh_amp, "query_range", {**form, "stats": asked})
        direct = _direct(http, prometheus, "query_range", {**form, "stats": asked})
        samples = orjson.loads(through.content)["data"]["stats"]["samples"]["totalQueryableSamples"]
        assert samples == fresh_amp.requests[-1].samples > 0
        # the same answer but for the timings, which differ from run to run
        (start, end), (direct_start, direct_end) = stats_span(through.content), stats_span(direct.content)
        assert through.content[:start] == direct.content[:direct_start]
        assert through.content[end:] == direct.content[direct_end:]
    # an empty stats asks for none (Prometheus: "if the parameter is not empty")
    empty = _post(http, fresh_amp, "query_range", {**form, "stats": ""})
    assert empty.content == _direct(http, prometheus, "query_range", form).content
    assert fresh_amp.requests[-1].samples == samples


def test_error_threshold_refuses_and_charges_nothing(
    http: httpx.Client, prometheus: PrometheusServer, fresh_amp: AmpStandin
) -> None:
    form = _range_form(prometheus)
    samples = _prometheus_samples(http, prometheus, "query_range", form)
    refused = _post(http, fresh_amp, "query_range", {**form, ERROR_THRESHOLD: str(samples - 1)})
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/json"
    assert orjson.loads(refused.content) == {
        "status": "error",
        "errorType": "execution",
        "error": f"query exceeded {ERROR_THRESHOLD} ({samples - 1})",
    }
    record = fresh_amp.requests[-1]
    assert (record.samples, record.charged, record.error_threshold) == (samples, False, samples - 1)
    assert fresh_amp.charged_samples() == 0

    # "exceed": exactly the threshold passes, and is charged
    allowed = _post(http, fresh_amp, "query_range", {**form, ERROR_THRESHOLD: str(samples)})
    assert allowed.content == _direct(http, prometheus, "query_range", form).content
    assert fresh_amp.charged_samples() == samples
    # a threshold in the URL of a POST counts as well
    url = f"{fresh_amp.workspace_url('ws-test1')}/api/v1/query_range?{ERROR_THRESHOLD}=1"
    request = sign("POST", url, body=urlencode(form).encode(), headers=FORM, **_keys(fresh_amp))
    assert send(http, request).status_code == 422
    assert fresh_amp.requests[-1].error_threshold == 1 and fresh_amp.charged_samples() == samples


def test_warning_threshold_warns(
    http: httpx.Client, prometheus: PrometheusServer, fresh_amp: AmpStandin
) -> None:
    form = _range_form(prometheus)
    samples = _prometheus_samples(http, prometheus, "query_range", form)
    plain = _direct(http, prometheus, "query_range", form).content
    warning = f"query processed more samples than {WARNING_THRESHOLD} ({samples})"
    warned = _post(http, fresh_amp, "query_range", {**form, WARNING_THRESHOLD: str(samples)})
    assert warned.status_code == 200
    assert warned.content == plain[:-1] + b',"warnings":' + orjson.dumps([warning]) + b"}"
    record = fresh_amp.requests[-1]
    assert record.warned and record.charged and record.warning_threshold == samples

    quiet = _post(http, fresh_amp, "query_range", {**form, WARNING_THRESHOLD: str(samples + 1)})
    assert quiet.content == plain and not fresh_amp.requests[-1].warned
    both = {**form, WARNING_THRESHOLD: "1", ERROR_THRESHOLD: str(samples)}
    assert orjson.loads(_post(http, fresh_amp, "query_range", both).content)["warnings"] == [
        f"query processed more samples than {WARNING_THRESHOLD} (1)"
    ]
    assert fresh_amp.charged_samples() == 3 * samples


@pytest.mark.parametrize("value", ["", "-1", "1e6", "ten", "\u0661"])
def test_malformed_threshold_is_bad_data(
    http: httpx.Client, prometheus: PrometheusServer, fresh_amp: AmpStandin, value: str
) -> None:
    response = _post(http, fresh_amp, "query", {"query": "demo_num_cpus", ERROR_THRESHOLD: value})
    assert response.status_code == 400
    body = orjson.loads(response.content)
    assert (body["status"], body["errorType"]) == ("error", "bad_data")
    assert ERROR_THRESHOLD in body["error"]
    assert not fresh_amp.requests[-1].forwarded


_TEXT = st.text(st.sampled_from('ab,:{}[]"\\ \n\u00e9stw'), max_size=12)
_SERIES = st.lists(
    st.fixed_dictionaries(
        {
            "metric": st.dictionaries(_TEXT, _TEXT, max_size=3),
            "value": st.tuples(st.integers(0, 10**10), _TEXT),
        }
    ),
    max_size=4,
)


@given(
    series=_SERIES,
    samples=st.integers(0, 10**12),
    warnings=st.lists(_TEXT, max_size=2),
    keep_stats=st.booleans(),
    warning=st.none() | st.integers(0, 10**12),
)
def test_meter_edits_only_stats_and_warnings(
    series: list[dict[str, Any]], samples: int, warnings: list[str], keep_stats: bool, warning: int | None
) -> None:
    data: dict[str, Any] = {"resultType": "vector", "result": series}
    stats = {
        "timings": {"evalTotalTime": 0.5},
        "samples": {"totalQueryableSamples": samples, "peakSamples": 1},
    }
    envelope: dict[str, Any] = {"status": "success", "data": {**data, "stats": stats}}
    if warnings:
        envelope["warnings"] = warnings
    metering = meter(orjson.dumps(envelope), keep_stats=keep_stats, warning=warning, error=None)

    expected = dict(envelope) if keep_stats else {**envelope, "data": data}
    warned = warning is not None and samples >= warning
    if warned:
        expected["warnings"] = [
            f"query processed more samples than {WARNING_THRESHOLD} ({warning})",
            *warnings,
        ]
    assert (metering.samples, metering.warned) == (samples, warned)
    assert metering.answer == orjson.dumps(expected)
    refused = meter(orjson.dumps(envelope), keep_stats=keep_stats, warning=warning, error=samples - 1)
    assert refused.answer is None and refused.samples == samples


# -- Grafana-shaped replay --------------------------------------------------------------------------


def test_grafana_requests_have_grafanas_shape() -> None:
    assert [go_float(v) for v in (15, 0.5, 1700000000, 1700000000.25, 1e-3)] == [
        "15",
        "0.5",
        "1700000000",
        "1700000000.25",
        "0.001",
    ]
    assert grafana_form("up", 1700000007.5, 1700003599.9, 15) == (
        ("end", "1700003595"),
        ("query", "up"),
        ("start", "1699999995"),
        ("step", "15"),
    )
    panels = [Panel("d1", "Dash", 2, "CPU", "up"), Panel("d1", "Dash", 3, "Mem", "up")]
    viewers = [Viewer("ann", 1, "tok-a", "team-a"), Viewer("bob", 2)]
    traffic = Traffic(viewers, panels, 2, 1800000000, 1800003600, 60, refresh_every=60)
    planned = traffic.plan()
    assert traffic.plan() == planned
    assert [(p.refresh, p.viewer.user, p.panel.panel_id) for p in planned] == [
        (r, user, panel) for r in (0, 1) for user in ("ann", "bob") for panel in (2, 3)
    ]
    assert dict(planned[-1].form)["start"] == "1800000060"
    headers = dict(planned[0].headers)
    assert headers == {
        "User-Agent": b"Grafana/11.6.0",
        "Content-Type": b"application/x-www-form-urlencoded",
        "X-Dashboard-Uid": b"d1",
        "X-Dashboard-Title": b"Dash",
        "X-Panel-Id": b"2",
        "X-Panel-Title": b"CPU",
        "X-Grafana-Org-Id": b"1",
        "X-Grafana-User": b"ann",
        "Authorization": b"Bearer tok-a",
    }
    assert "Authorization" not in dict(planned[2].headers)
    assert planned[0].body == b"end=1800003600&query=up&start=1800000000&step=60"


async def test_replay_totals_are_what_prometheus_counted(
    gateway: httpx.AsyncClient, fresh_amp: AmpStandin, prometheus: PrometheusServer, http: httpx.Client
) -> None:
    panels = [
        Panel("cpu-dash", "CPU", 1, "User CPU", RATE),
        Panel("cpu-dash", "CPU", 2, "CPUs", "sum(demo_num_cpus)"),
        Panel("api-dash", "API", 1, "Buckets", "sum by (le) (demo_api_request_duration_seconds_bucket)"),
    ]
    viewers = [Viewer("ann"), Viewer("bob", org=2)]
    end = prometheus.data_end - 1200
    traffic = Traffic(viewers, panels, 2, end - 1800, end, 30, refresh_every=300)
    sent = await replay_async(gateway, "http://gateway", traffic, fresh_amp)
    assert len(sent) == 2 * 2 * 3 and {s.status for s in sent} == {200}
    counted = {}
    for one in sent:
        [upstream] = one.upstream
        assert upstream.charged and upstream.asks(one.panel.query)
        form = dict(one.form)
        counted[id(one)] = _prometheus_samples(http, prometheus, "query_range", form)
        assert one.charged_samples == counted[id(one)] > 0
        assert (
            orjson.loads(one.content)["data"]
            == orjson.loads(_direct(http, prometheus, "query_range", form).content)["data"]
        )
    for key in (by_dashboard, by_panel, by_user):
        expected: dict[str, int] = {}
        for one in sent:
            expected[key(one)] = expected.get(key(one), 0) + counted[id(one)]
        assert charged_by(sent, key) == expected
    assert set(charged_by(sent, by_panel)) == {"cpu-dash/1", "cpu-dash/2", "api-dash/1"}
    assert sum(charged_by(sent, by_dashboard).values()) == fresh_amp.charged_samples()
