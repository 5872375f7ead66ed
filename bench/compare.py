"""Before and after a change: our no-op rows for the product at a git revision and for this
working tree, measured alternately in one run (``--only noop --against REV``).

This machine's speed drifts by a tenth and more between runs minutes apart, as much as a
single change is worth; so the two are measured in turns, each first in every other round
(before, after, after, before, ...), and each row is the median of its rounds, its note the
spread. The bench's own code (the
loaders, the counting) is this tree's for both; only the gateway and its workers, started as
``python -m gateway.cli`` in each checkout, run the code under comparison. The revision is
checked out in a temporary git worktree, removed at the end.
"""

from __future__ import annotations

import statistics
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.table import Table

from bench import ours
from bench.stack import Gateway
from bench.support import ROOT, Phase, Sizes, step
from bench.table import CPU_GROUPS

# The rows compared: key, name, unit, whether more is better.
ROWS = (
    ("cpu", "server CPU per no-op job", "ms", False),
    *((f"cpu-{group}", f"  {label}", "ms", False) for group, label in CPU_GROUPS),
    ("p50-wrk", "no-op latency p50, 1 wrk connection", "ms", False),
    ("p99-wrk", "no-op latency p99, 1 wrk connection", "ms", False),
    ("floor-wrk", "no-op latency floor (wrk), p50s added", "ms", False),
    ("p50", "no-op latency p50, 1 httpx client", "ms", False),
    ("p99", "no-op latency p99, 1 httpx client", "ms", False),
    ("floor", "no-op latency floor (httpx), p50s added", "ms", False),
    ("sustained", "sustained no-op jobs/s, 2 workers", "jobs/s", True),
    ("drain-cpu", "backlog drained: server CPU per no-op job", "ms", False),
    ("drain-rate", "backlog drained: jobs/s", "jobs/s", True),
    ("submit", "submits/s, 32 conns, no worker", "req/s", True),
    ("status", "status reads/s, GET /jobs/{id}", "req/s", True),
)


class UnknownRevision(ValueError):
    """The revision to compare against is not a commit of this repository."""


def resolve(revision: str) -> str:
    """The full commit id of ``revision`` in this repository."""
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise UnknownRevision(f"{revision!r} is not a commit of {ROOT}")
    return done.stdout.strip()


@contextmanager
def checkout(commit: str, into: Path) -> Iterator[Path]:
    """``commit`` checked out (detached) in a git worktree under ``into``, for the block."""
    tree = into / f"tree-{commit[:12]}"
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "prune"], check=False)  # an earlier run killed midway
    subprocess.run([*git, "worktree", "add", "--detach", "--quiet", str(tree), commit], check=True)
    try:
        yield tree
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(tree)], check=False)
        subprocess.run([*git, "worktree", "prune"], check=False)


# A round's note is repeated only when it says something went wrong or differed.
TROUBLE = ("failed", "restarted", "no wrk")


def median(phases: list[Phase]) -> Phase:
    """Each figure's median over ``phases``, its note the spread (``min–max of N``) and, when
    a round noted trouble (failed jobs, restarted processes, no wrk), that too. A round's
    total CPU per job (``cpu``) is the sum of its groups', taken before the median."""
    for phase in phases:
        groups = [phase.values.get(f"cpu-{group}") for group, _ in CPU_GROUPS]
        if None not in groups:
            phase.values["cpu"] = sum(g for g in groups if g is not None)
    merged = Phase()
    for key in sorted({k for phase in phases for k in phase.values}):
        values = [phase.values[key] for phase in phases if key in phase.values]
        merged.values[key] = statistics.median(values)
        notes = [f"{min(values):,.2f}–{max(values):,.2f} of {len(values)}"]
        said = {p.notes.get(key, "") for p in phases}
        notes += sorted(n for n in said if any(word in n for word in TROUBLE))
        merged.notes[key] = "; ".join(notes)
    return merged


def measure(
    sizes: Sizes, workdir: Path, log: IO[bytes], revision: str, rounds: int
) -> tuple[Phase, Phase]:
    """The no-op rows before (``revision``) and after (this tree): medians of ``rounds``."""
    commit = resolve(revision)
    before: list[Phase] = []
    after: list[Phase] = []
    with checkout(commit, workdir) as tree:
        sides = (("before", commit[:12], tree, before), ("after", "this tree", ROOT, after))
        for n, side in turns(rounds):
            label, what, root, into = sides[side]
            step(f"round {n} of {rounds}: {label} ({what})")
            db = workdir / f"jobs-{label}-{n}.db"
            processes = ours.GATEWAY_PROCESSES
            with Gateway(workdir, log, processes=processes, db=db, tree=root) as gateway:
                into.append(ours.measure(sizes, gateway))
    return median(before), median(after)


def turns(rounds: int) -> list[tuple[int, int]]:
    """(round, side) in the order they run, side 0 being before and 1 after: each side goes
    first in every other round, so that whatever the second run of a round inherits from the
    first (a broker with more behind it, a page cache in another state) falls on both."""
    return [(n, side) for n in range(1, rounds + 1) for side in ((0, 1) if n % 2 else (1, 0))]


def render(console: Console, before: Phase, after: Phase, title: str) -> None:
    """The rows side by side, with the ratio and each side's spread over its rounds."""
    table = Table(title=title)
    for column in ("measure", "before", "after", "after ÷ before", "unit"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    table.add_column("before: range; notes")
    table.add_column("after: range; notes")
    for key, name, unit, more_is_better in ROWS:
        old, new = before.values.get(key), after.values.get(key)
        if old is None and new is None:
            continue
        ratio = f"{new / old:.3f}" if old and new is not None else ""
        better = old and new is not None and (new > old) == more_is_better and new != old
        table.add_row(
            name,
            "" if old is None else f"{old:,.2f}",
            "" if new is None else f"{new:,.2f}",
            f"[green]{ratio}[/green]" if better else ratio,
            unit,
            before.notes.get(key, ""),
            after.notes.get(key, ""),
        )
    console.print(table)
    console.print(
        "Each figure is the median of its rounds, before and after measured in turns; a "
        "ratio within the two ranges is no difference this machine can tell. The rows are "
        "measured as the bench's own (python -m bench --only noop shows how, in footnotes).",
        highlight=False,
    )
