"""The wheel: what ships in it, `--version`, and the shipped dashboards found from any working
directory, both from the wheel and from the editable install the tests run on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PROJECT["project"]["version"]
SHIPPED = sorted(p.name for p in (ROOT / "dashboards").glob("*.y*ml"))

# Prints where gateway was imported from, the default dashboards directory and what loads from it.
PROBE = """
import json, gateway
from gateway.config import PanelSettings
from gateway.panels.dashboards import DashboardStore
store = DashboardStore(PanelSettings().dashboards_dir)
print(json.dumps({"gateway": gateway.__file__, "dir": store.directory,
                  "loaded": sorted(d.file for d in store.dashboards()),
                  "problems": [str(p) for p in store.problems()]}))
"""


def _run(args: list[str], cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the sources (never from a stale build/ of the working tree)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "gateway", source / "gateway", ignore=ignore)
    shutil.copytree(ROOT / "dashboards", source / "dashboards", ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)]
    if int(version("setuptools").split(".")[0]) >= 77:  # the build's requirement: no network needed
        command.insert(4, "--no-build-isolation")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("amp_gateway-*.whl")
    return built


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel's files as an installed pure-Python wheel lays them out. On PYTHONPATH they come
    before the editable install (its finder is the last on sys.meta_path); the dependencies come
    from the test venv."""
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def test_every_gateway_package_is_listed_in_pyproject() -> None:
    listed = set(PROJECT["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(d.relative_to(ROOT).parts)
        for d in [ROOT / "gateway", *(ROOT / "gateway").rglob("*")]
        if d.is_dir() and d.name != "__pycache__"
    }
    missing = sorted(on_disk - listed)
    assert not missing, (
        f"add {missing} to [tool.setuptools] packages in pyproject.toml, or the wheel lacks them"
    )


def test_wheel_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"gateway/shipped_dashboards/{name}" for name in SHIPPED}
    expected |= {"gateway/shipped_dashboards/__init__.py", "gateway/py.typed"}
    expected |= {f"amp_gateway-{VERSION}.dist-info/licenses/LICENSE"}
    for folder in ("static", "templates"):
        for path in (ROOT / "gateway/panels" / folder).iterdir():
            if path.is_file() and path.suffix != ".pyc":
                expected.add(f"gateway/panels/{folder}/{path.name}")
    expected |= {str(p.relative_to(ROOT)) for p in (ROOT / "gateway").rglob("*.py")}
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    assert SHIPPED and not any(n.startswith("dashboards/") for n in names)  # no top-level package

    metadata = zipfile.ZipFile(wheel).read(f"amp_gateway-{VERSION}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Classifier: Typing :: Typed" in metadata
    assert (ROOT / "LICENSE").read_text().split()[:5] == ["Apache", "License", "Version", "2.0,", "January"]


def test_version_is_the_installed_one(unpacked: Path, tmp_path: Path) -> None:
    from_wheel = _run([sys.executable, "-m", "gateway", "--version"], tmp_path, pythonpath=unpacked)
    assert (from_wheel.returncode, from_wheel.stdout, from_wheel.stderr) == (
        0,
        f"amp-gateway {VERSION}\n",
        "",
    )
    script = Path(sys.executable).parent / "amp-gateway"  # the editable install's console script
    installed = _run([str(script), "--version"], tmp_path)
    assert installed.stdout == f"amp-gateway {version('amp-gateway')}\n"


@pytest.mark.parametrize("install", ["wheel", "editable"])
def test_shipped_dashboards_found_from_another_directory(
    install: str, unpacked: Path, tmp_path: Path
) -> None:
    done = _run([sys.executable, "-c", PROBE], tmp_path, pythonpath=unpacked if install == "wheel" else None)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    home = unpacked if install == "wheel" else ROOT
    assert found["gateway"].startswith(str(home)), found
    assert Path(found["dir"]).is_absolute() and Path(found["dir"]).is_relative_to(home), found
    assert found["loaded"] == SHIPPED and found["problems"] == []
