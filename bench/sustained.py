"""A sustained load of no-op jobs, timed until all are done, with the CPU each group spent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.load import Flood
from bench.procfs import cpu_seconds, members

# A run is over once the done count has not moved for this long after reaching the target
# (requests wrk had in flight when it stopped may still turn into jobs).
SETTLE = 0.5


@dataclass(frozen=True)
class Sustained:
    jobs: int
    seconds: float
    cpu: dict[str, float]  # CPU seconds per group over the run
    tool: str
    changed: list[str]  # groups whose processes were not the same at the end (restarts)

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    def cpu_ms_per_job(self, group: str) -> float:
        return self.cpu[group] * 1000 / self.jobs


async def flood_until_done(
    url: str,
    total: int,
    done: Callable[[], int],
    groups: dict[str, list[int]],
    within: float = 300,
) -> Sustained:
    """Submit about ``total`` jobs to ``url`` as fast as they are taken and wait until
    ``done()`` (the jobs in a terminal state, read from the server's store) reaches it and
    stays still; ``seconds`` runs from the first submit to the last job seen done.

    CPU is read from ``/proc`` for each group of process trees before the first submit and
    after the run (the settle time adds idle processes' CPU only). A group whose processes
    changed meanwhile (a server restarted one) is named in ``changed``: its CPU then includes
    the new processes' start.
    """
    before = cpu_seconds(groups)
    processes = members(groups)
    start = time.perf_counter()
    count, changed = 0, start
    async with Flood(url, total) as flood:
        while True:
            now = time.perf_counter()
            seen = done()
            if seen != count:
                count, changed = seen, now
            elif count >= total and now - changed >= SETTLE:
                break
            if now - start > within:
                raise RuntimeError(f"only {count} of {total} jobs were done after {within:g} s")
            await asyncio.sleep(0.02)
    after = cpu_seconds(groups)
    final = members(groups)
    return Sustained(
        jobs=count,
        seconds=changed - start,
        cpu={group: after[group] - before[group] for group in groups},
        tool=flood.tool,
        changed=[group for group in groups if final[group] != processes[group]],
    )
