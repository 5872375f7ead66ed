"""One run of a task: its outcome, and how it is stopped (cooperatively, then by force)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import BaseModel

from worker_sdk import HandlerError, JobContext, Retry, Worker
from worker_sdk._handler import Handler
from worker_sdk._run import MAX_RETRY_DELAY, Runs, error_info, result_problem
from worker_sdk.wire import (
    Cancelled,
    Failed,
    JobEvent,
    Progress,
    Retrying,
    Started,
    Succeeded,
    Task,
)
from worker_sdk.wire.urls import UrlPolicy


def _task(**fields: Any) -> Task:
    return Task(job_id=uuid.uuid4(), service="echo", **fields)


class Harness:
    """A worker's runs, with the events they publish recorded."""

    def __init__(
        self, fn: Any, isolation: Any = "async", *, threads: int = 2, **settings: Any
    ) -> None:
        self.worker = Worker("echo", version="1.0.0", **settings)
        self.events: list[JobEvent] = []
        self.threads = ThreadPoolExecutor(threads)
        self.runs = Runs(
            self.worker,
            Handler.of(fn, isolation),
            worker_id="w1",
            host="h",
            publish=self.publish,
            url_policy=UrlPolicy(),
            threads=self.threads,
            children=None,
            thread_slots=threads,
        )

    async def publish(self, event: JobEvent) -> None:
        event.model_dump_json()  # as it goes on the wire: what cannot be sent raises here
        self.events.append(event)


async def test_a_returned_value_succeeds_and_a_short_run_is_announced_by_its_end() -> None:
    async def handler(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"got": inputs}

    harness = Harness(handler, started_delay=3600)
    outcome = await harness.runs.execute(_task(inputs={"a": 1}))
    assert isinstance(outcome, Succeeded)
    assert outcome.result == {"got": {"a": 1}}
    assert outcome.start is not None  # no started event went out: the end carries the start
    assert harness.events == []


@pytest.mark.parametrize("isolation", ["async", "thread"])
async def test_a_progress_message_with_a_lone_surrogate_is_sent_mended(isolation: str) -> None:
    """A file name read with os.fsdecode carries lone surrogates; reporting it must not fail
    the job (it ended invalid_task, not reportable)."""
    name = b"caf\xe9.txt".decode("utf-8", "surrogateescape")

    async def async_report(ctx: JobContext, inputs: dict[str, Any]) -> str:
        ctx.progress(50, f"reading {name}")
        return "done"

    def thread_report(ctx: JobContext, inputs: dict[str, Any]) -> str:
        ctx.progress(50, f"reading {name}")
        return "done"

    handler = async_report if isolation == "async" else thread_report
    harness = Harness(handler, isolation, started_delay=3600, progress_interval=0)
    outcome = await harness.runs.execute(_task())
    assert isinstance(outcome, Succeeded), outcome
    progress = [e for e in harness.events if isinstance(e, Progress)]
    assert [p.message for p in progress] == ["reading caf\ufffd.txt"]


async def test_progress_announces_the_run_first() -> None:
    async def handler(ctx: JobContext, inputs: dict[str, Any]) -> None:
        ctx.progress(50, "half")

    harness = Harness(handler, started_delay=3600, progress_interval=0)
    outcome = await harness.runs.execute(_task())
    assert [type(e) for e in harness.events] == [Started, Progress]
    assert isinstance(outcome, Succeeded)
    # The end carries the start as well: a gateway may apply it before the started event.
    assert outcome.start is not None
    assert outcome.start.host == harness.events[0].host


class Strict(BaseModel):
    n: int


async def test_inputs_that_do_not_fit_the_model_fail_the_job() -> None:
    async def handler(ctx: JobContext, inputs: Strict) -> int:
        return inputs.n

    outcome = await Harness(handler).runs.execute(_task(inputs={"n": "many"}))
    assert isinstance(outcome, Failed)
    assert outcome.error.code == "invalid_input"


