"""The blocking client."""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import httpx
from httpx_sse import SSEError, connect_sse

from sgw_client._config import RetryPolicy
from sgw_client._core import (
    BROKEN,
    BaseClient,
    Call,
    Following,
    JobRef,
    deadline_of,
    finished_job,
    parse,
)
from sgw_client._errors import UnexpectedResponse
from sgw_client._models import Job, JobStatus, Process, WorkerInfo

log = logging.getLogger("sgw_client")


class Client(BaseClient):
    """A blocking client of the gateway's job API.

    ``base_url`` and ``token`` default to ``SG_CLIENT_URL`` and ``SG_CLIENT_TOKEN``. Calls
    refused for now (429, 502, 503, 504) or left without an answer are retried as ``retry``
    says; every other error raises the :class:`~sgw_client.ApiError` subclass of its code.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url, token, timeout=timeout, retry=retry or RetryPolicy(), headers=headers
        )
        self._http = httpx.Client(**self._http_options(), transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, call: Call) -> httpx.Response:
        request = self._http.build_request(
            call.method,
            call.path,
            params=call.params,
            headers=call.headers,
            json=call.json,
            timeout=call.timeout or httpx.USE_CLIENT_DEFAULT,
        )
        attempts = self._attempts(call)
        while True:
            try:
                response = self._http.send(request)
            except BROKEN as exc:
                pause = attempts.broken(exc)
            else:
                if response.is_success:
                    return response
                pause = attempts.refused(response)
            log.warning(
                "%s: %s; retry %d in %.1f s",
                call.describe(),
                attempts.last_failure,
                attempts.failures,
                pause,
            )
            time.sleep(pause)

    def submit(
        self,
        process: str,
        inputs: dict[str, Any] | None = None,
        *,
        wait: float | None = None,
        idempotency_key: str | None = None,
        subscriber: Mapping[str, str] | None = None,
    ) -> Job:
        """Create a job of ``process``; returns it as the gateway accepted it.

        With ``wait``, the gateway holds the answer up to that many seconds (``Prefer:
        wait``) and the job returned may already have ended. An ``Idempotency-Key`` (a new
        UUID unless given) goes with the request and all its retries, so a retry never
        creates a second job. ``subscriber`` asks for signed webhooks (OGC: ``successUri``,
        ``inProgressUri``, ``failedUri``; see the gateway's ``docs/webhooks.md``).
        """
        call = self._submit_call(process, inputs, wait, idempotency_key, subscriber)
        response = self._send(call)
        finished = finished_job(response)
        if finished is not None:  # it ended within the wait: read its status
            return self.status(finished)
        return parse(Job, response)

    def status(self, job: JobRef) -> Job:
        """The job as it stands."""
        return parse(Job, self._send(self._job_call("GET", job)))

    def results(self, job: JobRef) -> Any:
        """The result of a successful job (raises ``ResultNotReady``, ``JobFailed``,
        ``JobDismissed`` or ``ResultPurged`` otherwise)."""
        return self._send(self._job_call("GET", job, "/results")).json()

    def dismiss(self, job: JobRef) -> Job:
        """Cancel a queued or running job, or drop a finished job's result."""
        return parse(Job, self._send(self._job_call("DELETE", job)))

    def jobs(
        self,
        *,
        process: str | None = None,
        status: str | JobStatus | list[str] | None = None,
        page_size: int = 100,
    ) -> Iterator[Job]:
        """The caller's jobs, newest first, page after page (``next`` links followed)."""
        call: Call | None = self._jobs_call(process, status, page_size)
        while call is not None:
            page, call = self._next_page(self._send(call))
            yield from page

    def processes(self) -> list[Process]:
        """The services of the gateway's catalogue."""
        return self._processes(self._send(Call("GET", "/processes")))

    def workers(self, service: str | None = None) -> list[WorkerInfo]:
        """The live workers (of one service), from their heartbeats."""
        return self._workers(self._send(self._workers_call(service)), service)

    def stream(self, job: JobRef, *, timeout: float | None = None) -> Generator[Job, None, None]:
        """The job's states as they change (progress included), ending with its terminal
        state. A broken connection is reopened with ``Last-Event-ID``, so nothing is seen
        twice; the retry policy bounds the reconnections in a row, or, with ``timeout``,
        reconnections go on until :class:`WaitTimeout` is raised after that many seconds."""
        return self._follow(job, deadline_of(timeout))

    def wait(self, job: JobRef, timeout: float | None = None) -> Job:
        """Block until the job ends and return its final state; raises :class:`WaitTimeout`
        after ``timeout`` seconds. Gateway restarts and broken connections meanwhile are
        ridden out (reconnecting until the timeout)."""
        last: Job | None = None
        for state in self._follow(job, deadline_of(timeout)):
            last = state
        assert last is not None
        assert last.terminal
        return last

    def _follow(self, job: JobRef, deadline: float | None) -> Generator[Job, None, None]:
        following = Following(self, job, deadline)
        while True:
            try:
                with connect_sse(
                    self._http,
                    "GET",
                    following.path,
                    headers=following.headers(),
                    timeout=following.timeout(),
                ) as source:
                    if not source.response.is_success:
                        source.response.read()
                        pause = following.refused(source.response)
                    else:
                        for sse in source.iter_sse():
                            state = following.event(sse)
                            if state is None:
                                continue
                            yield state
                            if state.terminal:
                                return
                            following.on_time()
                        pause = following.ended()
            except httpx.ReadTimeout:
                pause = following.idle()
            except BROKEN as exc:
                pause = following.broken(exc)
            except SSEError as exc:
                raise UnexpectedResponse(f"GET {following.path}: {exc}") from exc
            if pause:
                log.info("GET %s: reconnecting in %.1f s", following.path, pause)
                time.sleep(pause)
