"""AWS Signature Version 4 for AMP (service `aps`).

Only `host`, `x-amz-date` and `x-amz-security-token` are signed: every other header may be
changed by something between us and AWS, and a signed header that changes breaks the
signature (Trickster's `forwarded` bug). The query string is encoded strictly (RFC 3986) by
`encode_query` before signing, and the exact body bytes are hashed.

The algorithm is botocore's SigV4Auth, signature for signature (tests/pipeline/test_sigv4.py
compares the two on generated requests), written here because botocore's costs 160 µs a
request on this machine, about a tenth of the gateway's CPU for a pass-through query, most of
it in URL and header bookkeeping and in deriving the same signing key again: the key depends
only on the secret, the day and the region, and is derived once a day here (bench/README.md).
botocore still resolves and refreshes the credentials (credentials.py).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from botocore.credentials import ReadOnlyCredentials
from botocore.utils import normalize_url_path
from cachetools import LRUCache

SERVICE = "aps"
_ALGORITHM = "AWS4-HMAC-SHA256"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def encode_query(params: tuple[tuple[str, str], ...]) -> str:
    """RFC 3986 encoding, as AWS canonicalises it: only A-Z a-z 0-9 - _ . ~ stay literal.

    Pairs are sorted the way the canonical request sorts them, so that the URL sent is
    byte-for-byte the canonical query string.
    """
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in params)
    return "&".join(f"{k}={v}" for k, v in pairs)


# Signing keys by (sha256 of the secret, day, region): the secrets themselves are not kept, and
# keys of rotated credentials fall out (at most 32, each good for one day).
_KEYS: LRUCache[tuple[bytes, str, str], bytes] = LRUCache(maxsize=32)


def _signing_key(secret: str, day: str, region: str) -> bytes:
    cache_key = (hashlib.sha256(secret.encode()).digest(), day, region)
    key = _KEYS.get(cache_key)
    if key is None:
        key = _hmac(f"AWS4{secret}".encode(), day)
        for part in (region, SERVICE, "aws4_request"):
            key = _hmac(key, part)
        _KEYS[cache_key] = key
    return key


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _host(url: str) -> str:
    """The Host header botocore signs: lower case, without a default port or user info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def _canonical_path(path: str) -> str:
    """The path as botocore normalises (dot segments, repeated slashes) and quotes it."""
    return quote(normalize_url_path(path), safe="/~")


def _canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = sorted(pair.partition("=")[::2] for pair in query.split("&"))
    return "&".join(f"{key}={value}" for key, value in pairs)


def sign(
    credentials: ReadOnlyCredentials,
    region: str,
    method: str,
    url: str,
    body: bytes,
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers that carry the signature for this exact request."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    headers = {"host": _host(url), "x-amz-date": stamp}
    if credentials.token:
        headers["x-amz-security-token"] = credentials.token
    names = sorted(headers)
    signed = ";".join(names)
    parts = urlsplit(url)
    canonical = "\n".join(
        (
            method.upper(),
            _canonical_path(parts.path),
            _canonical_query(parts.query),
            "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in names),
            signed,
            hashlib.sha256(body).hexdigest(),
        )
    )
    scope = f"{day}/{region}/{SERVICE}/aws4_request"
    to_sign = f"{_ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.new(_signing_key(credentials.secret_key, day, region), to_sign.encode(), hashlib.sha256)
    out = {
        "X-Amz-Date": stamp,
        "Authorization": (
            f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature.hexdigest()}"
        ),
    }
    if credentials.token:
        out["X-Amz-Security-Token"] = credentials.token
    return out
