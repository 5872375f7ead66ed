"""The old routes against hostile input (findings 12–17), and the old client's token-less status
polling."""

from __future__ import annotations

import asyncio
import base64
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest

from examples.echo import worker as echo_worker
from gateway.negotiation import best_match
from gateway.store import JobQuery
from tests.conftest import Gateway, GatewayFactory
from tests.integration.test_legacy import OLD_KEY, poll, queued_task
from tests.support import submit, wait_status

pytestmark = pytest.mark.integration

JSON = {"Accept": "application/json"}
URLENCODED = "application/x-www-form-urlencoded"


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


def _old_token(**claims: Any) -> str:
    return jwt.encode(
        {"aud": "vlbTest", "exp": int(time.time()) + 600, **claims},
        base64.b64decode(OLD_KEY),
        algorithm="HS512",
    )


@pytest.fixture
async def old_client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=gateway.transport,
        base_url="http://gw.test",
        headers={"Authorization": _old_token()},
    ) as client:
        yield client


@pytest.fixture
async def anonymous(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=gateway.transport, base_url="http://gw.test") as client:
        yield client


async def _uuid(client: httpx.AsyncClient, service: str = "echo", **data: Any) -> str:
    response = await client.post(
        f"/{service}/process", params={"doc_url": "http://93.184.216.34/doc.txt", **data}
    )
    assert response.status_code == 200, response.text
    uuid: str = response.json()["uuid"]
    return uuid


class TestOpenStatus:
    async def test_the_old_client_polls_status_without_a_token(
        self,
        gateway: Gateway,
        anonymous: httpx.AsyncClient,
        run_worker: Callable[..., asyncio.Task[None]],
    ) -> None:
        """Token on submit and cancel only, as the old run_service client sent it; status
        polled with no Authorization header at all until SUCCESS."""
        token = {"Authorization": _old_token()}
        submitted = await anonymous.post(
            "/echo/process",
            params={"doc_url": "http://93.184.216.34/doc.txt"},
            headers=token,
        )
        assert submitted.status_code == 200
        uuid = submitted.json()["uuid"]
        run_worker(echo_worker)
        done = await poll(anonymous, "echo", uuid, "SUCCESS")
        assert done["uuid"] == uuid
        cancel = await anonymous.get("/echo/cancel", params={"uuid": uuid})
        assert cancel.status_code == 401
        assert cancel.json()["vesta"]["code"] == 101
        with_token = await anonymous.get("/echo/cancel", params={"uuid": uuid}, headers=token)
        assert with_token.json()["status"] == "SUCCESS"  # finished: left as it is

    async def test_jobs_of_the_new_api_stay_owner_only(
        self, gateway: Gateway, anonymous: httpx.AsyncClient
    ) -> None:
        async with gateway.as_user("alice") as alice:
            job = (await submit(alice, "echo", {})).json()["jobID"]
        response = await anonymous.get("/echo/status", params={"uuid": job}, headers=JSON)
        assert response.status_code == 400
        assert response.json()["vesta"]["code"] == 203
        async with gateway.as_user("bob") as bob:
            assert (await bob.get(f"/jobs/{job}")).status_code == 404
            other = await bob.get("/echo/status", params={"uuid": job}, headers=JSON)
            assert other.json()["vesta"]["code"] == 203

    async def test_it_can_be_switched_off(self, gateway_factory: GatewayFactory) -> None:
        gateway = await gateway_factory(
            jwt_secret=OLD_KEY,
            jwt_secret_base64=True,
            jwt_algorithms=("HS512",),
            jwt_audience="vlbTest",
            legacy_tokens=True,
            legacy_open_status=False,
        )
        async with httpx.AsyncClient(
            transport=gateway.transport,
            base_url="http://gw.test",
            headers={"Authorization": _old_token()},
        ) as old:
            uuid = await _uuid(old)
        async with httpx.AsyncClient(transport=gateway.transport, base_url="http://gw.test") as c:
            closed = await c.get("/echo/status", params={"uuid": uuid}, headers=JSON)
        assert closed.status_code == 401


