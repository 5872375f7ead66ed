"""The example services, end to end."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from examples.textstats import worker as textstats_worker
from gateway.cli import main
from tests.conftest import ROOT, Gateway, GatewayFactory
from tests.support import submit, wait_status
from worker_sdk import UrlPolicy
from worker_sdk.wire.catalogue import Catalogue, load_catalogue

pytestmark = pytest.mark.integration

TEXT = "The cat sat. The cat ran!\nA dog? The end.\n" * 3000


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def document(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "doc.txt").write_text(TEXT)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/doc.txt"
    server.shutdown()
    server.server_close()


LOCAL = ("127.0.0.0/8",)


@pytest.fixture
def catalogue() -> Catalogue:
    return load_catalogue(ROOT / "services.yaml")


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> Gateway:
    # The test document is served on loopback, which the URL policy refuses by default.
    return await gateway_factory(url_allow_networks=LOCAL)


async def test_textstats_counts_a_document_in_a_child_process(
    client: httpx.AsyncClient,
    run_worker: Callable[..., asyncio.Task[None]],
    document: str,
) -> None:
    run_worker(textstats_worker, url_policy=UrlPolicy(allow_networks=LOCAL))
    job = (await submit(client, "textstats", {"url": document, "top": 3})).json()
    await wait_status(client, job["jobID"], "successful", within=30)
    stats = (await client.get(f"/jobs/{job['jobID']}/results")).json()
    assert stats["lines"] == 6000
    assert stats["words"] == 30000
    assert stats["sentences"] == 12000
    assert stats["top_words"][0] == {"word": "the", "count": 9000}
    assert len(stats["top_words"]) == 3


async def test_textstats_reports_a_missing_document(
    client: httpx.AsyncClient,
    run_worker: Callable[..., asyncio.Task[None]],
    document: str,
) -> None:
    run_worker(textstats_worker, url_policy=UrlPolicy(allow_networks=LOCAL))
    missing = document.replace("doc.txt", "nope.txt")
    job = (await submit(client, "textstats", {"url": missing})).json()
    state = await wait_status(client, job["jobID"], "failed", within=30)
    problem = (await client.get(f"/jobs/{job['jobID']}/results")).json()
    assert problem["job_error"]["code"] == "download_failed"
    assert "404" in state["message"]


def test_worker_command_refuses_what_is_not_a_worker() -> None:
    assert main(["worker", "examples.echo:EchoInputs"]) == 2
    assert main(["worker", "examples.nowhere:worker"]) == 2
    assert main(["worker", "no-colon"]) == 2
