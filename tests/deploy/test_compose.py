"""deploy/compose.yaml, read statically (no Docker here to run `docker compose config`): every
service, port, variable, volume and provisioning path it names exists and agrees with the
others, and the provisioned Grafana dashboards are what the gateway exports today."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_support import DEPLOY, REPO, final_stage, instructions

from gateway.config import Settings, load_settings

COMPOSE = DEPLOY / "compose.yaml"
# The port each image listens on unless its command says otherwise.
IMAGE_PORTS = {
    "prom/prometheus": 9090,
    "redis": 6379,
    "grafana/grafana-oss": 3000,
    "prom/node-exporter": 9100,
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def exporter() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "export_dashboards", DEPLOY / "grafana" / "export_dashboards.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts (relative to compose.yaml)."""
    mounts = {}
    for volume in service.get("volumes", []):
        host, container, *_ = volume.split(":")
        if host.startswith((".", "/")):
            mounts[container] = (COMPOSE.parent / host).resolve()
    return mounts


def listen_port(name: str, service: dict[str, Any], env: dict[str, str] | None = None) -> int:
    """The port a service's process listens on inside its container."""
    if env and "GATEWAY_LISTEN" in env:
        return int(env["GATEWAY_LISTEN"].rsplit(":", 1)[1])
    command = service.get("command", [])
    for n, word in enumerate(command):
        if word.startswith("--web.listen-address="):
            return int(word.rsplit(":", 1)[1])
        if word == "--port":
            return int(command[n + 1])
    image = service["image"].rsplit(":", 1)[0]
    assert image in IMAGE_PORTS, f"{name}: unknown image {image}"
    return IMAGE_PORTS[image]


def gateway_env(services: dict[str, Any]) -> dict[str, str]:
    """The gateway container's environment: the image's ENV, then compose's `environment`."""
    env: dict[str, str] = {}
    for instruction in final_stage(instructions((REPO / "Dockerfile").read_text())):
        if instruction.keyword == "ENV":
            for word in instruction.args.split():
                key, _, value = word.partition("=")
                env[key] = value
    env.update({key: str(value) for key, value in services["gateway"]["environment"].items()})
    return env


def gateway_settings(services: dict[str, Any]) -> Settings:
    return load_settings(None, gateway_env(services))


def datasource_uids(value: Any) -> set[str]:
    """The uids of every data source a dashboard's panels, targets and variables name."""
    found: set[str] = set()
    if isinstance(value, dict):
        if isinstance(value.get("datasource"), dict):
            found.add(value["datasource"]["uid"])
        for item in value.values():
            found |= datasource_uids(item)
    elif isinstance(value, list):
        for item in value:
            found |= datasource_uids(item)
    return found


def test_services_and_their_references(compose: dict[str, Any], services: dict[str, Any]) -> None:
    assert {"prometheus", "gateway", "redis", "grafana"} <= set(services)
    declared_volumes = set(compose.get("volumes") or {})
    published: list[str] = []
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith((".", "/")):
                assert (COMPOSE.parent / host).exists(), f"{name}: {host} does not exist"
            else:
                assert host in declared_volumes, f"{name}: volume {host} is not declared"
        if "image" in service and "build" not in service:
            tag = service["image"].rsplit(":", 1)
            assert len(tag) == 2 and tag[1] != "latest", f"{name}: pin the image version"
        env = gateway_env(services) if name == "gateway" else None
        for port in service.get("ports", []):
            parts = str(port).split(":")
            address = parts[0] if len(parts) == 3 else "0.0.0.0"  # HOST:CONTAINER binds every address
            host_port, container_port = parts[-2:]
            # Nothing without inbound auth is reachable from other machines.
            assert address == "127.0.0.1", f"{name}: publish {port} on 127.0.0.1"
            assert int(container_port) == listen_port(name, service, env), f"{name}: {port}"
            published.append(host_port)
    assert len(published) == len(set(published))


