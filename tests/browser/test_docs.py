"""The API docs (Swagger UI, ReDoc) in a real browser with no internet: every request the page
makes goes to the gateway, the operations render, and Swagger UI's Authorize button makes the
token reach the API."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.browser.conftest import OfflineFactory, screenshot_path
from tests.client.conftest import LiveGateway


async def test_swagger_ui_loads_from_the_gateway_and_authorizes(
    served: LiveGateway, offline: OfflineFactory
) -> None:
    browser = await offline(served.url)
    page = await browser.page()
    await page.goto(f"{served.url}/docs")
    operation = page.locator("#operations-jobs-getJobs")
    await expect(operation).to_be_visible(timeout=20_000)
    await expect(page.locator(".opblock")).not_to_have_count(0)

    # Authorize with a token, then call GET /jobs from the page: 200, not 401.
    await page.locator("button.authorize").first.click()
    dialog = page.locator(".modal-ux")
    await dialog.locator("input").first.fill(served.token("alice"))
    await dialog.get_by_role("button", name="Apply credentials").click()
    await expect(dialog.get_by_role("button", name="Remove authorization")).to_be_visible()
    await dialog.locator("button.btn-done").click()
    await operation.locator(".opblock-summary").click()
    await operation.get_by_role("button", name="Try it out").click()
    await operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    await expect(status).to_have_text(re.compile(r"^\s*200"), timeout=10_000)
    await page.screenshot(path=screenshot_path("docs-swagger-ui"), full_page=False)
    await page.wait_for_load_state("networkidle")

    assert browser.foreign() == [], f"requests that left the gateway: {browser.foreign()}"
    assert any(url.endswith("/swagger-ui-bundle.js") for url in browser.requested)
    assert any(url.endswith("/openapi.json") for url in browser.requested)


async def test_redoc_loads_from_the_gateway(served: LiveGateway, offline: OfflineFactory) -> None:
    browser = await offline(served.url)
    page = await browser.page()
    await page.goto(f"{served.url}/redoc")
    # ReDoc lists the operations in its menu once the document is rendered.
    await expect(page.get_by_role("heading", name="List your jobs")).to_be_visible(timeout=20_000)
    await page.screenshot(path=screenshot_path("docs-redoc"), full_page=False)
    await page.wait_for_load_state("networkidle")  # every request has its outcome

    assert browser.foreign() == [], f"requests that left the gateway: {browser.foreign()}"
    assert any(url.endswith("/redoc.standalone.js") for url in browser.requested)
