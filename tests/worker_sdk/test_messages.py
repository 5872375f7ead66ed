from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from worker_sdk import Autoscale
from worker_sdk.wire import (
    MAX_CONCURRENCY,
    ErrorInfo,
    Failed,
    Heartbeat,
    Progress,
    Task,
    parse_event,
)


def _base() -> dict[str, object]:
    return {
        "job_id": uuid.uuid4(),
        "service": "echo",
        "run_id": uuid.uuid4(),
        "worker_id": "w1",
    }


def test_events_round_trip_through_json() -> None:
    failed = Failed(**_base(), error=ErrorInfo(code="x", type="ValueError", message="bad"))
    parsed = parse_event(failed.to_bytes())
    assert parsed == failed
    beat = Heartbeat(worker_id="w", service="echo", version="1", host="h", concurrency=2)
    assert parse_event(beat.to_bytes()) == beat


def test_readers_ignore_fields_they_do_not_know() -> None:
    body = Progress(**_base(), percent=5, seq=1).model_dump(mode="json")
    body["added_in_a_later_version"] = {"x": 1}
    parsed = parse_event(__import__("json").dumps(body).encode())
    assert isinstance(parsed, Progress)
    assert parsed.percent == 5


@pytest.mark.parametrize("percent", [-1, 101])
def test_progress_is_bounded(percent: int) -> None:
    with pytest.raises(ValidationError):
        Progress(**_base(), percent=percent, seq=1)


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValidationError):
        parse_event(b'{"kind": "exploded", "job_id": "x"}')


def test_task_defaults() -> None:
    task = Task(job_id=uuid.uuid4(), service="echo")
    assert task.attempt == 1
    assert task.schema_version == 1
    assert Task.model_validate_json(task.to_bytes()) == task


def test_a_heartbeat_lists_no_more_jobs_than_a_worker_may_run() -> None:
    """A heartbeat is bounded: a hostile one cannot make the workers list huge."""
    beat = {"worker_id": "w", "service": "echo", "version": "1", "host": "h"}
    Heartbeat(**beat, concurrency=MAX_CONCURRENCY, running=[uuid.uuid4()] * MAX_CONCURRENCY)
    with pytest.raises(ValidationError):
        Heartbeat(**beat, concurrency=MAX_CONCURRENCY + 1)
    with pytest.raises(ValidationError):
        Heartbeat(**beat, concurrency=1, running=[uuid.uuid4()] * (MAX_CONCURRENCY + 1))
    with pytest.raises(ValueError, match="MAX"):
        Autoscale(1, MAX_CONCURRENCY + 1)


@pytest.mark.parametrize("field", ["worker_id", "host", "version"])
@pytest.mark.parametrize("value", ["\x1b]0;owned\x07", "a\nb", "\x00", "\x9b2J"])
def test_names_and_versions_carry_no_control_characters(field: str, value: str) -> None:
    """They reach logs, pages and operators' terminals: a control character is refused at
    the edge."""
    beat = {"worker_id": "w", "service": "echo", "version": "1", "host": "h", "concurrency": 1}
    Heartbeat.model_validate({**beat, field: "ordinary-name 1.0 (été)"})
    with pytest.raises(ValidationError):
        Heartbeat.model_validate({**beat, field: value})
