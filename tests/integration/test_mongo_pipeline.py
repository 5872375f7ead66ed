"""The whole pipeline with the MongoDB store (the mongomock-motor double here; a real server
with SG_TEST_MONGODB_URL)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable

import pytest
from mongomock_motor import AsyncMongoMockClient

from examples.echo import worker as echo_worker
from gateway.store import MongoStore
from tests.conftest import GatewayFactory
from tests.support import submit, wait_status

pytestmark = pytest.mark.integration

REAL_MONGODB = os.environ.get("SG_TEST_MONGODB_URL")


def _store() -> MongoStore:
    database = f"sg_test_{uuid.uuid4().hex[:12]}"
    if REAL_MONGODB:
        return MongoStore(REAL_MONGODB, database=database)
    return MongoStore(
        "mongodb://double",
        database=database,
        client_factory=lambda: AsyncMongoMockClient(tz_aware=True),
    )


@pytest.mark.parametrize("target", ["mongodb(real)" if REAL_MONGODB else "mongo-double"])
async def test_jobs_run_end_to_end_on_the_mongo_store(
    gateway_factory: GatewayFactory,
    run_worker: Callable[..., asyncio.Task[None]],
    target: str,
) -> None:
    gateway = await gateway_factory(store=_store())
    run_worker(echo_worker)
    ok = (await submit(gateway.client, "echo", {"text": "mongo"})).json()
    bad = (await submit(gateway.client, "echo", {"fail": "nope"})).json()
    await wait_status(gateway.client, ok["jobID"], "successful")
    await wait_status(gateway.client, bad["jobID"], "failed")
    assert (await gateway.client.get(f"/jobs/{ok['jobID']}/results")).json() == {"text": "mongo"}
    listed = (await gateway.client.get("/jobs")).json()["jobs"]
    assert [j["jobID"] for j in listed] == [bad["jobID"], ok["jobID"]]
    assert (await gateway.client.get("/readyz")).json()["checks"]["store"] == "ok"
