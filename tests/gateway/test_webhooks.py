"""Which change of a job calls which subscriber URI, under which id, and how it is signed."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import cast

import pytest
from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError
from standardwebhooks import Webhook

from gateway.settings import Settings
from gateway.store import JobRecord, JobStatus
from gateway.webhook_delivery import _deferrals
from gateway.webhooks import DEFERRALS_HEADER, WebhookTask, headers, webhook_for
from worker_sdk.wire import ErrorInfo

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
ALL = {
    "successUri": "https://h.example.org/ok",
    "inProgressUri": "https://h.example.org/progress",
    "failedUri": "https://h.example.org/failed",
}


def _job(**fields: object) -> JobRecord:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "service": "echo",
        "owner": "alice",
        "created": T0,
        "updated": T0,
        "subscriber": ALL,
        "webhook_open": True,
    }
    values.update(fields)
    return JobRecord.model_validate(values)


def test_each_change_calls_its_uri_under_an_id_of_its_own() -> None:
    run = uuid.uuid4()
    job = _job()
    assert webhook_for(job, None) is None  # accepted: nothing to say
    started = webhook_for(job.model_copy(update={"status": JobStatus.RUNNING, "run_id": run}), None)
    progressed = webhook_for(
        job.model_copy(update={"status": JobStatus.RUNNING, "run_id": run, "progress_seq": 3}),
        None,
    )
    assert started is not None
    assert progressed is not None
    assert (started.type, started.url) == ("job.started", ALL["inProgressUri"])
    assert started.event_id == f"{job.id}.{run.hex}.0"
    assert (progressed.type, progressed.event_id) == ("job.progress", f"{job.id}.{run.hex}.3")
    ends = {
        JobStatus.SUCCESSFUL: ("job.successful", "successUri"),
        JobStatus.FAILED: ("job.failed", "failedUri"),
        JobStatus.DISMISSED: ("job.dismissed", "failedUri"),
    }
    for status, (kind, uri) in ends.items():
        task = webhook_for(job.model_copy(update={"status": status, "seq": 9}), None)
        assert task is not None
        assert (task.type, task.url, task.event_id) == (kind, ALL[uri], f"{job.id}.{status}")


def test_a_change_without_its_uri_owes_nothing() -> None:
    job = _job(subscriber={"successUri": ALL["successUri"]}, status=JobStatus.FAILED)
    assert webhook_for(job, None) is None
    assert webhook_for(job.model_copy(update={"subscriber": None}), None) is None


def test_the_body_is_the_jobs_status_in_the_standard_envelope() -> None:
    error = ErrorInfo(code="handler_error", type="ValueError", message="bad input")
    job = _job(
        status=JobStatus.FAILED, reason="handler_error", error=error, finished=T0, progress=40
    )
    task = webhook_for(job, "https://gw.example.org/api/")
    assert task is not None
    body = json.loads(task.body)
    assert body["type"] == "job.failed"
    assert body["timestamp"].startswith("2026-11-30T12:00:00")
    data = body["data"]
    assert (data["jobID"], data["status"], data["reason"]) == (
        str(job.id),
        "failed",
        "handler_error",
    )
    assert (data["message"], data["progress"]) == ("bad input", 40)
    assert data["links"] == [
        {
            "href": f"https://gw.example.org/api/jobs/{job.id}",
            "rel": "self",
            "type": "application/json",
        }
    ]
    bare = webhook_for(job, None)  # no public URL: no links
    assert bare is not None
    assert json.loads(bare.body)["data"]["links"] == []


def test_the_headers_verify_with_every_secret_and_only_those() -> None:
    old = "whsec_" + base64.b64encode(b"o" * 32).decode()
    task = webhook_for(_job(status=JobStatus.SUCCESSFUL), None)
    assert task is not None
    now = datetime.now(UTC)
    sent = headers([Webhook(SECRET), Webhook(old)], task, now)
    assert sent["webhook-id"] == task.event_id
    assert sent["webhook-timestamp"] == str(int(now.timestamp()))
    assert Webhook(SECRET).verify(task.body, sent)["type"] == "job.successful"
    assert Webhook(old).verify(task.body, sent)["type"] == "job.successful"
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(task.body, sent)


@pytest.mark.parametrize(
    "secret",
    [
        "not-prefixed",
        "whsec_",
        "whsec_" + base64.b64encode(b"short").decode(),
        "whsec_!!!!",
    ],
)
def test_an_unusable_webhook_secret_is_refused_at_start(secret: str) -> None:
    with pytest.raises(ValidationError, match="webhook secret"):
        Settings(_env_file=None, webhook_secret=secret)  # type: ignore[call-arg]


def test_webhook_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    old = "whsec_" + base64.b64encode(b"o" * 32).decode()
    monkeypatch.setenv("SG_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("SG_WEBHOOK_OLD_SECRETS", f"{old},{SECRET}")
    monkeypatch.setenv("SG_WEBHOOK_RETRY_DELAYS", "1,10,60")
    monkeypatch.setenv("SG_WEBHOOK_ALLOW_NETWORKS", "10.30.0.0/16")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.webhooks_enabled
    assert [s.get_secret_value() for s in settings.webhook_old_secrets] == [old, SECRET]
    assert settings.webhook_retry_delays == (1, 10, 60)
    assert settings.webhook_policy().allow_networks == ("10.30.0.0/16",)
    monkeypatch.setenv("SG_WEBHOOK_RETRY_DELAYS", "0")
    with pytest.raises(ValidationError, match="1 to 604800"):
        Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, 0),
        ({}, 0),
        ({DEFERRALS_HEADER: 3}, 3),
        # Not this gateway's: counted none (a deferral it then makes is its first).
        ({DEFERRALS_HEADER: -1}, 0),
        ({DEFERRALS_HEADER: True}, 0),
        ({DEFERRALS_HEADER: 2.0}, 0),
        ({DEFERRALS_HEADER: "2"}, 0),
        ({DEFERRALS_HEADER: b"\xff"}, 0),
    ],
)
def test_the_deferrals_a_delivery_had_come_from_its_header(
    headers: dict[str, object] | None, expected: int
) -> None:
    assert _deferrals(cast(AbstractIncomingMessage, SimpleNamespace(headers=headers))) == expected


def test_a_delivery_message_is_the_same_whatever_its_deferrals() -> None:
    """The count travels in a header: the body stays the one every gateway version reads."""
    task = WebhookTask(
        event_id="e", job_id=uuid.uuid4(), type="job.successful", url=ALL["successUri"], body="{}"
    )
    assert set(json.loads(task.to_bytes())) == {
        "event_id",
        "job_id",
        "type",
        "url",
        "body",
        "attempt",
    }
