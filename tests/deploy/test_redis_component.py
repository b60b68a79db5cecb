"""The Redis that ships (components/redis, and compose.yaml) follows the gateway's rule: the
cache on a Redis that evicts its least recently used entries, the state (rate buckets, leases,
coalescing locks) on another that never evicts, and the gateway pointed at each."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from deploy_support import DEPLOY, container_port, of_kind, one, rendered
from test_kustomize import gateway_settings

POLICIES = {"cache": "allkeys-lru", "state": "noeviction"}


def _flags(args: list[str]) -> dict[str, str]:
    return {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}


def test_the_kustomize_redis_keeps_state_apart_from_the_cache(tmp_path: Path) -> None:
    docs = rendered("overlays/redis")
    settings, _ = gateway_settings(docs, tmp_path)
    urls = {"cache": settings.cache.redis_url, "state": settings.cache.redis_state_url}
    assert urls["cache"] and urls["state"] and urls["cache"] != urls["state"]
    pod = one(docs, "Deployment", "amp-gateway-redis")["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    (policy,) = of_kind(docs, "NetworkPolicy")
    (rule,) = policy["spec"]["ingress"]
    admitted = {port["port"] for port in rule["ports"]}
    for role, url in urls.items():
        address = urlsplit(url)
        service = one(docs, "Service", address.hostname or "")
        (port,) = [p for p in service["spec"]["ports"] if p["port"] == address.port]
        name, number = container_port(pod, port["targetPort"])
        flags = _flags(containers[name]["args"])
        assert flags["--port"] == str(number)
        assert flags["--maxmemory-policy"] == POLICIES[role], role
        assert flags["--maxmemory"], role
        assert port["targetPort"] in admitted or number in admitted


def test_compose_keeps_state_apart_from_the_cache() -> None:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    env = services["gateway"]["environment"]
    for role, variable in (("cache", "GATEWAY_REDIS_URL"), ("state", "GATEWAY_REDIS_STATE_URL")):
        host = urlsplit(env[variable]).hostname
        assert host in services and host in services["gateway"]["depends_on"]
        command = services[host]["command"]
        assert _flags(command)["--maxmemory-policy"] == POLICIES[role], role
