"""One worker session: a connection, its consumer, and the deliveries in flight.

Outcomes are explicit (STYLE §7):

- a task is acked only after its outcome (terminal or ``retrying`` event) is confirmed;
- a task whose outcome is not confirmed, or that shutdown interrupts, is handed back with a
  requeue (the queue's delivery limit bounds how often);
- a task the worker refuses (unreadable, another service's, a newer schema) is dead-lettered
  with its reason in the ``x-sg-refused`` header, so its job fails at once, saying why;
- a barrier is reported, then acked;
- a task for a run this process already finished (a redelivery after a lost ack) is acked
  without running the handler again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pydantic import ValidationError

from ._autoscale import Autoscale, Consumers, Follower, Scaler, follow_backlog, ready_tasks
from ._child import Limits
from ._errors import describe
from ._handler import Handler
from ._heartbeats import Heartbeats
from ._outcomes import Reporter
from ._pool import ChildPool
from ._progress import PUBLISH_ERRORS
from ._run import Runs
from .legacy import call_back
from .wire import acks
from .wire.messages import (
    REFUSED_HEADER,
    Barrier,
    BarrierPassed,
    CancelRequest,
    NewerSchema,
    Retrying,
    Task,
    TerminalEvent,
    check_schema,
    describe_error,
    parse_task,
)
from .wire.publish import outgoing, publish
from .wire.settle import settle
from .wire.supervisor import connect
from .wire.topology import (
    CoreExchanges,
    TaskQueueOptions,
    Topology,
    declare_retry_queue,
    declare_task_queue,
    declare_topology,
    retry_tier,
)
from .wire.urls import UrlPolicy

if TYPE_CHECKING:
    from ._worker import Worker

log = logging.getLogger("worker_sdk")

FINISHED_MEMORY = 10_000  # runs a session remembers as finished, to skip their redelivery
Refusal = Literal["unreadable", "newer schema", "another service", "not reportable"]


class Session(Heartbeats):
    """One :meth:`Worker.run`: a connection, its consumer and the jobs in flight."""

    def __init__(
        self,
        worker: Worker,
        handler: Handler,
        queue_options: TaskQueueOptions,
        amqp_url: str,
        topology: Topology,
        concurrency: int,
        url_policy: UrlPolicy,
        limits: Limits,
        autoscale: Autoscale | None = None,
    ) -> None:
        self.worker = worker
        self.url_policy = url_policy
        self.handler = handler
        self.queue_options = queue_options
        self.amqp_url = amqp_url
        self.topology = topology
        self.concurrency = autoscale.minimum if autoscale is not None else concurrency
        self.autoscale = autoscale
        self.limits = limits
        self.host = socket.gethostname()
        self.worker_id = f"{worker.service}@{self.host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stop_consuming = asyncio.Event()
        self._lost = asyncio.Event()
        self._channel: AbstractChannel | None = None
        self._jobs: dict[asyncio.Task[None], uuid.UUID] = {}
        self._retry_queues: dict[int, str] = {}
        self._finished: OrderedDict[tuple[uuid.UUID, int], None] = OrderedDict()
        self._in_hand: set[tuple[uuid.UUID, int]] = set()  # runs here, from start to settle
        self._exchanges: CoreExchanges | None = None
        self._runs: Runs | None = None
        self._reporter = Reporter(
            worker.service,
            self.worker_id,
            worker.publish_timeout,
            in_flight=lambda: len(self._jobs),
            linger=worker.outcome_linger,
        )
        self._publish = self._reporter.publish
        self._children: ChildPool | None = None

    def stop(self) -> None:
        self._stop_consuming.set()

    def cancel(self, job_id: uuid.UUID) -> None:
        if self._runs is not None:
            self._runs.cancel(job_id)

    async def run(self, *, burst: bool) -> bool:
        """Consume until stopped (False) or until the channel is lost for good (True)."""
        most = self.autoscale.maximum if self.autoscale is not None else self.concurrency
        threads = (
            ThreadPoolExecutor(most, thread_name_prefix="job")
            if self.handler.isolation == "thread"
            else None
        )
        children = (
            ChildPool(
                self.handler.fn,
                size=self.concurrency,
                max_jobs_per_child=self.worker.max_jobs_per_child,
                max_memory_per_child=self.worker.max_memory_per_child,
            )
            if self.handler.isolation == "process"
            else None
        )
        self._children = children
        self._runs = Runs(
            self.worker,
            self.handler,
            worker_id=self.worker_id,
            host=self.host,
            publish=self._publish,
            url_policy=self.url_policy,
            threads=threads,
            children=children,
            limits=self.limits,
            thread_slots=most,
        )
        try:
            if children is not None:
                await children.start()  # warm before the first task arrives
            return await self._connected(burst)
        finally:
            self._runs.close_threads()
            if children is not None:
                await children.close()
            sent = self._reporter.outcomes
            info = (self.worker_id, sent.ends, sent.messages)
            log.info("worker %s stopped; it reported %d ends in %d messages", *info)

    async def _connected(self, burst: bool) -> bool:
        connection: AbstractRobustConnection = await connect(
            self.amqp_url,
            name=f"{self.topology.namespace}/{self.worker_id}",
            timeout=self.worker.connect_timeout,
        )
        heartbeat: asyncio.Task[None] | None = None
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self._channel = channel
            # Autoscaled: one consumer per unit of concurrency, each taking one task at a time.
            prefetch = 1 if self.autoscale is not None and not burst else self.concurrency
            await channel.set_qos(prefetch_count=prefetch)
            self._exchanges = await declare_topology(channel, self.topology)
            self._reporter.exchange = self._exchanges.events
            queue = await declare_task_queue(
                channel, self.topology, self.worker.service, self.queue_options
            )
            control = await channel.declare_queue(exclusive=True, auto_delete=True)
            await control.bind(self.topology.control_exchange)
            await control.consume(self._on_control, no_ack=True)
            heartbeat = asyncio.create_task(self._heartbeats())
            log.info("worker %s consuming %s", self.worker_id, queue.name)
            if burst:
                await self._drain(queue)
            elif await self._consume(queue):  # the channel was lost: start over
                return True
            await self._goodbye(heartbeat)
            heartbeat = None
            return False
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                await asyncio.gather(heartbeat, return_exceptions=True)
            await connection.close()

    async def _consume(self, queue: AbstractQueue) -> bool:
        consumers = Consumers(queue, self._on_message)
        await consumers.resize(1 if self.autoscale is None else self.concurrency)
        waits: set[asyncio.Task[Any]] = {
            asyncio.create_task(event.wait()) for event in (self._stop_consuming, self._lost)
        }
        follower: Follower | None = None
        if self.autoscale is not None:
            channel = self._channel
            assert channel is not None
            scaler = Scaler(self.autoscale, idle_after=self.worker.autoscale_idle)
            follower = Follower(
                lambda stop: follow_backlog(
                    consumers,
                    scaler,
                    ready=lambda: ready_tasks(channel, queue.name),
                    concurrency=lambda: self.concurrency,
                    rescale=self._rescale,
                    interval=self.worker.autoscale_interval,
                    stop=stop,
                )
            )
            waits.add(follower.task)
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if follower is not None:
            waits.discard(follower.task)
        for waiting in waits:
            waiting.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        failed = None  # what ended the follower, raised once the jobs held are settled
        if follower is not None:
            failed = await follower.stop(0 if self._lost.is_set() else self.worker.publish_timeout)
        if self._lost.is_set():
            gone = (self.worker_id, self.worker.reconnect_after)
            log.error("worker %s: the channel stayed closed for %.0fs; reconnecting", *gone)
            for job in list(self._jobs):
                job.cancel()  # its task goes back to the queue with the connection
            await asyncio.gather(*self._jobs, return_exceptions=True)
            return not self._stop_consuming.is_set()
        await consumers.cancel(within=self.worker.publish_timeout)
        await self._finish_in_flight()
        if failed is not None:
            raise failed
        return False

    def _rescale(self, concurrency: int) -> None:
        self.concurrency = concurrency
        if self._children is not None:
            self._children.resize(concurrency)

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
            delivery = await queue.get(no_ack=False, fail=False)
            if delivery is None:
                slots.release()
                if not self._jobs:
                    return
                await asyncio.wait(list(self._jobs), return_when=asyncio.FIRST_COMPLETED)
                continue
            task = asyncio.create_task(self._handle(delivery))
            self._jobs[task] = uuid.UUID(int=0)

            def done(t: asyncio.Task[None]) -> None:
                self._jobs.pop(t, None)
                slots.release()

            task.add_done_callback(done)
        await self._finish_in_flight()

    async def _on_message(self, delivery: AbstractIncomingMessage) -> None:
        # Tasks whose terminal events the broker confirmed together are acked together.
        acks.track(delivery)
        task = asyncio.current_task()
        assert task is not None
        self._jobs[task] = uuid.UUID(int=0)
        try:
            await self._handle(delivery)
        finally:
            self._jobs.pop(task, None)

    async def _handle(self, delivery: AbstractIncomingMessage) -> None:
        try:
            received = parse_task(delivery.body, delivery.type)
        except NewerSchema as exc:
            await self._refuse(delivery, "newer schema", str(exc))
            return
        except (ValidationError, ValueError) as exc:
            await self._refuse(delivery, "unreadable", describe_error(exc))
            return
        if isinstance(received, Barrier):
            await self._pass_barrier(delivery, received)
            return
        if received.service != self.worker.service:
            await self._refuse(
                delivery,
                "another service",
                f"a task for {received.service!r} reached a worker of {self.worker.service!r}",
            )
            return
        await self._run_task(delivery, received)

    async def _run_task(self, delivery: AbstractIncomingMessage, task: Task) -> None:
        run_key = (task.job_id, task.attempt)
        if run_key in self._finished:
            log.info("job %s: its outcome was already reported; acking the redelivery", task.job_id)
            await settle(delivery, "ack")
            return
        if run_key in self._in_hand and not delivery.redelivered:
            # A second copy (a recovery pass republished it): the run's own delivery stays
            # unacked until its end is confirmed, so the broker still holds the task. A copy
            # the broker requeued (redelivered: its channel closed under the run) may be the
            # only one left: it runs.
            log.info("job %s: a copy of its task runs here already; acking this one", task.job_id)
            await settle(delivery, "ack")
            return
        current = asyncio.current_task()
        if current is not None:
            self._jobs[current] = task.job_id
        self._in_hand.add(run_key)
        try:
            await self._run_and_report(delivery, task, run_key)
        finally:
            self._in_hand.discard(run_key)

    async def _run_and_report(
        self, delivery: AbstractIncomingMessage, task: Task, run_key: tuple[uuid.UUID, int]
    ) -> None:
        assert self._runs is not None
        ended: TerminalEvent | None = None
        try:
            outcome = await self._runs.execute(task)
            if isinstance(outcome, Retrying):
                await self._retry_later(task, outcome)
            else:
                await self._reporter.outcomes.send(outcome, batchable=task.batch_outcomes)
                ended = outcome
        except asyncio.CancelledError:
            log.warning("job %s handed back to the queue", task.job_id)
            await asyncio.shield(settle(delivery, "requeue"))
            raise
        except PUBLISH_ERRORS:
            log.exception("job %s: outcome not confirmed; handing the task back", task.job_id)
            await settle(delivery, "requeue")
            return
        except Exception as exc:  # noqa: BLE001 - an outcome no event can say ends the job too
            await self._refuse(delivery, "not reportable", f"{type(exc).__name__}: {describe(exc)}")
            return
        self._finished[run_key] = None
        while len(self._finished) > FINISHED_MEMORY:
            self._finished.popitem(last=False)
        await settle(delivery, "ack")
        if ended is not None:  # the client's URL, after the ack: it can delay no task
            await call_back(task, ended, self.url_policy)

    async def _refuse(self, delivery: AbstractIncomingMessage, why: Refusal, detail: str) -> None:
        """Dead-letter a task with the reason in a header, so the gateway can say it; if that
        publish fails, reject it (the queue dead-letters it without the reason)."""
        log.error("refusing message %s (%s): %s", delivery.message_id, why, detail)
        assert self._exchanges is not None
        kind, headers = delivery.type or "task", {REFUSED_HEADER: f"{why}: {detail}"[:1000]}
        sent = outgoing(
            delivery.body, type=kind, correlation_id=delivery.correlation_id, headers=headers
        )
        try:
            await publish(
                self._exchanges.dead_letter,
                sent,
                self.worker.service,  # the dead-letter queue is bound by service id
                timeout=self.worker.publish_timeout,
            )
        except PUBLISH_ERRORS:
            await settle(delivery, "reject")
            return
        await settle(delivery, "ack")

    async def _pass_barrier(self, delivery: AbstractIncomingMessage, barrier: Barrier) -> None:
        passed = BarrierPassed(
            barrier_id=barrier.barrier_id, service=barrier.service, worker_id=self.worker_id
        )
        try:
            await self._publish(passed)
        except PUBLISH_ERRORS:
            await settle(delivery, "requeue")
            return
        await settle(delivery, "ack")

    async def _retry_later(self, task: Task, retrying: Retrying) -> None:
        """Park a copy of the task (next attempt) in the holding queue of its delay, then say
        so; both confirmed before the original is acked."""
        assert self._channel is not None
        tier = retry_tier(retrying.delay)
        if tier not in self._retry_queues:  # shielded: a declare cut short closes the channel
            self._retry_queues[tier] = await asyncio.shield(
                declare_retry_queue(self._channel, self.topology, task.service, tier)
            )
        copy = task.model_copy(update={"attempt": retrying.attempt})
        sent = outgoing(copy.to_bytes(), type="task", correlation_id=str(task.job_id))
        await publish(
            self._channel.default_exchange,
            sent,
            self._retry_queues[tier],
            timeout=self.worker.publish_timeout,
        )
        log.info("job %s: attempt %d in %ds", task.job_id, retrying.attempt, tier)
        await self._publish(retrying)

    async def _on_control(self, delivery: AbstractIncomingMessage) -> None:
        try:
            request = CancelRequest.model_validate_json(delivery.body)
            check_schema(request)
        except (ValidationError, NewerSchema):
            log.warning("ignoring an unreadable control message")
            return
        self.cancel(request.job_id)
