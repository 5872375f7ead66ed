"""A status read of a job unchanged since its last read is answered with that read's bytes;
every change a client can see is in the next read, whoever reads and under whatever root."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from gateway.api.schemas import StatusInfo
from gateway.runtime import Presenter, RenderedStatus
from gateway.store import Delivery, JobRecord, JobStatus, LegacyFields, WorkerInfo, new_job_id
from tests.conftest import Gateway
from tests.support import submit
from worker_sdk.wire import ErrorInfo

pytestmark = pytest.mark.integration


async def _rendered_now(gateway: Gateway, job_id: uuid.UUID, base: str = "http://gw.test") -> bytes:
    """The job's status document as it is rendered from the store now, nothing kept."""
    record = await gateway.runtime.store.get(job_id)
    assert record is not None
    status = Presenter(base, gateway.runtime.catalogue)(record)
    return status.model_dump_json(exclude_none=True).encode()


async def test_every_change_of_a_job_is_in_its_next_status_read(gateway: Gateway) -> None:
    client, store = gateway.client, gateway.runtime.store
    job = (await submit(client, "echo", {})).json()["jobID"]
    job_id = uuid.UUID(job)
    at = datetime.now(UTC)
    run = uuid.uuid4()
    worker = WorkerInfo(id="w-1", host="h", version="9.9")
    changes = [
        lambda: store.start(job_id, attempt=1, run_id=run, worker=worker, at=at),
        lambda: store.progress(job_id, run_id=run, seq=1, percent=40, message="a", at=at),
        lambda: store.progress(job_id, run_id=run, seq=2, percent=40, message="b", at=at),
        lambda: store.finish(job_id, status=JobStatus.SUCCESSFUL, at=at + timedelta(seconds=1)),
        lambda: store.purge(job_id, at=at + timedelta(seconds=2)),
    ]
    seen: list[bytes] = []
    for change in changes:
        assert await change() is not None
        read = await client.get(f"/jobs/{job}")
        again = await client.get(f"/jobs/{job}")
        assert read.status_code == again.status_code == 200
        assert read.content == again.content == await _rendered_now(gateway, job_id)
        assert read.headers["content-type"] == "application/json"
        seen.append(read.content)
    assert len(set(seen)) == len(changes)
    assert [b["status"] for b in map(json.loads, seen)] == [
        "running",
        "running",
        "running",
        "successful",
        "dismissed",
    ]
    async with gateway.as_user("someone-else") as stranger:
        assert (await stranger.get(f"/jobs/{job}")).status_code == 404


async def test_a_read_under_another_root_links_to_that_root(gateway: Gateway) -> None:
    client, store = gateway.client, gateway.runtime.store
    job = (await submit(client, "echo", {})).json()["jobID"]
    await store.finish(uuid.UUID(job), status=JobStatus.FAILED, at=datetime.now(UTC))
    for host in ("gw.test", "other.test:8080", "gw.test"):
        read = await client.get(f"/jobs/{job}", headers={"host": host})
        assert read.status_code == 200
        assert read.content == await _rendered_now(gateway, uuid.UUID(job), f"http://{host}")
        assert {link["href"].split("/jobs")[0] for link in read.json()["links"]} == {
            f"http://{host}"
        }


async def test_a_queued_job_s_place_moves_while_its_record_does_not(gateway: Gateway) -> None:
    """An accepted job's document tells where it waits, from its neighbours: it is never
    answered from an earlier read."""
    client = gateway.client
    first, second = [(await submit(client, "echo", {})).json()["jobID"] for _ in range(2)]
    assert (await client.get(f"/jobs/{second}")).json()["queuePosition"] == 2
    before = await gateway.runtime.store.get(uuid.UUID(second))
    assert (await client.delete(f"/jobs/{first}")).status_code == 200
    assert await gateway.runtime.store.get(uuid.UUID(second)) == before
    assert (await client.get(f"/jobs/{second}")).json()["queuePosition"] == 1
    assert len(gateway.runtime.rendered) == 0


