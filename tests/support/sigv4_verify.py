"""Server-side AWS Signature Version 4 verification, written from the AWS spec.

Independent of botocore on purpose: the canonical request is rebuilt from the
request exactly as it arrived (raw path, raw query string, raw body, header
values as received), so a client that signs something other than what it sends
is caught here the way AWS would catch it.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_SECONDS = 300
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
_HEX = frozenset(b"0123456789abcdefABCDEF")
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


class Failure:
    """Kinds of verification failure; each stand-in maps them to its own error codes."""

    MISSING = "missing"  # no Authorization header
    INCOMPLETE = "incomplete"  # Authorization header or required headers malformed/absent
    SIGNATURE = "signature"  # signature, scope, date or clock skew wrong
    UNKNOWN_KEY = "unknown_key"  # access key unknown, or session token missing/wrong
    EXPIRED_TOKEN = "expired_token"  # temporary credentials past their expiry


class SigV4Error(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Credential:
    access_key: str
    secret_key: str
    session_token: str | None = None
    expires_at: float | None = None  # unix seconds; None = never

    @property
    def temporary(self) -> bool:
        return self.session_token is not None


class CredentialStore:
    """Thread-safe access key -> credential map shared by the stand-ins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, Credential] = {}

    def add(
        self,
        access_key: str,
        secret_key: str,
        session_token: str | None = None,
        expires_at: float | None = None,
    ) -> Credential:
        cred = Credential(access_key, secret_key, session_token, expires_at)
        with self._lock:
            self._by_key[access_key] = cred
        return cred

    def remove(self, access_key: str) -> None:
        with self._lock:
            self._by_key.pop(access_key, None)

    def get(self, access_key: str) -> Credential | None:
        with self._lock:
            return self._by_key.get(access_key)


