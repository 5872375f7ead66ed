"""Run the named mutants: ``python -m tests.mutants [--jobs N] [NAME-PART ...]``.

Each mutant is applied to its own scratch copy of the working tree (tracked files and new
ones not ignored), and only its tests run there, with this interpreter; ``PYTHONPATH`` puts
the copy's packages before the editable install, for the child processes too. A mutant
survives when all its tests pass; it is stale when its search text is not in its file
exactly once. Either fails the run. The table says which test killed each mutant.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.mutants.catalogue import MUTANTS, Mutant

ROOT = Path(__file__).resolve().parents[2]
FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


class Stale(RuntimeError):
    """The mutant's search text is not in its file exactly once."""


@dataclass(frozen=True)
class Outcome:
    mutant: Mutant
    verdict: str  # killed, SURVIVED, STALE, BROKEN
    by: str
    seconds: float
    output: str = ""


def _files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def _copy(files: list[str], into: Path) -> None:
    for name in files:
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)


def apply(mutant: Mutant, root: Path) -> None:
    """Apply ``mutant`` to the tree at ``root``; :class:`Stale` unless it applies exactly once."""
    path = root / mutant.path
    text = path.read_text()
    found = text.count(mutant.search)
    if found != 1:
        raise Stale(f"{mutant.path}: the search text occurs {found} times, not once")
    path.write_text(text.replace(mutant.search, mutant.replace))


def run(mutant: Mutant, files: list[str]) -> Outcome:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sg-mutant-") as scratch:
        root = Path(scratch)
        _copy(files, root)
        try:
            apply(mutant, root)
        except Stale as exc:
            return Outcome(mutant, "STALE", str(exc), time.monotonic() - started)
        env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
        for variable in ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG"):
            env.pop(variable, None)  # a mutant run is never measured
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-x",
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:randomly",
                "-rfE",
                *mutant.tests,
            ],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        )
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    if done.returncode == 0:
        return Outcome(mutant, "SURVIVED", "", seconds, output)
    killers = FAILED.findall(output)
    if done.returncode != 1 or not killers:
        return Outcome(mutant, "BROKEN", f"pytest exit {done.returncode}", seconds, output)
    return Outcome(mutant, "killed", killers[0], seconds, output)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__)
    parser.add_argument("names", nargs="*", help="run only the mutants whose name holds one")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument("--verbose", action="store_true", help="print pytest's output")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.names or any(n in m.name for n in args.names)]
    if not chosen:
        parser.error("no mutant matches")
    files = _files()
    started = time.monotonic()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        outcomes = list(pool.map(lambda m: run(m, files), chosen))
    width = max(len(o.mutant.name) for o in outcomes)
    print(f"{'mutant':<{width}}  {'verdict':<8}  {'time':>6}  killed by")
    for o in outcomes:
        print(f"{o.mutant.name:<{width}}  {o.verdict:<8}  {o.seconds:5.1f}s  {o.by}")
        if args.verbose or o.verdict in ("SURVIVED", "BROKEN"):
            print(o.output)
    bad = [o for o in outcomes if o.verdict != "killed"]
    total = time.monotonic() - started
    print(f"{len(outcomes) - len(bad)}/{len(outcomes)} mutants killed in {total:.0f}s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