class TestNegotiation:
    """Finding 12: one Accept negotiation for the whole gateway, which never raises."""

    @pytest.mark.parametrize(
        "accept",
        [
            "application/json;q=abc",
            "application/json;q=nan",
            "application/json;q=1e999",
            "text/html;q=-1, application/json;q=2",
            ";;;,,,",
            "application/json;" + "x=1;" * 2000,
            ", ".join(f"type{i}/sub;q=0.{i % 10}" for i in range(5000)),
            "\x00\x01",
        ],
    )
    async def test_no_accept_header_is_a_server_error(
        self, gateway: Gateway, old_client: httpx.AsyncClient, accept: str
    ) -> None:
        uuid = await _uuid(old_client)
        paths = [
            f"/echo/status?uuid={uuid}",
            "/echo/status",  # an error page
            "/nosuch/status?uuid=x",
            "/echo/info",
            "/platform/info",
            "/processes",
            f"/jobs/{uuid}",
            "/conformance",
        ]
        for path in paths:
            response = await old_client.get(path, headers={"Accept": accept})
            assert response.status_code < 500, (path, response.status_code)
        posted = await old_client.post("/echo/process", headers={"Accept": accept})
        assert posted.status_code == 400

    def test_the_matching_rules(self) -> None:
        offers = ["application/json", "text/html"]
        assert best_match("application/json;q=abc", offers) is None
        assert best_match("*/*", offers) == "application/json"
        assert best_match("text/html, application/json;q=0.9", offers) == "text/html"
        assert best_match("text/*;q=0.5, application/json;q=0.4", offers) == "text/html"
        assert best_match("*/*;q=0.1, application/json;q=0", offers) == "text/html"
        assert best_match(None, offers) is None


