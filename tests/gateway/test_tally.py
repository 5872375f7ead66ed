"""Usage counters written in batches: every count lands, each caller returns only once its
count is stored, and concurrent counts share statements. On the real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store import SQLiteStore, StoreError
from gateway.tally import Tally


class Counting(SQLiteStore):
    """The SQLite store, counting its ``bump`` statements; ``down`` makes them fail."""

    bumps = 0
    down = False

    async def bump(self, counter: str, by: int = 1) -> None:
        self.bumps += 1
        if self.down:
            raise StoreError("down for the test")
        await super().bump(counter, by)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Counting]:
    store = Counting(tmp_path / "jobs.db")
    await store.open()
    yield store
    await store.close()


async def test_concurrent_counts_share_statements_and_all_land(store: Counting) -> None:
    tally = Tally(store)
    await asyncio.gather(*(tally.count(f"c:{i % 2}") for i in range(100)))
    assert await store.counters("c:") == {"c:0": 50, "c:1": 50}
    assert store.bumps <= 4  # the first alone, then the rest together, one per counter


async def test_each_caller_reads_its_own_count(store: Counting) -> None:
    tally = Tally(store)
    for expected in range(1, 4):
        await tally.count("c")
        assert await store.counters("c") == {"c": expected}


async def test_a_store_failure_is_logged_and_releases_the_callers(
    store: Counting, caplog: pytest.LogCaptureFixture
) -> None:
    tally = Tally(store)
    store.down = True
    await asyncio.gather(*(tally.count("c") for _ in range(3)))
    assert "usage counter c not raised" in caplog.text
    store.down = False
    await tally.count("c")
    assert await store.counters("c") == {"c": 1}
