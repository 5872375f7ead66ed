"""The CANARIE pages an operator configures: what a page value means, and the sandbox that
renders the ones naming a template.

A page value (``canarie.pages.<page>`` of a service, ``platform.pages.<page>``) is one of:

- a URL (``http://`` or ``https://``): the page answers 302 to it;
- a template name (``doc.html``, ``notes/1.2.j2``): a file of the directory
  ``SG_CANARIE_TEMPLATES``, rendered by a sandboxed Jinja2 environment;
- ``"text,status"``: that text with that status (``",204"`` is an empty 204);
- any other text: sent as the HTML of the page.

Templates are operator-written but rendered with the least power that still makes a page:
:class:`jinja2.sandbox.ImmutableSandboxedEnvironment` (no attribute starting with ``_``, no
mutation of the data handed in), autoescaping, a loader that reads only inside the directory
(no ``..``, no symlink leading out of it), and plain data as context (never a live object).
"""

from __future__ import annotations

import operator
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

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

PageName = Literal[
    "doc", "releasenotes", "support", "source", "tryme", "licence", "provenance", "factsheet"
]
PAGE_NAMES: tuple[PageName, ...] = get_args(PageName)

# What the layout of the gateway's own pages is called inside the sandbox, so that an
# operator's template can ``{% extends "gateway/base.html" %}``.
BASE_TEMPLATE = "gateway/base.html"
_TEMPLATES = Path(__file__).resolve().parent / "templates"
_TEMPLATE_NAME = re.compile(
    r"^(?!.*(?:^|/)\.\.?(?:/|$))[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}\.(?:html?|j2|jinja2?)(?:#.*)?$"
)
_TEXT_STATUS = re.compile(r"^(?P<text>.*),(?P<status>\d{3})$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class PageSource:
    """A configured page value, classified."""

    kind: Literal["redirect", "template", "text"]
    value: str
    status: int = 200


def parse_page_source(value: str) -> PageSource:
    """Classify a page value; raise ``ValueError`` when it cannot be served."""
    if value.startswith(("http://", "https://")):
        return PageSource("redirect", value, 302)
    if _TEMPLATE_NAME.match(value):
        # The old gateway allowed "page.html#anchor"; the anchor means nothing on the server.
        return PageSource("template", value.split("#", 1)[0])
    if "/" in value and value.rsplit(".", 1)[-1] in {"html", "htm", "j2", "jinja", "jinja2"}:
        raise ValueError(f"{value!r} is not a template name inside the templates directory")
    match = _TEXT_STATUS.match(value)
    if match is not None:
        status = int(match["status"])
        if not 200 <= status <= 599:
            raise ValueError(f"status {status} of {value!r} is not between 200 and 599")
        return PageSource("text", match["text"], status)
    return PageSource("text", value)


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
