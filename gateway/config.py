"""Settings from a YAML file and the environment (env wins), validated at start-up.

A bad setting raises ConfigError with one line naming the key and what is wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from gateway.api.params import parse_prometheus_duration_ms


class ConfigError(Exception):
    """A setting that cannot be used; the message names the key."""


_AMP_HOST_RE = re.compile(r"^aps-workspaces(?:-fips)?\.([a-z0-9-]+)\.(?:amazonaws\.com(?:\.cn)?|api\.aws)$")
_WORKSPACE_PATH_RE = re.compile(r"/workspaces/([A-Za-z0-9_-]+)/?$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Workspace:
    id: str
    url: str  # base URL without trailing slash; API paths are appended to it
    region: str
    alias: str | None = None
    sigv4: bool = True
    role_arn: str | None = None
    external_id: str | None = None
    session_name: str = "amp-gateway"

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def names(self) -> tuple[str, ...]:
        return (self.id, self.alias) if self.alias else (self.id,)


@dataclass(frozen=True)
class UpstreamSettings:
    connect_timeout: float = 5.0
    timeout: float = 120.0  # cap on any upstream request; a client's `timeout` may lower it
    retries: int = 3
    retry_budget: float = 10.0  # total seconds a request may spend waiting between retries
    retry_base: float = 0.1
    max_concurrency: int = 16  # upstream requests in flight per workspace
    queue_timeout: float = 30.0  # how long a request may wait for a slot
    max_connections: int = 64


@dataclass(frozen=True)
class AwsSettings:
    sts_region: str | None = None
    sts_endpoint: str | None = None  # for tests and private endpoints
    profile: str | None = None


@dataclass(frozen=True)
class CacheSettings:
    mode: str = "memory"  # off | memory | redis
    redis_url: str | None = None
    memory_bytes: int = 256 * 1024 * 1024
    split_interval: float = 24 * 3600.0
    max_freshness: float = 600.0
    recent_ttl: float = 15.0
    metadata_ttl: float = 60.0
    parallel_fetches: int = 4
    results_ttl: float = 7 * 24 * 3600.0  # how long final (older than max_freshness) results are kept


@dataclass(frozen=True)
class PanelSettings:
    dashboards_dir: str = "dashboards"
    frame_ancestors: tuple[str, ...] = ("'self'",)
    public: bool = False  # pages and dashboards readable without credentials when auth is on


@dataclass(frozen=True)
class Settings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    workspaces: tuple[Workspace, ...] = ()
    default_workspace: str | None = None
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    aws: AwsSettings = field(default_factory=AwsSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    panels: PanelSettings = field(default_factory=PanelSettings)
    auth: Mapping[str, Any] | str | None = None  # validated by gateway.pipeline.auth
    limits: Mapping[str, Any] = field(default_factory=dict)
    log_level: str = "info"
    access_log: bool = True

    def workspace(self, name: str | None) -> Workspace | None:
        """The workspace with this id or alias; the default one for None."""
        if name is None:
            name = self.default_workspace
        for workspace in self.workspaces:
            if name in workspace.names:
                return workspace
        return None


# ---------------------------------------------------------------- loading


def load_settings(path: str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    path = path or env.get("GATEWAY_CONFIG") or None
    raw: dict[str, Any] = {}
    if path:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"config file {path}: {err.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"config file {path}{where}: not valid YAML") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: must be a mapping of settings")
        raw = loaded or {}
    return build_settings(raw, env)


_TOP_KEYS = {
    "listen",
    "workspaces",
    "default_workspace",
    "upstream",
    "aws",
    "cache",
    "panels",
    "auth",
    "limits",
    "log_level",
    "access_log",
    # single-workspace shorthands, same meaning as the GATEWAY_* variables
    "upstream_url",
    "region",
    "sigv4",
    "role_arn",
    "external_id",
    "session_name",
}


def build_settings(raw: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown setting")
    listen = env.get("GATEWAY_LISTEN") or _str(raw, "listen", "127.0.0.1:8080")
    host, port = _parse_listen(listen)

    workspaces = [_workspace(item, f"workspaces[{i}]") for i, item in enumerate(_list(raw, "workspaces"))]
    single = _single_workspace(raw, env)
    if single is not None:
        # GATEWAY_UPSTREAM_URL names the default workspace; it replaces a YAML one with its id.
        workspaces = [w for w in workspaces if w.id != single.id]
        workspaces.insert(0, single)
    elif workspaces:
        workspaces = [_apply_env_role(w, env) if i == 0 else w for i, w in enumerate(workspaces)]
    if not workspaces:
        raise ConfigError(
            "GATEWAY_UPSTREAM_URL: no upstream configured (set it, or `workspaces` in the file)"
        )
    seen: set[str] = set()
    for workspace in workspaces:
        for name in workspace.names:
            if name in seen:
                raise ConfigError(f"workspaces: id or alias {name!r} is used twice")
            seen.add(name)
    default = _str(raw, "default_workspace", None) if single is None else single.id
    if default is not None and default not in seen:
        raise ConfigError(f"default_workspace: {default!r} is not a configured workspace")

    aws_raw = _map(raw, "aws")
    _reject_unknown(aws_raw, "aws", {"sts_region", "sts_endpoint", "profile"})
    aws = AwsSettings(
        sts_region=env.get("GATEWAY_STS_REGION") or _str(aws_raw, "sts_region", None, "aws."),
        sts_endpoint=env.get("GATEWAY_STS_ENDPOINT") or _str(aws_raw, "sts_endpoint", None, "aws."),
        profile=_str(aws_raw, "profile", None, "aws."),
    )
    settings = Settings(
        listen_host=host,
        listen_port=port,
        workspaces=tuple(workspaces),
        default_workspace=default or workspaces[0].id,
        upstream=_upstream(_map(raw, "upstream")),
        aws=aws,
        cache=_cache(_map(raw, "cache"), env),
        panels=_panels(_map(raw, "panels")),
        auth="none" if env.get("GATEWAY_AUTH", "").lower() == "none" else raw.get("auth"),
        limits=_map(raw, "limits"),
        log_level=(env.get("GATEWAY_LOG_LEVEL") or _str(raw, "log_level", "info")).lower(),
        access_log=_bool_value(raw.get("access_log", True), "access_log"),
    )
    # auth and limits are validated by their own module (imported here: it imports this one).
    from gateway.pipeline.auth import parse_auth

    parse_auth(settings)
    return settings


def _single_workspace(raw: Mapping[str, Any], env: Mapping[str, str]) -> Workspace | None:
    url = env.get("GATEWAY_UPSTREAM_URL") or _str(raw, "upstream_url", None)
    if not url:
        return None
    key = "GATEWAY_UPSTREAM_URL" if env.get("GATEWAY_UPSTREAM_URL") else "upstream_url"
    item: dict[str, Any] = {"url": url}
    for name in ("region", "sigv4", "role_arn", "external_id", "session_name"):
        if name in raw:
            item[name] = raw[name]
    workspace = _apply_env_role(_workspace(item, key, env_prefix=key), env)
    if workspace.sigv4 and not workspace.region:
        raise ConfigError(
            "GATEWAY_REGION: required when the upstream host is not an AMP host "
            "(or set GATEWAY_SIGV4=false for a plain Prometheus)"
        )
    return workspace


def _apply_env_role(workspace: Workspace, env: Mapping[str, str]) -> Workspace:
    changes: dict[str, Any] = {}
    if env.get("GATEWAY_REGION"):
        changes["region"] = env["GATEWAY_REGION"]
    if env.get("GATEWAY_SIGV4"):
        changes["sigv4"] = _bool_value(env["GATEWAY_SIGV4"], "GATEWAY_SIGV4")
    if env.get("GATEWAY_ROLE_ARN"):
        changes["role_arn"] = _role_arn(env["GATEWAY_ROLE_ARN"], "GATEWAY_ROLE_ARN")
    if env.get("GATEWAY_EXTERNAL_ID"):
        changes["external_id"] = env["GATEWAY_EXTERNAL_ID"]
    if env.get("GATEWAY_SESSION_NAME"):
        changes["session_name"] = env["GATEWAY_SESSION_NAME"]
    if not changes:
        return workspace
    return Workspace(**{**workspace.__dict__, **changes})


def _workspace(item: Any, key: str, env_prefix: str | None = None) -> Workspace:
    if not isinstance(item, Mapping):
        raise ConfigError(f"{key}: must be a mapping with at least `url`")
    _reject_unknown(
        item,
        key,
        {"id", "alias", "url", "region", "sigv4", "role_arn", "external_id", "session_name"},
    )
    url = item.get("url")
    if not url:
        raise ConfigError(f"{key}.url: required")
    if not isinstance(url, str):
        raise ConfigError(f"{key}.url: must be a URL string, got {url!r}")
    url_key = env_prefix or f"{key}.url"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{url_key}: must be an http(s) URL, got {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{url_key}: must not carry a query, fragment or credentials")
    base = url.rstrip("/")
    path_match = _WORKSPACE_PATH_RE.search(parts.path)
    workspace_id = item.get("id") or (path_match.group(1) if path_match else "default")
    if not isinstance(workspace_id, str) or not _NAME_RE.match(workspace_id):
        raise ConfigError(f"{key}.id: must be letters, digits, '.', '_' or '-'")
    alias = item.get("alias")
    if alias is not None and (not isinstance(alias, str) or not _NAME_RE.match(alias)):
        raise ConfigError(f"{key}.alias: must be letters, digits, '.', '_' or '-'")
    host_match = _AMP_HOST_RE.match(parts.hostname)
    sigv4 = _bool_value(item.get("sigv4", True), f"{key}.sigv4")
    region = item.get("region") or (host_match.group(1) if host_match else "")
    if not isinstance(region, str):
        raise ConfigError(f"{key}.region: must be a string such as us-east-1")
    if sigv4 and not region and env_prefix is None:
        raise ConfigError(
            f"{key}.region: required when the host is not aps-workspaces.<region>.amazonaws.com"
        )
    role_arn = item.get("role_arn")
    return Workspace(
        id=workspace_id,
        url=base,
        region=region,
        alias=alias,
        sigv4=sigv4,
        role_arn=_role_arn(role_arn, f"{key}.role_arn") if role_arn else None,
        external_id=item.get("external_id"),
        session_name=item.get("session_name") or "amp-gateway",
    )


def _role_arn(value: Any, key: str) -> str:
    if not isinstance(value, str) or not re.match(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$", value):
        raise ConfigError(f"{key}: must be an IAM role ARN like arn:aws:iam::123456789012:role/x")
    return value


def _upstream(raw: Mapping[str, Any]) -> UpstreamSettings:
    _reject_unknown(raw, "upstream", set(UpstreamSettings.__dataclass_fields__))
    d = UpstreamSettings()
    return UpstreamSettings(
        connect_timeout=_seconds(raw, "connect_timeout", d.connect_timeout, "upstream."),
        timeout=_seconds(raw, "timeout", d.timeout, "upstream."),
        retries=_int(raw, "retries", d.retries, "upstream.", minimum=0),
        retry_budget=_seconds(raw, "retry_budget", d.retry_budget, "upstream."),
        retry_base=_seconds(raw, "retry_base", d.retry_base, "upstream."),
        max_concurrency=_int(raw, "max_concurrency", d.max_concurrency, "upstream.", minimum=1),
        queue_timeout=_seconds(raw, "queue_timeout", d.queue_timeout, "upstream."),
        max_connections=_int(raw, "max_connections", d.max_connections, "upstream.", minimum=1),
    )


def _cache(raw: Mapping[str, Any], env: Mapping[str, str]) -> CacheSettings:
    _reject_unknown(raw, "cache", set(CacheSettings.__dataclass_fields__))
    d = CacheSettings()
    redis_url = env.get("GATEWAY_REDIS_URL") or _str(raw, "redis_url", None, "cache.")
    mode = env.get("GATEWAY_CACHE") or _str(raw, "mode", "redis" if redis_url else d.mode, "cache.")
    mode_key = "GATEWAY_CACHE" if env.get("GATEWAY_CACHE") else "cache.mode"
    if mode not in ("off", "memory", "redis"):
        raise ConfigError(f"{mode_key}: must be off, memory or redis, got {mode!r}")
    if mode == "redis" and not redis_url:
        raise ConfigError("GATEWAY_REDIS_URL: required when the cache mode is redis")
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("GATEWAY_REDIS_URL: must start with redis://, rediss:// or unix://")
    return CacheSettings(
        mode=mode,
        redis_url=redis_url,
        memory_bytes=_bytes(raw, "memory_bytes", d.memory_bytes, "cache."),
        split_interval=_seconds(raw, "split_interval", d.split_interval, "cache."),
        max_freshness=_seconds(raw, "max_freshness", d.max_freshness, "cache."),
        recent_ttl=_seconds(raw, "recent_ttl", d.recent_ttl, "cache."),
        metadata_ttl=_seconds(raw, "metadata_ttl", d.metadata_ttl, "cache."),
        parallel_fetches=_int(raw, "parallel_fetches", d.parallel_fetches, "cache.", minimum=1),
        results_ttl=_seconds(raw, "results_ttl", d.results_ttl, "cache."),
    )


def _panels(raw: Mapping[str, Any]) -> PanelSettings:
    _reject_unknown(raw, "panels", set(PanelSettings.__dataclass_fields__))
    ancestors = raw.get("frame_ancestors", ["'self'"])
    if isinstance(ancestors, str):
        ancestors = ancestors.split()
    if not isinstance(ancestors, list) or not all(isinstance(a, str) for a in ancestors):
        raise ConfigError("panels.frame_ancestors: must be a list of CSP sources")
    for source in ancestors:
        if any(c in source for c in ";,\r\n"):
            raise ConfigError(f"panels.frame_ancestors: {source!r} is not a CSP source")
    return PanelSettings(
        dashboards_dir=_str(raw, "dashboards_dir", "dashboards", "panels."),
        frame_ancestors=tuple(ancestors),
        public=_bool_value(raw.get("public", False), "panels.public"),
    )


# ---------------------------------------------------------------- typed access


def _reject_unknown(raw: Mapping[str, Any], key: str, allowed: set[str]) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown setting")


def _map(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: must be a mapping")
    return value


def _list(raw: Mapping[str, Any], key: str) -> list[Any]:
    value = raw.get(key) or []
    if not isinstance(value, list):
        raise ConfigError(f"{key}: must be a list")
    return value


def _str(raw: Mapping[str, Any], key: str, default: str | None, prefix: str = "") -> Any:
    value = raw.get(key, default)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{prefix}{key}: must be a string")
    return value


def _int(raw: Mapping[str, Any], key: str, default: int, prefix: str, minimum: int = 0) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{prefix}{key}: must be a whole number >= {minimum}, got {value!r}")
    return value


def _seconds(raw: Mapping[str, Any], key: str, default: float, prefix: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        ms = parse_prometheus_duration_ms(value)
        if ms is not None:
            return ms / 1000
    raise ConfigError(f"{prefix}{key}: must be a duration such as 30s or 5m, got {value!r}")


_SIZE_RE = re.compile(r"^(\d+)\s*([KMG]i?B?)?$", re.IGNORECASE)


def _bytes(raw: Mapping[str, Any], key: str, default: int, prefix: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE_RE.match(str(value).strip())
    if match and not isinstance(value, bool):
        unit = (match.group(2) or "").upper()[:1]
        return int(match.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[unit]
    raise ConfigError(f"{prefix}{key}: must be a size such as 256MiB, got {value!r}")


def _bool_value(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{key}: must be true or false, got {value!r}")


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"GATEWAY_LISTEN: must be host:port, got {value!r}")
    return (host.strip("[]") or "0.0.0.0"), int(port)
