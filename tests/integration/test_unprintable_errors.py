"""A handler's exception whose message cannot be read (its ``__str__`` raises) still fails
its job, with the exception's type, on the real broker; before, the async worker's consumer
callback died with the job unacked and ``running`` for good, and a process handler's child
crashed on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Gateway
from tests.support import submit, wait_status
from worker_sdk import JobContext, Worker

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
