"""Inbound authentication and authorization settings: who is asking, what they may read.

```yaml
auth:
  principals:
    - name: team-a
      token_sha256: "<hex sha256 of the bearer token>"
      username: grafana-a               # HTTP basic user (default: the name)
      password_sha256: "<hex sha256 of the password>"
      workspaces: [ws-1]                # ids or aliases, or ["*"]
      enforce: {team: "a"}              # label matchers added to every selector
      expires: 2030-01-01T00:00:00Z     # optional: credentials refused after this time
      limits: {rate: {per_second: 5}}   # optional overrides of the global `limits`
  proxy:                                # optional: an authenticating proxy in front
    header: X-Forwarded-User            # its value names one of the principals above
    trusted_addresses: [127.0.0.1/32]   # peers whose header is believed
  on_conflict: reject                   # or override: a query's matcher on an enforced label
  cors: {allow_origins: [https://grafana.example.com]}
```

`auth: none` turns authentication off explicitly; without `auth` the gateway must listen on
loopback only. Only hashes of secrets are stored; every comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cachetools import TTLCache
from starlette.requests import HTTPConnection

from gateway.api.errors import ApiError
from gateway.config import ConfigError, Settings
from gateway.metrics import Metrics
from gateway.pipeline.limits import Limits, parse_limits
from gateway.pipeline.model import Principal

log = logging.getLogger("gateway.auth")

_HEX_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_HEADER_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_PRINCIPAL_KEYS = {
    "name",
    "token_sha256",
    "username",
    "password_sha256",
    "workspaces",
    "enforce",
    "expires",
    "limits",
}
_AUTH_KEYS = {"principals", "proxy", "on_conflict", "cors", "failed_sign_ins"}
REALM = 'realm="amp-gateway"'
# Failed sign-ins are counted per minute, from one client address and for one principal (from
# any address; a higher default, so that others cannot lock a team out as easily as they can
# slow a guesser): auth.failed_sign_ins.
FAILURE_WINDOW = 60.0


@dataclass(frozen=True)
class Credential:
    principal: Principal
    token: bytes | None  # sha256 digests
    username: str | None
    password: bytes | None
    expires: float | None  # unix seconds


@dataclass(frozen=True)
class ProxySettings:
    header: str
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def trusts(self, address: str | None) -> bool:
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)


@dataclass(frozen=True)
class AuthSettings:
    enabled: bool  # False: everyone is the anonymous principal
    credentials: tuple[Credential, ...] = ()
    proxy: ProxySettings | None = None
    override: bool = False
    cors_origins: tuple[str, ...] = ()
    defaults: Limits = field(default_factory=Limits)
    failures_per_address: int = 10  # failed sign-ins a minute from one client address
    failures_per_principal: int = 30  # ... for one principal, from any address


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(settings: Settings) -> AuthSettings:
    """Validates `auth` and `limits`; ConfigError names the key. Refuses an exposed gateway
    without authentication unless `auth: none` says so."""
    defaults = parse_limits(settings.limits, "limits")
    raw = settings.auth
    if raw is None:
        if not is_loopback(settings.listen_host):
            raise ConfigError(
                f"auth: the gateway would listen on {settings.listen_host} (GATEWAY_LISTEN) without "
                "authentication; configure auth.principals, or set `auth: none` (GATEWAY_AUTH=none) "
                "to expose it on purpose"
            )
        return AuthSettings(enabled=False, defaults=defaults)
    if raw == "none":
        return AuthSettings(enabled=False, defaults=defaults)
    if not isinstance(raw, Mapping):
        raise ConfigError("auth: must be `none` or a mapping with `principals`")
    unknown = sorted(set(raw) - _AUTH_KEYS)
    if unknown:
        raise ConfigError(f"auth.{unknown[0]}: unknown setting")
    proxy = _proxy(raw.get("proxy"))
    items = raw.get("principals")
    if not isinstance(items, list) or not items:
        raise ConfigError("auth.principals: must be a non-empty list (or set `auth: none`)")
    workspace_names = {n for w in settings.workspaces for n in w.names}
    credentials = [
        _credential(item, f"auth.principals[{i}]", workspace_names, defaults, proxy is not None)
        for i, item in enumerate(items)
    ]
    _unique(credentials)
    on_conflict = raw.get("on_conflict", "reject")
    if on_conflict not in ("reject", "override"):
        raise ConfigError(f"auth.on_conflict: must be reject or override, got {on_conflict!r}")
    return AuthSettings(
        enabled=True,
        credentials=tuple(credentials),
        proxy=proxy,
        override=on_conflict == "override",
        cors_origins=_cors(raw.get("cors")),
        **_failed_sign_ins(raw.get("failed_sign_ins")),
        defaults=defaults,
    )


def _digest(value: Any, key: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _HEX_RE.match(value):
        raise ConfigError(f"{key}: must be 64 hex digits (sha256sum of the secret)")
    return bytes.fromhex(value)


def _credential(item: Any, key: str, workspace_names: set[str], defaults: Limits, proxy: bool) -> Credential:
    if not isinstance(item, Mapping):
        raise ConfigError(f"{key}: must be a mapping with `name`")
    unknown = sorted(set(item) - _PRINCIPAL_KEYS)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown setting")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"{key}.name: required; letters, digits, '.', '_', '@' or '-'")
    token = _digest(item.get("token_sha256"), f"{key}.token_sha256")
    password = _digest(item.get("password_sha256"), f"{key}.password_sha256")
    username = item.get("username", name)
    if not isinstance(username, str) or not username or ":" in username:
        raise ConfigError(f"{key}.username: must be a non-empty string without ':'")
    if token is None and password is None and not proxy:
        raise ConfigError(f"{key}: give token_sha256 or password_sha256 (or configure auth.proxy)")
    workspaces = item.get("workspaces")
    if not isinstance(workspaces, list) or not workspaces or not all(isinstance(w, str) for w in workspaces):
        raise ConfigError(f'{key}.workspaces: required, a list of workspace ids or aliases (or ["*"])')
    for workspace in workspaces:
        if workspace != "*" and workspace not in workspace_names:
            raise ConfigError(f"{key}.workspaces: {workspace!r} is not a configured workspace")
    enforce = item.get("enforce") or {}
    if not isinstance(enforce, Mapping):
        raise ConfigError(f'{key}.enforce: must be a mapping of label to value, like {{team: "a"}}')
    for label, value in enforce.items():
        if not isinstance(label, str) or not _LABEL_RE.match(label) or label == "__name__":
            raise ConfigError(f"{key}.enforce: {label!r} is not a label name that can be enforced")
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}.enforce.{label}: must be a non-empty string")
    principal = Principal(
        name=name,
        workspaces=None if "*" in workspaces else frozenset(workspaces),
        enforce=tuple(sorted(enforce.items())),
        limits=parse_limits(item.get("limits"), f"{key}.limits", defaults),
    )
    return Credential(principal, token, username if password else None, password, _expires(item, key))


def _expires(item: Mapping[str, Any], key: str) -> float | None:
    value = item.get("expires")
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"{key}.expires: must be a time like 2030-01-01T00:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _unique(credentials: list[Credential]) -> None:
    names: set[str] = set()
    users: set[str] = set()
    tokens: set[bytes] = set()
    for credential in credentials:
        name = credential.principal.name
        if name in names:
            raise ConfigError(f"auth.principals: name {name!r} is used twice")
        names.add(name)
        if credential.username is not None:
            if credential.username in users:
                raise ConfigError(f"auth.principals: username {credential.username!r} is used twice")
            users.add(credential.username)
        if credential.token is not None:
            if credential.token in tokens:
                raise ConfigError(f"auth.principals: {name!r} has the same token as another principal")
            tokens.add(credential.token)


def _proxy(raw: Any) -> ProxySettings | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - {"header", "trusted_addresses"}:
        raise ConfigError("auth.proxy: must be a mapping with `header` and `trusted_addresses`")
    header = raw.get("header")
    if not isinstance(header, str) or not _HEADER_RE.match(header) or header.lower() == "authorization":
        raise ConfigError("auth.proxy.header: must be a header name such as X-Forwarded-User")
    addresses = raw.get("trusted_addresses")
    if not isinstance(addresses, list) or not addresses:
        raise ConfigError("auth.proxy.trusted_addresses: required, a list of addresses or CIDR ranges")
    networks = []
    for address in addresses:
        try:
            networks.append(ipaddress.ip_network(str(address), strict=False))
        except ValueError:
            raise ConfigError(
                f"auth.proxy.trusted_addresses: {address!r} is not an address or CIDR"
            ) from None
    return ProxySettings(header.lower(), tuple(networks))


def _failed_sign_ins(raw: Any) -> dict[str, int]:
    """`failed_sign_ins: {per_address: 10, per_principal: 30}`: allowed a minute, then 429."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not set(raw) <= {"per_address", "per_principal"}:
        raise ConfigError("auth.failed_sign_ins: must be {per_address: N, per_principal: N}")
    out = {}
    for key, value in raw.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"auth.failed_sign_ins.{key}: must be a whole number >= 1, got {value!r}")
        out[f"failures_{key}"] = value
    return out


