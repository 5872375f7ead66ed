"""What a handler does that the SDK could not report: raise an exception whose message
cannot be read (its ``__str__`` raises), a ``HandlerError`` whose code no job error can
carry, or a ``Retry`` whose delay is out of bounds, report progress with a message that is
no text. Each still ends or retries its job, on the real broker; before, the async
worker's consumer callback died with the job unacked and ``running`` for good, its slot
held (and a process handler's child crashed on the first)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Gateway
from tests.support import eventually, submit, wait_status
from worker_sdk import HandlerError, JobContext, Retry, Worker

pytestmark = pytest.mark.integration


class Unprintable(Exception):
    def __str__(self) -> str:
        return f"{self.args[0]}: {self.args[1]}"  # a message built from arguments not given


in_loop = Worker("echo", version="1.0.0")
in_child = Worker("spin", version="1.0.0")


@in_loop.handler
async def raise_in_loop(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, Any]:
    raise Unprintable("only one")


@in_child.handler(isolation="process")
def raise_in_child(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, Any]:
    raise Unprintable("only one")


@pytest.mark.parametrize(("worker", "service"), [(in_loop, "echo"), (in_child, "spin")])
async def test_an_exception_whose_message_cannot_be_read_fails_its_job(
    gateway: Gateway,
    run_worker: Callable[..., asyncio.Task[None]],
    worker: Worker,
    service: str,
) -> None:
    run_worker(worker)
    job = (await submit(gateway.client, service, {})).json()["jobID"]
    failed = await wait_status(gateway.client, job, "failed", "successful", within=20)
    assert failed["status"] == "failed"
    assert failed["reason"] == "handler_error"
    assert failed["message"] == "Unprintable (its message could not be read)"
    again = (await submit(gateway.client, service, {})).json()["jobID"]  # and the worker goes on
    assert (await wait_status(gateway.client, again, "failed", within=20))["status"] == "failed"


retried = Worker("flaky", version="1.0.0")
DELAYS = {"negative": -5.0, "nan": math.nan, "inf": math.inf, "huge": 1e12}


@retried.handler
async def retry_oddly(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, Any]:
    if ctx.attempt == 1:
        raise Retry("later", delay=DELAYS[inputs["delay"]])
    return {"attempt": ctx.attempt}


@pytest.mark.parametrize("delay", list(DELAYS))
async def test_a_retry_asked_with_a_delay_out_of_bounds_is_still_retried(
    gateway: Gateway, run_worker: Callable[..., asyncio.Task[None]], delay: str
) -> None:
    """A negative or NaN delay retries at once; a longer one than a Retrying event carries
    waits that long at most (the holding queues cap it further)."""
    run_worker(retried)
    job = (await submit(gateway.client, "flaky", {"delay": delay})).json()["jobID"]

    async def second_attempt() -> dict[str, Any] | None:
        body: dict[str, Any] = (await gateway.client.get(f"/jobs/{job}")).json()
        return body if body["attempt"] == 2 else None

    state = await eventually(second_attempt, within=20, what="the job's second attempt")
    assert state["status"] in ("accepted", "running", "successful")
    if delay in ("negative", "nan"):
        assert (await wait_status(gateway.client, job, "successful", within=20))["attempt"] == 2


odd = Worker("chaos", version="1.0.0")


@odd.handler
async def fail_oddly(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, Any]:
    if inputs["case"] == "progress":
        ctx.progress(5, {"not": "text"})  # type: ignore[arg-type]  # what the test checks
    raise HandlerError("no such code", code=inputs["case"])


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("x" * 65, "no such code"),
        ("", "no such code"),
        ("progress", "a progress message is a str, not dict"),
    ],
)
async def test_a_failure_the_job_error_cannot_carry_as_given_still_fails_the_job(
    gateway: Gateway, run_worker: Callable[..., asyncio.Task[None]], case: str, message: str
) -> None:
    run_worker(odd)
    job = (await submit(gateway.client, "chaos", {"case": case})).json()["jobID"]
    failed = await wait_status(gateway.client, job, "failed", "successful", within=20)
    assert (failed["status"], failed["reason"]) == ("failed", "handler_error")
    assert failed["message"] == message


class Unforeseen(HandlerError):
    """A failure whose code cannot even be read: what no event can say."""

    @property  # type: ignore[override]  # a broken subclass is what the test is about
    def code(self) -> str:
        raise AttributeError("no code")

    @code.setter
    def code(self, value: str) -> None:
        pass


unforeseen = Worker("slow", version="1.0.0")


@unforeseen.handler
async def fail_unforeseeably(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, Any]:
    raise Unforeseen("broken")


async def test_an_outcome_no_event_can_say_still_ends_the_job_and_frees_the_slot(
    gateway: Gateway, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    run_worker(unforeseen)  # of concurrency 1: a held slot would keep the second job waiting
    for _ in range(2):
        job = (await submit(gateway.client, "slow", {})).json()["jobID"]
        failed = await wait_status(gateway.client, job, "failed", "successful", within=20)
        assert (failed["status"], failed["reason"]) == ("failed", "invalid_task")
        assert "not reportable: AttributeError: no code" in failed["message"]
