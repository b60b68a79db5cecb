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

import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.config.limits import Limits, parse_limits
from gateway.config.readers import ConfigError, Reader
from gateway.golang import LABEL_NAME_RE

log = logging.getLogger("gateway.auth")

_HEX_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
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
_PROXY_KEYS = {"header", "trusted_addresses"}
_CORS_KEYS = {"allow_origins"}
_FAILED_SIGN_IN_KEYS = {"per_address", "per_principal"}


@dataclass(frozen=True)
class Principal:
    """Who is asking. `enforce` holds label matchers added to every selector they send."""

    name: str
    workspaces: frozenset[str] | None = None  # None: every workspace
    enforce: tuple[tuple[str, str], ...] = ()
    limits: Limits = field(default_factory=Limits)

    def may_query(self, names: tuple[str, ...]) -> bool:
        """May read the workspace known by these names (its id and alias)."""
        return self.workspaces is None or any(n in self.workspaces for n in names)


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


def parse_auth(raw: Any, limits: Any, listen_host: str, workspace_names: set[str]) -> AuthSettings:
    """Validates `auth` and `limits`; ConfigError names the key. Refuses an exposed gateway
    without authentication unless `auth: none` says so."""
    defaults = parse_limits(limits, "limits")
    if raw is None:
        if not is_loopback(listen_host):
            raise ConfigError(
                f"auth: the gateway would listen on {listen_host} (GATEWAY_LISTEN) without "
                "authentication; configure auth.principals, or set `auth: none` (GATEWAY_AUTH=none) "
                "to expose it on purpose"
            )
        return AuthSettings(enabled=False, defaults=defaults)
    if raw == "none":
        return AuthSettings(enabled=False, defaults=defaults)
    if not isinstance(raw, Mapping):
        raise ConfigError("auth: must be `none` or a mapping with `principals`")
    Reader(raw, "auth.").reject_unknown(_AUTH_KEYS)
    proxy = _proxy(raw.get("proxy"))
    items = raw.get("principals")
    if not isinstance(items, list) or not items:
        raise ConfigError("auth.principals: must be a non-empty list (or set `auth: none`)")
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
    Reader(item, f"{key}.").reject_unknown(_PRINCIPAL_KEYS)
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
        if not isinstance(label, str) or not LABEL_NAME_RE.match(label) or label == "__name__":
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
    if not isinstance(raw, Mapping) or set(raw) - _PROXY_KEYS:
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
    if not isinstance(raw, Mapping) or not set(raw) <= _FAILED_SIGN_IN_KEYS:
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
    origins = raw.get("allow_origins") if isinstance(raw, Mapping) and set(raw) <= _CORS_KEYS else None
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise ConfigError("auth.cors: must be {allow_origins: [https://grafana.example.com, ...]}")
    for origin in origins:
        if origin == "*" or not re.match(r"^https?://[^/\s]+$", origin):
            raise ConfigError(f"auth.cors.allow_origins: {origin!r} must be an origin like https://host:port")
    return tuple(origins)
