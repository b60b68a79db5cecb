"""What CI checks of the code itself: ruff (lint), mypy --strict on gateway/, the import
contracts (layers that only look down, stages that meet only in app.py), and no private imports
across modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


def test_ruff_check_is_clean() -> None:
    done = _run(sys.executable, "-m", "ruff", "check", "gateway", "tests", "bench", "tools")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_is_clean() -> None:
    done = _run(sys.executable, "-m", "mypy")  # settings in pyproject.toml: strict, files = gateway
    assert done.returncode == 0, done.stdout + done.stderr


def test_import_contracts_are_kept() -> None:
    done = _run(str(BIN / "lint-imports"), "--no-cache")
    assert done.returncode == 0, done.stdout + done.stderr


def _private_imports(path: Path) -> list[str]:
    """`from a.b import _x` and `import a._b` where a.b is another module (or a framework)."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            source = node.module
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            source, names = "", [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            dotted = f"{source}.{name}" if source else name
            parts = dotted.split(".")
            private = [p for p in parts if p.startswith("_") and not p.startswith("__")]
            # A package's own private modules (promql's generated grammar) are its business.
            if private and not dotted.startswith(package + "."):
                found.append(f"{module}: {dotted}")
    return found


def test_no_private_imports_across_modules() -> None:
    found = [hit for path in sorted((ROOT / "gateway").rglob("*.py")) for hit in _private_imports(path)]
    assert found == []


def test_every_type_ignore_says_why() -> None:
    bare = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "gateway").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "# type: ignore" in line
        and not line.split("# type: ignore", 1)[1].split("]", 1)[-1].strip().startswith("#")
    ]
    assert bare == []
