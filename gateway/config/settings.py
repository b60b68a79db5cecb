"""Settings from a YAML file and the environment (env wins), validated at start-up.

A bad setting raises ConfigError with one line naming the key and what is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from gateway.config.auth import AuthSettings, parse_auth
from gateway.config.certificates import TlsSettings, read_tls, read_upstream_tls
from gateway.config.cost import CostSettings, read_cost
from gateway.config.quotas import QuotaSettings, read_quotas
from gateway.config.readers import ConfigError, Reader, read_bool
from gateway.config.server import ServerSettings, read_server

# AMP's query (data plane) host names, each with its region: IPv4 and dual-stack (api.aws), FIPS
# and FIPS dual-stack, China (and its dual-stack domain), and an interface VPC endpoint's own DNS
# names, regional (vpce-<id>-<suffix>.) or zonal (vpce-<id>-<suffix>-<zone>.). Other hosts (a
# private DNS alias, a proxy) need their region set.
_REGION = r"(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)"
_AMP_HOSTS = (
    re.compile(rf"^aps-workspaces(?:-fips)?\.{_REGION}\.(?:amazonaws\.com|api\.aws)$"),
    re.compile(rf"^aps-workspaces\.{_REGION}\.(?:amazonaws\.com\.cn|api\.amazonwebservices\.com\.cn)$"),
    re.compile(
        rf"^vpce-[0-9a-f]+-[0-9a-z]+(?:-[a-z0-9-]+)?\.aps-workspaces(?:-fips)?\.{_REGION}"
        r"\.vpce\.amazonaws\.com(?:\.cn)?$"
    ),
)
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

    @property
    def fingerprint(self) -> str:
        """The workspace in keys shared with other gateways (Redis): its id and a digest of
        where and as whom it is asked, so that two deployments whose workspaces share an id
        (`default`, a copied config) never share entries, slots or answers."""
        where = repr((self.url, self.region, self.sigv4, self.role_arn, self.external_id))
        return f"{self.id}@{hashlib.sha256(where.encode()).hexdigest()[:16]}"


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
    ca_bundle: str | None = None  # PEM CAs that verify the upstream, instead of the system's store
    client_cert: str | None = None  # presented to an upstream that asks for a client certificate
    client_key: str | None = None
    # The largest answer taken from a workspace, decompressed; larger: 422, read no further.
    max_answer_bytes: int = 128 * 1024 * 1024


@dataclass(frozen=True)
class AwsSettings:
    sts_region: str | None = None
    sts_endpoint: str | None = None  # for tests and private endpoints
    profile: str | None = None


@dataclass(frozen=True)
class CacheSettings:
    mode: str = "memory"  # off | memory | redis
    redis_url: str | None = None  # also shares rate limits, upstream slots and coalescing
    redis_cluster: bool = False  # redis_url names one node of a Redis Cluster
    memory_bytes: int = 256 * 1024 * 1024
    split_interval: float = 24 * 3600.0
    max_freshness: float = 600.0
    recent_ttl: float = 15.0
    metadata_ttl: float = 60.0
    parallel_fetches: int = 4
    results_ttl: float = 24 * 3600.0  # how long final (older than max_freshness) results are kept
    # Leases, rate buckets and coalescing locks, on a Redis that never evicts them (see README);
    # None: on redis_url, with the cache.
    redis_state_url: str | None = None
    redis_max_entry_bytes: int = 4 * 1024 * 1024  # larger entries and answers are not written to Redis
    # Every key's prefix; build_settings fills it with the deployment's identity when not set.
    redis_namespace: str | None = None
    # Entries and answers written to Redis carry an HMAC-SHA256 with it. A secret: never shown.
    redis_hmac_key: str | None = field(default=None, repr=False)
    # Answers larger than this (decompressed) are passed on but not cached, nor parsed.
    max_answer_bytes: int = 16 * 1024 * 1024
    # Where `serve` makes the store its workers share (pipeline/host.py); None: $TMPDIR.
    host_dir: str | None = None
    # How long past its expiry an answer may still be served while the upstream fails.
    max_stale: float = 3600.0


def shipped_dashboards() -> str:
    """The directory of the dashboards that ship with the gateway (the top-level dashboards/,
    installed as the package gateway.shipped_dashboards): found in a wheel and in an editable
    install alike, from any working directory."""
    try:
        return str(importlib.resources.files("gateway.shipped_dashboards"))
    except ModuleNotFoundError:  # an editable install made before pyproject.toml mapped them
        raise ConfigError(
            "panels.dashboards_dir: the shipped dashboards are not installed (reinstall the gateway, "
            "e.g. pip install -e .), or set panels.dashboards_dir"
        ) from None


@dataclass(frozen=True)
class PanelSettings:
    dashboards_dir: str = field(default_factory=shipped_dashboards)
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
    cost: CostSettings = field(default_factory=CostSettings)  # prices, budgets, the cost view
    quotas: QuotaSettings = field(default_factory=QuotaSettings)  # AMP's, checked before sending
    auth: AuthSettings = field(default_factory=lambda: AuthSettings(enabled=False))
    tls: TlsSettings = field(default_factory=TlsSettings)  # the certificate served to clients
    server: ServerSettings = field(default_factory=ServerSettings)  # the HTTP edge's bounds
    log_level: str = "info"
    access_log: bool = True
    log_probes: bool = False  # access-log lines for /-/healthy, /-/ready and /metrics
    workers: int | None = None  # worker processes; None: the CPUs available to the container
    shutdown_grace: float = 25.0  # seconds in-flight requests get to finish after SIGTERM

    @property
    def fingerprint(self) -> str:
        """The deployment in every key it shares on Redis: `cache.redis_namespace` when set,
        else its identity (`deployment_identity`)."""
        return self.cache.redis_namespace or deployment_identity(self)

    def workspace(self, name: str | None) -> Workspace | None:
        """The workspace with this id or alias; the default one for None."""
        if name is None:
            name = self.default_workspace
        for workspace in self.workspaces:
            if name in workspace.names:
                return workspace
        return None


# Settings that do not change what a deployment keeps or counts on Redis: where and how it
# serves, logs and runs, where Redis is, and the namespace and key themselves. Every other
# setting (workspaces, aws, upstream, cache, auth with its principals, their enforced labels and
# limits, and any setting added later) is part of the deployment's identity.
_NOT_IDENTITY = {
    "listen_host",
    "listen_port",
    "tls",
    "server",
    "panels",
    "log_level",
    "access_log",
    "log_probes",
    "workers",
    "shutdown_grace",
}
_CACHE_NOT_IDENTITY = {
    "redis_url",
    "redis_state_url",
    "redis_cluster",
    "redis_namespace",
    "redis_hmac_key",
    "memory_bytes",
    "host_dir",
}


def deployment_identity(settings: Settings) -> str:
    """A digest of every setting that matters to what is shared on Redis: two deployments on
    one Redis share keys (rate buckets, slots, cache entries) only when their configurations
    agree, and every replica and worker of one deployment computes the same (sets are sorted,
    nothing depends on the process). A configuration change starts afresh."""
    whole = _canonical(settings)
    for name in _NOT_IDENTITY:
        whole.pop(name, None)
    for name in _CACHE_NOT_IDENTITY:
        whole["cache"].pop(name, None)
    text = json.dumps(whole, sort_keys=True, separators=(",", ":"))
    return "cfg-" + hashlib.sha256(text.encode()).hexdigest()[:20]


def _canonical(value: Any) -> Any:
    """`value` as JSON data that is the same in every process for the same settings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)  # addresses, networks, times


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
    "cost",
    "quotas",
    "auth",
    "limits",
    "tls",
    "server",
    "log_level",
    "access_log",
    "log_probes",
    "workers",
    "shutdown_grace",
    # single-workspace shorthands, same meaning as the GATEWAY_* variables
    "upstream_url",
    "region",
    "sigv4",
    "role_arn",
    "external_id",
    "session_name",
}


