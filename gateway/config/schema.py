"""Every settings key, as a dotted path, and the environment variable that also sets it.

README.md's reference table ("Every setting") lists exactly these keys and variables;
tests/config/test_reference.py checks it both ways, and that every GATEWAY_* name in gateway/
is in ENVIRONMENT.

A section's keys are the very set its loader checks with Reader.reject_unknown (or the dataclass
whose fields that check uses). A key whose value is a mapping of settings is registered in
SECTIONS under its path; a list of such mappings under its path with "[]". Any other key is a
leaf, such as `auth.principals[].enforce` (a mapping of label to value) or
`auth.principals[].limits` (the keys of `limits`, for one principal).

Adding a key: add it to its loader's set (or dataclass), a row to README's table, and, when a
variable sets it too, an entry in ENVIRONMENT. Adding a section: register it in SECTIONS.
"""

from __future__ import annotations

from collections.abc import Collection

from gateway.config import amp_rates, auth, certificates, cost, limits, quotas, server, settings

# Variable -> the key it sets (the environment wins over the file). None: no key.
ENVIRONMENT: dict[str, str | None] = {
    "GATEWAY_CONFIG": None,  # the settings file itself
    "GATEWAY_LISTEN": "listen",
    "GATEWAY_UPSTREAM_URL": "upstream_url",
    **{variable: key for key, variable in settings._DEFAULT_WORKSPACE_ENV.items()},
    "GATEWAY_STS_REGION": "aws.sts_region",
    "GATEWAY_STS_ENDPOINT": "aws.sts_endpoint",
    "GATEWAY_UPSTREAM_CA_BUNDLE": "upstream.ca_bundle",
    "GATEWAY_UPSTREAM_CLIENT_CERT": "upstream.client_cert",
    "GATEWAY_UPSTREAM_CLIENT_KEY": "upstream.client_key",
    "GATEWAY_CACHE": "cache.mode",
    "GATEWAY_REDIS_URL": "cache.redis_url",
    "GATEWAY_REDIS_CLUSTER": "cache.redis_cluster",
    "GATEWAY_REDIS_STATE_URL": "cache.redis_state_url",
    "GATEWAY_REDIS_NAMESPACE": "cache.redis_namespace",
    "GATEWAY_REDIS_HMAC_KEY": "cache.redis_hmac_key",
    "GATEWAY_AUTH": "auth",
    "GATEWAY_TLS_CERT_FILE": "tls.cert_file",
    "GATEWAY_TLS_KEY_FILE": "tls.key_file",
    "GATEWAY_LOG_LEVEL": "log_level",
    "GATEWAY_LOG_PROBES": "log_probes",
    "GATEWAY_WORKERS": "workers",
    "GATEWAY_SHUTDOWN_GRACE": "shutdown_grace",
}

# Path of a section ("" for the top level) -> the keys it accepts.
SECTIONS: dict[str, Collection[str]] = {
    "": settings._TOP_KEYS,
    "workspaces[]": settings._WORKSPACE_KEYS,
    "upstream": settings.UpstreamSettings.__dataclass_fields__,
    "aws": settings._AWS_KEYS,
    "cache": settings.CacheSettings.__dataclass_fields__,
    "panels": settings.PanelSettings.__dataclass_fields__,
    "tls": certificates.TlsSettings.__dataclass_fields__,
    "server": server.KEYS,
    "cost": cost.KEYS,
    "cost.budgets[]": cost._BUDGET_KEYS,
    "quotas": quotas.KEYS,
    "quotas.rates": amp_rates.RATE_KEYS,
    "auth": auth._AUTH_KEYS,
    "auth.principals[]": auth._PRINCIPAL_KEYS,
    "auth.proxy": auth._PROXY_KEYS,
    "auth.cors": auth._CORS_KEYS,
    "auth.failed_sign_ins": auth._FAILED_SIGN_IN_KEYS,
    "limits": limits._KEYS,
    "limits.rate": limits._RATE_KEYS,
}


def keys() -> dict[str, str | None]:
    """Every key path (sections that a variable sets included, such as `auth`) -> its variable."""
    found: dict[str, str | None] = {}

    def walk(section: str) -> None:
        for name in sorted(SECTIONS[section]):
            path = f"{section}.{name}" if section else name
            if path in SECTIONS:
                walk(path)
            elif f"{path}[]" in SECTIONS:
                walk(f"{path}[]")
            else:
                found[path] = None

    walk("")
    for variable, path in ENVIRONMENT.items():
        if path is not None:
            found[path] = variable
    return found
