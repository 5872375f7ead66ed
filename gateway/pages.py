"""The sandbox that renders the CANARIE pages naming a template (what a page value may be is
:mod:`worker_sdk.wire.canarie`).

Templates are files of the directory ``SG_CANARIE_TEMPLATES``, operator-written, rendered
with the least power that still makes a page:
:class:`jinja2.sandbox.ImmutableSandboxedEnvironment` (no attribute starting with ``_``, no
mutation of the data handed in), autoescaping, a loader that reads only inside the directory
(no ``..``, no symlink leading out of it), and plain data as context (never a live object).
"""

from __future__ import annotations

import operator
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    FileSystemLoader,
    FunctionLoader,
    TemplateError,
    TemplateNotFound,
)
from jinja2.exceptions import SecurityError
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment

# What the layout of the gateway's own pages is called inside the sandbox, so that an
# operator's template can ``{% extends "gateway/base.html" %}``.
BASE_TEMPLATE = "gateway/base.html"
_TEMPLATES = Path(__file__).resolve().parent / "templates"


class _RootedLoader(FileSystemLoader):
    """Jinja2's loader already refuses ``..``; this also refuses a file that resolves outside
    the directory (a symlink), which ``FileSystemLoader`` would follow."""

    def __init__(self, root: Path) -> None:
        super().__init__(str(root))
        self._root = root.resolve()

    def get_source(self, environment: Any, template: str) -> Any:
        source, filename, uptodate = super().get_source(environment, template)
        if not Path(os.path.realpath(filename)).is_relative_to(self._root):
            raise TemplateNotFound(template)
        return source, filename, uptodate


def _base_template(name: str) -> str | None:
    if name != BASE_TEMPLATE:
        return None
    return (_TEMPLATES / "base.html").read_text(encoding="utf-8")


class _PageSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, plus bounds on the two operators that can exhaust the
    process (``'x' * 10**9``, ``10 ** 10**9``), as Jinja2's documentation suggests."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > 1000:
                raise SecurityError("exponent too large")
            return operator.pow(left, right)
        for sequence, count in ((left, right), (right, left)):
            sized = isinstance(sequence, str | list | tuple) and isinstance(count, int)
            if sized and len(sequence) * count > MAX_RANGE:
                raise SecurityError("repetition too large")
        return operator.mul(left, right)


class PageTemplates:
    """The sandboxed environment of one templates directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        loader: BaseLoader = ChoiceLoader(
            [_RootedLoader(directory), FunctionLoader(_base_template)]
        )
        self._env = _PageSandbox(loader=loader, autoescape=True)

    def render(self, name: str, context: dict[str, Any]) -> str:
        """Render ``name`` with plain data; raises :class:`jinja2.TemplateError` (not found,
        syntax, sandbox violation) or whatever the template's own expressions raise."""
        return self._env.get_template(name).render(context)

    def check(self, name: str) -> str | None:
        """Why ``name`` cannot be loaded (missing, or not valid Jinja2), or None."""
        try:
            self._env.get_template(name)
        except TemplateNotFound:
            return f"template {name!r} not found in {self.directory}"
        except (TemplateError, OSError, ValueError) as exc:  # syntax, permission, encoding
            return f"template {name!r}: {exc}"
        return None


@lru_cache(maxsize=4)
def page_templates(directory: Path) -> PageTemplates:
    """One environment per directory (it caches compiled templates)."""
    return PageTemplates(directory)