_WORKSPACE_KEYS = {"id", "alias", "url", "region", "sigv4", "role_arn", "external_id", "session_name"}
_AWS_KEYS = {"sts_region", "sts_endpoint", "profile"}
# The default workspace's settings that a top-level key (the same name) or a variable also sets.
_DEFAULT_WORKSPACE_ENV = {
    "region": "GATEWAY_REGION",
    "sigv4": "GATEWAY_SIGV4",
    "role_arn": "GATEWAY_ROLE_ARN",
    "external_id": "GATEWAY_EXTERNAL_ID",
    "session_name": "GATEWAY_SESSION_NAME",
}


def build_settings(raw: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    top = Reader(raw)
    top.reject_unknown(_TOP_KEYS)
    listen = env.get("GATEWAY_LISTEN") or top.text("listen", "127.0.0.1:8080")
    host, port = _parse_listen(listen, "GATEWAY_LISTEN" if env.get("GATEWAY_LISTEN") else "listen")

    # The default workspace's top-level keys and GATEWAY_* variables are merged into it before it
    # is checked: they may supply what its entry lacks (a region) or turn a check off (sigv4).
    overrides = _default_overrides(raw, env)
    single = _single_workspace(raw, env, overrides)
    named = top.text("default_workspace", None)
    checked: list[tuple[str, str, Workspace]] = []  # (region key, sigv4 key, workspace)
    for i, item in enumerate(top.items("workspaces")):
        key = f"workspaces[{i}]"
        is_default = single is None and (named is not None or i == 0)  # named, else the first
        workspace = _workspace(item, key, overrides=overrides if is_default else None, only_for=named)
        checked.append((f"{key}.region", f"{key}.sigv4: false", workspace))
    if single is not None:
        # GATEWAY_UPSTREAM_URL names the default workspace; it replaces a YAML one with its id.
        checked = [c for c in checked if c[2].id != single.id]
        if env.get("GATEWAY_UPSTREAM_URL"):
            checked.insert(0, ("GATEWAY_REGION", "GATEWAY_SIGV4=false", single))
        else:
            checked.insert(0, ("region", "sigv4: false", single))
    if not checked:
        raise ConfigError(
            "GATEWAY_UPSTREAM_URL: no upstream configured (set it, or `workspaces` in the file)"
        )
    for region_key, sigv4_hint, workspace in checked:
        if workspace.sigv4 and not workspace.region:
            raise ConfigError(
                f"{region_key}: required when the upstream host is not an AMP host "
                f"(or set {sigv4_hint} for a plain Prometheus)"
            )
    workspaces = [workspace for _, _, workspace in checked]
    seen: set[str] = set()
    for workspace in workspaces:
        for name in workspace.names:
            if name in seen:
                raise ConfigError(f"workspaces: id or alias {name!r} is used twice")
            seen.add(name)
    default = named if single is None else single.id
    if default is not None and default not in seen:
        raise ConfigError(f"default_workspace: {default!r} is not a configured workspace")

    aws_raw = top.mapping("aws")
    aws_raw.reject_unknown(_AWS_KEYS)
    aws = AwsSettings(
        sts_region=env.get("GATEWAY_STS_REGION") or aws_raw.text("sts_region", None),
        sts_endpoint=env.get("GATEWAY_STS_ENDPOINT") or aws_raw.text("sts_endpoint", None),
        profile=aws_raw.text("profile", None),
    )
    if aws.sts_endpoint and not re.match(r"^https?://[^/\s?#]+/?$", aws.sts_endpoint):
        key = "GATEWAY_STS_ENDPOINT" if env.get("GATEWAY_STS_ENDPOINT") else "aws.sts_endpoint"
        raise ConfigError(f"{key}: must be an endpoint URL such as https://sts.eu-west-1.amazonaws.com")
    auth_env = env.get("GATEWAY_AUTH")
    if auth_env and auth_env.lower() != "none":
        raise ConfigError(f"GATEWAY_AUTH: only none is accepted (principals go in a file), got {auth_env!r}")
    auth_raw = "none" if env.get("GATEWAY_AUTH") else raw.get("auth")
    settings = Settings(
        listen_host=host,
        listen_port=port,
        workspaces=tuple(workspaces),
        default_workspace=default or workspaces[0].id,
        upstream=_upstream(top.mapping("upstream"), env),
        aws=aws,
        cache=_cache(top.mapping("cache"), env),
        panels=_panels(top.mapping("panels")),
        cost=read_cost(top.mapping("cost")),
        quotas=read_quotas(top.mapping("quotas")),
        auth=parse_auth(auth_raw, top.mapping("limits").raw or None, host, seen),
        tls=read_tls(top.mapping("tls"), env),
        server=read_server(top.mapping("server")),
        log_level=_log_level(top, env),
        access_log=top.flag("access_log", True),
        log_probes=_env_flag(env, "GATEWAY_LOG_PROBES")
        if env.get("GATEWAY_LOG_PROBES")
        else top.flag("log_probes", False),
        workers=_workers(env.get("GATEWAY_WORKERS"), top),
        shutdown_grace=_env_seconds(env, "GATEWAY_SHUTDOWN_GRACE")
        if env.get("GATEWAY_SHUTDOWN_GRACE")
        else top.seconds("shutdown_grace", 25.0),
    )
    if settings.cache.redis_namespace is not None:
        return settings
    return dataclasses.replace(
        settings, cache=dataclasses.replace(settings.cache, redis_namespace=deployment_identity(settings))
    )


def _env_flag(env: Mapping[str, str], name: str) -> bool:
    return read_bool(env[name], name)


def _env_seconds(env: Mapping[str, str], name: str) -> float:
    return Reader({name: env[name]}).seconds(name, 0.0)


def _workers(from_env: str | None, top: Reader) -> int | None:
    if from_env:
        if not from_env.isdigit() or int(from_env) < 1:
            raise ConfigError(f"GATEWAY_WORKERS: must be a whole number of at least 1, got {from_env!r}")
        return int(from_env)
    if top.raw.get("workers") is None:
        return None
    return top.whole("workers", 1, minimum=1)


_LOG_LEVELS = ("debug", "info", "warning", "error")


def _log_level(top: Reader, env: Mapping[str, str]) -> str:
    key = "GATEWAY_LOG_LEVEL" if env.get("GATEWAY_LOG_LEVEL") else "log_level"
    level: str = env.get("GATEWAY_LOG_LEVEL") or top.text("log_level", "info")
    if level.lower() not in _LOG_LEVELS:
        raise ConfigError(f"{key}: must be {', '.join(_LOG_LEVELS[:-1])} or {_LOG_LEVELS[-1]}, got {level!r}")
    return level.lower()


def _single_workspace(
    raw: Mapping[str, Any], env: Mapping[str, str], overrides: Mapping[str, tuple[str, Any]]
) -> Workspace | None:
    url = env.get("GATEWAY_UPSTREAM_URL") or Reader(raw).text("upstream_url", None)
    if not url:
        return None
    key = "GATEWAY_UPSTREAM_URL" if env.get("GATEWAY_UPSTREAM_URL") else "upstream_url"
    return _workspace({"url": url}, key, env_prefix=key, overrides=overrides)


def _default_overrides(raw: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    """The default workspace's settings given at the top of the file or by GATEWAY_* variables
    (the environment wins), each with the name its errors use."""
    found: dict[str, tuple[str, Any]] = {}
    for name, variable in _DEFAULT_WORKSPACE_ENV.items():
        if env.get(variable):
            found[name] = (variable, env[variable])
        elif raw.get(name) is not None:
            found[name] = (name, raw[name])
    return found


def amp_region(host: str) -> str | None:
    """The region of an AMP host name (any of its forms), None for any other host."""
    for pattern in _AMP_HOSTS:
        match = pattern.match(host.lower())
        if match:
            return match.group("region")
    return None


def _workspace(
    item: Any,
    key: str,
    env_prefix: str | None = None,
    overrides: Mapping[str, tuple[str, Any]] | None = None,
    only_for: str | None = None,
) -> Workspace:
    """One workspace entry. `overrides` replace its own settings before they are checked, when it
    is the workspace `only_for` names (None: whichever it is)."""
    if not isinstance(item, Mapping):
        raise ConfigError(f"{key}: must be a mapping with at least `url`")
    Reader(item, f"{key}.").reject_unknown(_WORKSPACE_KEYS)
    url = item.get("url")
    if not url:
        raise ConfigError(f"{key}.url: required")
    if not isinstance(url, str):
        raise ConfigError(f"{key}.url: must be a URL string, got {url!r}")
    url_key = env_prefix or f"{key}.url"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number below 65536
    except ValueError:
        raise ConfigError(f"{url_key}: must be an http(s) URL, got {url!r}") from None
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
    names = {name: f"{key}.{name}" for name in _DEFAULT_WORKSPACE_ENV}
    if overrides and (only_for is None or only_for in (workspace_id, alias)):
        item = {**item, **{name: value for name, (_, value) in overrides.items()}}
        names.update({name: source for name, (source, _) in overrides.items()})
    sigv4 = read_bool(item.get("sigv4", True), names["sigv4"])
    region = item.get("region") or amp_region(parts.hostname) or ""
    if not isinstance(region, str):
        raise ConfigError(f"{names['region']}: must be a string such as us-east-1")
    role_arn = item.get("role_arn")
    return Workspace(
        id=workspace_id,
        url=base,
        region=region,
        alias=alias,
        sigv4=sigv4,
        role_arn=_role_arn(role_arn, names["role_arn"]) if role_arn else None,
        external_id=item.get("external_id"),
        session_name=item.get("session_name") or "amp-gateway",
    )


def _role_arn(value: Any, key: str) -> str:
    if not isinstance(value, str) or not re.match(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$", value):
        raise ConfigError(f"{key}: must be an IAM role ARN like arn:aws:iam::123456789012:role/x")
    return value


def _upstream(raw: Reader, env: Mapping[str, str]) -> UpstreamSettings:
    raw.reject_unknown(set(UpstreamSettings.__dataclass_fields__))
    d = UpstreamSettings()
    files = read_upstream_tls(raw, env)
    return UpstreamSettings(
        connect_timeout=raw.seconds("connect_timeout", d.connect_timeout),
        timeout=raw.seconds("timeout", d.timeout),
        retries=raw.whole("retries", d.retries, minimum=0),
        retry_budget=raw.seconds("retry_budget", d.retry_budget),
        retry_base=raw.seconds("retry_base", d.retry_base),
        max_concurrency=raw.whole("max_concurrency", d.max_concurrency, minimum=1),
        queue_timeout=raw.seconds("queue_timeout", d.queue_timeout),
        max_connections=raw.whole("max_connections", d.max_connections, minimum=1),
        ca_bundle=files.ca_bundle,
        client_cert=files.client_cert,
        client_key=files.client_key,
        max_answer_bytes=raw.size("max_answer_bytes", d.max_answer_bytes),
    )


def _cache(raw: Reader, env: Mapping[str, str]) -> CacheSettings:
    raw.reject_unknown(set(CacheSettings.__dataclass_fields__))
    d = CacheSettings()
    redis_url = env.get("GATEWAY_REDIS_URL") or raw.text("redis_url", None)
    mode = env.get("GATEWAY_CACHE") or raw.text("mode", "redis" if redis_url else d.mode)
    mode_key = "GATEWAY_CACHE" if env.get("GATEWAY_CACHE") else "cache.mode"
    if mode not in ("off", "memory", "redis"):
        raise ConfigError(f"{mode_key}: must be off, memory or redis, got {mode!r}")
    if mode == "redis" and not redis_url:
        raise ConfigError("GATEWAY_REDIS_URL: required when the cache mode is redis")
    if redis_url and not redis_url.startswith(_REDIS_SCHEMES):
        raise ConfigError("GATEWAY_REDIS_URL: must start with redis://, rediss:// or unix://")
    state_key = "GATEWAY_REDIS_STATE_URL" if env.get("GATEWAY_REDIS_STATE_URL") else "cache.redis_state_url"
    state_url = env.get("GATEWAY_REDIS_STATE_URL") or raw.text("redis_state_url", None)
    if state_url and not redis_url:
        raise ConfigError(f"{state_key}: needs GATEWAY_REDIS_URL (cache.redis_url) too")
    if state_url and not state_url.startswith(_REDIS_SCHEMES):
        raise ConfigError(f"{state_key}: must start with redis://, rediss:// or unix://")
    namespace_key = (
        "GATEWAY_REDIS_NAMESPACE" if env.get("GATEWAY_REDIS_NAMESPACE") else "cache.redis_namespace"
    )
    namespace = env.get("GATEWAY_REDIS_NAMESPACE") or raw.text("redis_namespace", None)
    if namespace is not None and not _NAMESPACE_RE.match(namespace):
        raise ConfigError(f"{namespace_key}: must be 1 to 64 letters, digits, '.', '_' or '-'")
    hmac_key = env.get("GATEWAY_REDIS_HMAC_KEY") or raw.text("redis_hmac_key", None)
    if hmac_key is not None and len(hmac_key) < 32:
        # The value itself is never part of a message.
        key = "GATEWAY_REDIS_HMAC_KEY" if env.get("GATEWAY_REDIS_HMAC_KEY") else "cache.redis_hmac_key"
        raise ConfigError(f"{key}: must be at least 32 characters (e.g. openssl rand -hex 32)")
    return CacheSettings(
        mode=mode,
        redis_url=redis_url,
        redis_cluster=read_bool(env["GATEWAY_REDIS_CLUSTER"], "GATEWAY_REDIS_CLUSTER")
        if env.get("GATEWAY_REDIS_CLUSTER")
        else raw.flag("redis_cluster", False),
        memory_bytes=raw.size("memory_bytes", d.memory_bytes),
        split_interval=raw.seconds("split_interval", d.split_interval),
        max_freshness=raw.seconds("max_freshness", d.max_freshness),
        recent_ttl=raw.seconds("recent_ttl", d.recent_ttl),
        metadata_ttl=raw.seconds("metadata_ttl", d.metadata_ttl),
        parallel_fetches=raw.whole("parallel_fetches", d.parallel_fetches, minimum=1),
        results_ttl=raw.seconds("results_ttl", d.results_ttl),
        max_answer_bytes=raw.size("max_answer_bytes", d.max_answer_bytes),
        host_dir=raw.text("host_dir", d.host_dir),
        max_stale=raw.seconds("max_stale", d.max_stale),
        redis_state_url=state_url,
        redis_max_entry_bytes=raw.size("redis_max_entry_bytes", d.redis_max_entry_bytes),
        redis_namespace=namespace,
        redis_hmac_key=hmac_key,
    )


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _panels(raw: Reader) -> PanelSettings:
    raw.reject_unknown(set(PanelSettings.__dataclass_fields__))
    ancestors = raw.raw.get("frame_ancestors", ["'self'"])
    if isinstance(ancestors, str):
        ancestors = ancestors.split()
    if not isinstance(ancestors, list) or not all(isinstance(a, str) for a in ancestors):
        raise ConfigError("panels.frame_ancestors: must be a list of CSP sources")
    for source in ancestors:
        if any(c in source for c in ";,\r\n"):
            raise ConfigError(f"panels.frame_ancestors: {source!r} is not a CSP source")
    return PanelSettings(
        dashboards_dir=raw.text("dashboards_dir", None) or shipped_dashboards(),
        frame_ancestors=tuple(ancestors),
        public=raw.flag("public", False),
    )


def _parse_listen(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: must be host:port, got {value!r}")
    return (host.strip("[]") or "0.0.0.0"), int(port)
