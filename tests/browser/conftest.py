"""A real browser for the tests of the gateway's pages: Playwright driving the system's
Chromium (``/usr/bin/chromium``, Debian's package, which ``.ci/run`` installs), never a
browser of Playwright's own download. Without a Chromium binary the tests skip, saying so.

Every page is opened in a context that lets no request leave the gateway: anything addressed
elsewhere is aborted and recorded, so a test sees the page as a machine without internet
does, and can assert that it asked for nothing else. Screenshots go to
``.artifacts/screenshots/`` (printed at the end of the run).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Request, Route, async_playwright

from gateway import Settings
from tests.client.conftest import LiveGateway, free_port
from tests.conftest import ROOT
from tests.support import TEST_CATALOGUE

SCREENSHOTS = ROOT / ".artifacts" / "screenshots"
_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")


def chromium_binary() -> str | None:
    for candidate in _CANDIDATES:
        found = shutil.which(candidate)
        if found is not None:
            return found
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_binary()
    if executable is None:
        pytest.skip("no Chromium binary (apt-get install chromium; .ci/run installs it)")
    async with async_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = await playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Offline:
    """A browser context that reaches only ``origin``; what it asked of others is kept."""

    origin: str
    context: BrowserContext
    requested: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def foreign(self) -> list[str]:
        """What the pages asked of anyone but the gateway. A request the page's own
        Content-Security-Policy stopped in the browser never left it, and does not count."""
        return [
            url
            for url in self.requested
            if _origin(url) != self.origin
            and not url.startswith(("data:", "blob:"))
            and url not in self.blocked
        ]

    async def page(self) -> Page:
        return await self.context.new_page()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


OfflineFactory = Callable[[str], Awaitable[Offline]]


@pytest.fixture
async def offline(browser: Browser) -> AsyncIterator[OfflineFactory]:
    """Contexts (closed at teardown) in which only one origin answers."""
    made: list[BrowserContext] = []

    async def build(origin: str) -> Offline:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        made.append(context)
        seen = Offline(origin=origin, context=context)

        def on_request(request: Request) -> None:
            seen.requested.append(request.url)

        def on_failed(request: Request) -> None:
            if request.failure == "csp":
                seen.blocked.append(request.url)

        async def gate(route: Route) -> None:
            url = route.request.url
            if _origin(url) == origin or url.startswith(("data:", "blob:")):
                await route.continue_()
            else:
                seen.refused.append(url)
                await route.abort("internetdisconnected")

        context.on("request", on_request)
        context.on("requestfailed", on_failed)
        await context.route("**/*", gate)
        return seen

    yield build
    for context in made:
        await context.close()


def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SCREENSHOTS.is_dir():
        shots = sorted(SCREENSHOTS.glob("*.png"))
        if shots:
            terminalreporter.write_line(f"browser screenshots in {SCREENSHOTS}:")
            for shot in shots:
                terminalreporter.write_line(f"  {shot.name}")


@pytest.fixture
async def served(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[LiveGateway]:
    """``sgw serve`` over real HTTP (a browser needs a socket), in the test's namespace."""
    catalogue = tmp_path / "services.yaml"
    catalogue.write_text(TEST_CATALOGUE)
    workdir = tmp_path / "gateway"
    workdir.mkdir()
    gateway = LiveGateway(settings_for(catalogue=catalogue), free_port(), workdir)
    await gateway.start()
    try:
        yield gateway
    finally:
        gateway.kill()
