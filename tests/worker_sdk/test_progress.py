"""Progress coalescing and the late announcement of a run."""

from __future__ import annotations

import asyncio
import threading

from worker_sdk._progress import Announcer, ProgressPump
from worker_sdk.wire.publish import PublishLost


class Sink:
    """Records what would be published; ``gate`` holds publishes back while it is clear."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str | None, int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.published = asyncio.Event()

    async def publish(self, percent: int, message: str | None, seq: int) -> None:
        await self.gate.wait()
        self.sent.append((percent, message, seq))
        self.published.set()


async def test_a_chatty_handler_is_coalesced_and_its_last_report_is_never_lost() -> None:
    sink = Sink()
    pump = ProgressPump(sink.publish, interval=3600)  # one event per window at most
    for percent in range(100):
        pump.offer(percent, f"step {percent}")
    await asyncio.wait_for(sink.published.wait(), timeout=5)
    assert sink.sent == [(99, "step 99", 1)]  # the latest report when the pump ran
    pump.offer(100, "done")
    await pump.close()  # the window has not passed: the last report is sent on close
    assert sink.sent == [(99, "step 99", 1), (100, "done", 2)]


async def test_sequence_numbers_rise_with_each_event() -> None:
    sink = Sink()
    pump = ProgressPump(sink.publish, interval=0)
    for percent in (10, 20, 30):
        sink.published.clear()
        pump.offer(percent, None)
        await asyncio.wait_for(sink.published.wait(), timeout=5)
    await pump.close()
    assert [seq for _, _, seq in sink.sent] == [1, 2, 3]


async def test_a_job_that_reports_nothing_costs_nothing() -> None:
    sink = Sink()
    pump = ProgressPump(sink.publish, interval=0)
    await pump.close()
    assert sink.sent == []


async def test_reports_from_another_thread_reach_the_loop() -> None:
    sink = Sink()
    pump = ProgressPump(sink.publish, interval=3600)
    thread = threading.Thread(target=pump.offer, args=(42, "from a thread"))
    thread.start()
    thread.join()
    await asyncio.wait_for(sink.published.wait(), timeout=5)
    await pump.close()
    assert sink.sent == [(42, "from a thread", 1)]


async def test_a_lost_progress_event_does_not_end_the_pump() -> None:
    calls: list[int] = []
    published = asyncio.Event()

    async def flaky(percent: int, message: str | None, seq: int) -> None:
        calls.append(percent)
        published.set()
        if len(calls) == 1:
            raise PublishLost("the channel closed")

    pump = ProgressPump(flaky, interval=0)
    pump.offer(1, None)
    await asyncio.wait_for(published.wait(), timeout=5)
    published.clear()
    pump.offer(2, None)
    await asyncio.wait_for(published.wait(), timeout=5)
    await pump.close()
    assert calls == [1, 2]


async def test_a_run_is_announced_after_its_delay_or_at_once_when_asked() -> None:
    announced: list[str] = []
    done = asyncio.Event()

    async def announce() -> None:
        announced.append("started")
        done.set()

    late = Announcer(announce, delay=0.01)
    await asyncio.wait_for(done.wait(), timeout=5)
    assert await late.settle() is True
    assert announced == ["started"]

    short = Announcer(announce, delay=3600)
    assert await short.settle() is False  # a run that ended first: never announced
    assert announced == ["started"]

    eager = Announcer(announce, delay=3600)
    task = eager.now()
    assert eager.now() is task  # once only
    assert await eager.settle() is True
    assert announced == ["started", "started"]


async def test_a_failed_announcement_leaves_the_start_to_the_terminal_event() -> None:
    async def lost() -> None:
        raise PublishLost("no confirm")

    announcer = Announcer(lost, delay=3600)
    announcer.now()
    assert await announcer.settle() is False
