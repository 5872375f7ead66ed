"""A service ported from the old gateway, whose schema names the old routes' own values as
URIs: the gateway's upload and storage URLs (its settings', on a private address) are not
the client's to answer for, while the client's URLs pass the policy as every URL does."""

from __future__ import annotations

import pytest

from tests.conftest import Gateway, GatewayFactory
from tests.integration.test_legacy import queued_task
from tests.support import TEST_CATALOGUE
from worker_sdk.wire.catalogue import Catalogue, parse_catalogue

pytestmark = pytest.mark.integration

PORTED = """
  ported:
    title: Ported from the old gateway
    version: "1.0.0"
    inputs:
      type: object
      required: [doc_url, upload_url]
      additionalProperties: false
      properties:
        doc_url: {type: string, format: uri}
        upload_url: {type: string, format: uri}
        image_url: {type: string, format: uri}
        storage_image_id: {type: string}
"""
JSON = {"Accept": "application/json"}


@pytest.fixture
def catalogue() -> Catalogue:
    return parse_catalogue(TEST_CATALOGUE + PORTED, source="tests")


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory(
        legacy_upload_url="http://localhost:5002/add",
        legacy_storage_url="http://10.0.0.7/get/{storage_doc_id}",
    )


async def test_the_gateway_s_own_urls_pass_where_the_client_s_would_not(
    gateway: Gateway, namespace: str
) -> None:
    async with gateway.as_user("alice") as alice:
        response = await alice.post(
            "/ported/process",
            params={"doc_url": "http://93.184.216.34/a.png", "storage_image_id": "7"},
            headers=JSON,
        )
        assert response.status_code == 200, response.text
        task = await queued_task(namespace, "ported")
        assert task.misc is not None
        assert task.misc["image_url"] == "http://10.0.0.7/get/7"
        assert task.misc["upload_url"] == "http://localhost:5002/add"
        refused = await alice.post(
            "/ported/process",
            params={"doc_url": "http://93.184.216.34/a.png", "image_url": "http://10.0.0.7/x"},
            headers=JSON,
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["vesta"]["code"] == 207  # the route's own URL check