async def test_retry_asks_for_the_next_attempt_while_attempts_last() -> None:
    async def handler(ctx: JobContext, inputs: dict[str, Any]) -> None:
        raise Retry("later", delay=30)

    harness = Harness(handler)
    retrying = await harness.runs.execute(_task(max_attempts=2))
    assert isinstance(retrying, Retrying)
    assert (retrying.attempt, retrying.delay) == (2, 30)
    last = await harness.runs.execute(_task(max_attempts=2, attempt=2))
    assert isinstance(last, Failed)
    assert last.error.code == "retry"


@pytest.mark.parametrize(
    ("asked", "delay"),
    [(10**400, MAX_RETRY_DELAY), (-(10**400), 0), (float("inf"), MAX_RETRY_DELAY), (-5, 0)],
)
async def test_a_retry_delay_past_any_bound_is_brought_within_it(asked: Any, delay: float) -> None:
    async def handler(ctx: JobContext, inputs: dict[str, Any]) -> None:
        raise Retry("later", delay=asked)

    retrying = await Harness(handler).runs.execute(_task(max_attempts=2))
    assert isinstance(retrying, Retrying), retrying
    assert retrying.delay == delay


async def test_a_retryable_handler_error_waits_the_workers_retry_delay() -> None:
    async def handler(ctx: JobContext, inputs: dict[str, Any]) -> None:
        raise HandlerError("flaky upstream", code="upstream", retryable=True)

    retrying = await Harness(handler, retry_delay=7).runs.execute(_task(max_attempts=3))
    assert isinstance(retrying, Retrying)
    assert retrying.delay == 7
    assert retrying.error.code == "upstream"


async def test_cancel_stops_an_async_handler_at_once() -> None:
    started = asyncio.Event()

    async def handler(ctx: JobContext, inputs: dict[str, Any]) -> None:
        started.set()
        await asyncio.Event().wait()

    harness = Harness(handler, cancel_grace=3600)
    task = _task()
    running = asyncio.create_task(harness.runs.execute(task))
    await started.wait()
    harness.runs.cancel(task.job_id)
    outcome = await asyncio.wait_for(running, timeout=5)
    assert isinstance(outcome, Cancelled)


async def test_a_thread_handler_is_asked_then_abandoned_after_the_grace() -> None:
    """Phase one sets ctx.cancelled; a handler that ignores it is cut loose after
    cancel_grace (a thread cannot be killed; a child process would be)."""
    entered = threading.Event()
    asked = threading.Event()
    release = threading.Event()

    def stubborn(ctx: JobContext, inputs: dict[str, Any]) -> None:
        entered.set()
        while not ctx.cancelled:
            time.sleep(0.001)  # the handler's own work loop
        asked.set()
        release.wait(10)  # and then it ignores the request to stop

    harness = Harness(stubborn, isolation="thread", cancel_grace=0.05)
    task = _task()
    running = asyncio.create_task(harness.runs.execute(task))

    assert await asyncio.to_thread(entered.wait, 5)
    harness.runs.cancel(task.job_id)
    outcome = await asyncio.wait_for(running, timeout=5)
    assert asked.is_set()
    assert isinstance(outcome, Cancelled)
    release.set()
    harness.threads.shutdown(wait=True)


