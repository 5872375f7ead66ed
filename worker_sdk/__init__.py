"""Service Gateway worker SDK: turn a Python function into a horizontally scalable worker.

::

    from worker_sdk import JobContext, Worker

    worker = Worker("thumbnail", version="1.2.0")

    @worker.handler(isolation="process")
    def make_thumbnail(ctx: JobContext, inputs: ThumbnailInputs) -> ThumbnailResult:
        ctx.progress(10, "downloading")
        ...

Run it with ``sgw worker examples.thumbnail:worker --concurrency 4``. The SDK owns the broker
side: prefetch, heartbeats, coalesced progress, ack-after-confirmed-result and graceful
shutdown. What a handler author needs is here; the protocol the SDK speaks with the gateway
(messages, topology, confirmed publishing) is :mod:`worker_sdk.wire`, and porting an old
ServiceGateway worker is :mod:`worker_sdk.legacy`. The SDK never imports the gateway.
"""

from ._autoscale import Autoscale
from ._context import JobContext
from ._errors import HandlerError, Retry
from ._fetch import FetchError, fetch
from ._handler import Isolation
from ._worker import UnknownService, Worker
from .wire.urls import UrlPolicy, UrlRefused

__all__ = [
    "Autoscale",
    "FetchError",
    "HandlerError",
    "Isolation",
    "JobContext",
    "Retry",
    "UnknownService",
    "UrlPolicy",
    "UrlRefused",
    "Worker",
    "fetch",
]
