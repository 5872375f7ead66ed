"""The autoscaler's decisions: grow at once on a backlog, shrink after a quiet spell, never
below what the worker holds."""

from __future__ import annotations

import pytest

from worker_sdk._autoscale import Autoscale, Scaler


def test_bounds_are_read_as_min_colon_max() -> None:
    assert Autoscale.parse("1:4") == Autoscale(1, 4)
    assert Autoscale.parse(" 2 : 2 ") == Autoscale(2, 2)
    for bad in ("4", "4:1", "0:3", "a:b", "1:4:5", ""):
        with pytest.raises(ValueError, match="MIN"):
            Autoscale.parse(bad)


def test_a_backlog_grows_the_concurrency_at_once_up_to_the_maximum() -> None:
    scaler = Scaler(Autoscale(1, 4), idle_after=10)
    assert scaler.decide(1, held=1, waiting=2, now=0) == 3
    assert scaler.decide(3, held=3, waiting=50, now=0.1) == 4


def test_the_concurrency_shrinks_only_after_a_quiet_spell() -> None:
    scaler = Scaler(Autoscale(1, 4), idle_after=10)
    assert scaler.decide(4, held=0, waiting=0, now=100) == 4
    assert scaler.decide(4, held=0, waiting=0, now=109) == 4
    assert scaler.decide(4, held=0, waiting=0, now=110) == 1


def test_a_shrink_never_goes_below_what_the_worker_holds() -> None:
    scaler = Scaler(Autoscale(1, 4), idle_after=1)
    scaler.decide(4, held=2, waiting=0, now=0)
    assert scaler.decide(4, held=2, waiting=0, now=5) == 2


def test_work_in_between_restarts_the_quiet_spell() -> None:
    scaler = Scaler(Autoscale(1, 4), idle_after=10)
    scaler.decide(4, held=0, waiting=0, now=0)
    assert scaler.decide(4, held=4, waiting=0, now=5) == 4  # busy again
    assert scaler.decide(4, held=0, waiting=0, now=11) == 4  # quiet for 0 s, not 11
    assert scaler.decide(4, held=0, waiting=0, now=21) == 1
