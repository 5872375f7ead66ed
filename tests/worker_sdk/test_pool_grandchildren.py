"""A process handler's own children: they end with the job's child when it is killed, and
one that holds the child's pipe open does not hide the child's death from the pool."""

from __future__ import annotations

import asyncio
import select
from pathlib import Path

import pytest

from tests.support import eventually
from tests.worker_sdk.test_pool import alive, ended, pool_of, refilled, run
from worker_sdk._pool_errors import ChildDied


def _read_pid(path: Path) -> int | None:
    text = path.read_text() if path.exists() else ""
    return int(text) if text else None


async def _pid_in(path: Path) -> int:
    async def written() -> int | None:
        return _read_pid(path)

    return await eventually(written, what=f"a pid in {path.name}")


async def test_killing_a_job_kills_the_processes_its_handler_started(tmp_path: Path) -> None:
    async with pool_of(1) as pool:
        spawned = tmp_path / "spawned"
        doomed = asyncio.create_task(run(pool, {"spawn": str(spawned), "gate": "/never"}))
        grandchild = await _pid_in(spawned)
        before = set(pool.pids)
        assert alive(grandchild)
        doomed.cancel()  # what a stop does after its grace
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await refilled(pool, before, lost=1)
        await ended(grandchild)


async def test_a_child_that_dies_while_a_fork_holds_its_pipe_fails_its_job(
    tmp_path: Path,
) -> None:
    async with pool_of(1) as pool:
        forked = tmp_path / "forked"
        before = set(pool.pids)
        with pytest.raises(ChildDied) as died:
            await asyncio.wait_for(run(pool, {"fork": str(forked), "crash": "exit"}), 20)
        assert "code 3" in str(died.value)
        await ended(await _pid_in(forked))  # and the fork is gone with it
        after = await refilled(pool, before, lost=1)
        assert (await run(pool))["pid"] in after


async def test_a_child_whose_death_is_seen_before_its_last_messages_still_fails_its_job(
    tmp_path: Path,
) -> None:
    """Its exit status arrives while its pipe still holds its progress reports, and a fork
    keeps the pipe open (no end of file will come): once the reports are read, the job fails."""
    async with pool_of(1) as pool:
        forked, go = tmp_path / "forked", tmp_path / "go"
        seen: list[int] = []
        inputs = {"fork": str(forked), "go": str(go), "progress": [10, 20], "crash": "exit"}
        job = asyncio.create_task(run(pool, inputs, on_progress=lambda p, _: seen.append(p)))
        await _pid_in(forked)  # the child holds the job, waiting for the signal
        (child,) = pool._busy
        # The event loop is busy (another job's work, a long pause) while the child reports
        # twice and exits, until its exit status is there to read: both reports wait in the
        # pipe when the loop looks again.
        go.touch()
        ready, _, _ = select.select([child.process.sentinel], [], [], 20)
        assert ready, "the child did not exit"
        with pytest.raises(ChildDied) as died:
            await asyncio.wait_for(job, 20)
        assert "code 3" in str(died.value)
        assert seen == [10, 20]
        await ended(await _pid_in(forked))