async def test_a_time_limit_fails_the_job() -> None:
    async def handler(ctx: JobContext, inputs: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    outcome = await Harness(handler).runs.execute(_task(time_limit=0.05))
    assert isinstance(outcome, Failed)
    assert outcome.error.code == "time_limit"


class Stubborn:
    """An async handler that swallows every CancelledError until ``finish`` (the test's own
    cleanup, which lets the abandoned handler end); ``started`` once it runs."""

    def __init__(self) -> None:
        self.started, self.finish = asyncio.Event(), asyncio.Event()

    async def __call__(self, ctx: JobContext, inputs: dict[str, Any]) -> None:
        self.started.set()
        while not self.finish.is_set():
            try:
                await self.finish.wait()
            except asyncio.CancelledError:
                continue


async def test_an_async_handler_that_swallows_its_cancellation_is_abandoned() -> None:
    """Cancelled at its time limit, and again after the grace, it goes on: after one more
    grace the run ends without it (time_limit), and the worker's next run is not held."""
    stubborn = Stubborn()
    harness = Harness(stubborn.__call__, cancel_grace=0.05)
    try:
        outcome = await asyncio.wait_for(harness.runs.execute(_task(time_limit=0.05)), 10)
        assert isinstance(outcome, Failed)
        assert outcome.error.code == "time_limit"
    finally:
        stubborn.finish.set()


async def test_a_worker_stopping_is_not_held_by_a_handler_swallowing_cancellation() -> None:
    stubborn = Stubborn()
    harness = Harness(stubborn.__call__, cancel_grace=0.05)
    running = asyncio.create_task(harness.runs.execute(_task()))
    try:
        await stubborn.started.wait()
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running, 10)
    finally:
        stubborn.finish.set()


async def test_a_thread_left_running_holds_back_no_later_job() -> None:
    """Its thread abandoned past the grace, the one slot of the pool stays taken: the jobs
    after it ran into their time limits without ever starting."""
    release = threading.Event()  # the test's own cleanup: lets the abandoned thread end

    def stubborn(ctx: JobContext, inputs: dict[str, Any]) -> str:
        if inputs.get("hang"):
            release.wait(60)  # ignores ctx.cancelled
        return "ran"

    harness = Harness(stubborn, "thread", threads=1, cancel_grace=0.05)
    try:
        hung = await asyncio.wait_for(
            harness.runs.execute(_task(time_limit=0.05, inputs={"hang": True})), 10
        )
        assert isinstance(hung, Failed)
        assert hung.error.code == "time_limit"
        for _ in range(3):
            later = await asyncio.wait_for(harness.runs.execute(_task(time_limit=5)), 10)
            assert isinstance(later, Succeeded), later
            assert later.result == "ran"
    finally:
        release.set()
        harness.runs.close_threads()


async def test_a_thread_handler_sees_its_time_limit_and_stops_on_its_own() -> None:
    """The soft limit: at the time limit ``ctx.cancelled`` turns true; a handler that looks
    ends the run long before the hard kill (``cancel_grace``) would."""
    seen: list[float] = []

    def cooperative(ctx: JobContext, inputs: dict[str, Any]) -> str:
        started = time.monotonic()
        while not ctx.cancelled:
            time.sleep(0.001)  # the handler's own work loop
        seen.append(time.monotonic() - started)
        return "cleaned up"

    harness = Harness(cooperative, isolation="thread", cancel_grace=3600)
    outcome = await asyncio.wait_for(harness.runs.execute(_task(time_limit=0.1)), timeout=5)
    assert isinstance(outcome, Failed)
    assert outcome.error.code == "time_limit"
    assert len(seen) == 1
    assert seen[0] >= 0.05  # asked at the limit (0.1 s after the timer), not at once
    harness.threads.shutdown(wait=True)


async def test_a_thread_handler_that_ignores_its_time_limit_is_abandoned_after_the_grace() -> None:
    release = threading.Event()

    def stubborn(ctx: JobContext, inputs: dict[str, Any]) -> None:
        release.wait(10)

    harness = Harness(stubborn, isolation="thread", cancel_grace=0.2)
    started = time.monotonic()
    outcome = await asyncio.wait_for(harness.runs.execute(_task(time_limit=0.1)), timeout=5)
    elapsed = time.monotonic() - started
    assert isinstance(outcome, Failed)
    assert outcome.error.code == "time_limit"
    assert elapsed >= 0.3  # the limit, then the grace
    release.set()
    harness.threads.shutdown(wait=True)


