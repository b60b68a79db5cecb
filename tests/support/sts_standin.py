"""Stand-in for AWS STS speaking its Query API (form POST in, XML out).

Supports ``AssumeRole`` (SigV4-signed, service ``sts``), ``AssumeRoleWithWebIdentity``
(unsigned, like AWS) and ``GetCallerIdentity``. Issued temporary credentials go into a
:class:`~support.sigv4_verify.CredentialStore` (share the AMP stand-in's so AMP accepts
them, session token and expiry included). botocore reaches it via ``endpoint_url`` or
``AWS_ENDPOINT_URL_STS``.
"""

from __future__ import annotations

import secrets
import string
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from .asgi_server import Receive, Scope, Send, ThreadedServer, read_body, respond
from .sigv4_verify import CredentialStore, Failure, SigV4Error, SigV4Verifier, WireRequest
from .testenv import ACCOUNT_ID

NS = "https://sts.amazonaws.com/doc/2011-06-15/"

_SIGV4_CODES: dict[str, tuple[int, str]] = {
    Failure.MISSING: (403, "MissingAuthenticationToken"),
    Failure.INCOMPLETE: (400, "IncompleteSignature"),
    Failure.SIGNATURE: (403, "SignatureDoesNotMatch"),
    Failure.UNKNOWN_KEY: (403, "InvalidClientTokenId"),
    Failure.EXPIRED_TOKEN: (403, "ExpiredToken"),
}


class StsError(Exception):
    def __init__(self, status: int, code: str, message: str, kind: str = "Sender") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.kind = status, code, message, kind


@dataclass
class StsRole:
    arn: str
    external_id: str | None = None  # required ExternalId, if any
    web_identity_token: str | None = None  # token accepted by AssumeRoleWithWebIdentity

    @property
    def name(self) -> str:
        return self.arn.rsplit("/", 1)[-1]


@dataclass
class StsCall:
    """One STS request as received (parameters) and its outcome."""

    action: str
    role_arn: str | None
    external_id: str | None
    session_name: str | None
    duration_seconds: int | None
    caller_access_key: str | None
    web_identity_token: str | None
    params: dict[str, str]
    ok: bool = False
    error_code: str | None = None
    issued_access_key: str | None = None
    received_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class IssuedCredentials:
    access_key: str
    secret_key: str
    session_token: str
    expires_at: float


