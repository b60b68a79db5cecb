"""AWS Signature Version 4 for AMP (service `aps`), with botocore's signer.

Only `host`, `x-amz-date` and `x-amz-security-token` are signed: every other header may be
changed by something between us and AWS, and a signed header that changes breaks the
signature (Trickster's `forwarded` bug). The query string is encoded strictly (RFC 3986) by
`encode_query` before signing, and the exact body bytes are hashed.
"""

from __future__ import annotations

from urllib.parse import quote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

SERVICE = "aps"


def encode_query(params: tuple[tuple[str, str], ...]) -> str:
    """RFC 3986 encoding, as AWS canonicalises it: only A-Z a-z 0-9 - _ . ~ stay literal.

    Pairs are sorted the way the canonical request sorts them, so that the URL sent is
    byte-for-byte the canonical query string.
    """
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in params)
    return "&".join(f"{k}={v}" for k, v in pairs)


def sign(
    credentials: ReadOnlyCredentials,
    region: str,
    method: str,
    url: str,
    body: bytes,
) -> dict[str, str]:
    """The headers that carry the signature for this exact request."""
    request = AWSRequest(method=method, url=url, data=body, headers={})
    SigV4Auth(credentials, SERVICE, region).add_auth(request)
    return {name: value for name, value in request.headers.items()}
