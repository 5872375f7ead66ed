"""CPU time and memory of process trees, read from ``/proc`` (Linux).

A group (the gateway, the workers, the broker) is a set of root processes and all their
descendants. Its CPU time is ``utime + stime`` of every live member plus ``cutime + cstime``
(the reaped children's time, such as a worker's per-job child processes), so the difference
between two readings is the CPU the group spent in between, whichever of its processes
spent it. psutil would do the same walk; reading four numbers from ``/proc`` needs no new
dependency.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Stat:
    pid: int
    ppid: int
    comm: str
    cpu: float  # seconds: utime + stime + cutime + cstime


def _read_stat(pid: int) -> Stat | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:  # gone between the listing and the read
        return None
    # comm is in parentheses and may hold spaces or parentheses: split after the last ')'.
    head, _, rest = text.rpartition(")")
    comm = head.partition("(")[2]
    fields = rest.split()
    # fields[0] is state (field 3 of proc(5)); utime..cstime are fields 14..17.
    ticks = sum(int(f) for f in fields[11:15])
    return Stat(pid=pid, ppid=int(fields[1]), comm=comm, cpu=ticks / TICK)


def snapshot() -> dict[int, Stat]:
    """Every process visible now."""
    stats = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stat = _read_stat(int(entry.name))
            if stat is not None:
                stats[stat.pid] = stat
    return stats


def tree(roots: Iterable[int], stats: dict[int, Stat]) -> set[int]:
    """``roots`` and all their descendants that are alive in ``stats``."""
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    members: set[int] = set()
    todo = [pid for pid in roots if pid in stats]
    while todo:
        pid = todo.pop()
        if pid not in members:
            members.add(pid)
            todo.extend(children.get(pid, ()))
    return members


def pids_named(name: str, stats: dict[int, Stat] | None = None) -> list[int]:
    """Processes whose command name is ``name`` (e.g. ``beam.smp``, the RabbitMQ VM)."""
    return [s.pid for s in (stats or snapshot()).values() if s.comm == name]


def cpu_seconds(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds spent so far by each group of process trees (roots by group name)."""
    stats = snapshot()
    return {
        name: sum(stats[pid].cpu for pid in tree(roots, stats)) for name, roots in groups.items()
    }


def members(groups: dict[str, list[int]]) -> dict[str, set[int]]:
    """The live processes of each group now."""
    stats = snapshot()
    return {name: tree(roots, stats) for name, roots in groups.items()}


def rss_bytes(roots: Iterable[int]) -> int:
    """Resident memory of the process trees under ``roots`` (shared pages counted in each)."""
    total = 0
    for pid in tree(roots, snapshot()):
        try:
            resident = int((PROC / str(pid) / "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        total += resident * PAGE
    return total
