"""deploy/kustomize: every target renders with `kubectl kustomize`, every object satisfies the
Kubernetes schemas strictly (an unknown or misspelt field fails), and the rendered objects fit
together: hardened pods, probes on the gateway's port, IRSA, selectors, references, and a
gateway configuration that the gateway itself accepts with the environment the pod gets."""

from __future__ import annotations

import copy
import ipaddress
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from deploy_support import (
    KUBERNETES_VERSION,
    KUSTOMIZE,
    TARGETS,
    Doc,
    container,
    container_port,
    effective_security,
    environment,
    kustomize,
    mounted_file,
    of_kind,
    one,
    quantity,
    relative,
    rendered,
    selects,
    source,
    volume_references,
)

from gateway.config import Settings, load_settings

GATEWAY = "amp-gateway"
ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")


def schema_errors(docs: list[Doc]) -> list[str]:
    errors = []
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(part) for part in err.path)
            errors.append(f"{where}: {path}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError as err:
            errors.append(f"{where}: {err.message}")
    return errors


def gateway_deployment(docs: list[Doc]) -> Doc:
    return one(docs, "Deployment", GATEWAY)


def gateway_settings(docs: list[Doc], tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    """The gateway's settings as the pod would load them: its environment, and the file that
    GATEWAY_CONFIG names, read from the ConfigMap mounted there."""
    deployment = gateway_deployment(docs)
    pod = deployment["spec"]["template"]["spec"]
    spec = container(deployment, "gateway")
    env = environment(docs, pod, spec)
    assert "GATEWAY_CONFIG" in env, "the gateway is not given its configuration file"
    config = tmp_path / "config.yaml"
    config.write_text(mounted_file(docs, pod, spec, env["GATEWAY_CONFIG"]))
    return load_settings(None, {**env, "GATEWAY_CONFIG": str(config)}), env


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def docs(target: str) -> list[Doc]:
    return rendered(target)


# ---------------------------------------------------------------- schemas


def test_every_object_satisfies_the_kubernetes_schema(docs: list[Doc]) -> None:
    assert schema_errors(docs) == []


def test_validation_is_strict() -> None:
    """The schema check can fail: a misspelt field and a wrong type are both reported."""
    deployment = gateway_deployment(rendered("base"))
    misspelt = copy.deepcopy(deployment)
    misspelt["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["revisionHistoryLimit"] = "five"
    unknown_kind = {"apiVersion": "v1", "kind": "Deploymnet", "metadata": {"name": "x"}}
    assert len(schema_errors([misspelt, wrong_type, unknown_kind])) == 3


# ---------------------------------------------------------------- pods


def test_every_container_is_locked_down(docs: list[Doc]) -> None:
    deployments = of_kind(docs, "Deployment")
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod.get("automountServiceAccountToken") is False
        assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
        assert not any("hostPath" in volume for volume in pod.get("volumes", []))
        assert (pod.get("securityContext") or {}).get("runAsNonRoot") is True
        for spec in pod["containers"] + pod.get("initContainers", []):
            where = f"{deployment['metadata']['name']}/{spec['name']}"
            security = effective_security(pod, spec)
            assert security.get("runAsNonRoot") is True, where
            for key in ("runAsUser", "runAsGroup"):
                value = security.get(key)
                assert isinstance(value, int) and value > 0, f"{where}: {key} must be a non-root number"
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("privileged", False) is False, where
            assert security.get("capabilities") == {"drop": ["ALL"]}, where
            assert security.get("seccompProfile") == {"type": "RuntimeDefault"}, where
            image = spec["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{where}: pin {image}"
            resources = spec.get("resources", {})
            for resource in ("cpu", "memory"):
                request = quantity(resources["requests"][resource])
                assert 0 < request <= quantity(resources["limits"][resource]), f"{where}: {resource}"


def test_gateway_pod(docs: list[Doc], tmp_path: Path) -> None:
    deployment = gateway_deployment(docs)
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    pod = deployment["spec"]["template"]["spec"]
    spec = container(deployment, "gateway")
    for context in (pod["securityContext"], spec["securityContext"]):
        assert context["runAsUser"] == 10001 and context["runAsGroup"] == 10001
        assert context["runAsNonRoot"] is True
    tmp = [m for m in spec["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert len(tmp) == 1
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp[0]["name"])

    settings, env = gateway_settings(docs, tmp_path)
    assert env["GATEWAY_LISTEN"] == "0.0.0.0:8080"
    assert container_port(pod, "http") == ("gateway", settings.listen_port)
    # The gateway serves HTTPS when given a certificate; the kubelet must then probe with HTTPS.
    scheme = "HTTPS" if settings.tls.cert_file else "HTTP"
    for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
        http = spec[probe]["httpGet"]
        assert http["path"] == path
        assert container_port(pod, http["port"]) == ("gateway", settings.listen_port), probe
        assert http.get("scheme", "HTTP") == scheme, probe
    # The readiness probe waits longer than the gateway's own upstream check (5 s).
    assert spec["readinessProbe"]["timeoutSeconds"] > 5

    # SIGTERM comes after preStop; the kubelet kills at terminationGracePeriodSeconds.
    pre_stop = spec["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + settings.shutdown_grace
    # One worker per CPU of the limit; all of them share the configured memory cache.
    assert settings.workers == math.ceil(quantity(spec["resources"]["limits"]["cpu"]))
    assert settings.cache.memory_bytes < quantity(spec["resources"]["limits"]["memory"]) / 2


def test_gateway_pods_spread_across_nodes(docs: list[Doc]) -> None:
    deployment = gateway_deployment(docs)
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert "kubernetes.io/hostname" in spread
    for constraint in spread.values():
        assert selects(constraint["labelSelector"]["matchLabels"], labels)
    for term in pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]:
        assert selects(term["podAffinityTerm"]["labelSelector"]["matchLabels"], labels)


# ---------------------------------------------------------------- identity and wiring


def test_service_account_carries_the_irsa_role(docs: list[Doc]) -> None:
    account = one(docs, "ServiceAccount", GATEWAY)
    assert ROLE_ARN_RE.match(account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"])
    pod = gateway_deployment(docs)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    # The gateway reads the IRSA token file as its non-root user.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_everything_lives_in_the_restricted_namespace(docs: list[Doc]) -> None:
    (namespace,) = of_kind(docs, "Namespace")
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in docs:
        if doc is not namespace:
            assert doc["metadata"].get("namespace") == namespace["metadata"]["name"], doc["metadata"]["name"]


def test_service_selects_the_gateway_pods_only(docs: list[Doc], target: str) -> None:
    service = one(docs, "Service", GATEWAY)
    assert service["spec"]["type"] == "ClusterIP"
    selector = service["spec"]["selector"]
    gateway = gateway_deployment(docs)
    assert selects(selector, gateway["spec"]["template"]["metadata"]["labels"])
    for other in of_kind(docs, "Deployment"):
        if other is not gateway:
            assert not selects(selector, other["spec"]["template"]["metadata"]["labels"])
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    pod = gateway["spec"]["template"]["spec"]
    expected = "oauth2-proxy" if target == "overlays/auth-proxy" else "gateway"
    assert container_port(pod, port["targetPort"])[0] == expected


def test_every_service_reaches_a_declared_port(docs: list[Doc]) -> None:
    for service in of_kind(docs, "Service"):
        pods = [
            d["spec"]["template"]["spec"]
            for d in of_kind(docs, "Deployment")
            if selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(pods) == 1, service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            container_port(pods[0], port["targetPort"])


def test_hpa_and_pdb_target_the_gateway(docs: list[Doc]) -> None:
    deployment = gateway_deployment(docs)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (hpa,) = of_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", GATEWAY)
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    # CPU utilization is relative to requests: every container of the pod needs one.
    assert all(
        "cpu" in c["resources"]["requests"] for c in deployment["spec"]["template"]["spec"]["containers"]
    )

    (pdb,) = of_kind(docs, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    for other in of_kind(docs, "Deployment"):
        if other is not deployment:
            assert not selects(
                pdb["spec"]["selector"]["matchLabels"], other["spec"]["template"]["metadata"]["labels"]
            )
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]
    assert deployment["spec"]["selector"]["matchLabels"] == pdb["spec"]["selector"]["matchLabels"]


def test_every_config_map_and_secret_reference_resolves(docs: list[Doc]) -> None:
    for deployment in of_kind(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for kind, name, keys in volume_references(pod):
            entries = source(docs, kind, name)
            assert set(keys) <= set(entries), f"{kind} {name} lacks {set(keys) - set(entries)}"
        for spec in pod["containers"]:
            environment(docs, pod, spec)  # fails on a reference that does not resolve


# ---------------------------------------------------------------- the gateway's own configuration


def test_the_gateway_accepts_its_configuration(docs: list[Doc], target: str, tmp_path: Path) -> None:
    settings, _ = gateway_settings(docs, tmp_path)
    assert settings.listen_host == "0.0.0.0"
    assert all(w.sigv4 and w.region for w in settings.workspaces)
    if target == "base":
        assert settings.auth.enabled is False  # `auth: none`, documented in kustomization.yaml
        assert settings.cache.mode == "memory"


def test_redis_overlay_points_the_gateway_at_its_redis(tmp_path: Path) -> None:
    docs = rendered("overlays/redis")
    settings, _ = gateway_settings(docs, tmp_path)
    assert settings.cache.mode == "redis"
    url = urlsplit(settings.cache.redis_url or "")
    service = one(docs, "Service", url.hostname or "")
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    redis = one(docs, "Deployment", "amp-gateway-redis")
    assert selects(service["spec"]["selector"], redis["spec"]["template"]["metadata"]["labels"])
    assert container_port(redis["spec"]["template"]["spec"], port["targetPort"]) == ("redis", 6379)
    # Only the gateway's pods may connect.
    (policy,) = of_kind(docs, "NetworkPolicy")
    assert selects(
        policy["spec"]["podSelector"]["matchLabels"], redis["spec"]["template"]["metadata"]["labels"]
    )
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    gateway_labels = gateway_deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert set(peer) == {"podSelector"} and selects(peer["podSelector"]["matchLabels"], gateway_labels)


def test_auth_proxy_overlay_trusts_only_the_sidecar(tmp_path: Path) -> None:
    docs = rendered("overlays/auth-proxy")
    settings, _ = gateway_settings(docs, tmp_path)
    assert settings.auth.enabled
    proxy = settings.auth.proxy
    assert proxy is not None
    assert proxy.trusted == (ipaddress.ip_network("127.0.0.1/32"),)
    deployment = gateway_deployment(docs)
    pod = deployment["spec"]["template"]["spec"]
    sidecar = environment(docs, pod, container(deployment, "oauth2-proxy"))
    # The sidecar forwards to the gateway on loopback, and passes the header the gateway reads.
    upstream = urlsplit(sidecar["OAUTH2_PROXY_UPSTREAMS"])
    assert (upstream.hostname, upstream.port) == ("127.0.0.1", settings.listen_port)
    assert sidecar["OAUTH2_PROXY_PASS_USER_HEADERS"] == "true"
    assert proxy.header == "x-forwarded-email"
    listen = int(sidecar["OAUTH2_PROXY_HTTP_ADDRESS"].rsplit(":", 1)[1])
    assert container_port(pod, listen) == ("oauth2-proxy", listen)
    # Principals are reachable through the proxy only: none has a token or password.
    assert all(c.token is None and c.password is None for c in settings.auth.credentials)


def test_components_combine(tmp_path: Path) -> None:
    """Redis and the auth proxy together, as the overlays' comments tell users to do."""
    overlay = tmp_path / "production"
    overlay.mkdir()
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "amp-gateway",
        "resources": [relative(KUSTOMIZE / "base", overlay)],
        "components": [
            relative(KUSTOMIZE / "components" / name, overlay) for name in ("redis", "auth-proxy")
        ],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    docs = kustomize(overlay)
    assert schema_errors(docs) == []
    test_every_config_map_and_secret_reference_resolves(docs)
    settings, _ = gateway_settings(docs, tmp_path)
    assert settings.cache.mode == "redis" and settings.auth.proxy is not None
