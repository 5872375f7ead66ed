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
shutdown. It never imports the gateway; the gateway imports the wire contract from here.
"""

from ._context import JobContext
from ._errors import HandlerError, Retry
from ._messages import (
    SCHEMA_VERSION,
    Cancelled,
    CancelRequest,
    ErrorInfo,
    Event,
    Failed,
    Heartbeat,
    JobEvent,
    LegacyDocument,
    Progress,
    Retrying,
    RunStart,
    Started,
    Succeeded,
    Task,
    TerminalEvent,
    parse_event,
)
from ._settle import settle
from ._topology import (
    DEFAULT_DELIVERY_LIMIT,
    DEFAULT_NAMESPACE,
    CoreExchanges,
    TaskQueueOptions,
    Topology,
    TopologyMismatch,
    declare_exchanges,
    declare_task_queue,
    declare_topology,
    delete_topology,
)
from ._urls import FetchError, UrlPolicy, UrlRefused, fetch
from ._worker import Isolation, Worker

__all__ = [
    "DEFAULT_DELIVERY_LIMIT",
    "DEFAULT_NAMESPACE",
    "SCHEMA_VERSION",
    "CancelRequest",
    "Cancelled",
    "CoreExchanges",
    "ErrorInfo",
    "Event",
    "Failed",
    "FetchError",
    "HandlerError",
    "Heartbeat",
    "Isolation",
    "JobContext",
    "JobEvent",
    "LegacyDocument",
    "Progress",
    "Retry",
    "Retrying",
    "RunStart",
    "Started",
    "Succeeded",
    "Task",
    "TaskQueueOptions",
    "TerminalEvent",
    "Topology",
    "TopologyMismatch",
    "UrlPolicy",
    "UrlRefused",
    "Worker",
    "declare_exchanges",
    "declare_task_queue",
    "declare_topology",
    "delete_topology",
    "fetch",
    "parse_event",
    "settle",
]
