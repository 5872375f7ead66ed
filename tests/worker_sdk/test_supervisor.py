"""The connection supervisor: when a connection that stays broken is rebuilt."""

from __future__ import annotations

from worker_sdk.wire.supervisor import Supervisor


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_connection_is_rebuilt_once_broken_for_the_whole_delay() -> None:
    clock = Clock()
    supervisor = Supervisor(15.0, clock)
    assert supervisor.period == 5.0
    assert not supervisor.due(broken=True)  # the count starts
    clock.now += 14.9
    assert not supervisor.due(broken=True)
    clock.now += 0.1
    assert supervisor.due(broken=True)
    assert not supervisor.due(broken=True)  # and starts again


def test_a_recovery_in_between_resets_the_count() -> None:
    clock = Clock()
    supervisor = Supervisor(10.0, clock)
    supervisor.due(broken=True)
    clock.now += 9
    assert not supervisor.due(broken=False)  # aio-pika recovered it by itself
    clock.now += 5
    assert not supervisor.due(broken=True)
    clock.now += 9.9
    assert not supervisor.due(broken=True)
    clock.now += 0.1
    assert supervisor.due(broken=True)
