"""The bench stays beside the product: its baseline's packages are no runtime dependency, and
neither the gateway nor the SDK imports it."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASELINE = {"celery", "flask", "gunicorn", "sqlalchemy"}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def test_the_baseline_comes_from_the_bench_extra_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    assert runtime.isdisjoint(BASELINE)
    assert {_name(r) for r in project["optional-dependencies"]["bench"]} >= BASELINE


def test_the_product_never_imports_the_bench_or_its_baseline() -> None:
    offenders = []
    for package in ("gateway", "worker_sdk", "examples"):
        for path in sorted((ROOT / package).glob("**/*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                offenders += [
                    f"{path.relative_to(ROOT)}: {n}"
                    for n in names
                    if n.split(".")[0] in BASELINE | {"bench"}
                ]
    assert offenders == []