class TestXml:
    """Finding 13: the XML status escapes whatever keys and values a result carries."""

    async def test_hostile_keys_and_values_make_well_formed_xml(
        self, gateway: Gateway, old_client: httpx.AsyncClient
    ) -> None:
        uuid = await _uuid(old_client)
        import uuid as uuids

        from gateway.store import JobStatus

        hostile = {
            "html:script": "alert(1)",
            "{abc": "x",
            "xmlns": "y",
            "a b": "<b>&</b>",
            "ctrl": "bell\x07 and \x1b[31m escape",
            "ok": [1, {"nested<": "z"}],
        }
        await gateway.runtime.store.finish(
            uuids.UUID(uuid), status=JobStatus.SUCCESSFUL, at=_now(), result=hostile
        )
        response = await old_client.get(
            "/echo/status", params={"uuid": uuid}, headers={"Accept": "application/xml"}
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/xml")
        root = ET.fromstring(response.text)  # well-formed, or this raises
        result = root.find("result")
        assert result is not None
        keys = {item.get("key") for item in result.iter("item") if item.get("key")}
        assert {"html:script", "{abc", "xmlns", "a b", "nested<"} <= keys
        assert root.find(".//ctrl") is not None
        assert "\x07" not in response.text
        assert "<script" not in response.text
        assert "<html:" not in response.text


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


class TestCancel:
    """Finding 14: cancel checks the service before touching anything, and never purges."""

    async def test_another_services_uuid_is_203_and_the_job_untouched(
        self, gateway: Gateway, old_client: httpx.AsyncClient
    ) -> None:
        uuid = await _uuid(old_client, "crunch")
        response = await old_client.get("/echo/cancel", params={"uuid": uuid}, headers=JSON)
        assert response.status_code == 400
        assert response.json()["vesta"]["code"] == 203
        state = await old_client.get("/crunch/status", params={"uuid": uuid})
        assert state.json()["status"] == "PENDING"

    async def test_cancelling_a_finished_job_keeps_its_result(
        self, gateway: Gateway, old_client: httpx.AsyncClient, run_worker: Callable[..., Any]
    ) -> None:
        run_worker(echo_worker)
        uuid = await _uuid(old_client)
        done = await poll(old_client, "echo", uuid, "SUCCESS")
        cancel = await old_client.get("/echo/cancel", params={"uuid": uuid})
        assert cancel.json() == done
        again = await old_client.get("/echo/status", params={"uuid": uuid})
        assert again.json() == done

    async def test_a_result_dismissed_through_the_new_api_reads_expired(
        self, gateway: Gateway, old_client: httpx.AsyncClient, run_worker: Callable[..., Any]
    ) -> None:
        """Its result purged, the job is no SUCCESS with a null result: the old gateway's
        EXPIRED, the state it read once a result had expired."""
        run_worker(echo_worker)
        uuid = await _uuid(old_client)
        await poll(old_client, "echo", uuid, "SUCCESS")
        dismissed = await old_client.delete(
            f"/jobs/{uuid}", headers={"Authorization": f"Bearer {_old_token()}"}
        )
        assert dismissed.status_code == 200, dismissed.text
        for route in ("status", "cancel"):
            state = await old_client.get(f"/echo/{route}", params={"uuid": uuid})
            assert state.status_code == 200
            assert (state.json()["status"], state.json()["result"]) == ("EXPIRED", None)


class TestUrls:
    """Findings 15, 16 and 17: every URL of an old request passes the policy."""

    @pytest.mark.parametrize(
        ("params", "body"),
        [
            ({"callback_url": "http://169.254.169.254/latest/meta-data/"}, None),
            ({}, {"callback_url": "http://169.254.169.254/latest/"}),
            ({}, {"nested": {"results_url": "http://127.0.0.1:8080/x"}}),
            ({"doc_url": "http://a..b/x"}, None),
            ({"doc_url": f"http://{'a' * 64}.example.org/x"}, None),
            ({"doc_url": "http://[::1]/x"}, None),
            ({"doc_url": "http://a\x00b/x"}, None),
            ({"doc_url": "http://[::1/x"}, None),
            ({}, {"a_url": "http://[/a"}),
        ],
    )
    async def test_refused_urls_are_207_and_nothing_is_recorded(
        self,
        gateway: Gateway,
        old_client: httpx.AsyncClient,
        params: dict[str, str],
        body: dict[str, Any] | None,
    ) -> None:
        query = {"doc_url": "http://93.184.216.34/doc.txt", **params}
        response = await old_client.post("/echo/process", params=query, json=body, headers=JSON)
        assert response.status_code == 400, response.text
        assert response.json()["vesta"]["code"] == 207
        assert await gateway.runtime.store.page_jobs(JobQuery(owner=None)) == []

    async def test_a_stored_document_does_not_smuggle_a_doc_url(
        self, gateway: Gateway, old_client: httpx.AsyncClient
    ) -> None:
        response = await old_client.post(
            "/echo/process/doc-1",
            params={"doc_url": "http://169.254.169.254/latest/"},
            headers=JSON,
        )
        assert response.status_code == 400
        assert response.json()["vesta"]["code"] == 207

    async def test_ids_are_encoded_into_the_templates(
        self, gateway: Gateway, old_client: httpx.AsyncClient, namespace: str
    ) -> None:
        evil = "../../admin/purge?all=1#"
        response = await old_client.post(
            "/echo/annotate/a%20b%3Fc",
            params={"ann_doc_id": evil, "storage_image_id": "a/b"},
        )
        assert response.status_code == 200, response.text
        task = await queued_task(namespace, "echo")
        assert task.annotation_service_url == (
            "http://jass.example.org/document/..%2F..%2Fadmin%2Fpurge%3Fall%3D1%23/annotations"
        )
        assert task.document is not None
        assert task.document.url == "http://mss.example.org/get/a%20b%3Fc"
        assert (task.misc or {})["image_url"] == "http://mss.example.org/get/a%2Fb"

    async def test_too_many_urls_are_refused_at_once(
        self, gateway: Gateway, old_client: httpx.AsyncClient
    ) -> None:
        params = {f"u{i}_url": f"http://host{i}.invalid/x" for i in range(998)}
        response = await old_client.post(
            "/echo/process",
            content=httpx.QueryParams({"doc_url": "http://93.184.216.34/doc.txt", **params})
            .__str__()
            .encode(),
            headers={"content-type": "application/x-www-form-urlencoded", **JSON},
        )
        assert response.status_code == 400
        body = response.json()
        assert body["vesta"]["code"] == 207
        assert "more than 16 URLs" in body["vesta"]["message"]

    @pytest.mark.parametrize(
        ("content", "content_type", "says"),
        [
            (
                "&".join(f"f{i}=x" for i in range(1001)),
                "application/x-www-form-urlencoded",
                "fields",
            ),
            ("--x\r\n", "multipart/form-data", "boundary"),
        ],
    )
    async def test_a_form_the_parser_refuses_is_answered_in_the_old_format(
        self,
        gateway: Gateway,
        old_client: httpx.AsyncClient,
        content: str,
        content_type: str,
        says: str,
    ) -> None:
        """It was answered as a problem document, which old clients cannot read."""
        response = await old_client.post(
            "/echo/process",
            params={"doc_url": "http://93.184.216.34/doc.txt"},
            content=content.encode(),
            headers={"content-type": content_type, **JSON},
        )
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["vesta"]["code"] == 105
        assert says in body["vesta"]["message"].lower()
        assert await gateway.runtime.store.page_jobs(JobQuery(owner=None)) == []

    @pytest.mark.parametrize("url", ["http://a..b/x", "http://a\x00b/x", "http://[::1/x"])
    async def test_an_invalid_host_in_a_uri_input_is_422(self, gateway: Gateway, url: str) -> None:
        async with gateway.as_user("alice") as alice:
            response = await submit(alice, "fetcher", {"url": url})
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["path"] == "/inputs/url"

    async def test_the_gateway_serves_old_clients_after(
        self, old_client: httpx.AsyncClient, run_worker: Callable[..., Any]
    ) -> None:
        bad = await old_client.post("/echo/process", params={"doc_url": "http://a..b/x"})
        assert bad.status_code == 400
        run_worker(echo_worker)
        uuid = await _uuid(old_client)
        await poll(old_client, "echo", uuid, "SUCCESS")


async def test_deep_and_surrogate_old_bodies_are_400(
    gateway: Gateway, old_client: httpx.AsyncClient
) -> None:
    deep = '{"a": ' * 990 + "1" + "}" * 990
    for body in (deep, '{"text": "\\ud800"}', '{"n": NaN}'):
        response = await old_client.post(
            "/echo/process",
            params={"doc_url": "http://93.184.216.34/doc.txt"},
            content=body.encode(),
            headers={"content-type": "application/json", **JSON},
        )
        assert response.status_code == 400, body[:30]
        assert response.json()["vesta"]["code"] == 105
    assert await gateway.runtime.store.page_jobs(JobQuery(owner=None)) == []


async def test_misc_the_schema_refuses_is_400_before_the_job_exists(
    gateway: Gateway, old_client: httpx.AsyncClient
) -> None:
    """What the worker's model would refuse is refused at the edge, in the old format: the
    job used to be queued and then failed by the worker with a raw validation message."""
    cases = [
        ({"text": "x" * 101}, "/misc/text"),  # longer than echo's schema allows
        ({"delay": "soon"}, "/misc/delay"),  # no number
        ({"url": "http://10.0.0.1/x"}, "/misc/url"),  # fetcher's URI input: the URL policy
    ]
    for params, path in cases:
        service = "fetcher" if "url" in params else "echo"
        response = await old_client.post(
            f"/{service}/process",
            params={"doc_url": "http://93.184.216.34/doc.txt", **params},
            headers=JSON,
        )
        assert response.status_code == 400, params
        vesta = response.json()["vesta"]
        assert vesta["code"] == 105
        assert path in vesta["message"]
        assert "misc as its inputs" in vesta["message"]
    assert await gateway.runtime.store.page_jobs(JobQuery(owner=None)) == []


async def test_text_that_spells_a_typed_input_is_queued_as_sent(
    old_client: httpx.AsyncClient, namespace: str
) -> None:
    response = await old_client.post(
        "/echo/process", params={"doc_url": "http://93.184.216.34/doc.txt", "delay": "0"}
    )
    assert response.status_code == 200, response.text
    task = await queued_task(namespace, "echo")
    assert (task.misc or {})["delay"] == "0"  # the worker's model reads it as a number


async def test_a_repeated_parameter_is_read_as_werkzeug_read_it(
    old_client: httpx.AsyncClient, namespace: str
) -> None:
    """Its first value, the query's before the form's (Flask's ``request.values``)."""
    response = await old_client.post(
        "/echo/process?doc_url=http://93.184.216.34/a.txt&lang=fr&lang=en"
        "&doc_url=http://93.184.216.34/b.txt",
        content=b"lang=de&mode=fast&mode=slow",
        headers={"Content-Type": URLENCODED},
    )
    assert response.status_code == 200, response.text
    job = response.json()["uuid"]
    task = await queued_task(namespace, "echo")
    assert task.document is not None
    assert task.document.url == "http://93.184.216.34/a.txt"
    misc = task.misc or {}
    assert (misc["doc_url"], misc["lang"], misc["mode"]) == (task.document.url, "fr", "fast")
    status = await old_client.get("/echo/status", params=[("uuid", job), ("uuid", "nonsense")])
    assert status.status_code == 200, status.text
    assert status.json()["uuid"] == job


async def test_a_task_no_worker_can_read_fails_its_job_at_once(
    gateway: Gateway, namespace: str, run_worker: Callable[..., Any]
) -> None:
    """A task too deep to parse (put on the queue by anyone with the broker's rights) is
    refused by the worker with its reason; the job fails invalid_task at once."""
    import aio_pika

    from tests.conftest import AMQP_URL
    from tests.support import message
    from worker_sdk.wire import Topology

    async with gateway.as_user("alice") as alice:
        job = (await submit(alice, "echo", {})).json()["jobID"]
    deep = '{"job_id": "' + job + '", "service": "echo", "inputs": ' + "[" * 300 + "]" * 300 + "}"
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(Topology(namespace).task_queue("echo"))
        assert await queue.get(no_ack=True, fail=True)  # the real task: gone
        await channel.default_exchange.publish(
            message(deep.encode(), type="task", correlation_id=job),
            routing_key=Topology(namespace).task_queue("echo"),
        )
    run_worker(echo_worker)
    async with gateway.as_user("alice") as alice:
        failed = await wait_status(alice, job, "failed")
    assert failed["reason"] == "invalid_task"
    assert "unreadable" in failed["message"]


class TestBody:
    """The process route reads its JSON body as Flask's ``get_json(silent=True)`` did: by a
    media type of any case, ``+json`` too, and an empty body as none."""

    @pytest.mark.parametrize(
        "content_type",
        ["Application/JSON; charset=UTF-8", "application/vnd.example+json", "application/json"],
    )
    async def test_json_bodies_of_each_media_type_start_misc(
        self, gateway: Gateway, old_client: httpx.AsyncClient, namespace: str, content_type: str
    ) -> None:
        response = await old_client.post(
            "/echo/process",
            params={"doc_url": "http://93.184.216.34/doc.txt"},
            content=b'{"lang": "fr"}',
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 200, response.text
        task = await queued_task(namespace, "echo")
        assert (task.misc or {})["lang"] == "fr"

    @pytest.mark.parametrize("body", [b"", b" \r\n"])
    async def test_an_empty_json_body_is_none(
        self, gateway: Gateway, old_client: httpx.AsyncClient, namespace: str, body: bytes
    ) -> None:
        response = await old_client.post(
            "/echo/process",
            params={"doc_url": "http://93.184.216.34/doc.txt"},
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        task = await queued_task(namespace, "echo")
        assert (task.misc or {})["doc_url"] == "http://93.184.216.34/doc.txt"
