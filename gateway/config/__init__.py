"""Settings: typed and frozen, read from a YAML file and the environment (env wins) and
validated at start-up; a bad setting raises ConfigError naming its key."""

from gateway.config.auth import AuthSettings, Credential, Principal, ProxySettings, is_loopback
from gateway.config.certificates import TlsSettings
from gateway.config.limits import MAX_POINTS, Limits, Rate
from gateway.config.readers import ConfigError
from gateway.config.settings import (
    AwsSettings,
    CacheSettings,
    PanelSettings,
    Settings,
    UpstreamSettings,
    Workspace,
    build_settings,
    load_settings,
)

__all__ = [
    "MAX_POINTS",
    "AuthSettings",
    "AwsSettings",
    "CacheSettings",
    "ConfigError",
    "Credential",
    "Limits",
    "PanelSettings",
    "Principal",
    "ProxySettings",
    "Rate",
    "Settings",
    "TlsSettings",
    "UpstreamSettings",
    "Workspace",
    "build_settings",
    "is_loopback",
    "load_settings",
]
