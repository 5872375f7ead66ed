"""The worker engine: consume a service's task queue, run the handler, report, then ack.

Outcomes are explicit (STYLE §7): a task is acked only after its terminal event is confirmed
by the broker; a task that cannot be parsed is rejected to the dead-letter exchange; a task
the worker cannot finish (shutdown past its grace, a failed terminal publish) is handed back
with a requeue, which the queue's delivery limit bounds.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
import os
import socket
import threading
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, get_type_hints, overload

import aio_pika
import httpx
import pydantic_core
from aio_pika import DeliveryMode, Message
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPError, PublishError
from pydantic import BaseModel, ValidationError

from ._context import JobContext
from ._errors import HandlerError, Retry
from ._messages import (
    Cancelled,
    CancelRequest,
    ErrorInfo,
    Failed,
    Heartbeat,
    JobEvent,
    Progress,
    Retrying,
    RunStart,
    Started,
    Succeeded,
    Task,
    TerminalEvent,
)
from ._process import ChildDied, ChildFailed, ChildRunner
from ._settle import settle
from ._topology import (
    DEFAULT_DELIVERY_LIMIT,
    DEFAULT_NAMESPACE,
    CoreExchanges,
    TaskQueueOptions,
    Topology,
    declare_retry_queue,
    declare_task_queue,
    declare_topology,
    retry_tier,
)
from ._urls import UrlPolicy

log = logging.getLogger("worker_sdk")

Isolation = Literal["async", "thread", "process"]
F = TypeVar("F", bound=Callable[..., Any])


class PublishLost(RuntimeError):
    """An event was not confirmed: the broker refused it or the connection dropped."""


PUBLISH_ERRORS = (AMQPError, PublishError, TimeoutError, ConnectionError, RuntimeError)


def to_json(value: Any) -> Any:
    """Turn a handler's return value into JSON-compatible data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return pydantic_core.to_jsonable_python(value)


def _legacy_context(task: Task, policy: UrlPolicy) -> dict[str, Any]:
    """The context fields beyond identity: the URL policy and the old message's fields."""
    return {
        "url_policy": policy,
        "document_url": task.document.url if task.document else None,
        "annotation_service_url": task.annotation_service_url,
        "misc": task.misc,
        "submitted_at": task.submitted_at,
    }


def _error_info(task: Task, exc: Exception) -> ErrorInfo:
    """The job's error for what its handler raised."""
    if isinstance(exc, ValidationError):
        return ErrorInfo(code="invalid_input", type="ValidationError", message=str(exc))
    if isinstance(exc, ChildFailed):
        return ErrorInfo(
            code=exc.code, type=exc.type_name, message=str(exc), retryable=exc.retryable
        )
    if isinstance(exc, HandlerError):
        return ErrorInfo(
            code=exc.code, type=type(exc).__name__, message=str(exc), retryable=exc.retryable
        )
    if isinstance(exc, Retry):
        return ErrorInfo(code="retry", type="Retry", message=str(exc), retryable=True)
    if isinstance(exc, ChildDied):
        return ErrorInfo(code="handler_crashed", type="ChildDied", message=str(exc))
    log.error("job %s failed", task.job_id, exc_info=exc)
    return ErrorInfo(code="handler_error", type=type(exc).__name__, message=str(exc))


@dataclass(frozen=True, slots=True)
class _Handler:
    fn: Callable[..., Any]
    isolation: Isolation
    inputs_model: type[BaseModel] | None


def _inputs_model(fn: Callable[..., Any]) -> type[BaseModel] | None:
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 2:
        raise TypeError(
            f"handler {fn.__qualname__} must take (ctx, inputs), got {len(params)} args"
        )
    hints = get_type_hints(fn)
    annotation = hints.get(params[1].name)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


