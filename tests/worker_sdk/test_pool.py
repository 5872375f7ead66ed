"""The warm pool of child processes: jobs on warm children, exact kills, crashes, recycling,
resource limits, and nothing leaked over a thousand jobs."""

from __future__ import annotations

import asyncio
import multiprocessing.forkserver
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvloop

from tests.support import eventually
from tests.worker_sdk.pool_handlers import act
from worker_sdk import Worker
from worker_sdk._child import Limits
from worker_sdk._handler import Handler
from worker_sdk._pool import ChildPool
from worker_sdk._pool_errors import ChildDied, ChildFailed
from worker_sdk._run import Runs
from worker_sdk.wire import Cancelled, Failed, JobEvent, Succeeded, Task
from worker_sdk.wire.urls import UrlPolicy

MiB = 1024 * 1024


@asynccontextmanager
async def pool_of(size: int, **options: Any) -> AsyncIterator[ChildPool]:
    pool = ChildPool(act, size=size, **options)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def run(
    pool: ChildPool,
    inputs: dict[str, Any] | None = None,
    *,
    limits: Limits | None = None,
    cancel: asyncio.Event | None = None,
    on_progress: Callable[[int, str | None], None] = lambda percent, message: None,
) -> dict[str, Any]:
    job_id = uuid.uuid4()
    context = {"job_id": job_id, "service": "pool", "attempt": 1, "worker_id": "w"}
    result: dict[str, Any] = await pool.run(
        job_id=job_id,
        context=context,
        inputs=inputs or {},
        limits=limits or Limits(),
        on_progress=on_progress,
        cancel=cancel or asyncio.Event(),
    )
    return result


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def refilled(pool: ChildPool, before: set[int], lost: int) -> set[int]:
    """Wait until the pool is full again, with ``lost`` of the children of ``before`` gone."""

    async def full() -> set[int] | None:
        pids = set(pool.pids)
        return pids if len(pids) == pool.size and len(before - pids) == lost else None

    return await eventually(full, within=30, what="the pool to refill")


async def ended(pid: int) -> None:
    async def gone() -> bool:
        return not alive(pid)

    await eventually(gone, what=f"process {pid} to end")


async def test_jobs_run_one_after_another_on_the_warm_children() -> None:
    async with pool_of(2) as pool:
        warm = set(pool.pids)
        assert len(warm) == 2
        assert all(alive(p) for p in warm)
        seen = {(await run(pool))["pid"] for _ in range(20)}
        both = await asyncio.gather(*(run(pool) for _ in range(10)))
        assert seen | {r["pid"] for r in both} <= warm  # no job started a process of its own
        assert pool.started == 2


async def test_progress_of_a_job_reaches_its_caller() -> None:
    reports: list[tuple[int, str | None]] = []
    async with pool_of(1) as pool:
        await run(pool, {"progress": 42}, on_progress=lambda p, m: reports.append((p, m)))
    assert reports == [(42, "acting")]


async def test_a_cooperative_stop_keeps_the_child(tmp_path: Path) -> None:
    async with pool_of(1) as pool:
        (pid,) = pool.pids
        stop = asyncio.Event()
        job = asyncio.create_task(
            run(pool, {"gate": str(tmp_path / "never"), "cooperative": True}, cancel=stop)
        )
        await eventually(lambda: _true(pool.busy == 1), what="the job to start")
        stop.set()
        assert await job == {"pid": pid, "stopped": True}
        # The next job runs on the same child, and its own ctx.cancelled is false.
        assert (await run(pool))["cancelled"] is False
        assert pool.pids == [pid]


async def test_killing_a_job_kills_only_its_child_and_the_pool_refills(tmp_path: Path) -> None:
    async with pool_of(2) as pool:
        doomed = asyncio.create_task(run(pool, {"gate": str(tmp_path / "never")}))
        keeper_gate = tmp_path / "keeper"
        keeper = asyncio.create_task(run(pool, {"gate": str(keeper_gate)}))
        await eventually(lambda: _true(pool.busy == 2), what="both jobs to start")
        before = set(pool.pids)
        doomed.cancel()  # what a stop does after its grace
        with pytest.raises(asyncio.CancelledError):
            await doomed
        after = await refilled(pool, before, lost=1)
        (killed,) = before - after
        await ended(killed)
        (survivor,) = before & after
        assert not keeper.done()
        keeper_gate.touch()
        assert (await keeper)["pid"] == survivor
        assert pool.started == 3


