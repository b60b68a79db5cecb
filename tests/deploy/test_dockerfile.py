"""The Dockerfile and .dockerignore, read statically (no Docker daemon here): a numeric non-root
user, dependencies in a layer of their own before the source, every build input present and
let through by .dockerignore, the shipped dashboards in the image, the probes' port."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from deploy_support import (
    REPO,
    Instruction,
    container,
    copy_sources,
    final_stage,
    instructions,
    one,
    rendered,
)


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        patterns.append((negated, re.compile(f"^{regex.replace('.*/', '(?:.*/)?')}$")))
    return patterns


def ignored(path: str) -> bool:
    """Whether Docker leaves `path` (relative to the context) out: the last pattern matching it
    or one of its parent directories decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for negated, regex in dockerignore_patterns():
        if any(regex.match(candidate) for candidate in candidates):
            verdict = not negated
    return verdict


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return instructions((REPO / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def build_stage(dockerfile: list[Instruction]) -> list[Instruction]:
    """The stage that installs the gateway (the one that copies its source)."""
    for instruction in dockerfile:
        if instruction.keyword == "COPY" and "gateway" in copy_sources(instruction)[0]:
            return [i for i in dockerfile if i.stage == instruction.stage]
    raise AssertionError("no stage copies gateway/")


def test_runs_as_the_numeric_user_the_pods_expect(dockerfile: list[Instruction]) -> None:
    users = [i.args for i in final_stage(dockerfile) if i.keyword == "USER"]
    assert users, "the image must not run as root"
    match = re.fullmatch(r"(\d+):(\d+)", users[-1])
    assert match, f"USER {users[-1]}: numeric UID:GID, so Kubernetes can check runAsNonRoot"
    uid, gid = int(match.group(1)), int(match.group(2))
    assert uid > 0 and gid > 0
    context = container(one(rendered("base"), "Deployment", "amp-gateway"), "gateway")["securityContext"]
    assert (uid, gid) == (context["runAsUser"], context["runAsGroup"])


def test_dependencies_are_installed_before_the_source_is_copied(
    dockerfile: list[Instruction], pyproject: dict[str, Any], tmp_path: Path
) -> None:
    stage = build_stage(dockerfile)
    source_copy = next(
        n for n, i in enumerate(stage) if i.keyword == "COPY" and "gateway" in copy_sources(i)[0]
    )
    installs = [n for n, i in enumerate(stage) if i.keyword == "RUN" and "pip install" in i.args]
    assert installs and installs[0] < source_copy, "dependencies must be installed before COPY gateway"
    dependencies = stage[installs[0]]
    for earlier in stage[: installs[0]]:
        if earlier.keyword == "COPY":
            assert copy_sources(earlier)[0] == ["pyproject.toml"], (
                f"COPY {earlier.args} before the deps layer"
            )
    # The project itself is installed after its source, without re-resolving dependencies.
    assert any("--no-deps" in stage[n].args for n in installs if n > source_copy)

    # The dependency layer's own command lists exactly pyproject's dependencies.
    words = shlex.split(dependencies.args)
    program = words[words.index("-c") + 1]
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == pyproject["project"]["dependencies"]


def test_every_build_input_is_in_the_context(
    dockerfile: list[Instruction], pyproject: dict[str, Any]
) -> None:
    copied: list[str] = []
    for instruction in dockerfile:
        if instruction.keyword != "COPY":
            continue
        sources, _, flags = copy_sources(instruction)
        if "from" in flags:
            continue
        for source in sources:
            path = REPO / source
            assert path.exists(), f"COPY {source}: not in the repository"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            kept = [p for p in files if "__pycache__" not in p.parts]
            assert kept and not any(ignored(str(p.relative_to(REPO))) for p in kept), (
                f"COPY {source}: .dockerignore leaves it out"
            )
            if instruction.stage == build_stage(dockerfile)[0].stage:
                copied.append(source.rstrip("/"))
    # What building the package reads must be in the build stage.
    project = pyproject["project"]
    needed = [project["readme"], *project.get("license-files", [])]
    needed += list(pyproject.get("tool", {}).get("setuptools", {}).get("package-dir", {}).values())
    for path in needed:
        assert path in copied, f"pyproject.toml needs {path} to build the package; the build stage lacks it"


def test_the_shipped_dashboards_are_in_the_image(
    dockerfile: list[Instruction], pyproject: dict[str, Any]
) -> None:
    copies = [copy_sources(i)[0] for i in final_stage(dockerfile) if i.keyword == "COPY"]
    in_image = any("dashboards" in sources for sources in copies)
    package_dirs = pyproject.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    in_wheel = "dashboards" in package_dirs.values()
    assert in_image or in_wheel
    assert any(p.suffix == ".yml" for p in (REPO / "dashboards").iterdir())


def test_dockerignore_keeps_everything_else_out() -> None:
    for path in (
        ".git/config",
        ".venv/bin/python",
        "tests/conftest.py",
        "tests/deploy/test_dockerfile.py",
        "deploy/compose.yaml",
        "bench/README.md",
        "test-artifacts/x.png",
        ".hypothesis/examples/x",
        "gateway/__pycache__/app.cpython-311.pyc",
        "amp_gateway.egg-info/PKG-INFO",
    ):
        assert ignored(path), path
    for path in ("pyproject.toml", "README.md", "gateway/app.py", "dashboards/demo.yml"):
        assert not ignored(path), path


def test_port_health_check_and_probes(dockerfile: list[Instruction]) -> None:
    stage = final_stage(dockerfile)
    env = " ".join(i.args for i in stage if i.keyword == "ENV")
    listen = re.search(r"GATEWAY_LISTEN=(\S+)", env)
    assert listen and listen.group(1) == "0.0.0.0:8080"
    assert [i.args for i in stage if i.keyword == "EXPOSE"] == ["8080"]
    (health,) = [i.args for i in stage if i.keyword == "HEALTHCHECK"]
    assert "http://127.0.0.1:8080/-/healthy" in health
    comments = (REPO / "Dockerfile").read_text()
    assert "/-/ready" in comments and "/-/healthy" in comments
    assert [i.args for i in stage if i.keyword == "CMD"] == ['["serve"]']