class Worker:
    """A service's worker: register one handler, then :meth:`run` it against the broker.

    :param service: the catalogue id of the service this worker serves.
    :param version: the worker's version, announced in ``started`` events and heartbeats.
    :param delivery_limit: must equal the catalogue's ``delivery_limit`` for the service.
    :param max_queued: must equal the catalogue's ``max_queued`` for the service.
    :param heartbeat_interval: seconds between heartbeats.
    :param progress_interval: shortest gap between two progress events of one job.
    :param started_delay: seconds a run may go before its ``started`` event is announced
        (at once when it reports progress). A run that ends sooner sends only its terminal
        event, which then carries the start: half the messages for short jobs.
    :param shutdown_grace: seconds in-flight jobs get to finish after :meth:`stop`; what is
        still running then is handed back to the queue for another worker.
    :param reconnect_after: seconds the worker's channel may stay closed before the worker
        drops its connection and starts over on a new one (a watchdog for the cases the
        client library does not recover by itself); unsettled tasks go back to the queue.
    :param retry_delay: seconds before another attempt when a handler raises a retryable
        :class:`HandlerError` (``Retry`` carries its own delay).
    :param cancel_grace: seconds a cancelled (or timed-out) job gets to stop on its own
        (``ctx.cancelled``; ``CancelledError`` for async handlers) before its child process is
        killed.
    :param publish_timeout: seconds to wait for the broker to confirm an event.
    """

    def __init__(
        self,
        service: str,
        *,
        version: str,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        max_queued: int | None = None,
        heartbeat_interval: float = 5.0,
        progress_interval: float = 0.25,
        started_delay: float = 0.1,
        shutdown_grace: float = 30.0,
        cancel_grace: float = 10.0,
        retry_delay: float = 5.0,
        reconnect_after: float = 15.0,
        publish_timeout: float = 10.0,
    ) -> None:
        self.service = service
        self.version = version
        self.queue_options = TaskQueueOptions(delivery_limit=delivery_limit, max_length=max_queued)
        self.heartbeat_interval = heartbeat_interval
        self.progress_interval = progress_interval
        self.started_delay = started_delay
        self.shutdown_grace = shutdown_grace
        self.cancel_grace = cancel_grace
        self.retry_delay = retry_delay
        self.reconnect_after = reconnect_after
        self.publish_timeout = publish_timeout
        self._handler: _Handler | None = None
        self._sessions: set[_Session] = set()
        self._stopping = False

    @overload
    def handler(self, fn: F, /) -> F: ...
    @overload
    def handler(
        self, fn: None = None, /, *, isolation: Isolation = "async"
    ) -> Callable[[F], F]: ...

    def handler(
        self, fn: Callable[..., Any] | None = None, /, *, isolation: Isolation = "async"
    ) -> Any:
        """Register the function that runs each job: ``fn(ctx, inputs) -> result``.

        ``isolation="async"`` (the default) awaits a coroutine function on the event loop;
        ``"thread"`` runs a plain function on a thread; ``"process"`` runs it in a child
        process per job, for CPU-heavy work. When ``inputs`` is annotated with a pydantic
        model, the task's inputs are parsed into it (a mismatch fails the job with code
        ``invalid_input``). The function is returned unchanged.
        """

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            if self._handler is not None:
                raise RuntimeError(f"worker {self.service!r} already has a handler")
            is_coroutine = inspect.iscoroutinefunction(f)
            if isolation == "async" and not is_coroutine:
                raise TypeError("isolation='async' needs an async def handler")
            if isolation != "async" and is_coroutine:
                raise TypeError(f"isolation={isolation!r} needs a plain def handler")
            self._handler = _Handler(f, isolation, _inputs_model(f))
            return f

        return register(fn) if fn is not None else register

    async def run(
        self,
        *,
        amqp_url: str,
        namespace: str = DEFAULT_NAMESPACE,
        concurrency: int = 1,
        burst: bool = False,
        url_policy: UrlPolicy | None = None,
    ) -> None:
        """Consume and run jobs until :meth:`stop` (or, with ``burst``, until the queue is empty).

        ``concurrency`` is both the number of jobs run at once and the prefetch count;
        ``url_policy`` governs :meth:`JobContext.fetch` (public addresses only by default).
        """
        if self._handler is None:
            raise RuntimeError(f"worker {self.service!r} has no handler; decorate one first")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._stopping = False
        while not self._stopping:
            session = _Session(
                self,
                self._handler,
                amqp_url,
                Topology(namespace),
                concurrency,
                url_policy or UrlPolicy(),
            )
            self._sessions.add(session)
            try:
                lost = await session.run(burst=burst)
            finally:
                self._sessions.discard(session)
            if not lost:
                return
            log.warning("worker %s: starting over on a new connection", session.worker_id)

    def stop(self) -> None:
        """Stop consuming; in-flight jobs finish (within ``shutdown_grace``) before run returns."""
        self._stopping = True
        for session in self._sessions:
            session.stop()