@pytest.mark.parametrize(("crash", "says"), [("exit", "code 3"), ("segfault", "SIGSEGV")])
async def test_a_crashing_child_fails_its_job_alone(crash: str, says: str, tmp_path: Path) -> None:
    async with pool_of(2) as pool:
        gate = tmp_path / "gate"
        other = asyncio.create_task(run(pool, {"gate": str(gate)}))
        before = set(pool.pids)
        with pytest.raises(ChildDied) as died:
            await run(pool, {"crash": crash})
        assert died.value.code == "handler_crashed"
        assert says in str(died.value)
        gate.touch()
        assert (await other)["pid"] in before  # the job beside it never noticed
        after = await refilled(pool, before, lost=1)
        await ended(*(before - after))
        assert (await run(pool))["pid"] in after


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_inputs_and_results_of_megabytes_cross_the_pipe_on_either_loop(loop: str) -> None:
    """``sgw worker`` runs on uvloop, whose readers make the pipe non-blocking: a message
    larger than the pipe's buffer must still cross it whole, both ways."""

    async def main() -> dict[str, Any]:
        async with asyncio.timeout(20), pool_of(1) as pool:  # a stuck message: fail, not hang
            return await run(pool, {"echo": "i" * (900 * 1024), "pad": 2 * MiB})

    runner = uvloop.run if loop == "uvloop" else asyncio.run
    result = runner(main())
    assert len(result["echo"]) == 900 * 1024
    assert len(result["pad"]) == 2 * MiB


async def test_max_jobs_per_child_recycles_children() -> None:
    async with pool_of(1, max_jobs_per_child=3) as pool:
        pids = [(await run(pool))["pid"] for _ in range(7)]
    assert len(set(pids[0:3])) == len(set(pids[3:6])) == 1
    assert len({pids[0], pids[3], pids[6]}) == 3
    assert pool.started == 3


async def test_max_memory_per_child_recycles_a_child_that_grew() -> None:
    async with pool_of(1) as pool:
        baseline = (await run(pool))["rss"]
    async with pool_of(1, max_memory_per_child=baseline + 32 * MiB) as pool:
        first = await run(pool, {"allocate": 64 * MiB, "hold": True})
        assert first["rss"] > baseline + 32 * MiB  # it completed, over the line
        second = await run(pool)
        assert second["pid"] != first["pid"]
        assert (await run(pool))["pid"] == second["pid"]  # a lean child is kept


async def test_a_job_over_its_memory_limit_fails_with_that_reason() -> None:
    limits = Limits(memory=256 * MiB)
    async with pool_of(1) as pool:
        (pid,) = pool.pids
        with pytest.raises(ChildFailed) as failed:
            await run(pool, {"allocate": 512 * MiB}, limits=limits)
        assert failed.value.code == "memory_limit"
        assert failed.value.type_name == "MemoryError"
        assert "268,435,456 bytes" in str(failed.value)
        # The child that hit the limit is replaced; the next job under it runs.
        after = await refilled(pool, {pid}, lost=1)
        fine = await run(pool, {"allocate": 16 * MiB}, limits=limits)
        assert fine["pid"] in after
        # The limit is the job's: without it the same child allocates more.
        assert (await run(pool, {"allocate": 224 * MiB}))["pid"] == fine["pid"]


