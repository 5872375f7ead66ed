"""The worker: register a handler, then run it against the broker, session after session.

A session is one connection (see :mod:`worker_sdk._session`); when its channel is lost for
good the worker starts over on a new one, until :meth:`Worker.stop`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar, overload

from ._autoscale import Autoscale
from ._child import Limits
from ._handler import Handler, Isolation, check_inputs_model
from ._session import Session
from .wire.catalogue import Catalogue, ServiceSpec
from .wire.messages import MAX_CONCURRENCY
from .wire.topology import DEFAULT_NAMESPACE, Topology
from .wire.urls import UrlPolicy

log = logging.getLogger("worker_sdk")

F = TypeVar("F", bound=Callable[..., Any])
# A handler running: its thread's work, or its task.
Handling = Future[Any] | asyncio.Future[Any]

__all__ = ["Isolation", "UnknownService", "Worker"]


class UnknownService(LookupError):
    """The worker's service is not in the catalogue it was given."""


class Worker:
    """A service's worker: register one handler, then :meth:`run` it against the broker.

    The service's queue (its delivery limit, its bound) is the catalogue's: :meth:`run` takes
    the catalogue and refuses to start for a service that is not in it.

    :param service: the catalogue id of the service this worker serves.
    :param version: the worker's version, announced in ``started`` events and heartbeats.
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
        killed (and replaced in the pool).
    :param max_jobs_per_child: process handlers: jobs a child process runs before it is
        replaced by a fresh one (None: no limit).
    :param max_memory_per_child: process handlers: resident bytes a child process may hold
        after a job before it is replaced by a fresh one (None: no limit); the job that
        crossed the line still completes.
    :param autoscale_interval: with ``run(autoscale=...)``: seconds between two looks at the
        backlog.
    :param autoscale_idle: with ``run(autoscale=...)``: seconds the worker must have had less
        work than its concurrency before it shrinks.
    :param publish_timeout: seconds to wait for the broker to confirm an event.
    :param outcome_linger: seconds a job's end may wait for the ends of the other tasks this
        worker holds, so that they leave in one message (never when it holds no other).
    :param connect_timeout: seconds to keep trying a broker that does not answer at start.
    """

    def __init__(
        self,
        service: str,
        *,
        version: str,
        heartbeat_interval: float = 5.0,
        progress_interval: float = 0.25,
        started_delay: float = 0.1,
        shutdown_grace: float = 30.0,
        cancel_grace: float = 10.0,
        retry_delay: float = 5.0,
        reconnect_after: float = 15.0,
        publish_timeout: float = 10.0,
        outcome_linger: float = 0.005,
        connect_timeout: float = 30.0,
        max_jobs_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        autoscale_interval: float = 1.0,
        autoscale_idle: float = 30.0,
    ) -> None:
        self.service = service
        self.version = version
        self.heartbeat_interval = heartbeat_interval
        self.progress_interval = progress_interval
        self.started_delay = started_delay
        self.shutdown_grace = shutdown_grace
        self.cancel_grace = cancel_grace
        self.retry_delay = retry_delay
        self.reconnect_after = reconnect_after
        self.publish_timeout = publish_timeout
        self.outcome_linger = outcome_linger
        self.connect_timeout = connect_timeout
        self.max_jobs_per_child = max_jobs_per_child
        self.max_memory_per_child = max_memory_per_child
        self.autoscale_interval = autoscale_interval
        self.autoscale_idle = autoscale_idle
        self._handler: Handler | None = None
        self._sessions: set[Session] = set()
        self._stopping = False
        self._handlers: set[Handling] = set()  # handlers running, their runs ended or not

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
        ``"thread"`` runs a plain function on a thread; ``"process"`` runs it in a pool of
        ``concurrency`` warm child processes, one job per child at a time, for CPU-heavy
        work. When ``inputs`` is annotated with a pydantic
        model, the task's inputs are parsed into it (a mismatch fails the job with code
        ``invalid_input``). The function is returned unchanged.
        """

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            if self._handler is not None:
                raise RuntimeError(f"worker {self.service!r} already has a handler")
            self._handler = Handler.of(f, isolation)
            return f

        return register(fn) if fn is not None else register

    def spec(self, catalogue: Catalogue) -> ServiceSpec:
        """This worker's service in ``catalogue``: :class:`UnknownService` when it is not
        there, ``InputsModelOutOfDate`` when the handler's generated inputs model was made
        from another schema."""
        spec = catalogue.get(self.service)
        if spec is None:
            known = ", ".join(sorted(s.id for s in catalogue)) or "none"
            raise UnknownService(
                f"service {self.service!r} is not in the catalogue {catalogue.source} "
                f"(its services: {known})"
            )
        if self._handler is not None:
            check_inputs_model(self._handler, spec.id, spec.inputs_digest)
        return spec

    async def run(
        self,
        *,
        amqp_url: str,
        catalogue: Catalogue,
        namespace: str = DEFAULT_NAMESPACE,
        concurrency: int = 1,
        burst: bool = False,
        url_policy: UrlPolicy | None = None,
        autoscale: Autoscale | None = None,
    ) -> None:
        """Consume and run jobs until :meth:`stop` (or, with ``burst``, until the queue is empty).

        The service's queue arguments come from ``catalogue`` (the gateway's own); a service
        that is not in it raises :class:`UnknownService` before anything connects.
        ``concurrency`` is both the number of jobs run at once and the prefetch count;
        ``autoscale`` (``Autoscale(1, 4)``) makes it follow the backlog between its bounds
        instead, starting at the lower one (burst mode keeps ``concurrency``);
        ``url_policy`` governs :meth:`JobContext.fetch` (public addresses only by default).
        """
        if self._handler is None:
            raise RuntimeError(f"worker {self.service!r} has no handler; decorate one first")
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY}")
        spec = self.spec(catalogue)
        drift = check_inputs_model(self._handler, spec.id, spec.inputs_digest)
        if drift is not None:
            log.warning("worker %s: %s", self.service, drift)
        if spec.version != self.version:
            log.warning(
                "worker %s is version %s; the catalogue says %s (the gateway reports it on jobs)",
                self.service,
                self.version,
                spec.version,
            )
        limits = Limits(memory=spec.memory_limit, cpu_time=spec.cpu_time_limit)
        if limits and self._handler.isolation != "process":
            log.warning(
                "worker %s: the catalogue's memory_limit and cpu_time_limit bound process "
                "handlers only; this %s handler runs without them",
                self.service,
                self._handler.isolation,
            )
        self._stopping = False
        while not self._stopping:
            session = Session(
                self,
                self._handler,
                spec.queue_options,
                amqp_url,
                Topology(namespace),
                concurrency,
                url_policy or UrlPolicy(),
                limits,
                autoscale=None if burst else autoscale,
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

    @property
    def lingering(self) -> int:
        """Handlers still running. Once :meth:`run` has returned, each was abandoned: a
        thread, which nothing can stop, or an async handler that swallowed its cancellation;
        their runs have ended (their tasks handed back or their jobs reported) without them.
        The interpreter waits for such a thread at exit, and ``asyncio.run`` for such a task,
        for ever: ``sgw worker`` exits without waiting for them."""
        return len(self._handlers)

    def _track(self, handler: Handling) -> None:
        """Count ``handler`` in :attr:`lingering` until it is done."""
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
