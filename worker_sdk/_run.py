"""Running tasks: one handler call per run, stopped in two phases, ended by one outcome.

A run is stopped (cancelled by its owner, or past its time limit) cooperatively first —
``ctx.cancelled`` turns true, an async handler gets ``CancelledError`` — and, after the
worker's ``cancel_grace``, by force: the task running it is cancelled, which kills its child
process, replaced in the pool by a fresh one (a thread can only be abandoned).

Every run ends in one outcome: a terminal event (succeeded, failed, cancelled) or a
``retrying`` event for the next attempt. A result is checked before it is reported: one that
is not JSON the gateway can keep, or larger than the task's ``max_result_bytes``, fails the
job (``invalid_result``, ``result_too_large``) instead of reaching the broker.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import pydantic_core
from pydantic import ValidationError

from ._child import Limits
from ._context import JobContext
from ._errors import HandlerError, Retry, describe
from ._handler import Handler, to_json
from ._pool import ChildPool
from ._pool_errors import ChildDied, ChildFailed
from ._progress import Announcer, ProgressPump
from .wire.messages import (
    Cancelled,
    ErrorInfo,
    Failed,
    JobEvent,
    Progress,
    Retrying,
    RunStart,
    Started,
    Succeeded,
    Task,
    TerminalEvent,
)
from .wire.urls import UrlPolicy
from .wire.values import check_value

if TYPE_CHECKING:
    from ._worker import Worker

log = logging.getLogger("worker_sdk")

StopReason = Literal["cancelled", "time_limit"]
CANCELLED_MEMORY = 10_000  # job ids a worker remembers as cancelled, to skip them on arrival
MAX_RESULT_DEPTH = 32
MAX_RETRY_DELAY = 366 * 86400  # a Retrying event's bound
MAX_CODE = 64  # an ErrorInfo code's bound
Outcome = TerminalEvent | Retrying
Publish = Callable[[JobEvent], Coroutine[Any, Any, None]]


def _code(code: object) -> str:
    """A ``HandlerError``'s code as the job's error can carry it (1 to 64 characters), else
    ``handler_error``: a failure is reported whatever code its handler chose."""
    return code if isinstance(code, str) and 1 <= len(code) <= MAX_CODE else "handler_error"


class HandlerExited(Exception):
    """An async or thread handler raised what is no ``Exception`` (``sys.exit()``,
    ``KeyboardInterrupt``, ``GeneratorExit``, a ``BaseException`` of its own): its job fails,
    the worker goes on. Left to run its course, such an exception leaves a task through the
    event loop itself (the worker dies) or is only logged by the consumer (the delivery is
    never settled and the job stays running)."""

    def __init__(self, exc: BaseException) -> None:
        self.type_name = type(exc).__name__
        if isinstance(exc, SystemExit):
            message = f"the handler called sys.exit({exc.code!r})"
        else:
            message = f"the handler raised {self.type_name}: {exc}"
        super().__init__(message[:500])


def error_info(task: Task, exc: Exception) -> ErrorInfo:
    """The job's error for what its handler raised."""
    if isinstance(exc, HandlerExited):
        return ErrorInfo(code="handler_error", type=exc.type_name, message=str(exc))
    if isinstance(exc, ValidationError):
        return ErrorInfo(code="invalid_input", type="ValidationError", message=str(exc))
    if isinstance(exc, ChildFailed):
        return ErrorInfo(
            code=_code(exc.code), type=exc.type_name, message=str(exc), retryable=exc.retryable
        )
    if isinstance(exc, HandlerError):
        return ErrorInfo(
            code=_code(exc.code),
            type=type(exc).__name__,
            message=describe(exc),
            retryable=exc.retryable is True,
        )
    if isinstance(exc, Retry):
        return ErrorInfo(code="retry", type="Retry", message=describe(exc), retryable=True)
    if isinstance(exc, ChildDied):
        return ErrorInfo(code=exc.code, type="ChildDied", message=str(exc))
    log.error("job %s failed", task.job_id, exc_info=exc)
    return ErrorInfo(code="handler_error", type=type(exc).__name__, message=describe(exc))