def test_gateway_is_built_from_the_repository(services: dict[str, Any]) -> None:
    build = services["gateway"]["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == REPO
    assert (context / build.get("dockerfile", "Dockerfile")).is_file()
    # The same hardening as on Kubernetes.
    gateway = services["gateway"]
    assert gateway["user"] == "10001:10001"
    assert gateway["read_only"] is True and "/tmp" in gateway["tmpfs"]
    assert gateway["cap_drop"] == ["ALL"]


def test_gateway_settings_name_the_other_services(services: dict[str, Any]) -> None:
    settings = gateway_settings(services)
    env = gateway_env(services)
    assert env["GATEWAY_UPSTREAM_URL"] == "http://prometheus:9090"
    (workspace,) = settings.workspaces
    assert workspace.sigv4 is False
    upstream = urlsplit(workspace.url)
    assert upstream.hostname in services
    assert upstream.port == listen_port("prometheus", services[str(upstream.hostname)])
    assert settings.cache.mode == "redis"
    redis = urlsplit(settings.cache.redis_url or "")
    assert redis.hostname in services
    assert redis.port == listen_port("redis", services[str(redis.hostname)])
    assert {"prometheus", "redis"} <= set(services["gateway"]["depends_on"])
    assert settings.auth.enabled is False  # GATEWAY_AUTH=none; ports on loopback only


def test_prometheus_scrapes_itself_and_the_gateway(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    config_path = next(w.split("=", 1)[1] for w in prometheus["command"] if w.startswith("--config.file="))
    config = yaml.safe_load(bind_mounts(prometheus)[config_path].read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    own = listen_port("prometheus", prometheus)
    targets = {
        name: [t for group in job["static_configs"] for t in group["targets"]] for name, job in jobs.items()
    }
    assert f"localhost:{own}" in targets["prometheus"]
    settings = gateway_settings(services)
    assert targets["amp-gateway"] == [f"gateway:{settings.listen_port}"]
    assert jobs["amp-gateway"].get("metrics_path", "/metrics") == "/metrics"
    for name, hosts in targets.items():
        for target in hosts:
            host, port = target.rsplit(":", 1)
            if host != "localhost":
                assert host in services, f"job {name}: {host} is not a service"
                assert int(port) == listen_port(
                    host, services[host], gateway_env(services) if host == "gateway" else None
                )


def test_grafana_provisioning(services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    mounts = bind_mounts(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    (datasource_file,) = (provisioning / "datasources").glob("*.yml")
    (datasource,) = yaml.safe_load(datasource_file.read_text())["datasources"]
    settings = gateway_settings(services)
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == f"http://gateway:{settings.listen_port}"
    assert datasource["uid"] == exporter().DATASOURCE_UID
    assert "gateway" in grafana["depends_on"]

    (provider_file,) = (provisioning / "dashboards").glob("*.yml")
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    assert provider["type"] == "file"
    folder = mounts[provider["options"]["path"]]
    assert folder == DEPLOY / "grafana" / "dashboards"
    boards = sorted(folder.glob("*.json"))
    assert boards
    for board in boards:
        exported = json.loads(board.read_text())
        assert datasource_uids(exported) == {datasource["uid"]}, board.name
        assert "${" not in board.read_text(), f"{board.name}: an input left unfilled"


def test_provisioned_dashboards_are_what_the_gateway_exports() -> None:
    """Fails when dashboards/*.yml or the exporter changed: run
    `.venv/bin/python deploy/grafana/export_dashboards.py` and commit the result."""
    module = exporter()
    expected: dict[str, str] = module.rendered()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in module.TARGET.glob("*.json")}
    assert sorted(on_disk) == sorted(expected)
    shipped = {p.stem for p in (REPO / "dashboards").iterdir() if p.suffix in (".yml", ".yaml")}
    assert {Path(name).stem for name in on_disk} == shipped
    for name, text in expected.items():
        assert on_disk[name] == text, f"{name} is stale"
