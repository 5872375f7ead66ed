"""The asyncio client: :class:`Client`'s twin, call for call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from types import TracebackType
from typing import Any, Self

import httpx
from httpx_sse import SSEError, aconnect_sse

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


class AsyncClient(BaseClient):
    """An asyncio client of the gateway's job API; see :class:`Client` for each call.

    Use it as an async context manager, or await :meth:`aclose`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url, token, timeout=timeout, retry=retry or RetryPolicy(), headers=headers
        )
        self._http = httpx.AsyncClient(**self._http_options(), transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: Call) -> httpx.Response:
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
                response = await self._http.send(request)
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
            await asyncio.sleep(pause)

    async def submit(
        self,
        process: str,
        inputs: dict[str, Any] | None = None,
        *,
        wait: float | None = None,
        idempotency_key: str | None = None,
        subscriber: Mapping[str, str] | None = None,
    ) -> Job:
        """Create a job of ``process`` (see :meth:`Client.submit`)."""
        call = self._submit_call(process, inputs, wait, idempotency_key, subscriber)
        response = await self._send(call)
        finished = finished_job(response)
        if finished is not None:  # it ended within the wait: read its status
            return await self.status(finished)
        return parse(Job, response)

    async def status(self, job: JobRef) -> Job:
        """The job as it stands."""
        return parse(Job, await self._send(self._job_call("GET", job)))

    async def results(self, job: JobRef) -> Any:
        """The result of a successful job (see :meth:`Client.results`)."""
        return (await self._send(self._job_call("GET", job, "/results"))).json()

    async def dismiss(self, job: JobRef) -> Job:
        """Cancel a queued or running job, or drop a finished job's result."""
        return parse(Job, await self._send(self._job_call("DELETE", job)))

    async def jobs(
        self,
        *,
        process: str | None = None,
        status: str | JobStatus | list[str] | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Job]:
        """The caller's jobs, newest first, page after page (``next`` links followed)."""
        call: Call | None = self._jobs_call(process, status, page_size)
        while call is not None:
            page, call = self._next_page(await self._send(call))
            for job in page:
                yield job

    async def processes(self) -> list[Process]:
        """The services of the gateway's catalogue."""
        return self._processes(await self._send(Call("GET", "/processes")))

    async def workers(self, service: str | None = None) -> list[WorkerInfo]:
        """The live workers (of one service), from their heartbeats."""
        return self._workers(await self._send(self._workers_call(service)), service)

    def stream(self, job: JobRef, *, timeout: float | None = None) -> AsyncGenerator[Job, None]:
        """The job's states as they change, ending with its terminal state; reconnects with
        ``Last-Event-ID`` (see :meth:`Client.stream`). Close it (``contextlib.aclosing``)
        when leaving early."""
        return self._follow(job, deadline_of(timeout))

    # The deadline also paces reconnections and tells a silent stream from a dead gateway,
    # which an outer asyncio.timeout could not; Client.wait has the same signature.
    async def wait(self, job: JobRef, timeout: float | None = None) -> Job:  # noqa: ASYNC109
        """Wait until the job ends and return its final state; raises :class:`WaitTimeout`
        after ``timeout`` seconds. Gateway restarts meanwhile are ridden out."""
        last: Job | None = None
        async with aclosing(self._follow(job, deadline_of(timeout))) as states:
            async for state in states:
                last = state
        assert last is not None
        assert last.terminal
        return last

    async def _follow(self, job: JobRef, deadline: float | None) -> AsyncGenerator[Job, None]:
        following = Following(self, job, deadline)
        while True:
            try:
                async with aconnect_sse(
                    self._http,
                    "GET",
                    following.path,
                    headers=following.headers(),
                    timeout=following.timeout(),
                ) as source:
                    if not source.response.is_success:
                        await source.response.aread()
                        pause = following.refused(source.response)
                    else:
                        async with aclosing(source.aiter_sse()) as events:
                            async for sse in events:
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
                await asyncio.sleep(pause)
