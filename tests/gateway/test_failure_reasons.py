"""A worker's error code becomes the job's reason when it names one of a run's failures; the
gateway's own verdicts (a cancel, an expiry, a lost worker...) are never a handler's to claim."""

from __future__ import annotations

import pytest

from gateway.ends import failure_reason
from worker_sdk.wire import ErrorInfo


@pytest.mark.parametrize(
    "code",
    [
        "memory_limit",
        "cpu_time_limit",
        "time_limit",
        "invalid_input",
        "result_too_large",
        "invalid_result",
    ],
)
def test_a_known_code_is_the_reason(code: str) -> None:
    assert failure_reason(ErrorInfo(code=code, type="T", message="m")) == code


@pytest.mark.parametrize("code", ["handler_crashed", "empty_document", "retry"])
def test_any_other_code_is_a_handler_error(code: str) -> None:
    assert failure_reason(ErrorInfo(code=code, type="T", message="m")) == "handler_error"


@pytest.mark.parametrize(
    "code",
    [
        "cancelled",
        "expired",
        "worker_lost",
        "invalid_task",
        "publish_failed",
        "not_queued",
        "version_mismatch",
    ],
)
def test_a_gateway_verdict_named_by_a_handler_is_a_handler_error(code: str) -> None:
    assert failure_reason(ErrorInfo(code=code, type="T", message="m")) == "handler_error"