@dataclass(frozen=True)
class WireRequest:
    """A request as received: header names lower-case, values as bytes on the wire."""

    method: str
    raw_path: bytes
    raw_query: bytes
    headers: Sequence[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        values = [v.decode("latin-1") for k, v in self.headers if k == key]
        return ",".join(values) if values else None


@dataclass(frozen=True)
class Authorization:
    access_key: str
    date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{self.terminator}"


def uri_encode(data: bytes, keep_slash: bool = False) -> str:
    """RFC 3986 encoding, leaving only A-Z a-z 0-9 - _ . ~ (and '/' if asked) as-is."""
    out = []
    for byte in data:
        if byte in _UNRESERVED or (keep_slash and byte == 0x2F):
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def percent_decode(data: bytes, plus_is_space: bool = True) -> bytes:
    """Decode %XX escapes (and '+' as space, as AWS and Go's url.ParseQuery do)."""
    out = bytearray()
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == 0x25 and i + 2 < len(data) and data[i + 1] in _HEX and data[i + 2] in _HEX:
            out.append(int(data[i + 1 : i + 3], 16))
            i += 3
            continue
        out.append(0x20 if (byte == 0x2B and plus_is_space) else byte)
        i += 1
    return bytes(out)


def normalize_path(raw_path: bytes) -> bytes:
    """RFC 3986 dot-segment removal; AWS also drops empty segments (double slashes)."""
    if not raw_path:
        return b"/"
    segments: list[bytes] = []
    for segment in raw_path.split(b"/"):
        if segment in (b"", b"."):
            continue
        if segment == b"..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    trailing = b"/" if raw_path.endswith(b"/") and segments else b""
    return b"/" + b"/".join(segments) + trailing


def canonical_uri(raw_path: bytes) -> str:
    """Non-S3 rule: the path as received is URI-encoded again, segment by segment."""
    return uri_encode(normalize_path(raw_path), keep_slash=True)


def canonical_query(raw_query: bytes) -> str:
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        pairs.append((uri_encode(percent_decode(name)), uri_encode(percent_decode(value))))
    pairs.sort()
    return "&".join(f"{n}={v}" for n, v in pairs)


def canonical_header_value(values: list[bytes]) -> str:
    return ",".join(" ".join(v.decode("latin-1").split()) for v in values)


def parse_authorization(header: str) -> Authorization:
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SigV4Error(Failure.INCOMPLETE, f"Unsupported AWS 'algorithm': '{algorithm}'.")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            fields[key] = value
    for required in ("Credential", "SignedHeaders", "Signature"):
        if required not in fields:
            raise SigV4Error(
                Failure.INCOMPLETE,
                f"Authorization header requires '{required}' parameter. Authorization={header}",
            )
    parts = fields["Credential"].split("/")
    if len(parts) != 5:
        raise SigV4Error(
            Failure.INCOMPLETE,
            f"Credential must have exactly 5 slash-delimited elements, e.g. "
            f"keyid/date/region/service/term, got '{fields['Credential']}'",
        )
    return Authorization(
        access_key=parts[0],
        date=parts[1],
        region=parts[2],
        service=parts[3],
        terminator=parts[4],
        signed_headers=tuple(fields["SignedHeaders"].split(";")),
        signature=fields["Signature"],
    )


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _amz(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%M%SZ")


@dataclass
class VerifiedRequest:
    credential: Credential
    authorization: Authorization
    canonical_request: str


class SigV4Verifier:
    """Verifies requests for one service; ``region=None`` accepts any region."""

    def __init__(
        self,
        store: CredentialStore,
        service: str,
        region: str | None,
        clock: Callable[[], float] = time.time,
        max_skew: int = MAX_SKEW_SECONDS,
    ) -> None:
        self.store = store
        self.service = service
        self.region = region
        self.clock = clock
        self.max_skew = max_skew

    def canonical_request(self, req: WireRequest, auth: Authorization, payload_hash: str) -> str:
        by_name: dict[bytes, list[bytes]] = {}
        for name, value in req.headers:
            by_name.setdefault(name.lower(), []).append(value)
        lines = [
            f"{name}:{canonical_header_value(by_name.get(name.encode(), []))}" for name in auth.signed_headers
        ]
        return "\n".join(
            [
                req.method.upper(),
                canonical_uri(req.raw_path),
                canonical_query(req.raw_query),
                "\n".join(lines) + "\n",
                ";".join(auth.signed_headers),
                payload_hash,
            ]
        )

    def verify(self, req: WireRequest) -> VerifiedRequest:
        header = req.header("authorization")
        if header is None:
            raise SigV4Error(Failure.MISSING, "Missing Authentication Token")
        auth = parse_authorization(header)
        amz_date = req.header("x-amz-date")
        if amz_date is None:
            raise SigV4Error(
                Failure.INCOMPLETE,
                "Authorization header requires existence of either a 'X-Amz-Date' or a "
                f"'Date' header. Authorization={header}",
            )
        self._check_signed_headers(auth)
        self._check_scope(auth, amz_date)
        credential = self._check_credential(req, auth)
        self._check_clock(amz_date)
        payload_hash = self._payload_hash(req)
        canonical = self.canonical_request(req, auth, payload_hash)
        string_to_sign = "\n".join(
            [ALGORITHM, amz_date, auth.scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = signing_key(credential.secret_key, auth.date, auth.region, auth.service)
        expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, auth.signature):
            raise SigV4Error(Failure.SIGNATURE, SIGNATURE_MISMATCH)
        return VerifiedRequest(credential, auth, canonical)

    def _check_signed_headers(self, auth: Authorization) -> None:
        if "host" not in auth.signed_headers:
            raise SigV4Error(
                Failure.SIGNATURE,
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            )
        if "x-amz-date" not in auth.signed_headers:
            raise SigV4Error(
                Failure.SIGNATURE, "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization."
            )

    def _check_scope(self, auth: Authorization, amz_date: str) -> None:
        if auth.terminator != "aws4_request":
            raise SigV4Error(
                Failure.SIGNATURE,
                "Credential should be scoped with a valid terminator: 'aws4_request', "
                f"not '{auth.terminator}'. ",
            )
        if auth.service != self.service:
            raise SigV4Error(
                Failure.SIGNATURE,
                f"Credential should be scoped to correct service: '{self.service}'. ",
            )
        if self.region is not None and auth.region != self.region:
            raise SigV4Error(
                Failure.SIGNATURE,
                f"Credential should be scoped to a valid region, not '{auth.region}'. ",
            )
        if auth.date != amz_date[:8]:
            raise SigV4Error(
                Failure.SIGNATURE,
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                f"date from HTTP: '{auth.date}' != '{amz_date[:8]}', from '{amz_date}'.",
            )

    def _check_credential(self, req: WireRequest, auth: Authorization) -> Credential:
        credential = self.store.get(auth.access_key)
        token = req.header("x-amz-security-token")
        invalid = "The security token included in the request is invalid."
        if credential is None:
            raise SigV4Error(Failure.UNKNOWN_KEY, invalid)
        if credential.session_token is None:
            if token is not None:
                raise SigV4Error(Failure.UNKNOWN_KEY, invalid)
            return credential
        if token is None or not hmac.compare_digest(token, credential.session_token):
            raise SigV4Error(Failure.UNKNOWN_KEY, invalid)
        if credential.expires_at is not None and self.clock() >= credential.expires_at:
            raise SigV4Error(Failure.EXPIRED_TOKEN, "The security token included in the request is expired")
        return credential

    def _check_clock(self, amz_date: str) -> None:
        try:
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError as exc:
            raise SigV4Error(
                Failure.INCOMPLETE, f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'."
            ) from exc
        now = self.clock()
        ts = signed_at.timestamp()
        if ts < now - self.max_skew:
            raise SigV4Error(
                Failure.SIGNATURE,
                f"Signature expired: {amz_date} is now earlier than {_amz(now - self.max_skew)} "
                f"({_amz(now)} - {self.max_skew // 60} min.)",
            )
        if ts > now + self.max_skew:
            raise SigV4Error(
                Failure.SIGNATURE,
                f"Signature not yet current: {amz_date} is still later than "
                f"{_amz(now + self.max_skew)} ({_amz(now)} + {self.max_skew // 60} min.)",
            )

    def _payload_hash(self, req: WireRequest) -> str:
        actual = hashlib.sha256(req.body).hexdigest()
        declared = req.header("x-amz-content-sha256")
        if declared is not None and declared != actual:
            raise SigV4Error(
                Failure.SIGNATURE,
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        return actual
