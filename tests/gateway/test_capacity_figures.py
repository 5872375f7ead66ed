"""The capacity figures from a service's load, without a broker or a store."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.capacity import figures
from gateway.store import ServiceLoad
from worker_sdk.wire.catalogue import ServiceSpec

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SPEC = ServiceSpec(id="textstats", title="Text statistics", version="1.0.0", target_wait=2.0)


IDLE = ServiceLoad(
    accepted=0, running=0, arrivals=(0, 0, 0), completions=(0, 0, 0), first_created=None, runs=()
)


def _load(**values: Any) -> ServiceLoad:
    return replace(IDLE, **values)


def test_rates_are_taken_over_the_window_or_the_shorter_record() -> None:
    load = _load(
        arrivals=(60, 180, 180),
        completions=(30, 90, 90),
        first_created=NOW - timedelta(minutes=3),
    )
    measured = figures(SPEC, load, now=NOW, workers=0, slots=0, queue=None)
    assert measured.arrival_rates == pytest.approx((1.0, 1.0, 1.0))  # 180 s of record
    assert measured.completion_rates == pytest.approx((0.5, 0.5, 0.5))


def test_the_worked_example_of_the_scaling_docs() -> None:
    load = _load(
        accepted=25,
        running=2,
        arrivals=(72, 72, 72),
        first_created=NOW - timedelta(seconds=12),
        runs=((4.0, 0.5), (6.0, 0.5)),
    )
    measured = figures(SPEC, load, now=NOW, workers=1, slots=2, queue=(25, 1))
    assert measured.utilisation == pytest.approx(1.5)
    assert measured.predicted_wait == pytest.approx(6.5)
    assert measured.steady_wait is None  # one worker cannot keep up
    assert measured.workers_needed == 3
    assert (measured.run_mean, measured.wait_mean, measured.wait_p95) == (0.5, 5.0, 6.0)
    assert measured.wait_behind(0) == pytest.approx(0.25)  # next in line: one completion
    assert (measured.queue_messages, measured.queue_consumers) == (25, 1)


def test_what_cannot_be_known_is_none_and_an_idle_service_needs_no_worker() -> None:
    idle = figures(SPEC, _load(), now=NOW, workers=0, slots=0, queue=None)
    assert (idle.workers_needed, idle.predicted_wait, idle.run_mean) == (0, None, None)
    waiting = figures(
        SPEC, _load(accepted=3, first_created=NOW), now=NOW, workers=0, slots=0, queue=None
    )
    assert (waiting.workers_needed, waiting.predicted_wait, waiting.utilisation) == (
        None,
        None,
        None,
    )
    untargeted = figures(
        SPEC.model_copy(update={"target_wait": None}),
        _load(),
        now=NOW,
        workers=0,
        slots=0,
        queue=None,
    )
    assert untargeted.workers_needed is None