def _cors(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    origins = raw.get("allow_origins") if isinstance(raw, Mapping) and set(raw) <= {"allow_origins"} else None
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise ConfigError("auth.cors: must be {allow_origins: [https://grafana.example.com, ...]}")
    for origin in origins:
        if origin == "*" or not re.match(r"^https?://[^/\s]+$", origin):
            raise ConfigError(f"auth.cors.allow_origins: {origin!r} must be an origin like https://host:port")
    return tuple(origins)


class FailedSignIns:
    """Fixed windows of failed sign-ins per key (a client address, a principal): past `limit`
    failures in `window` seconds, the key's further attempts are refused until the window ends,
    right credentials included (that is what stops guessing). Bounded in keys."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._windows: TTLCache[str, list[float]] = TTLCache(maxsize=max_keys, ttl=window, timer=clock)

    def retry_after(self, key: str) -> float | None:
        """Seconds until `key` may try again, or None when it may now."""
        found = self._windows.get(key)
        if found is None or found[1] < self.limit:
            return None
        return max(0.0, found[0] + self.window - self._clock())

    def record(self, key: str) -> None:
        found = self._windows.get(key)
        if found is None:
            self._windows[key] = [self._clock(), 1]
        else:
            found[1] += 1


class Authenticator:
    """Resolves the principal of a request; raises ApiError (401) when it cannot, 429 when its
    client address or principal failed to sign in too often lately."""

    def __init__(
        self,
        settings: AuthSettings | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or AuthSettings(enabled=False)
        self.metrics = metrics
        self.anonymous = Principal(name="anonymous", limits=self.settings.defaults)
        self._challenge = f"Bearer {REALM}"
        if any(c.password is not None for c in self.settings.credentials):
            self._challenge += f", Basic {REALM}"
        self.by_address = FailedSignIns(self.settings.failures_per_address, FAILURE_WINDOW, clock)
        self.by_principal = FailedSignIns(self.settings.failures_per_principal, FAILURE_WINDOW, clock)

    def _count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.auth_failures.labels(reason).inc()

    def _fail(
        self, reason: str, message: str, address: str | None = None, principal: str | None = None
    ) -> ApiError:
        self._count(reason)
        if address is not None:
            self.by_address.record(address)
        if principal is not None:
            self.by_principal.record(principal)
        return ApiError("unauthorized", message, headers={"WWW-Authenticate": self._challenge})

    def _throttle(self, address: str, principal: str | None) -> None:
        wait = self.by_address.retry_after(address)
        who = "this address"
        if wait is None and principal is not None:
            wait, who = self.by_principal.retry_after(principal), "this user"
        if wait is not None:
            self._count("throttled")
            seconds = max(1, math.ceil(wait))
            raise ApiError(
                "too_many_requests",
                f"too many failed sign-ins from {who}; try again in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )

    async def authenticate(self, connection: HTTPConnection) -> Principal:
        settings = self.settings
        if not settings.enabled:
            return self.anonymous
        address = connection.client.host if connection.client else "-"
        proxy = settings.proxy
        if proxy is not None and proxy.header in connection.headers and proxy.trusts(address):
            return self._from_proxy(connection.headers.getlist(proxy.header), address)
        header = connection.headers.get("authorization", "")
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and value.strip():
            # A token (256 bits, unguessable) is checked first and a right one always passes:
            # clients behind one ingress address must not be locked out by another's bad token.
            # Wrong ones from a busy address get 429s.
            credential = self._by_token(value.strip())
            if credential is None:
                self._throttle(address, None)
                raise self._fail("invalid", "the credentials are not valid", address)
            return self._unexpired(credential, address)
        if scheme == "basic" and value.strip():
            # Passwords can be guessed: a throttled address or user is refused, right or wrong.
            username, credential = self._by_password(value.strip())
            named = self._principal_named(username)
            self._throttle(address, named)
        else:
            raise self._fail(
                "missing",
                "authentication required: send Authorization: Bearer <token> or HTTP basic credentials",
            )
        if credential is None:
            raise self._fail("invalid", "the credentials are not valid", address, named)
        return self._unexpired(credential, address)

    def _unexpired(self, credential: Credential, address: str) -> Principal:
        if credential.expires is not None and datetime.now(UTC).timestamp() >= credential.expires:
            raise self._fail(
                "expired", f'the credentials of "{credential.principal.name}" have expired', address
            )
        return credential.principal

    def _principal_named(self, username: str | None) -> str | None:
        if username is None:
            return None
        for credential in self.settings.credentials:
            if credential.username is not None and hmac.compare_digest(
                credential.username.encode(), username.encode()
            ):
                return credential.principal.name
        return None

    def _from_proxy(self, values: list[str], address: str) -> Principal:
        if len(values) != 1 or "," in values[0]:
            raise self._fail(
                "invalid", "the authenticating proxy's header must name exactly one user", address
            )
        name = values[0].strip()
        found = None
        for credential in self.settings.credentials:
            if hmac.compare_digest(credential.principal.name.encode(), name.encode()):
                found = credential
        if found is None:
            raise self._fail(
                "invalid", "the user named by the authenticating proxy is not configured", address
            )
        return self._unexpired(found, address)

    def _by_token(self, token: str) -> Credential | None:
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = None
        for credential in self.settings.credentials:  # no early exit: time does not depend on a match
            if credential.token is not None and hmac.compare_digest(credential.token, digest):
                found = credential
        return found

    def _by_password(self, encoded: str) -> tuple[str | None, Credential | None]:
        """(the user name sent, the credential it and the password match)."""
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        username, sep, password = decoded.partition(":")
        if not sep:
            return None, None
        digest = hashlib.sha256(password.encode()).digest()
        found = None
        for credential in self.settings.credentials:
            if credential.password is None or credential.username is None:
                continue
            user_ok = hmac.compare_digest(credential.username.encode(), username.encode())
            password_ok = hmac.compare_digest(credential.password, digest)
            if user_ok and password_ok:
                found = credential
        return username, found