class _ProgressPump:
    """Coalesces a job's progress reports into at most one event per interval.

    Its publishing task starts with the first report, so a job that reports nothing costs
    nothing.
    """

    def __init__(self, publish: Callable[[int, str | None, int], Awaitable[None]], interval: float):
        self._publish = publish
        self._interval = interval
        self._latest: tuple[int, str | None] | None = None
        self._seq = 0
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._task: asyncio.Task[None] | None = None

    def offer(self, percent: int, message: str | None) -> None:
        if threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.offer, percent, message)
            return
        self._latest = (percent, message)
        self._wake.set()
        if self._task is None:
            self._task = self._loop.create_task(self._pump())

    async def _send_latest(self) -> None:
        latest, self._latest = self._latest, None
        if latest is not None:
            self._seq += 1
            await self._publish(latest[0], latest[1], self._seq)

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._send_latest()
            except PUBLISH_ERRORS as exc:
                log.warning("progress event not published: %r", exc)
            await asyncio.sleep(self._interval)  # the coalescing window, not a synchronisation

    async def close(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self._send_latest()
        except PUBLISH_ERRORS:
            log.warning("last progress event not published", exc_info=True)


StopReason = Literal["cancelled", "time_limit"]
CANCELLED_MEMORY = 10_000  # job ids a worker remembers as cancelled, to skip them on arrival


class _Run:
    """One execution of a task, and how it is being stopped."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.handler: asyncio.Task[Any] | None = None
        self.context: JobContext | None = None
        self.reason: StopReason | None = None
        self.stopping = asyncio.Event()


class _Announcer:
    """Publishes a run's ``started`` event late: after a delay, or before its first progress."""

    def __init__(self, publish: Callable[[], Coroutine[Any, Any, None]], delay: float) -> None:
        self._publish = publish
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(delay, self.now)

    def now(self) -> asyncio.Task[None]:
        if self._task is None:
            self._timer.cancel()
            self._task = asyncio.create_task(self._publish())
        return self._task

    async def settle(self) -> bool:
        """Stop the timer and finish an announcement in flight; True if one was made."""
        self._timer.cancel()
        if self._task is None:
            return False
        await self._task
        return True


class _Session:
    """One :meth:`Worker.run`: a connection, its consumer and the jobs in flight."""

    def __init__(
        self,
        worker: Worker,
        handler: _Handler,
        amqp_url: str,
        topology: Topology,
        concurrency: int,
        url_policy: UrlPolicy,
    ) -> None:
        self.worker = worker
        self.url_policy = url_policy
        self.handler = handler
        self.amqp_url = amqp_url
        self.topology = topology
        self.concurrency = concurrency
        self.host = socket.gethostname()
        self.worker_id = f"{worker.service}@{self.host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stop_consuming = asyncio.Event()
        self._lost = asyncio.Event()
        self._channel: AbstractChannel | None = None
        self._jobs: dict[asyncio.Task[None], uuid.UUID] = {}
        self._runs: dict[uuid.UUID, _Run] = {}
        self._retry_queues: dict[int, str] = {}
        self._cancelled: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._exchanges: CoreExchanges | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._children: ChildRunner | None = None

    def stop(self) -> None:
        self._stop_consuming.set()

    async def run(self, *, burst: bool) -> bool:
        """Consume until stopped (False) or until the channel is lost for good (True)."""
        if self.handler.isolation == "thread":
            self._threads = ThreadPoolExecutor(self.concurrency, thread_name_prefix="job")
        elif self.handler.isolation == "process":
            self._children = ChildRunner([self.handler.fn.__module__])
        connection: AbstractRobustConnection = await aio_pika.connect_robust(
            self.amqp_url, client_properties={"connection_name": self.worker_id}
        )
        heartbeat: asyncio.Task[None] | None = None
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self._channel = channel
            await channel.set_qos(prefetch_count=self.concurrency)
            self._exchanges = await declare_topology(channel, self.topology)
            queue = await declare_task_queue(
                channel, self.topology, self.worker.service, self.worker.queue_options
            )
            control = await channel.declare_queue(exclusive=True, auto_delete=True)
            await control.bind(self.topology.control_exchange)
            await control.consume(self._on_control, no_ack=True)
            heartbeat = asyncio.create_task(self._heartbeats())
            log.info("worker %s consuming %s", self.worker_id, queue.name)
            if burst:
                await self._drain(queue)
                return False
            tag = await queue.consume(self._on_message)
            stopped = asyncio.create_task(self._stop_consuming.wait())
            lost = asyncio.create_task(self._lost.wait())
            await asyncio.wait({stopped, lost}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            lost.cancel()
            if self._lost.is_set():
                log.error(
                    "worker %s: the channel stayed closed for %.0fs; dropping the connection",
                    self.worker_id,
                    self.worker.reconnect_after,
                )
                for job in list(self._jobs):
                    job.cancel()  # its task goes back to the queue with the connection
                await asyncio.gather(*self._jobs, return_exceptions=True)
                return not self._stop_consuming.is_set()
            await queue.cancel(tag)
            await self._finish_in_flight()
            return False
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                await asyncio.gather(heartbeat, return_exceptions=True)
            await connection.close()
            if self._threads is not None:
                self._threads.shutdown(wait=False, cancel_futures=True)
            log.info("worker %s stopped", self.worker_id)

    async def _finish_in_flight(self) -> None:
        if not self._jobs:
            return
        log.info("waiting up to %.0fs for %d job(s)", self.worker.shutdown_grace, len(self._jobs))
        _, pending = await asyncio.wait(list(self._jobs), timeout=self.worker.shutdown_grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _drain(self, queue: AbstractQueue) -> None:
        """Burst mode: run what the queue holds, then return once it is empty and idle."""
        slots = asyncio.Semaphore(self.concurrency)
        while not self._stop_consuming.is_set():
            await slots.acquire()
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                slots.release()
                if not self._jobs:
                    return
                await asyncio.wait(list(self._jobs), return_when=asyncio.FIRST_COMPLETED)
                continue
            task = asyncio.create_task(self._handle(message))
            self._jobs[task] = uuid.UUID(int=0)

            def done(t: asyncio.Task[None]) -> None:
                self._jobs.pop(t, None)
                slots.release()

            task.add_done_callback(done)
        await self._finish_in_flight()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._jobs[task] = uuid.UUID(int=0)
        try:
            await self._handle(message)
        finally:
            self._jobs.pop(task, None)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            task = Task.model_validate_json(message.body)
        except ValidationError as exc:
            log.error("rejecting an unreadable task %s: %s", message.message_id, exc)  # noqa: TRY400
            await settle(message, "reject")
            return
        if task.service != self.worker.service:
            log.error("rejecting task %s for service %r", task.job_id, task.service)
            await settle(message, "reject")
            return
        current = asyncio.current_task()
        if current is not None:
            self._jobs[current] = task.job_id
        try:
            outcome = await self._execute(task)
            if isinstance(outcome, Retrying):
                await self._retry_later(task, outcome)
            else:
                await self._publish(outcome)
                await self._call_back(task, outcome)
        except asyncio.CancelledError:
            log.warning("job %s handed back to the queue", task.job_id)
            await asyncio.shield(self._hand_back(message))
            raise
        except PUBLISH_ERRORS:
            log.exception(
                "job %s: terminal event not confirmed; handing the task back", task.job_id
            )
            await self._hand_back(message)
            return
        await settle(message, "ack")

    async def _hand_back(self, message: AbstractIncomingMessage) -> None:
        await settle(message, "requeue")

    def _base(self, task: Task, run_id: uuid.UUID) -> dict[str, Any]:
        return {
            "job_id": task.job_id,
            "service": task.service,
            "attempt": task.attempt,
            "run_id": run_id,
            "worker_id": self.worker_id,
        }

    async def _execute(self, task: Task) -> TerminalEvent | Retrying:
        run_id = uuid.uuid4()
        base = self._base(task, run_id)
        if task.job_id in self._cancelled:
            log.info("job %s was cancelled before it arrived; skipping it", task.job_id)
            return Cancelled(**base, message="cancelled before it started")
        start = RunStart(
            host=self.host, worker_version=self.worker.version, started_at=datetime.now(UTC)
        )
        started = Started(
            **base,
            host=start.host,
            worker_version=start.worker_version,
            emitted_at=start.started_at,
        )
        announcer = _Announcer(lambda: self._publish(started), self.worker.started_delay)

        async def publish_progress(percent: int, message: str | None, seq: int) -> None:
            # Shielded: cancelling the pump at the end of the job must not cancel the start.
            await asyncio.shield(announcer.now())
            await self._publish(Progress(**base, percent=percent, message=message, seq=seq))

        pump = _ProgressPump(publish_progress, self.worker.progress_interval)
        result: Any = None
        error: ErrorInfo | None = None
        delay: float | None = None
        run = _Run(task)
        run.handler = asyncio.create_task(self._invoke(task, pump, run))
        self._runs[task.job_id] = run
        supervisor = asyncio.create_task(self._supervise(run))
        timer = (
            asyncio.get_running_loop().call_later(task.time_limit, self._stop, run, "time_limit")
            if task.time_limit
            else None
        )
        try:
            result = await run.handler
        except asyncio.CancelledError:  # the run stopped (cancel, time limit) or we are
            current = asyncio.current_task()
            if run.reason is None or (current is not None and current.cancelling()):
                raise
        except Exception as exc:  # noqa: BLE001 - every handler failure becomes the job's error
            error = _error_info(task, exc)
            delay = self._retry_delay(exc, error)
        finally:
            if timer is not None:
                timer.cancel()
            supervisor.cancel()
            self._runs.pop(task.job_id, None)
            await pump.close()
            announced = await announcer.settle()
        unannounced = None if announced else start
        if run.reason == "cancelled":
            return Cancelled(**base, message="cancelled by its owner", start=unannounced)
        if run.reason == "time_limit":
            error = ErrorInfo(
                code="time_limit",
                type="TimeoutError",
                message=f"the job ran past its time limit of {task.time_limit}s",
            )
        elif error is not None and delay is not None and task.attempt < task.max_attempts:
            return Retrying(**{**base, "attempt": task.attempt + 1}, delay=delay, error=error)
        if error is not None:
            return Failed(**base, error=error, start=unannounced)
        return Succeeded(**base, result=result, start=unannounced)

    async def _call_back(self, task: Task, outcome: TerminalEvent) -> None:
        """POST ``{uuid, status}`` to the task's ``misc.callback_url`` (old SDK behaviour);
        failures are only logged. The URL is the client's, so the URL policy applies."""
        url = (task.misc or {}).get("callback_url")
        if not isinstance(url, str):
            return
        status = {"succeeded": "SUCCESS", "failed": "FAILURE", "cancelled": "REVOKED"}
        body = {"uuid": str(task.job_id), "status": status[outcome.kind]}
        try:
            self.url_policy.check_literal(url)
            _, host, port = self.url_policy.split(url)
            infos = await asyncio.get_running_loop().getaddrinfo(host, port)
            self.url_policy.check_resolved(
                host, [ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos]
            )
            async with httpx.AsyncClient(timeout=10, follow_redirects=False) as client:
                await client.post(url, json=body)
        except (OSError, ValueError, httpx.HTTPError) as exc:
            log.warning("job %s: callback to %s failed: %r", task.job_id, url, exc)

    def _retry_delay(self, exc: Exception, error: ErrorInfo) -> float | None:
        """Seconds before another attempt, or None when the failure is final."""
        if isinstance(exc, Retry):
            return exc.delay
        return self.worker.retry_delay if error.retryable else None

    async def _retry_later(self, task: Task, retrying: Retrying) -> None:
        """Park a copy of the task (next attempt) in the holding queue of its delay, then say
        so; both confirmed before the original is acked."""
        assert self._channel is not None
        tier = retry_tier(retrying.delay)
        if tier not in self._retry_queues:
            self._retry_queues[tier] = await declare_retry_queue(
                self._channel, self.topology, task.service, tier
            )
        copy = task.model_copy(update={"attempt": retrying.attempt})
        message = Message(
            copy.to_bytes(),
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=uuid.uuid4().hex,
            correlation_id=str(task.job_id),
            type="task",
        )
        try:
            await self._channel.default_exchange.publish(
                message,
                routing_key=self._retry_queues[tier],
                mandatory=True,
                timeout=self.worker.publish_timeout,
            )
        except PUBLISH_ERRORS:
            raise
        except Exception as exc:  # aiormq fails pending confirms with a bare Exception
            raise PublishLost(repr(exc)) from exc
        log.info("job %s: attempt %d in %ds", task.job_id, retrying.attempt, tier)
        await self._publish(retrying)

    async def _invoke(self, task: Task, pump: _ProgressPump, run: _Run) -> Any:
        handler = self.handler
        inputs: Any = task.inputs
        if handler.inputs_model is not None:
            inputs = handler.inputs_model.model_validate(task.inputs)
        if handler.isolation == "process":
            assert self._children is not None
            return await self._children.run(
                handler.fn,
                job_id=task.job_id,
                service=task.service,
                attempt=task.attempt,
                worker_id=self.worker_id,
                inputs=inputs,
                to_json=to_json,
                on_progress=pump.offer,
                cancel=run.stopping,
                context=_legacy_context(task, self.url_policy),
            )
        ctx = JobContext(
            job_id=task.job_id,
            service=task.service,
            attempt=task.attempt,
            worker_id=self.worker_id,
            sink=pump.offer,
            **_legacy_context(task, self.url_policy),
        )
        run.context = ctx
        if handler.isolation == "thread":
            loop = asyncio.get_running_loop()
            value = await loop.run_in_executor(self._threads, handler.fn, ctx, inputs)
        else:
            value = await handler.fn(ctx, inputs)
        return to_json(value)

    def cancel(self, job_id: uuid.UUID) -> None:
        """Stop the job if it runs here, and skip it if it arrives later."""
        self._cancelled[job_id] = None
        while len(self._cancelled) > CANCELLED_MEMORY:
            self._cancelled.popitem(last=False)
        run = self._runs.get(job_id)
        if run is not None:
            self._stop(run, "cancelled")

    def _stop(self, run: _Run, reason: StopReason) -> None:
        """Phase one: ask the handler to stop; phase two, after the grace: make it."""
        if run.reason is not None:
            return
        run.reason = reason
        run.stopping.set()
        if run.context is not None:
            run.context._cancel()
        if self.handler.isolation == "async" and run.handler is not None:
            run.handler.cancel()  # CancelledError is how an async handler is asked to stop
        log.info("job %s: stopping (%s)", run.task.job_id, reason)

    async def _supervise(self, run: _Run) -> None:
        await run.stopping.wait()
        assert run.handler is not None
        done, _ = await asyncio.wait({run.handler}, timeout=self.worker.cancel_grace)
        if not done:
            log.warning(
                "job %s did not stop within %.0fs; killing it",
                run.task.job_id,
                self.worker.cancel_grace,
            )
            run.handler.cancel()  # kills a child process; a thread can only be abandoned

    async def _on_control(self, message: AbstractIncomingMessage) -> None:
        try:
            request = CancelRequest.model_validate_json(message.body)
        except ValidationError:
            log.warning("ignoring an unreadable control message")
            return
        self.cancel(request.job_id)

    async def _publish(
        self, event: JobEvent | Heartbeat, *, expiration: float | None = None
    ) -> None:
        assert self._exchanges is not None
        message = Message(
            event.to_bytes(),
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=uuid.uuid4().hex,
            correlation_id=str(event.job_id) if not isinstance(event, Heartbeat) else None,
            type=event.kind,
            expiration=expiration,
        )
        try:
            await self._exchanges.events.publish(
                message,
                routing_key=f"{event.service}.{event.kind}",
                mandatory=True,
                timeout=self.worker.publish_timeout,
            )
        except PUBLISH_ERRORS:
            raise
        except asyncio.CancelledError as exc:
            # aiormq cancels a pending confirm when its channel closes: a lost publish,
            # unless this task itself is being cancelled.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            raise PublishLost("the channel closed before the broker confirmed") from exc
        except Exception as exc:  # aiormq fails pending confirms with a bare Exception
            raise PublishLost(repr(exc)) from exc

    async def _heartbeats(self) -> None:
        """Announce the worker, and watch its channel (the watchdog behind reconnect_after)."""
        interval = self.worker.heartbeat_interval
        loop = asyncio.get_running_loop()
        closed_since: float | None = None
        while True:
            if self._channel is not None and self._channel.is_closed:
                closed_since = closed_since if closed_since is not None else loop.time()
                if loop.time() - closed_since >= self.worker.reconnect_after:
                    self._lost.set()
            else:
                closed_since = None
            beat = Heartbeat(
                worker_id=self.worker_id,
                service=self.worker.service,
                version=self.worker.version,
                host=self.host,
                concurrency=self.concurrency,
                running=[j for j in self._jobs.values() if j.int],
            )
            try:
                await self._publish(beat, expiration=interval * 3)
            except PUBLISH_ERRORS as exc:
                log.warning("heartbeat not published: %r", exc)
            await asyncio.sleep(min(interval, self.worker.reconnect_after / 3))  # the period
