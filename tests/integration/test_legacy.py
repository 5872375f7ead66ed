"""The old ServiceGateway contract, replayed the way its clients speak it."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import jwt
import pytest

from examples.echo import worker as echo_worker
from tests import workers
from tests.conftest import AMQP_URL, Gateway, GatewayFactory
from tests.support import eventually, wait_status
from worker_sdk import UrlPolicy
from worker_sdk.wire import Task, Topology

pytestmark = pytest.mark.integration

OLD_KEY = base64.b64encode(b"the-old-gateway-signature-key-" + b"0123456789" * 4).decode()
JSON = {"Accept": "application/json"}


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory(
        jwt_secret=OLD_KEY,
        jwt_secret_base64=True,
        jwt_algorithms=("HS512",),
        jwt_audience="vlbTest",
        legacy_tokens=True,
        legacy_owner="vesta",
        legacy_storage_url="http://mss.example.org/get/{storage_doc_id}",
        legacy_annotations_url="http://jass.example.org/document/{ann_doc_id}/annotations",
    )


@pytest.fixture
async def old_client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """Authorization as the old gateway minted it: HS512, base64 key, aud + exp, raw header."""
    token = jwt.encode(
        {"aud": "vlbTest", "exp": int(time.time()) + 600},
        base64.b64decode(OLD_KEY),
        algorithm="HS512",
    )
    async with httpx.AsyncClient(
        transport=gateway.transport, base_url="http://gw.test", headers={"Authorization": token}
    ) as client:
        yield client


async def poll(client: httpx.AsyncClient, service: str, uuid: str, *states: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        response = await client.get(f"/{service}/status", params={"uuid": uuid})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body if body["status"] in states else None

    return await eventually(probe, what=f"{uuid} to be {states}")


async def queued_task(namespace: str, service: str) -> Task:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(Topology(namespace).task_queue(service), ensure=True)
        message = await queue.get(fail=True)
        return Task.model_validate_json(message.body)


async def test_process_then_poll_status_until_success(
    old_client: httpx.AsyncClient, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    run_worker(echo_worker)
    response = await old_client.post(
        "/echo/process",
        params={"doc_url": "http://media.example.org/a.wav", "lang": "fr", "x": "url"},
        json={"x": "body", "depth": 2},
    )
    assert response.status_code == 200
    assert set(response.json()) == {"uuid"}
    # the uuid may be all a reader holds (SG_LEGACY_OPEN_STATUS): random, 122 bits
    assert uuid.UUID(response.json()["uuid"]).version == 4
    done = await poll(old_client, "echo", response.json()["uuid"], "SUCCESS")
    assert set(done) == {"uuid", "status", "result"}
    # HEAD answers as GET does (Flask's routes took it), not as a CANARIE page.
    head = await old_client.head("/echo/status", params={"uuid": done["uuid"]})
    assert head.status_code == 200
    assert head.headers["content-type"].startswith("application/json")
    misc = done["result"]
    assert misc["doc_url"] == "http://media.example.org/a.wav"
    assert misc["x"] == "url"  # URL parameters override the JSON body
    assert misc["depth"] == 2
    assert misc["lang"] == "fr"
    assert misc["upload_url"]


async def test_the_task_carries_the_old_message_fields(
    old_client: httpx.AsyncClient, namespace: str
) -> None:
    response = await old_client.post(
        "/echo/annotate/doc-123",
        data={
            "ann_doc_id": "ann-9",
            "storage_txt_id": "txt-7",
            "callback_url": "http://cb.example.org/cb",
        },
    )
    assert response.status_code == 200
    task = await queued_task(namespace, "echo")
    assert str(task.job_id) == response.json()["uuid"]
    assert task.document is not None
    assert task.document.url == "http://mss.example.org/get/doc-123"
    assert task.annotation_service_url == "http://jass.example.org/document/ann-9/annotations"
    assert task.misc is not None
    assert task.misc["txt_url"] == "http://mss.example.org/get/txt-7"
    assert task.misc["ann_doc_id"] == "ann-9"
    assert task.misc["callback_url"] == "http://cb.example.org/cb"


async def test_errors_keep_the_old_body(old_client: httpx.AsyncClient) -> None:
    missing = await old_client.post("/echo/annotate", headers=JSON)
    assert missing.status_code == 400
    assert missing.json() == {
        "status": 400,
        "description": "Bad Request",
        "vesta": {
            "code": 206,
            "message": 'A POST on the URI "/annotate" requires the following parameter : doc_url',
        },
    }
    page = await old_client.post("/echo/annotate", headers={"Accept": "text/html"})
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    assert "206" in page.text
    for bad in ("http://host", "http://127.0.0.1/x", "ftp://files.example.org/a"):
        refused = await old_client.post("/echo/process", params={"doc_url": bad}, headers=JSON)
        assert refused.json()["vesta"]["code"] == 207, bad
    unknown = await old_client.post(
        "/nosuch/process", params={"doc_url": "http://a.org/b"}, headers=JSON
    )
    assert (unknown.status_code, unknown.json()["vesta"]["code"]) == (400, 202)
    status = await old_client.get("/echo/status", headers=JSON)
    assert status.json()["vesta"]["code"] == 206
    ghost = await old_client.get("/echo/status", params={"uuid": "nope"}, headers=JSON)
    assert ghost.json()["vesta"]["code"] == 203


async def test_a_bad_token_is_401_not_500(gateway: Gateway) -> None:
    async with httpx.AsyncClient(
        transport=gateway.transport, base_url="http://gw.test", headers={"Authorization": "junk"}
    ) as client:
        response = await client.post(
            "/echo/process", params={"doc_url": "http://a.org/b"}, headers=JSON
        )
        page = await client.post("/echo/process", params={"doc_url": "http://a.org/b"})
    assert response.status_code == 401
    assert response.json()["vesta"]["code"] == 101
    for answer in (response, page):  # the challenge RFC 9110 requires, in both forms
        assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_a_uuid_of_another_service_is_203(old_client: httpx.AsyncClient) -> None:
    job = (await old_client.post("/echo/process", params={"doc_url": "http://a.org/b"})).json()
    other = await old_client.get("/crunch/status", params={"uuid": job["uuid"]}, headers=JSON)
    assert (other.status_code, other.json()["vesta"]["code"]) == (400, 203)


async def test_cancel_revokes(old_client: httpx.AsyncClient) -> None:
    job = (await old_client.post("/echo/process", params={"doc_url": "http://a.org/b"})).json()
    pending = await poll(old_client, "echo", job["uuid"], "PENDING")
    assert pending["result"] is None
    head = await old_client.head("/echo/cancel", params={"uuid": job["uuid"]})
    assert (head.status_code, head.headers["allow"]) == (405, "GET")  # a HEAD never cancels
    assert (await poll(old_client, "echo", job["uuid"], "PENDING")) == pending
    cancelled = await old_client.get("/echo/cancel", params={"uuid": job["uuid"]})
    assert cancelled.status_code == 200
    assert cancelled.json() == {
        "uuid": job["uuid"],
        "status": "REVOKED",
        "result": {"code": 109, "message": "revoked"},
    }


async def test_an_expired_job_reads_expired(old_client: httpx.AsyncClient) -> None:
    job = (await old_client.post("/ephemeral/process", params={"doc_url": "http://a.org/b"})).json()
    expired = await poll(old_client, "ephemeral", job["uuid"], "EXPIRED")
    assert expired["result"] is None


async def test_failure_and_progress_states(
    old_client: httpx.AsyncClient, run_worker: Callable[..., asyncio.Task[None]], tmp_path: Path
) -> None:
    run_worker(echo_worker)
    run_worker(workers.slow)
    failing = (
        await old_client.post("/echo/process", params={"doc_url": "http://a.org/b", "fail": "boom"})
    ).json()
    failed = await poll(old_client, "echo", failing["uuid"], "FAILURE")
    assert failed["result"] == {"code": 101, "message": "boom"}
    gate = tmp_path / "gate"
    slow = (
        await old_client.post(
            "/slow/process", params={"doc_url": "http://a.org/b"}, json={"gate": str(gate)}
        )
    ).json()
    progress = await poll(old_client, "slow", slow["uuid"], "PROGRESS")
    result = progress["result"]
    assert (result["current"], result["total"], result["worker_id_version"]) == (40, 100, "1.0.0")
    assert set(result) == {"current", "total", "worker_id_version", "start_time", "host", "type"}
    xml = await old_client.get(
        "/slow/status", params={"uuid": slow["uuid"]}, headers={"Accept": "application/xml"}
    )
    assert xml.headers["content-type"].startswith("application/xml")
    assert "<process_status>" in xml.text
    assert "<status>PROGRESS</status>" in xml.text
    gate.touch()
    await poll(old_client, "slow", slow["uuid"], "SUCCESS")


class _Peers(BaseHTTPRequestHandler):
    """The document host, the annotation storage (JASS) and the callback receiver."""

    received: dict[str, list[Any]]
    jass_status: list[int]

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"one two three four")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.received.setdefault(self.path, []).append(body)
        self.send_response(self.jass_status[0] if "annotations" in self.path else 200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def peers() -> Iterator[tuple[str, dict[str, list[Any]], list[int]]]:
    received: dict[str, list[Any]] = {}
    status = [201]
    handler = type("Peers", (_Peers,), {"received": received, "jass_status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received, status
    server.shutdown()
    server.server_close()


async def test_a_ported_worker_downloads_stores_annotations_and_calls_back(
    gateway_factory: GatewayFactory,
    run_worker: Callable[..., asyncio.Task[None]],
    peers: tuple[str, dict[str, list[Any]], list[int]],
) -> None:
    base, received, jass_status = peers
    gateway = await gateway_factory(
        url_allow_networks=("127.0.0.0/8",),
        legacy_annotations_url=base + "/document/{ann_doc_id}/annotations",
    )
    run_worker(workers.legacyann, url_policy=UrlPolicy(allow_networks=("127.0.0.0/8",)))
    params = {"doc_url": f"{base}/doc.txt", "ann_doc_id": "A1", "callback_url": f"{base}/cb"}
    job = (await gateway.client.post("/legacyann/annotate", params=params)).json()
    done = await poll(gateway.client, "legacyann", job["uuid"], "SUCCESS")
    assert done["result"] == [{"@id": "legacyann", "@version": "1.0.0", "words": 4}]
    assert received["/document/A1/annotations"] == [{"common": {}, "data": done["result"]}]

    async def called_back() -> bool:
        return "/cb" in received

    await eventually(called_back, what="the completion callback")
    assert received["/cb"] == [{"uuid": job["uuid"], "status": "SUCCESS"}]

    jass_status[0] = 500  # the annotation storage fails: the job fails with code 302
    failing = (await gateway.client.post("/legacyann/annotate", params=params)).json()
    failed = await poll(gateway.client, "legacyann", failing["uuid"], "FAILURE")
    assert failed["result"]["code"] == 302


class _Trickle(BaseHTTPRequestHandler):
    """A callback receiver that answers a byte at a time until ``release`` is set: no
    per-read timeout ever fires."""

    release: threading.Event
    hits: list[str]

    def do_POST(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        while not self.release.wait(0.2):  # its pace, not the test's synchronisation
            self.wfile.write(b"x")
            self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        pass


async def test_a_callback_that_never_ends_holds_back_no_task(
    gateway_factory: GatewayFactory, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    """The client's callback URL is called once the task is acknowledged: a receiver that
    trickles its answer for ever held the worker's only slot (and a worker stopped meanwhile
    handed the finished task back, to be run again)."""
    release, hits = threading.Event(), []
    handler = type("Trickle", (_Trickle,), {"release": release, "hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gateway = await gateway_factory(url_allow_networks=("127.0.0.0/8",))
        run_worker(echo_worker, url_policy=UrlPolicy(allow_networks=("127.0.0.0/8",)))
        callback = f"http://127.0.0.1:{server.server_address[1]}/cb"
        params = {"doc_url": "http://93.184.216.34/a", "callback_url": callback}
        first = (await gateway.client.post("/echo/process", params=params)).json()
        await poll(gateway.client, "echo", first["uuid"], "SUCCESS")

        async def called() -> bool:
            return hits == ["/cb"]

        await eventually(called, what="the callback to be under way")
        second = (await gateway.client.post("/echo/process", params=params)).json()
        await poll(gateway.client, "echo", second["uuid"], "SUCCESS")
        assert not release.is_set()
    finally:
        release.set()
        server.shutdown()
        server.server_close()


async def test_a_worker_of_another_version_is_reported(
    gateway: Gateway,
    old_client: httpx.AsyncClient,
    run_worker: Callable[..., asyncio.Task[None]],
    tmp_path: Path,
) -> None:
    run_worker(workers.drifted)
    gate = tmp_path / "gate"
    job = (
        await old_client.post(
            "/slow/process", params={"doc_url": "http://a.org/b"}, json={"gate": str(gate)}
        )
    ).json()

    # The legacy owner's job: read it as an admin on the new API.
    async with gateway.as_user("root", "sg:admin") as admin:
        state = await eventually(
            lambda: _running(admin, job["uuid"]), what="the drifted worker to run the job"
        )
    assert state["workerVersion"] == "0.9.0"
    assert state["versionMismatch"] is True
    old = await old_client.get("/slow/status", params={"uuid": job["uuid"]}, headers=JSON)
    assert old.status_code == 400
    assert old.json()["vesta"] == {
        "code": 204,
        "message": "Service slow declares the version 1.0.0 in its config file but messages "
        "received from its worker contain the version 0.9.0.",
    }
    gate.touch()
    async with gateway.as_user("root", "sg:admin") as admin:
        await wait_status(admin, job["uuid"], "successful")
    done = await old_client.get("/slow/status", params={"uuid": job["uuid"]})
    assert done.json()["status"] == "SUCCESS"  # the old gateway checked PROGRESS only


async def test_reject_mode_fails_the_job_and_stops_the_run(
    gateway_factory: GatewayFactory,
    run_worker: Callable[..., asyncio.Task[None]],
    tmp_path: Path,
) -> None:
    strict = await gateway_factory(version_mismatch="reject")
    run_worker(workers.drifted)
    job = (
        await strict.client.post(
            "/processes/slow/execution", json={"inputs": {"gate": str(tmp_path / "never")}}
        )
    ).json()

    async def failed() -> dict[str, Any] | None:
        state = (await strict.client.get(f"/jobs/{job['jobID']}")).json()
        return state if state["status"] == "failed" else None

    state = await eventually(failed, what="the job to fail on the version check")
    assert state["reason"] == "version_mismatch"
    problem = (await strict.client.get(f"/jobs/{job['jobID']}/results")).json()
    assert problem["job_error"]["code"] == "204"


async def _running(client: httpx.AsyncClient, job_id: str) -> dict[str, Any] | None:
    state: dict[str, Any] = (await client.get(f"/jobs/{job_id}")).json()
    return state if state["status"] == "running" else None
