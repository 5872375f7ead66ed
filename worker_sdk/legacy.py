"""Porting a worker of the old ServiceGateway (VestaService): its request object and errors.

::

    from worker_sdk.legacy import LegacyRequest, VestaError

    @worker.handler(isolation="thread")
    def annotate(ctx, inputs):
        request = LegacyRequest(ctx)
        text = request.document()           # the doc_url / storage document, fetched safely
        request.set_progress(50)
        annotations = [{"@id": "my-annotator", "@version": "1.0"}]
        request.store_annotations(annotations)   # to the ann_doc_id's annotation storage
        return annotations

When a task carries ``misc.callback_url``, the SDK POSTs ``{"uuid", "status"}`` to it when the
job ends, as the old workers did.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from ._context import JobContext
from ._errors import HandlerError
from .wire.messages import Task, TerminalEvent
from .wire.urls import UrlPolicy, UrlRefused, check_url

log = logging.getLogger("worker_sdk.legacy")

ANNOTATIONS_TIMEOUT = 10.0
ANNOTATIONS_TRIES = 5


class VestaError(HandlerError):
    """Fail the job with an old numeric code (600 and above are free for services; 300
    invalid annotations, 301 download, 302 upload)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message, code=str(code))


class LegacyRequest:
    """The old worker's view of a job: its document, ``misc``, progress and annotations."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.misc: dict[str, Any] = ctx.misc
        self.document_url = ctx.document_url
        self.annotation_service_url = ctx.annotation_service_url

    @property
    def message(self) -> dict[str, Any]:
        """The task in the old message shape, for ported code that reads it."""
        return {
            "request_time": self.ctx.submitted_at.isoformat() if self.ctx.submitted_at else None,
            "service": {
                "type": self.ctx.service,
                "misc": self.misc,
                "document": {"url": self.document_url},
            },
            "annotation_service": {"url": self.annotation_service_url},
        }

    def document(self, *, max_bytes: int = 100 * 1024 * 1024) -> bytes:
        """The document, downloaded under the worker's URL policy (code 301 on failure)."""
        if self.document_url is None:
            raise VestaError(301, "the task names no document")
        try:
            return self.ctx.fetch(self.document_url, max_bytes=max_bytes)
        except (ValueError, RuntimeError, httpx.HTTPError) as exc:
            raise VestaError(301, f"cannot download {self.document_url}: {exc}") from exc

    def set_progress(self, progress: int) -> None:
        """Progress from 0 to 100, validated as the old SDK did."""
        if isinstance(progress, bool) or not isinstance(progress, int):
            raise TypeError(f"progress must be an int, not {progress!r}")
        if not 0 <= progress <= 100:
            raise ValueError(f"progress must be from 0 to 100, not {progress}")
        self.ctx.progress(progress)

    def store_annotations(self, annotations: Any) -> None:
        """POST ``{"common": {}, "data": annotations}`` to the annotation storage of the
        task's ``ann_doc_id``; retried on timeouts, code 302 when it fails, 300 when the
        annotations are not a list. Without an ``ann_doc_id`` nothing is posted."""
        if not isinstance(annotations, list):
            raise VestaError(300, "annotations must be a list")
        if self.annotation_service_url is None:
            log.warning("job %s has no ann_doc_id; annotations not stored", self.ctx.job_id)
            return
        body = {"common": {}, "data": annotations}
        headers = {"accept": "application/json"}
        for attempt in range(1, ANNOTATIONS_TRIES + 1):
            try:
                response = httpx.post(
                    self.annotation_service_url,
                    json=body,
                    headers=headers,
                    timeout=ANNOTATIONS_TIMEOUT,
                )
            except httpx.TimeoutException:
                log.warning("annotation storage timed out (try %d)", attempt)
                time.sleep(min(2**attempt, 10))  # back-off between the old SDK's five tries
                continue
            except httpx.HTTPError as exc:
                raise VestaError(302, f"cannot store the annotations: {exc}") from exc
            if response.status_code in (200, 201, 204):
                return
            raise VestaError(302, f"the annotation storage answered HTTP {response.status_code}")
        raise VestaError(302, "the annotation storage timed out five times")


CALLBACK_STATUS = {"succeeded": "SUCCESS", "failed": "FAILURE", "cancelled": "REVOKED"}
CALLBACK_TIMEOUT = 10.0


async def call_back(task: Task, outcome: TerminalEvent, policy: UrlPolicy) -> None:
    """POST ``{uuid, status}`` to the task's ``misc.callback_url`` when its job ends, as the
    old SDK did; failures are only logged. The URL is the client's, so the policy applies,
    and the whole call (a receiver trickling its answer a byte at a time included) is cut at
    ``CALLBACK_TIMEOUT`` seconds. The worker calls it once the task is acknowledged."""
    url = (task.misc or {}).get("callback_url")
    if not isinstance(url, str):
        return
    body = {"uuid": str(task.job_id), "status": CALLBACK_STATUS[outcome.kind]}
    try:
        async with asyncio.timeout(CALLBACK_TIMEOUT):
            await check_url(policy, url)
            async with httpx.AsyncClient(
                timeout=CALLBACK_TIMEOUT, follow_redirects=False
            ) as client:
                await client.post(url, json=body)
    except (UrlRefused, OSError, httpx.HTTPError, TimeoutError) as exc:
        log.warning("job %s: callback to %s failed: %r", task.job_id, url, exc)