async def test_an_async_handler_cleans_up_when_its_time_limit_cancels_it() -> None:
    cleaned = asyncio.Event()

    async def handler(ctx: JobContext, inputs: dict[str, Any]) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            assert ctx.cancelled
            cleaned.set()
            raise

    outcome = await Harness(handler, cancel_grace=3600).runs.execute(_task(time_limit=0.05))
    assert isinstance(outcome, Failed)
    assert outcome.error.code == "time_limit"
    assert cleaned.is_set()


async def test_a_job_cancelled_before_it_arrives_is_skipped() -> None:
    calls: list[int] = []

    async def handler(ctx: JobContext, inputs: dict[str, Any]) -> None:
        calls.append(1)

    harness = Harness(handler)
    task = _task()
    harness.runs.cancel(task.job_id)
    outcome = await harness.runs.execute(task)
    assert isinstance(outcome, Cancelled)
    assert calls == []


@pytest.mark.parametrize(
    ("result", "code"),
    [
        ({"x": float("nan")}, "invalid_result"),
        ({"x": {"y": [1, 2, float("inf")]}}, "invalid_result"),
        ("\ud800", "invalid_result"),
        ({"blob": "x" * 200}, "result_too_large"),
    ],
)
def test_results_that_cannot_be_reported_fail_the_job(result: Any, code: str) -> None:
    problem = result_problem(_task(max_result_bytes=100), result)
    assert problem is not None
    assert problem.code == code


def test_a_reportable_result_passes() -> None:
    assert result_problem(_task(max_result_bytes=100), {"ok": [1, 2.5, None, True]}) is None


def test_exceptions_map_to_stable_codes() -> None:
    task = _task()
    assert error_info(task, HandlerError("no", code="mine")).code == "mine"
    assert error_info(task, Retry("later")).code == "retry"
    assert error_info(task, ValueError("boom")).code == "handler_error"
    assert error_info(task, ValueError("boom")).type == "ValueError"


@pytest.mark.parametrize("isolation", ["async", "thread"])
async def test_a_handler_calling_sys_exit_fails_its_job_and_not_the_worker(isolation: str) -> None:
    async def async_exit(ctx: JobContext, inputs: dict[str, Any]) -> None:
        raise SystemExit(3)

    def thread_exit(ctx: JobContext, inputs: dict[str, Any]) -> None:
        raise SystemExit("bye")

    harness = Harness(async_exit if isolation == "async" else thread_exit, isolation)
    outcome = await harness.runs.execute(_task())
    assert isinstance(outcome, Failed)
    assert (outcome.error.code, outcome.error.type) == ("handler_error", "SystemExit")
    assert "sys.exit" in outcome.error.message


class Abort(BaseException):
    """A handler's own exception that is no Exception."""


@pytest.mark.parametrize("isolation", ["async", "thread"])
@pytest.mark.parametrize("raised", [KeyboardInterrupt, GeneratorExit, Abort])
async def test_a_handler_raising_a_base_exception_fails_its_job_and_not_the_worker(
    isolation: str, raised: type[BaseException]
) -> None:
    """KeyboardInterrupt left an async handler's task through the event loop (the worker
    died); GeneratorExit and the like left the delivery unsettled and the job running."""

    async def async_raise(ctx: JobContext, inputs: dict[str, Any]) -> None:
        raise raised("from the handler")

    def thread_raise(ctx: JobContext, inputs: dict[str, Any]) -> None:
        raise raised("from the handler")

    harness = Harness(async_raise if isolation == "async" else thread_raise, isolation)
    for _ in range(2):  # and the worker runs the next
        outcome = await harness.runs.execute(_task())
        assert isinstance(outcome, Failed)
        assert (outcome.error.code, outcome.error.type) == ("handler_error", raised.__name__)
        assert "from the handler" in outcome.error.message
