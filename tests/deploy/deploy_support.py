"""Reading the deployment artefacts: kustomize renders (through `kubectl kustomize`), the
references between the rendered objects, and the environment a container really gets."""

from __future__ import annotations

import base64
import copy
import functools
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUSTOMIZE = DEPLOY / "kustomize"
# Every directory users are told to `kubectl apply -k`.
TARGETS = ("base", "overlays/redis", "overlays/auth-proxy")
# The Kubernetes version whose schemas the rendered objects must satisfy (EKS standard support).
KUBERNETES_VERSION = "1.30"

Doc = dict[str, Any]


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is not installed: the deploy tests render with `kubectl kustomize`")
    return path


def kustomize(directory: Path) -> list[Doc]:
    """The objects `kubectl kustomize directory` renders, in its order."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@functools.cache
def _rendered(target: str) -> tuple[Doc, ...]:
    return tuple(kustomize(KUSTOMIZE / target))


def rendered(target: str) -> list[Doc]:
    """A target's render (cached for the session; a deep copy each time, so tests may mutate)."""
    return copy.deepcopy(list(_rendered(target)))


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def container(deployment: Doc, name: str) -> Doc:
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert name in containers, f"{deployment['metadata']['name']} has no container {name!r}"
    found: Doc = containers[name]
    return found


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def effective_security(pod: Doc, spec: Doc) -> Doc:
    """A container's security settings: its own, else the pod's (as the kubelet applies them)."""
    pod_context = pod.get("securityContext") or {}
    own = spec.get("securityContext") or {}
    keys = ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile")
    merged = {key: pod_context[key] for key in keys if key in pod_context}
    merged.update(own)
    return merged


def container_port(pod: Doc, port: int | str) -> tuple[str, int]:
    """(container name, port number) that a Service targetPort or a probe's port names."""
    for spec in pod["containers"]:
        for declared in spec.get("ports", []):
            if port in (declared.get("name"), declared["containerPort"]):
                return spec["name"], declared["containerPort"]
    raise AssertionError(f"no container declares port {port!r}")


def _data(doc: Doc) -> dict[str, str]:
    """A ConfigMap's or Secret's entries as text."""
    data = dict(doc.get("data") or {})
    if doc["kind"] == "Secret":
        data = {key: base64.b64decode(value).decode() for key, value in data.items()}
    data.update(doc.get("stringData") or {})
    return data


def source(docs: list[Doc], kind: str, name: str) -> dict[str, str]:
    return _data(one(docs, kind, name))


def environment(docs: list[Doc], pod: Doc, spec: Doc) -> dict[str, str]:
    """The variables a container starts with (envFrom first, then env, which wins, as in the
    kubelet); each reference must resolve to a rendered ConfigMap or Secret and key."""
    env: dict[str, str] = {}
    for item in spec.get("envFrom", []):
        if "configMapRef" in item:
            env.update(source(docs, "ConfigMap", item["configMapRef"]["name"]))
        else:
            env.update(source(docs, "Secret", item["secretRef"]["name"]))
    for item in spec.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]
        kind, key_ref = (
            ("ConfigMap", ref["configMapKeyRef"])
            if "configMapKeyRef" in ref
            else ("Secret", ref["secretKeyRef"])
        )
        entries = source(docs, kind, key_ref["name"])
        assert key_ref["key"] in entries, f"{kind} {key_ref['name']} has no key {key_ref['key']!r}"
        env[item["name"]] = entries[key_ref["key"]]
    return env


def volume_references(pod: Doc) -> list[tuple[str, str, list[str]]]:
    """(kind, name, keys) of every ConfigMap and Secret the pod's volumes mount."""
    found: list[tuple[str, str, list[str]]] = []
    for volume in pod.get("volumes", []):
        sources = [volume, *(volume.get("projected") or {}).get("sources", [])]
        for item in sources:
            if "configMap" in item:
                ref = item["configMap"]
                found.append(("ConfigMap", ref["name"], [i["key"] for i in ref.get("items", [])]))
            if "secret" in item:
                ref = item["secret"]
                name = ref.get("secretName") or ref.get("name")
                found.append(("Secret", name, [i["key"] for i in ref.get("items", [])]))
    return found


def mounted_file(docs: list[Doc], pod: Doc, spec: Doc, path: str) -> str:
    """The content of the file at `path` in the container, from a ConfigMap or Secret volume."""
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in spec.get("volumeMounts", []):
        directory = mount["mountPath"].rstrip("/")
        if not path.startswith(directory + "/"):
            continue
        key = mount.get("subPath") or path[len(directory) + 1 :]
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            return source(docs, "ConfigMap", volume["configMap"]["name"])[key]
        if "secret" in volume:
            return source(docs, "Secret", volume["secret"]["secretName"])[key]
    raise AssertionError(f"nothing mounted at {path}")


def relative(path: Path, start: Path) -> str:
    """`path` relative to `start` (kustomize refuses absolute paths to bases and components)."""
    return os.path.relpath(path, start)


_UNITS = {"m": 1e-3, "": 1.0, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "k": 1e3, "M": 1e6, "G": 1e9}


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (`500m`, `2`, `512Mi`, `1Gi`) as a number."""
    text = str(value)
    for unit in sorted(_UNITS, key=len, reverse=True):
        if unit and text.endswith(unit):
            return float(text[: -len(unit)]) * _UNITS[unit]
    return float(text)


# ---------------------------------------------------------------- the Dockerfile


@dataclass(frozen=True)
class Instruction:
    stage: int  # 0 for the first FROM
    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined (comment lines inside them are
    dropped, as Docker does)."""
    found: list[Instruction] = []
    stage = -1
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        pending = ""
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        found.append(Instruction(stage, keyword, args.strip()))
    return found


def copy_sources(instruction: Instruction) -> tuple[list[str], str, dict[str, str]]:
    """(sources, destination, --flags) of a COPY."""
    words = shlex.split(instruction.args)
    flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1], paths[-1], flags


def final_stage(dockerfile: list[Instruction]) -> list[Instruction]:
    last = dockerfile[-1].stage
    return [i for i in dockerfile if i.stage == last]