class StsStandin:
    """STS Query API stand-in; ``region=None`` accepts signatures scoped to any region."""

    def __init__(self, store: CredentialStore, region: str | None = None) -> None:
        self.store = store
        self.verifier = SigV4Verifier(store, service="sts", region=region)
        self.roles: dict[str, StsRole] = {}
        self.calls: list[StsCall] = []
        self.issued: list[IssuedCredentials] = []
        self.issued_duration: int | None = None  # overrides DurationSeconds when set
        self._lock = threading.Lock()
        self._server = ThreadedServer(self, name="sts-standin")
        self.url = self._server.url

    def start(self) -> StsStandin:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def add_role(
        self, arn: str, external_id: str | None = None, web_identity_token: str | None = None
    ) -> StsRole:
        role = StsRole(arn, external_id, web_identity_token)
        self.roles[arn] = role
        return role

    def reset(self) -> None:
        """Forget recorded calls and issued credentials (which stay valid in the store) and
        restore the default credential duration."""
        self.calls.clear()
        with self._lock:
            self.issued.clear()
        self.issued_duration = None

    def calls_for(self, action: str) -> list[StsCall]:
        return [c for c in self.calls if c.action == action]

    # -- ASGI ------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        wire = WireRequest(
            scope["method"],
            scope.get("raw_path") or scope["path"].encode(),
            scope["query_string"],
            list(scope["headers"]),
            body,
        )
        raw = body if scope["method"] == "POST" else scope["query_string"]
        params = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        call = _call_from(params)
        self.calls.append(call)
        request_id = str(uuid.uuid4())
        try:
            status, xml = self._dispatch(wire, params, call, request_id)
            call.ok = True
        except StsError as err:
            call.error_code = err.code
            status, xml = err.status, _error_xml(err, request_id)
        headers = [(b"content-type", b"text/xml"), (b"x-amzn-requestid", request_id.encode())]
        await respond(send, status, xml.encode(), headers)

    def _dispatch(
        self, wire: WireRequest, params: dict[str, str], call: StsCall, request_id: str
    ) -> tuple[int, str]:
        action = params.get("Action", "")
        if action == "AssumeRoleWithWebIdentity":
            return 200, self._assume_web_identity(params, call, request_id)
        caller = self._authenticate(wire)
        call.caller_access_key = caller
        if action == "AssumeRole":
            return 200, self._assume_role(params, call, caller, request_id)
        if action == "GetCallerIdentity":
            return 200, _caller_identity_xml(caller, request_id)
        raise StsError(400, "InvalidAction", f"Could not find operation {action} for version")

    def _authenticate(self, wire: WireRequest) -> str:
        try:
            return self.verifier.verify(wire).credential.access_key
        except SigV4Error as err:
            status, code = _SIGV4_CODES[err.kind]
            raise StsError(status, code, _sts_message(err)) from err

    def _role(self, params: dict[str, str], action: str, who: str) -> StsRole:
        arn = params.get("RoleArn")
        if not arn:
            raise StsError(400, "ValidationError", _null("roleArn"))
        if not params.get("RoleSessionName"):
            raise StsError(400, "ValidationError", _null("roleSessionName"))
        role = self.roles.get(arn)
        if role is None:
            raise StsError(403, "AccessDenied", _denied(who, action, arn))
        return role

    def _assume_role(self, params: dict[str, str], call: StsCall, caller: str, request_id: str) -> str:
        who = f"arn:aws:iam::{ACCOUNT_ID}:user/{caller}"
        role = self._role(params, "AssumeRole", who)
        if role.external_id is not None and params.get("ExternalId") != role.external_id:
            raise StsError(403, "AccessDenied", _denied(who, "AssumeRole", role.arn))
        creds = self._issue(params, call)
        return _credentials_xml("AssumeRole", role, params["RoleSessionName"], creds, request_id)

    def _assume_web_identity(self, params: dict[str, str], call: StsCall, request_id: str) -> str:
        who = f"arn:aws:sts::{ACCOUNT_ID}:federated-user/web-identity"
        role = self._role(params, "AssumeRoleWithWebIdentity", who)
        token = params.get("WebIdentityToken", "")
        if role.web_identity_token is None or token != role.web_identity_token:
            raise StsError(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        creds = self._issue(params, call)
        return _credentials_xml(
            "AssumeRoleWithWebIdentity", role, params["RoleSessionName"], creds, request_id
        )

    def _issue(self, params: dict[str, str], call: StsCall) -> IssuedCredentials:
        requested = int(params.get("DurationSeconds") or 3600)
        if not 900 <= requested <= 43200:
            raise StsError(
                400,
                "ValidationError",
                f"1 validation error detected: Value '{requested}' at 'durationSeconds' failed "
                "to satisfy constraint: Member must have value greater than or equal to 900",
            )
        duration = self.issued_duration if self.issued_duration is not None else requested
        creds = IssuedCredentials(
            access_key="ASIA" + "".join(secrets.choice(_KEY_CHARS) for _ in range(16)),
            secret_key=secrets.token_urlsafe(30)[:40],
            session_token="IQoJb3JpZ2luX2VjE" + secrets.token_urlsafe(96),
            expires_at=int(time.time()) + duration,
        )
        self.store.add(creds.access_key, creds.secret_key, creds.session_token, creds.expires_at)
        with self._lock:
            self.issued.append(creds)
        call.issued_access_key = creds.access_key
        return creds


_KEY_CHARS = string.ascii_uppercase + string.digits


def _call_from(params: dict[str, str]) -> StsCall:
    duration = params.get("DurationSeconds")
    return StsCall(
        action=params.get("Action", ""),
        role_arn=params.get("RoleArn"),
        external_id=params.get("ExternalId"),
        session_name=params.get("RoleSessionName"),
        duration_seconds=int(duration) if duration and duration.isdigit() else None,
        caller_access_key=None,
        web_identity_token=params.get("WebIdentityToken"),
        params=params,
    )


def _sts_message(err: SigV4Error) -> str:
    if err.kind == Failure.MISSING:
        return "Request is missing Authentication Token"
    return err.message


def _null(member: str) -> str:
    return (
        f"1 validation error detected: Value null at '{member}' failed to satisfy "
        "constraint: Member must not be null"
    )


def _denied(who: str, action: str, arn: str) -> str:
    return f"User: {who} is not authorized to perform: sts:{action} on resource: {arn}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _credentials_xml(
    action: str, role: StsRole, session: str, creds: IssuedCredentials, request_id: str
) -> str:
    e = escape
    return (
        f'<{action}Response xmlns="{NS}">\n'
        f"  <{action}Result>\n"
        "    <Credentials>\n"
        f"      <AccessKeyId>{e(creds.access_key)}</AccessKeyId>\n"
        f"      <SecretAccessKey>{e(creds.secret_key)}</SecretAccessKey>\n"
        f"      <SessionToken>{e(creds.session_token)}</SessionToken>\n"
        f"      <Expiration>{_iso(creds.expires_at)}</Expiration>\n"
        "    </Credentials>\n"
        "    <AssumedRoleUser>\n"
        f"      <AssumedRoleId>AROA{ACCOUNT_ID}EXAMPLE:{e(session)}</AssumedRoleId>\n"
        f"      <Arn>arn:aws:sts::{ACCOUNT_ID}:assumed-role/{e(role.name)}/{e(session)}</Arn>\n"
        "    </AssumedRoleUser>\n"
        f"  </{action}Result>\n"
        f"  <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>\n"
        f"</{action}Response>\n"
    )


def _caller_identity_xml(access_key: str, request_id: str) -> str:
    return (
        f'<GetCallerIdentityResponse xmlns="{NS}">\n'
        "  <GetCallerIdentityResult>\n"
        f"    <Arn>arn:aws:iam::{ACCOUNT_ID}:user/{escape(access_key)}</Arn>\n"
        f"    <UserId>{escape(access_key)}</UserId>\n"
        f"    <Account>{ACCOUNT_ID}</Account>\n"
        "  </GetCallerIdentityResult>\n"
        f"  <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>\n"
        "</GetCallerIdentityResponse>\n"
    )


def _error_xml(err: StsError, request_id: str) -> str:
    return (
        f'<ErrorResponse xmlns="{NS}">\n'
        "  <Error>\n"
        f"    <Type>{err.kind}</Type>\n"
        f"    <Code>{escape(err.code)}</Code>\n"
        f"    <Message>{escape(err.message)}</Message>\n"
        "  </Error>\n"
        f"  <RequestId>{request_id}</RequestId>\n"
        "</ErrorResponse>\n"
    )


def start_sts(store: CredentialStore, region: str | None = None) -> StsStandin:
    """Create and start an :class:`StsStandin` issuing credentials into ``store``."""
    return StsStandin(store, region).start()
