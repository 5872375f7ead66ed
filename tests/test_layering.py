"""The dependency direction: gateway imports worker_sdk, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_worker_sdk_never_imports_the_gateway() -> None:
    files = sorted((ROOT / "worker_sdk").glob("**/*.py"))
    assert files
    offenders = [str(f.relative_to(ROOT)) for f in files if "gateway" in _imports(f)]
    assert offenders == []


def test_worker_sdk_ships_type_information() -> None:
    assert (ROOT / "worker_sdk" / "py.typed").exists()
    assert (ROOT / "gateway" / "py.typed").exists()
