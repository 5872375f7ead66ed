"""Check a container's command line against the program it runs.

Our own ``sgw`` is parsed by its real argparse parser (and a worker reference is imported);
``python -c`` code is compiled; every other program is checked against
``tests/data/programs.yaml``, the options we use with the page documenting each. Unknown
options, subcommands and programs fail closed.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import yaml

from gateway.cli import build_parser, load_worker

PROGRAMS_FILE = Path(__file__).resolve().parent / "data" / "programs.yaml"


class InvalidInvocation(AssertionError):
    """A command line its program would refuse, or one nobody checked against documentation."""


def documented() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(PROGRAMS_FILE.read_text())
    return data


def check_invocation(image: str, argv: list[str]) -> None:
    """Raise :class:`InvalidInvocation` unless ``argv`` is a valid command of ``image``."""
    if not argv:
        raise InvalidInvocation(f"{image}: empty command")
    data = documented()
    known = data["images"].get(image, {})
    if argv[0].startswith("-") and "options_run" in known:
        argv = [known["options_run"], *argv]
    program, *args = argv
    provided = known.get("programs", [])
    if program not in provided:
        raise InvalidInvocation(f"{image} does not provide {program!r} (it has {provided})")
    if program == "sgw":
        _check_sgw(args)
    else:
        _check_documented(program, args, data["programs"][program])


def _check_sgw(args: list[str]) -> None:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parsed = build_parser().parse_args(args)
    except SystemExit as exc:
        raise InvalidInvocation(f"sgw {' '.join(args)}: {stderr.getvalue().strip()}") from exc
    if parsed.command == "worker":
        load_worker(parsed.reference)


def _check_documented(program: str, args: list[str], spec: dict[str, Any]) -> None:
    options: dict[str, Any] = spec.get("options") or {}
    commands: dict[str, Any] = spec.get("commands") or {}
    rest = iter(args)
    for arg in rest:
        if arg.startswith("-"):
            name, has_inline_value, _ = arg.partition("=")
            if name not in options:
                raise InvalidInvocation(
                    f"{program} {name}: not among the documented options we use "
                    f"({sorted(options)}); see {spec['documentation']}"
                )
            if options[name]["takes_value"] and not has_inline_value:
                value = next(rest, None)
                if value is None:
                    raise InvalidInvocation(f"{program} {name} needs a value")
                if program == "python" and name == "-c":
                    try:
                        compile(value, "<python -c>", "exec")
                    except SyntaxError as exc:
                        raise InvalidInvocation(f"python -c: {exc}") from exc
        elif arg not in commands:
            raise InvalidInvocation(
                f"{program} {arg}: not a documented subcommand we use ({sorted(commands)})"
            )