def result_problem(task: Task, result: Any) -> ErrorInfo | None:
    """Why a handler's result cannot be reported, or None."""
    problems = check_value(result, root="/result", max_depth=MAX_RESULT_DEPTH)
    if problems:
        where = "; ".join(f"{p.path}: {p.message}" for p in problems[:3])
        return ErrorInfo(
            code="invalid_result",
            type="InvalidResult",
            message=f"the handler's result is not JSON the gateway can keep: {where}",
        )
    if task.max_result_bytes is not None:
        size = len(pydantic_core.to_json(result))
        if size > task.max_result_bytes:
            return ErrorInfo(
                code="result_too_large",
                type="ResultTooLarge",
                message=f"the result is {size} bytes as JSON; this service allows "
                f"{task.max_result_bytes}",
            )
    return None


class Run:
    """One execution of a task, and how it is being stopped."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.handler: asyncio.Task[Any] | None = None
        self.context: JobContext | None = None
        self.reason: StopReason | None = None
        self.stopping = asyncio.Event()
        self.supervisor: asyncio.Task[None] | None = None  # from the first stop request on
        # Resolved when the handler is done, or abandoned (an async handler that outlives its
        # cancellation too): the run ends then, without waiting for it.
        self.settled: asyncio.Future[None] | None = None
        self.thread: Future[Any] | None = None  # a thread handler's work


class Runs:
    """The runs of one worker session: starting, stopping and ending each."""

    def __init__(
        self,
        worker: Worker,
        handler: Handler,
        *,
        worker_id: str,
        host: str,
        publish: Publish,
        url_policy: UrlPolicy,
        threads: ThreadPoolExecutor | None,
        children: ChildPool | None,
        limits: Limits | None = None,
        thread_slots: int = 1,
    ) -> None:
        self._worker = worker
        self._handler = handler
        self._worker_id = worker_id
        self._host = host
        self._publish = publish
        self._url_policy = url_policy
        self._threads = threads
        self._thread_slots = thread_slots  # the size of ``threads``, for a pool in its place
        self._left: list[ThreadPoolExecutor] = []  # pools of abandoned threads
        self._children = children
        self._limits = limits or Limits()
        self._runs: dict[uuid.UUID, Run] = {}
        self._cancelled: OrderedDict[uuid.UUID, None] = OrderedDict()

    def _base(self, task: Task, run_id: uuid.UUID) -> dict[str, Any]:
        return {
            "job_id": task.job_id,
            "service": task.service,
            "attempt": task.attempt,
            "run_id": run_id,
            "worker_id": self._worker_id,
        }

    async def execute(self, task: Task) -> Outcome:
        """Run the task's handler once and say how it ended."""
        run_id = uuid.uuid4()
        base = self._base(task, run_id)
        if task.job_id in self._cancelled:
            log.info("job %s was cancelled before it arrived; skipping it", task.job_id)
            return Cancelled(**base, message="cancelled before it started")
        start = RunStart(
            host=self._host, worker_version=self._worker.version, started_at=datetime.now(UTC)
        )

        def started() -> Started:  # built only for a run that is announced
            return Started(
                **base,
                host=start.host,
                worker_version=start.worker_version,
                emitted_at=start.started_at,
            )

        announcer = Announcer(lambda: self._publish(started()), self._worker.started_delay)

        async def publish_progress(percent: int, message: str | None, seq: int) -> None:
            # Shielded: cancelling the pump at the end of the job must not cancel the start.
            await asyncio.shield(announcer.now())
            await self._publish(Progress(**base, percent=percent, message=message, seq=seq))

        pump = ProgressPump(publish_progress, self._worker.progress_interval)
        run = Run(task)
        result: Any = None
        error: ErrorInfo | None = None
        delay: float | None = None
        run.handler = asyncio.create_task(self._invoke(task, pump, run))
        self._worker._track(run.handler)
        self._runs[task.job_id] = run
        timer = (
            asyncio.get_running_loop().call_later(task.time_limit, self.stop, run, "time_limit")
            if task.time_limit
            else None
        )
        try:
            result = await self._handler_result(run)
        except asyncio.CancelledError:  # the run stopped (cancel, time limit) or we are
            current = asyncio.current_task()
            if run.reason is None or (current is not None and current.cancelling()):
                raise
        except Exception as exc:  # noqa: BLE001 - every handler failure becomes the job's error
            error = error_info(task, exc)
            delay = self._retry_delay(exc, error)
        finally:
            await self._wind_up(run, timer, pump, announcer)
        # The end carries its start even when a ``started`` event announced it: a gateway
        # that applies the end first (two gateway processes share the events) still records
        # when and where the run started, and one that saw the start keeps it.
        if run.reason == "cancelled":
            return Cancelled(**base, message="cancelled by its owner", start=start)
        if run.reason == "time_limit":
            error = ErrorInfo(
                code="time_limit",
                type="TimeoutError",
                message=f"the job ran past its time limit of {task.time_limit}s",
            )
        elif error is not None and delay is not None and task.attempt < task.max_attempts:
            return Retrying(**{**base, "attempt": task.attempt + 1}, delay=delay, error=error)
        if error is None:
            error = result_problem(task, result)
        if error is not None:
            return Failed(**base, error=error, start=start)
        return Succeeded(**base, result=result, start=start)

    async def _handler_result(self, run: Run) -> Any:
        """What the handler returned (or raised); ``CancelledError`` once it is abandoned.

        Awaited through a future of its own, not the handler's task: a task that awaits a
        task swallowing its cancellation can be cancelled no more than it can."""
        handler = run.handler
        assert handler is not None
        run.settled = settled = asyncio.get_running_loop().create_future()

        def done(_: object) -> None:
            if not settled.done():
                settled.set_result(None)

        handler.add_done_callback(done)
        try:
            await settled
        except asyncio.CancelledError:  # the worker stops: the handler is asked to, first
            handler.cancel()
            await asyncio.wait({handler}, timeout=self._worker.cancel_grace)
            raise
        if not handler.done():
            raise asyncio.CancelledError
        return handler.result()

    async def _wind_up(
        self,
        run: Run,
        timer: asyncio.TimerHandle | None,
        pump: ProgressPump,
        announcer: Announcer,
    ) -> None:
        """After the handler: no more stopping, the last progress and the start sent."""
        if timer is not None:
            timer.cancel()
        if run.supervisor is not None:
            run.supervisor.cancel()
        if self._runs.get(run.task.job_id) is run:
            del self._runs[run.task.job_id]
        await pump.close()
        await announcer.settle()

    def _retry_delay(self, exc: Exception, error: ErrorInfo) -> float | None:
        """Seconds before another attempt, or None when the failure is final."""
        if isinstance(exc, Retry):
            # What the handler asked, within what a Retrying event carries (NaN: at once).
            try:
                delay = float(exc.delay)
            except OverflowError:  # an integer past any float: as long as may be, or at once
                delay = MAX_RETRY_DELAY if exc.delay > 0 else 0.0
            except (TypeError, ValueError):
                delay = 0.0
            return min(delay, MAX_RETRY_DELAY) if delay >= 0 else 0.0
        return self._worker.retry_delay if error.retryable else None

    def _context(self, task: Task) -> dict[str, Any]:
        """The context fields beyond identity: the URL policy and the old message's fields."""
        return {
            "url_policy": self._url_policy,
            "document_url": task.document.url if task.document else None,
            "annotation_service_url": task.annotation_service_url,
            "misc": task.misc,
            "submitted_at": task.submitted_at,
        }

    async def _invoke(self, task: Task, pump: ProgressPump, run: Run) -> Any:
        handler = self._handler
        inputs = handler.parse_inputs(task.inputs)
        if handler.isolation == "process":
            assert self._children is not None
            identity = {
                "job_id": task.job_id,
                "service": task.service,
                "attempt": task.attempt,
                "worker_id": self._worker_id,
            }
            return await self._children.run(
                job_id=task.job_id,
                context={**identity, **self._context(task)},
                inputs=inputs,
                limits=self._limits,
                on_progress=pump.offer,
                cancel=run.stopping,
            )
        ctx = JobContext(
            job_id=task.job_id,
            service=task.service,
            attempt=task.attempt,
            worker_id=self._worker_id,
            sink=pump.offer,
            **self._context(task),
        )
        run.context = ctx
        try:
            if handler.isolation == "thread":
                assert self._threads is not None
                run.thread = self._threads.submit(handler.fn, ctx, inputs)
                self._worker._track(run.thread)
                value = await asyncio.wrap_future(run.thread)
            else:
                value = await handler.fn(ctx, inputs)
        except asyncio.CancelledError:
            raise  # the run is stopped, or the worker
        except Exception:
            raise
        except BaseException as exc:  # noqa: BLE001 - see HandlerExited
            raise HandlerExited(exc) from None
        return to_json(value)

    def cancel(self, job_id: uuid.UUID) -> None:
        """Stop the job if it runs here, and skip it if it arrives later."""
        self._cancelled[job_id] = None
        while len(self._cancelled) > CANCELLED_MEMORY:
            self._cancelled.popitem(last=False)
        run = self._runs.get(job_id)
        if run is not None:
            self.stop(run, "cancelled")

    def stop(self, run: Run, reason: StopReason) -> None:
        """Phase one: ask the handler to stop; phase two, after the grace: make it."""
        if run.reason is not None:
            return
        run.reason = reason
        run.stopping.set()
        if run.context is not None:
            run.context._cancel()
        if self._handler.isolation == "async" and run.handler is not None:
            run.handler.cancel()  # CancelledError is how an async handler is asked to stop
        run.supervisor = asyncio.get_running_loop().create_task(self._supervise(run))
        log.info("job %s: stopping (%s)", run.task.job_id, reason)

    def _replace_threads(self) -> None:
        """An abandoned thread holds its slot of the pool until it ends, if ever, and the
        jobs after it would wait behind it (every slot taken, the worker runs nothing): they
        get a fresh pool of the same size, and the old one ends with its last thread."""
        old = self._threads
        assert old is not None
        self._threads = ThreadPoolExecutor(self._thread_slots, thread_name_prefix="job")
        old.shutdown(wait=False)
        self._left.append(old)

    def close_threads(self) -> None:
        """Shut the thread pools down without waiting (a run still in one is abandoned)."""
        for pool in [*self._left, self._threads]:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    async def _supervise(self, run: Run) -> None:
        """Phase two of a stop: the handler that outlives the grace is made to stop."""
        assert run.handler is not None
        done, _ = await asyncio.wait({run.handler}, timeout=self._worker.cancel_grace)
        if not done:
            log.warning(
                "job %s did not stop within %.0fs; killing it",
                run.task.job_id,
                self._worker.cancel_grace,
            )
            run.handler.cancel()  # kills a child process; a thread can only be abandoned
            if self._handler.isolation == "thread":
                self._replace_threads()
            if self._handler.isolation != "async":
                return
            done, _ = await asyncio.wait({run.handler}, timeout=self._worker.cancel_grace)
            if not done:  # it swallows CancelledError: abandoned, as a thread is
                log.error(
                    "job %s: its handler ignores cancellation; the run ends without it",
                    run.task.job_id,
                )
                if run.settled is not None and not run.settled.done():
                    run.settled.set_result(None)
