"""The dependency direction: gateway imports worker_sdk, never the reverse."""

from __future__ import annotations

import ast
import subprocess
import sys
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


def _gateway_imports(path: Path) -> set[str]:
    """The ``gateway.*`` modules a file imports (absolute imports only: the house style)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("gateway.")}


def test_the_service_layer_never_imports_the_http_layer() -> None:
    """Services return records and domain errors; only gateway/api/ shapes HTTP answers."""
    services = [
        p
        for p in (ROOT / "gateway").glob("*.py")
        if p.name not in {"app.py", "runtime.py", "cli.py", "client_cli.py", "errors.py"}
    ]
    assert (ROOT / "gateway" / "jobs.py") in services
    offenders = {
        str(p.relative_to(ROOT)): sorted(
            i for i in _gateway_imports(p) if i.startswith("gateway.api")
        )
        for p in services
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_wire_package_stands_alone() -> None:
    """worker_sdk.wire is the protocol both sides share: it imports nothing else of ours."""
    for path in sorted((ROOT / "worker_sdk" / "wire").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                assert node.level == 1  # siblings inside wire/ only
            if isinstance(node, ast.ImportFrom) and node.level > 1:
                raise AssertionError(f"{path.name} reaches outside wire/: {node.module}")
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith(("worker_sdk", "gateway")), path.name


def test_no_module_holds_two_ideas() -> None:
    """One concept per module: none of the packages' modules grows past ~450 lines."""
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for package in ("gateway", "worker_sdk", "sgw_client")
        for p in (ROOT / package).rglob("*.py")
    }
    assert {name: lines for name, lines in sizes.items() if lines > 450} == {}


def test_the_command_line_starts_without_the_web_application() -> None:
    """``sgw worker`` and the client commands load neither the web application nor what only
    the gateway's store uses: a worker that scales out from zero starts in a second less."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, gateway.cli; print(' '.join(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.split()
    heavy = {"gateway.app", "fastapi", "starlette", "uvicorn", "jinja2", "pymongo", "gateway.store"}
    assert heavy.isdisjoint(loaded), sorted(heavy & set(loaded))
    assert "worker_sdk" in loaded
