"""The workers page's figures from job records: percentiles, rates and the per-minute series."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from gateway.store import JobRecord, JobStatus
from gateway.ui.figures import percentile, series, tally

NOW = datetime(2026, 11, 30, 12, 30, 30, tzinfo=UTC)


def _job(
    created: timedelta, waited: float | None, ran: float | None, service: str = "echo"
) -> JobRecord:
    at = NOW - created
    started = at + timedelta(seconds=waited) if waited is not None else None
    finished = started + timedelta(seconds=ran) if started is not None and ran is not None else None
    status = (
        JobStatus.SUCCESSFUL if finished else JobStatus.RUNNING if started else JobStatus.ACCEPTED
    )
    return JobRecord(
        id=uuid.uuid4(),
        service=service,
        owner="alice",
        status=status,
        created=at,
        updated=finished or started or at,
        started=started,
        finished=finished,
    )


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0


def test_tally_counts_states_rates_and_times() -> None:
    records = [
        _job(timedelta(minutes=5), 1.0, 10.0),
        _job(timedelta(minutes=6), 3.0, 20.0),
        _job(timedelta(minutes=40), 2.0, 30.0),  # outside the 15-minute rate window
        _job(timedelta(minutes=1), 0.5, None),  # running
        _job(timedelta(seconds=10), None, None),  # waiting
        _job(timedelta(minutes=2), 1.0, 1.0, service="unknown"),
    ]
    rows = tally(records, {"echo": "Echo", "idle": "Idle"}, NOW)
    echo = rows["echo"]
    assert (echo.accepted, echo.running) == (1, 1)
    assert echo.arrivals == 4
    assert echo.completions == 2
    assert echo.arrival_rate == 4 / 15
    assert echo.wait(50) == 1.0
    assert echo.wait(95) == 3.0
    assert echo.run(50) == 20.0
    assert rows["idle"].wait(50) is None
    assert "unknown" not in rows


def test_series_bins_the_hour_by_minute() -> None:
    records = [
        _job(timedelta(minutes=3), 2.0, 4.0),
        _job(timedelta(minutes=3), 4.0, 8.0),
        _job(timedelta(hours=2), 1.0, 1.0),  # before the hour
    ]
    body = series(records, ["echo"], NOW)
    t = body["t"]
    assert isinstance(t, list)
    assert len(t) == 60
    assert t[-1] == int(NOW.replace(second=0).timestamp())
    finished = body["finished"]
    assert isinstance(finished, dict)
    assert sum(finished["echo"]) == 2
    wait = body["wait"]
    assert isinstance(wait, dict)
    assert [w for w in wait["echo"] if w is not None] == [2.0]