async def test_a_job_over_its_cpu_time_limit_is_stopped() -> None:
    async with pool_of(1) as pool:
        with pytest.raises(ChildDied) as died:
            await run(pool, {"burn": True}, limits=Limits(cpu_time=1))
        assert died.value.code == "cpu_time_limit"
        assert (await run(pool))["pid"] in pool.pids


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _zombies(parents: set[int]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if stat[0] == "Z" and int(stat[1]) in parents:
            found.append(int(entry))
    return found


def _named_resources() -> set[str]:
    """Named semaphores and shared memory: what multiprocessing's resource tracker tracks."""
    return {n for n in os.listdir("/dev/shm") if n.startswith(("sem.mp-", "psm_", "wnsm_"))}


async def test_a_thousand_jobs_leak_no_descriptor_process_or_named_resource() -> None:
    """Jobs that succeed, crash (every 50th) and are killed (every 100th) on children
    recycled every 40 jobs: the descriptors, children and zombies are counted before and
    after."""
    async with pool_of(2, max_jobs_per_child=40) as pool:
        await asyncio.gather(*(run(pool) for _ in range(20)))  # every lazy import made
        fds, resources = _open_fds(), _named_resources()
        server = multiprocessing.forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
        parents = {os.getpid(), server}
        crashed = killed = 0
        for n in range(1000):
            if n % 100 == 99:
                job = asyncio.create_task(run(pool, {"burn": True}))
                await eventually(lambda: _true(pool.busy == 1), what="the job to start")
                job.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await job
                killed += 1
            elif n % 50 == 49:
                with pytest.raises(ChildDied):
                    await run(pool, {"crash": "exit"})
                crashed += 1
            else:
                await run(pool)
        await refilled(pool, set(), lost=0)
        await eventually(lambda: _true(not pool._tasks), what="the retired children's reaping")
        assert (crashed, killed) == (10, 10)
        assert pool.started > 2 + crashed + killed  # recycled too, all along
        assert _open_fds() == fds
        assert len([p for p in pool.pids if alive(p)]) == 2
        assert len(multiprocessing.active_children()) == 2
        assert _zombies(parents) == []
        assert _named_resources() == resources
    assert multiprocessing.active_children() == []
    assert _zombies(parents) == []


async def _true(value: object) -> bool:
    return bool(value)


@pytest.mark.parametrize("stop", ["cancel", "time_limit"])
async def test_a_stopped_run_kills_only_its_child_and_the_pool_refills(
    stop: str, tmp_path: Path
) -> None:
    """Through the runs of a worker: the stopped job ignores ctx.cancelled, so only the kill
    after cancel_grace ends it; the job beside it goes on, on the same child."""
    events: list[JobEvent] = []

    async def publish(event: JobEvent) -> None:
        events.append(event)

    worker = Worker("pool", version="1.0.0", cancel_grace=0.2)
    async with pool_of(2) as pool:
        runs = Runs(
            worker,
            Handler.of(act, "process"),
            worker_id="w",
            host="h",
            publish=publish,
            url_policy=UrlPolicy(),
            threads=None,
            children=pool,
        )
        limit = {"time_limit": 0.5} if stop == "time_limit" else {}
        doomed = Task(
            job_id=uuid.uuid4(), service="pool", inputs={"gate": str(tmp_path / "never")}, **limit
        )
        gate = tmp_path / "keeper"
        keeper = Task(job_id=uuid.uuid4(), service="pool", inputs={"gate": str(gate)})
        stopped = asyncio.create_task(runs.execute(doomed))
        going = asyncio.create_task(runs.execute(keeper))
        await eventually(lambda: _true(pool.busy == 2), what="both jobs to start")
        before = set(pool.pids)
        if stop == "cancel":
            runs.cancel(doomed.job_id)
        outcome = await stopped
        if stop == "cancel":
            assert isinstance(outcome, Cancelled)
        else:
            assert isinstance(outcome, Failed)
            assert outcome.error.code == "time_limit"
        after = await refilled(pool, before, lost=1)
        await ended(*(before - after))
        assert not going.done()
        gate.touch()
        finished = await going
        assert isinstance(finished, Succeeded)
        assert finished.result is not None
        assert finished.result["pid"] in before & after


async def test_a_resize_grows_at_once_and_shrinks_without_cutting_a_job(tmp_path: Path) -> None:
    async with pool_of(1) as pool:
        pool.resize(3)
        grown = await refilled(pool, set(), lost=0)
        assert len(grown) == 3
        gates = [tmp_path / f"gate{n}" for n in range(2)]
        jobs = [asyncio.create_task(run(pool, {"gate": str(g)})) for g in gates]
        await eventually(lambda: _true(pool.busy == 2), what="both jobs to start")
        pool.resize(1)  # the idle child retires now, the busy ones when their jobs end
        assert len(pool.pids) == 2
        for gate in gates:
            gate.touch()
        ran = {(await job)["pid"] for job in jobs}
        assert ran <= grown
        after = await refilled(pool, grown, lost=2)
        assert len(after) == 1
        assert (await run(pool))["pid"] in after
