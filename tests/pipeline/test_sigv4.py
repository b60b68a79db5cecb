"""The gateway's SigV4 signer gives botocore's signature for every request it could sign; the
AMP stand-in (tests/support/sigv4_verify.py) checks the result the way AWS does in the other
pipeline and API tests."""

from __future__ import annotations

from datetime import UTC, datetime

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pipeline.sigv4 import encode_query, sign

texts = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)
hosts = st.sampled_from(
    [
        "https://aps-workspaces.us-east-1.amazonaws.com",
        "https://aps-workspaces.eu-west-1.amazonaws.com:443",
        "http://127.0.0.1:9090",
        "http://localhost:80",
        "https://Mixed.Case.Example:8443",
        "http://[::1]:9090",
    ]
)
paths = st.sampled_from(
    [
        "/workspaces/ws-1/api/v1/query_range",
        "/workspaces/ws-1/api/v1/label/job/values",
        "/api/v1/series",
        "/a//b/./c/../d/",
        "",
    ]
)


def _botocore(
    credentials: ReadOnlyCredentials, region: str, method: str, url: str, body: bytes, now: datetime
) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=body, headers={})
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda: now.replace(tzinfo=None)  # type: ignore[attr-defined]
    try:
        SigV4Auth(credentials, "aps", region).add_auth(request)
    finally:
        botocore.auth.get_current_datetime = original  # type: ignore[attr-defined]
    return dict(request.headers.items())


@settings(max_examples=300, deadline=None)
@given(
    host=hosts,
    path=paths,
    params=st.lists(st.tuples(texts, texts), max_size=5),
    method=st.sampled_from(["GET", "POST"]),
    token=st.one_of(st.none(), st.text("ABCDEFabcdef0123456789/+=", min_size=1, max_size=40)),
    region=st.sampled_from(["us-east-1", "eu-west-2", "ap-southeast-2"]),
    seconds=st.integers(1_600_000_000, 2_100_000_000),
)
def test_signature_equals_botocores(host, path, params, method, token, region, seconds) -> None:
    credentials = ReadOnlyCredentials(
        "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", token
    )
    query = encode_query(tuple(params))
    url, body = (
        (f"{host}{path}?{query}" if query else f"{host}{path}", b"")
        if method == "GET"
        else (host + path, query.encode())
    )
    now = datetime.fromtimestamp(seconds, UTC)
    assert sign(credentials, region, method, url, body, now) == _botocore(
        credentials, region, method, url, body, now
    )


@pytest.mark.parametrize("day", ["20261121", "20261122"])
def test_the_signing_key_follows_the_day(day: str) -> None:
    credentials = ReadOnlyCredentials("AKIDEXAMPLE", "secret", None)
    now = datetime.strptime(day + "T235959Z", "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    url = "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1/api/v1/query"
    assert sign(credentials, "us-east-1", "POST", url, b"query=up", now) == _botocore(
        credentials, "us-east-1", "POST", url, b"query=up", now
    )


def test_rotated_credentials_sign_with_their_own_key() -> None:
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    url = "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1/api/v1/query"
    for i in range(40):  # more than the signing-key cache holds
        credentials = ReadOnlyCredentials(f"ASIA{i:016d}", f"secret-{i}", f"token-{i}")
        assert sign(credentials, "us-east-1", "POST", url, b"query=up", now) == _botocore(
            credentials, "us-east-1", "POST", url, b"query=up", now
        )
