"""The old routes' FAILURE codes for what the old table never named."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from gateway.api.legacy_status import legacy_state
from gateway.store import JobRecord, JobStatus
from worker_sdk.wire import ErrorInfo
from worker_sdk.wire.catalogue import parse_catalogue

CATALOGUE = 'services:\n  echo:\n    title: Echo\n    version: "1.0.0"\n'


def _failed(reason: str, error: ErrorInfo) -> JobRecord:
    now = datetime.now(UTC)
    return JobRecord(
        id=uuid.uuid4(),
        service="echo",
        owner="a",
        created=now,
        updated=now,
        status=JobStatus.FAILED,
        reason=reason,
        error=error,
    )


def test_inputs_the_worker_s_model_refused_read_105_as_a_value_error() -> None:
    spec = parse_catalogue(CATALOGUE, source="tests").get("echo")
    assert spec is not None
    refused = ErrorInfo(code="invalid_input", type="ValidationError", message="1 error")
    assert legacy_state(_failed("invalid_input", refused), spec) == (
        "FAILURE",
        {"code": 105, "message": "1 error"},
    )
    other = ErrorInfo(code="handler_error", type="ZeroDivisionError", message="x")
    assert legacy_state(_failed("handler_error", other), spec)[1]["code"] == 101
