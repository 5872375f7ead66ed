"""The queueing formulas against published values and against each other."""

from __future__ import annotations

import math

import pytest

from gateway.queueing import erlang_c, percentile, slots_needed, steady_wait, wait_now


def test_erlang_c_matches_the_closed_forms() -> None:
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = rho
    # M/M/2 with a = 1: C = a² / (2 - a) / (1 + a + a² / (2 - a)) = 1/3
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    # A textbook call-centre case: 10 erlangs on 12 agents, P(wait) ≈ 0.4493
    assert erlang_c(12, 10.0) == pytest.approx(0.4493, abs=1e-4)
    assert erlang_c(3, 3.0) == 1.0
    assert erlang_c(3, 0.0) == 0.0
    assert 0 < erlang_c(2000, 1950.0) < 1  # stable for large pools


def test_steady_wait_is_the_m_m_1_mean_for_one_slot() -> None:
    # M/M/1: Wq = rho / (μ - λ)
    assert steady_wait(1, 4.0, 5.0) == pytest.approx(0.8 / 1.0)
    assert steady_wait(1, 5.0, 5.0) == math.inf
    assert steady_wait(0, 1.0, 5.0) == math.inf
    assert steady_wait(4, 0.0, 5.0) == 0.0


def test_the_wait_of_a_job_submitted_now_follows_the_queue() -> None:
    assert wait_now(queued=0, running=1, slots=2, service=1.0) == 0.0
    assert wait_now(queued=0, running=2, slots=2, service=1.0) == pytest.approx(0.5)
    assert wait_now(queued=9, running=2, slots=2, service=1.0) == pytest.approx(5.0)
    assert wait_now(queued=3, running=0, slots=0, service=1.0) == math.inf


def test_slots_needed_is_the_least_that_meets_the_target() -> None:
    assert slots_needed(target=10, arrival=0, service=1, queued=0, running=0) == 0
    # a backlog of 19 on 0.5 s runs: c >= 20 / (1 + 2 * 2) = 4
    assert slots_needed(target=2, arrival=0, service=2, queued=19, running=0) == 4
    # steady state only: 10 erlangs need more than 10 slots; 12 keep Wq = 0.4493 / 2 s
    needed = slots_needed(target=0.25, arrival=10, service=1, queued=0, running=0)
    assert needed == min(c for c in range(11, 40) if steady_wait(c, 10, 1) <= 0.25)
    for c in (needed - 1, needed):
        meets = steady_wait(c, 10, 1) <= 0.25
        assert meets is (c == needed)


def test_percentile_is_nearest_rank() -> None:
    assert percentile([float(v) for v in range(1, 101)], 0.95) == 95.0
    assert percentile([3.0], 0.95) == 3.0
