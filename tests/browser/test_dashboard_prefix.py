"""The dashboard in a real browser behind a reverse proxy that serves the gateway under
``/gw`` (the prefix stripped, ``SG_PUBLIC_URL`` naming it): signing in, a job submitted with
the form, and its progress and result arriving live over the event stream, through the proxy."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.async_api import expect
from starlette.types import Receive, Scope, Send

from gateway import Settings
from tests.browser.conftest import OfflineFactory, screenshot_path
from tests.client.conftest import LiveGateway, free_port
from tests.support import TEST_CATALOGUE
from tests.workers import crunch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PREFIX = "/gw"
LIVE = 20_000  # ms
# Hop-by-hop and framing headers a proxy does not pass on as they are.
_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"upgrade"}


class StrippingProxy:
    """``/gw/...`` forwarded to ``upstream`` without ``/gw``, streamed both ways (an event
    stream flows as it is written); anything else is the proxy's own 404."""

    def __init__(self, upstream: str) -> None:
        self.client = httpx.AsyncClient(base_url=upstream, timeout=None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        path: str = scope["path"]
        if not path.startswith(f"{PREFIX}/"):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"not the gateway's"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = self.client.build_request(
            scope["method"],
            path[len(PREFIX) :],
            params=scope["query_string"].decode(),
            headers=[(k, v) for k, v in scope["headers"] if k not in _HOP],
            content=body,
        )
        answer = await self.client.send(request, stream=True)
        try:
            headers = [(k, v) for k, v in answer.headers.raw if k.lower() not in _HOP]
            await send(
                {"type": "http.response.start", "status": answer.status_code, "headers": headers}
            )
            async for chunk in answer.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await answer.aclose()


@pytest.fixture
async def proxied(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[tuple[LiveGateway, str]]:
    """``sgw serve`` behind the proxy: the gateway and the public root the browser uses."""
    port = free_port()
    public = f"http://127.0.0.1:{port}{PREFIX}"
    catalogue = tmp_path / "services.yaml"
    catalogue.write_text(TEST_CATALOGUE)
    workdir = tmp_path / "gateway"
    workdir.mkdir()
    settings = settings_for(catalogue=catalogue, public_url=public)
    gateway = LiveGateway(settings, free_port(), workdir)
    await gateway.start()
    proxy = StrippingProxy(gateway.url)
    server = uvicorn.Server(
        uvicorn.Config(proxy, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the proxy did not start"
            await asyncio.sleep(0.01)
        yield gateway, public
    finally:
        server.should_exit = True
        await serving
        await proxy.client.aclose()
        gateway.kill()


async def test_the_dashboard_works_live_behind_a_proxys_prefix(
    proxied: tuple[LiveGateway, str],
    offline: OfflineFactory,
    run_worker: Callable[..., asyncio.Task[None]],
    tmp_path: Path,
) -> None:
    gateway, public = proxied
    run_worker(crunch)
    browser = await offline(public.removesuffix(PREFIX))
    page = await browser.page()

    await page.goto(f"{public}/ui/jobs")
    await expect(page).to_have_url(re.compile(rf"{PREFIX}/ui/login\?next="))
    await page.fill("#token", gateway.token("alice"))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{public}/ui/jobs")

    gate = tmp_path / "gate"
    await page.locator("summary", has_text="Submit a job").click()
    await page.select_option("#submit-service", "crunch")
    await page.fill("#submit-inputs", json.dumps({"gate": str(gate), "progress": 40}))
    await page.get_by_role("button", name="Submit", exact=True).click()
    await expect(page).to_have_url(re.compile(rf"{PREFIX}/ui/jobs/[0-9a-f-]{{36}}$"))
    await page.evaluate("window.sgSamePage = true")
    await expect(page.locator("#job-status")).to_have_text("running", timeout=LIVE)
    await expect(page.locator("#job-progress")).to_have_attribute("value", "40", timeout=LIVE)
    gate.touch()
    await expect(page.locator("#job-status")).to_have_text("successful", timeout=LIVE)
    assert await page.evaluate("window.sgSamePage === true"), "the page was reloaded"
    await page.screenshot(path=screenshot_path("ui-behind-a-prefix"), full_page=True)

    await page.get_by_role("link", name="Workers & queues").click()
    await expect(page).to_have_url(f"{public}/ui/workers")
    for chart in ("finished", "wait", "run"):
        await expect(page.locator(f"#chart-{chart} canvas")).to_have_count(1)
    await page.wait_for_load_state("networkidle")
    assert browser.foreign() == [], f"requests that left the gateway: {browser.foreign()}"
    outside = [u for u in browser.requested if not u.startswith(f"{public}/")]
    assert outside == [], f"requests outside the prefix: {outside}"