def test_the_documents_kept_are_bounded_the_oldest_dropped_first() -> None:
    now = datetime.now(UTC)
    records = [
        JobRecord(
            id=new_job_id(),
            service="echo",
            owner="a",
            inputs={},
            created=now,
            updated=now,
            status=JobStatus.SUCCESSFUL,
        )
        for _ in range(3)
    ]
    rendered = RenderedStatus(size=2)
    renders: list[uuid.UUID] = []

    def render(record: JobRecord) -> StatusInfo:
        renders.append(record.id)
        return StatusInfo.of(record, "http://b", None)

    for record in [*records, records[2], records[1], records[0]]:
        rendered.body(record, "http://b", None, lambda r=record: render(r))
    assert len(rendered) == 2
    # The third and second were kept (no render again); the first was dropped (rendered).
    assert renders == [records[0].id, records[1].id, records[2].id, records[0].id]


def test_a_document_kept_is_answered_only_for_a_record_that_shows_the_same() -> None:
    """Whatever field of a job changes, a read after it answers the document rendered from
    the changed record, whether or not ``seq`` rose with it."""
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    later = at + timedelta(seconds=1)
    job = JobRecord(
        id=new_job_id(),
        service="echo",
        owner="alice",
        status=JobStatus.FAILED,
        reason="handler-error",
        progress=30,
        message="working",
        inputs={"text": "a"},
        result={"n": 1},
        error=ErrorInfo(code="handler-error", type="ValueError", message="boom"),
        attempt=2,
        run_id=uuid.uuid4(),
        progress_seq=4,
        worker=WorkerInfo(id="w-1", host="h", version="1.0"),
        created=at,
        started=at,
        updated=at,
        finished=at,
        expires_at=at,
        seq=5,
    )
    other = {
        "id": new_job_id(),
        "service": "crunch",
        "owner": "bob",
        "status": JobStatus.SUCCESSFUL,
        "reason": "other",
        "progress": 31,
        "message": "still working",
        "inputs": {"text": "b"},
        "result": {"n": 2},
        "error": ErrorInfo(code="handler-error", type="ValueError", message="bang"),
        "attempt": 3,
        "run_id": uuid.uuid4(),
        "progress_seq": 5,
        "worker": WorkerInfo(id="w-1", host="h", version="1.1"),
        "created": later,
        "started": later,
        "updated": later,
        "finished": later,
        "purged": later,
        "expires_at": later,
        "idempotency_key": "k",
        "request_hash": "h",
        "subscriber": {"url": "https://hooks.example/x"},
        "seq": 6,
        "legacy": LegacyFields(document_url="https://docs.example/d"),
        "queued": later,
        "delivery": Delivery(response="document"),
        "webhook_open": True,
        "webhook_seq": 6,
    }
    assert set(other) == set(JobRecord.model_fields)  # a new field needs its case here
    shown_changed = 0
    for name, value in other.items():
        for bump_seq in (False, True):
            changed = job.model_copy(update={name: value, "seq": job.seq + int(bump_seq)})
            rendered = RenderedStatus()
            first = rendered.body(
                job, "http://b", "1.0", lambda: StatusInfo.of(job, "http://b", "1.0")
            )
            fresh = StatusInfo.of(changed, "http://b", "1.0")
            answered = rendered.body(changed, "http://b", "1.0", lambda c=fresh: c)
            assert answered == fresh.model_dump_json(exclude_none=True).encode(), name
            shown_changed += answered != first
    # 14 fields show (its message does not, under its error's), each with and without seq.
    assert shown_changed == 2 * 14
    # The catalogue's version of the process shows too (whether the worker's differs).
    rendered = RenderedStatus()
    for version in ("1.0", "2.0", "1.0"):
        fresh = StatusInfo.of(job, "http://b", version)
        answered = rendered.body(job, "http://b", version, lambda f=fresh: f)
        assert answered == fresh.model_dump_json(exclude_none=True).encode()
