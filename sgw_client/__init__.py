"""A Python client of the Service Gateway, blocking (:class:`Client`) or asyncio
(:class:`AsyncClient`), on httpx.

::

    from sgw_client import Client

    with Client("http://localhost:8000", token) as gateway:  # or SG_CLIENT_URL/SG_CLIENT_TOKEN
        job = gateway.submit("echo", {"text": "hello"})
        for state in gateway.stream(job):
            print(state.status, state.progress)
        print(gateway.results(job))

Submits carry an ``Idempotency-Key`` and are retried safely when refused or broken; errors
are typed after the gateway's problem codes (see :mod:`sgw_client._errors` for the tree).
"""

from sgw_client._async_client import AsyncClient
from sgw_client._client import Client
from sgw_client._config import DEFAULT_URL, NO_RETRY, TOKEN_ENV, URL_ENV, RetryPolicy
from sgw_client._errors import (
    ApiError,
    BadRequest,
    BodyTooLarge,
    BrokerUnavailable,
    ClientError,
    Forbidden,
    GatewayUnreachable,
    Gone,
    HeadersTooLarge,
    IdempotencyConflict,
    InvalidInput,
    InvalidParameterValue,
    InvalidQueryParameter,
    JobDismissed,
    JobFailed,
    JobGone,
    NoSuchOutput,
    NotFound,
    QueueFull,
    QuotaExceeded,
    RateLimited,
    RequestTimeout,
    ResultNotReady,
    ResultPurged,
    ServiceUnavailable,
    StoreUnavailable,
    TooManyRequests,
    Unauthorized,
    UnexpectedResponse,
    UnknownJob,
    UnknownProcess,
    Unprocessable,
    WaitTimeout,
)
from sgw_client._models import (
    FieldError,
    Job,
    JobError,
    JobStatus,
    Link,
    Problem,
    Process,
    WorkerInfo,
)

__all__ = [
    "DEFAULT_URL",
    "NO_RETRY",
    "TOKEN_ENV",
    "URL_ENV",
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "BodyTooLarge",
    "BrokerUnavailable",
    "Client",
    "ClientError",
    "FieldError",
    "Forbidden",
    "GatewayUnreachable",
    "Gone",
    "HeadersTooLarge",
    "IdempotencyConflict",
    "InvalidInput",
    "InvalidParameterValue",
    "InvalidQueryParameter",
    "Job",
    "JobDismissed",
    "JobError",
    "JobFailed",
    "JobGone",
    "JobStatus",
    "Link",
    "NoSuchOutput",
    "NotFound",
    "Problem",
    "Process",
    "QueueFull",
    "QuotaExceeded",
    "RateLimited",
    "RequestTimeout",
    "ResultNotReady",
    "ResultPurged",
    "RetryPolicy",
    "ServiceUnavailable",
    "StoreUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnexpectedResponse",
    "UnknownJob",
    "UnknownProcess",
    "Unprocessable",
    "WaitTimeout",
    "WorkerInfo",
]
