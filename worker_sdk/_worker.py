"""The worker: register a handler, then run it against the broker, session after session.

A session is one connection (see :mod:`worker_sdk._session`); when its channel is lost for
good the worker starts over on a new one, until :meth:`Worker.stop`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar, overload

from ._handler import Handler, Isolation
from ._session import Session
from .wire.topology import (
    DEFAULT_DELIVERY_LIMIT,
    DEFAULT_NAMESPACE,
    TaskQueueOptions,
    Topology,
)
from .wire.urls import UrlPolicy

log = logging.getLogger("worker_sdk")

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["Isolation", "Worker"]


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
    :param connect_timeout: seconds to keep trying a broker that does not answer at start.
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
        connect_timeout: float = 30.0,
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
        self.connect_timeout = connect_timeout
        self._handler: Handler | None = None
        self._sessions: set[Session] = set()
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
            self._handler = Handler.of(f, isolation)
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
            session = Session(
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
