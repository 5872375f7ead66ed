"""The dashboard in a real browser (Chromium, no internet): sign in, submit a job, watch its
progress and result arrive live, dismiss one, follow the list, and the workers page with its
charts. Each page is saved as a screenshot."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import Page, Route, expect

from tests.browser.conftest import OfflineFactory, screenshot_path
from tests.client.conftest import LiveGateway
from tests.workers import crunch
from worker_sdk import Worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

LIVE = 20_000  # ms: a change must reach the page within this, without a reload


async def _submit(page: Page, service: str, inputs: dict[str, object]) -> str:
    """Submit with the list page's form; returns the job id of the page it leads to."""
    await page.goto(page.url.split("/ui/")[0] + "/ui/jobs")
    await page.locator("summary", has_text="Submit a job").click()
    await page.select_option("#submit-service", service)
    await page.fill("#submit-inputs", json.dumps(inputs))
    await page.get_by_role("button", name="Submit", exact=True).click()
    await expect(page).to_have_url(re.compile(r"/ui/jobs/[0-9a-f-]{36}$"))
    return page.url.rsplit("/", 1)[1]


async def test_submit_watch_the_result_dismiss_and_the_workers_page(
    served: LiveGateway,
    offline: OfflineFactory,
    run_worker: Callable[..., asyncio.Task[None]],
    tmp_path: Path,
) -> None:
    worker: Worker = crunch
    run_worker(worker)
    browser = await offline(served.url)
    page = await browser.page()

    # Signing in: any dashboard page leads to the form, and back after.
    await page.goto(f"{served.url}/ui/jobs")
    await expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    await page.screenshot(path=screenshot_path("ui-sign-in"))
    await page.fill("#token", served.token("alice"))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{served.url}/ui/jobs")
    await expect(page.locator("header .who")).to_contain_text("alice")

    # Submit → watch the progress → see the result, all on one page load.
    gate = tmp_path / "gate-1"
    job = await _submit(page, "crunch", {"gate": str(gate), "progress": 40})
    await page.evaluate("window.sgSamePage = true")
    await expect(page.locator("#job-status")).to_have_text("running", timeout=LIVE)
    await expect(page.locator("#job-progress")).to_have_attribute("value", "40", timeout=LIVE)
    await expect(page.locator("#job-timeline")).to_contain_text("started")
    await page.screenshot(path=screenshot_path("ui-job-running"), full_page=True)
    gate.touch()
    await expect(page.locator("#job-status")).to_have_text("successful", timeout=LIVE)
    await expect(page.locator("#job-result")).to_contain_text('"spins"')
    await expect(page.locator("#job-timeline")).to_contain_text("successful")
    await expect(page.locator("#job-inputs")).to_contain_text(str(gate))
    assert await page.evaluate("window.sgSamePage === true"), "the page was reloaded"
    await page.screenshot(path=screenshot_path("ui-job-successful"), full_page=True)

    # Dismiss: a running job is cancelled.
    stuck = await _submit(page, "crunch", {"gate": str(tmp_path / "never"), "progress": 10})
    await expect(page.locator("#job-status")).to_have_text("running", timeout=LIVE)
    await page.get_by_role("button", name="Cancel this job").click()
    await expect(page.locator("#job-status")).to_have_text("dismissed", timeout=LIVE)
    await expect(page.locator("#job-reason")).to_have_text("cancelled")
    await page.screenshot(path=screenshot_path("ui-job-dismissed"), full_page=True)

    # The list follows its active jobs live: a job submitted elsewhere finishes on screen.
    gate = tmp_path / "gate-3"
    async with served.async_client() as client:
        third = await client.submit("crunch", {"gate": str(gate), "progress": 70})
    await page.goto(f"{served.url}/ui/jobs")
    await page.evaluate("window.sgSamePage = true")
    row = page.locator(f"#row-{third.id}")
    await expect(row.locator(".status")).to_have_text("running", timeout=LIVE)
    gate.touch()
    await expect(row.locator(".status")).to_have_text("successful", timeout=LIVE)
    await expect(page.locator(f"#row-{job} .status")).to_have_text("successful")
    await expect(page.locator(f"#row-{stuck} .status")).to_have_text("dismissed")
    assert await page.evaluate("window.sgSamePage === true"), "the page was reloaded"
    await page.select_option("select[name=status]", "dismissed")
    await expect(page.locator(f"#row-{job}")).to_have_count(0)
    await expect(page.locator(f"#row-{stuck}")).to_have_count(1)
    await expect(page).to_have_url(f"{served.url}/ui/jobs?status=dismissed")
    await page.select_option("select[name=status]", "")
    await expect(page.locator(f"#row-{job}")).to_have_count(1)
    await page.screenshot(path=screenshot_path("ui-jobs"), full_page=True)

    # Workers and queues: the crunch queue has its worker; the charts are drawn.
    await page.get_by_role("link", name="Workers & queues").click()
    crunch_row = page.locator('tr[data-service="crunch"] td')
    await expect(crunch_row.nth(2)).to_have_text("1")  # consumers
    await expect(crunch_row.nth(3)).to_have_text("1", timeout=LIVE)  # live workers
    worker_row = page.locator("#workers tr[data-worker]")
    await expect(worker_row).to_have_count(1)
    await expect(worker_row.locator("td").nth(1)).to_have_text("crunch")
    await expect(page.locator("#capacity")).to_have_count(0)  # the capacity figures: admins'
    for chart in ("finished", "wait", "run"):
        await expect(page.locator(f"#chart-{chart} canvas")).to_have_count(1)
    await page.screenshot(path=screenshot_path("ui-workers"), full_page=True)

    await page.wait_for_load_state("networkidle")
    assert browser.foreign() == [], f"requests that left the gateway: {browser.foreign()}"


async def test_a_rendering_older_than_the_streams_last_word_is_fetched_again(
    served: LiveGateway,
    offline: OfflineFactory,
    run_worker: Callable[..., asyncio.Task[None]],
    tmp_path: Path,
) -> None:
    """A change told while the panel's fetch is in flight is fetched by htmx for the element
    the swap replaces: the panel that arrives may be older than the stream's last word. The
    first fetch here is answered as such a panel (its seq one lower, its progress 0) once the
    stream has told the page of the seq it was rendered at; the page must fetch it again."""
    browser = await offline(served.url)
    page = await browser.page()
    await page.goto(f"{served.url}/ui/login")
    await page.fill("#token", served.token("alice"))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{served.url}/ui/jobs")
    gate = tmp_path / "gate-stale"
    await _submit(page, "crunch", {"gate": str(gate), "progress": 40})
    stale: list[int] = []

    async def older(route: Route) -> None:
        if stale:
            await route.continue_()
            return
        answer = await route.fetch()
        body = await answer.text()
        found = re.search(r'data-seq="(\d+)"', body)
        assert found is not None, body
        seq = int(found[1])
        stale.append(seq)
        await page.wait_for_function(
            "seq => Number(document.querySelector('#job-panel').getAttribute('data-seq')) >= seq",
            arg=seq,
        )
        body = body.replace(f'data-seq="{seq}"', f'data-seq="{seq - 1}"', 1)
        body = re.sub(r'(id="job-progress" max="100" value=")\d+', r"\g<1>0", body, count=1)
        await route.fulfill(response=answer, body=body)

    await page.route(re.compile(r"/ui/jobs/[0-9a-f-]{36}/panel$"), older)
    run_worker(crunch)
    await expect(page.locator("#job-progress")).to_have_attribute("value", "40", timeout=LIVE)
    assert stale, "the panel was never fetched"
    gate.write_text("go")
