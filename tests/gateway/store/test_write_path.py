"""What a new job costs the store's disk: ids that go to the right edge of the primary-key
index, and group commits whose per-statement savepoints never spill to a temporary file."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.store import JobRecord, SQLiteStore, new_job_id


def test_a_job_id_is_a_version_7_uuid_of_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    job_id = new_job_id()
    after = time.time_ns() // 1_000_000
    assert (job_id.version, job_id.variant) == (7, uuid.RFC_4122)
    assert before <= job_id.int >> 80 <= after


def test_job_ids_sort_by_time_as_text_and_never_repeat() -> None:
    ids: list[uuid.UUID] = []
    for _ in range(3):
        ids.append(new_job_id())
        stamp = time.time_ns() // 1_000_000
        while time.time_ns() // 1_000_000 == stamp:  # the next id is of a later millisecond
            pass
    assert [str(i) for i in ids] == sorted(str(i) for i in ids)
    many = {new_job_id() for _ in range(20_000)}
    assert len(many) == 20_000
    # 74 random bits: the bits past the time and the version differ among ids of one instant
    assert len({i.int & ((1 << 76) - 1) for i in many}) == 20_000


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
async def test_a_group_commit_spills_no_statement_journal_to_disk(tmp_path: Path) -> None:
    """Each statement of a group commit runs under a savepoint: SQLite journals the pages it
    changes, and a statement that changes more than 64 KiB of them (the recovery marking a
    few hundred jobs queued, say) spills that journal to a temporary file unless told to keep
    temporary data in memory; the file then takes every later statement's journal of the
    transaction, page by page. SQLite unlinks such a file as it opens it: only ``/proc``
    shows it open, under SQLite's prefix for temporary files."""
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        now = datetime.now(UTC)
        records = [
            JobRecord(
                id=new_job_id(),
                service="echo",
                owner="alice",
                inputs={"text": "x" * 500},
                created=now,
                updated=now,
            )
            for _ in range(400)
        ]
        for record in records:
            await store.insert(record)

        def open_in_spill(db: sqlite3.Connection) -> list[str]:
            found = []
            for fd in os.listdir("/proc/self/fd"):
                try:
                    found.append(os.readlink(f"/proc/self/fd/{fd}"))
                except FileNotFoundError:  # the listing's own descriptor, closed since
                    continue
            return [link for link in found if "/etilqs_" in link]

        ids = [r.id for r in records]
        *_, spilled = await asyncio.gather(
            store.mark_queued(ids, at=now), store._run(open_in_spill)
        )
        assert spilled == []
        assert all(
            r is not None and r.queued == now
            for r in await asyncio.gather(*(store.get(i) for i in ids))
        )
    finally:
        await store.close()
