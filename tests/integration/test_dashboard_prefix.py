"""The dashboard and the API docs behind a reverse proxy that serves the gateway under a path,
``https://host/gw/...``: forwarded with ``/gw`` stripped and ``SG_PUBLIC_URL=https://host/gw``,
or forwarded whole to a server told its ``root_path``. Every link, form, script, redirect and
cookie the browser gets names a path under ``/gw``, and every one of them answers."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.conftest import GatewayFactory

pytestmark = pytest.mark.integration

PREFIX = "/gw"
# Every path a page names, in the attributes the dashboard's templates use.
_LINKS = re.compile(r'(href|src|action|hx-get|data-series|data-root)="([^"]*)"')
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _proxy(app: ASGIApp, *, strip: bool) -> ASGIApp:
    """What the proxy and the server do: ``/gw/x`` reaches the gateway as ``/x`` (``strip``),
    or as ``/gw/x`` with the ``root_path`` ``/gw`` (as ``uvicorn --root-path /gw`` passes it
    on); anything else is the proxy's own 404."""

    async def forward(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(f"{PREFIX}/"):
            if scope["type"] == "http" and strip:
                inner = path[len(PREFIX) :]
                scope = {**scope, "path": inner, "raw_path": inner.encode()}
            elif scope["type"] == "http":
                scope = {**scope, "root_path": PREFIX}
            await app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not the gateway's"})

    return forward


def _paths(page: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for attribute, value in _LINKS.findall(page):
        found.setdefault(attribute, set()).add(value.replace("&amp;", "&"))
    return found


@pytest.mark.parametrize("told_by", ["public_url", "root_path"])
async def test_the_dashboard_and_docs_work_under_the_proxys_path(
    gateway_factory: GatewayFactory, told_by: str
) -> None:
    public = {"public_url": f"http://gw.test{PREFIX}"} if told_by == "public_url" else {}
    gateway = await gateway_factory(**public)
    proxy = _proxy(gateway.transport.app, strip=told_by == "public_url")
    transport = httpx.ASGITransport(app=proxy)
    html = {"Accept": "text/html"}
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as browser:
        # A page asked for without a session leads to the form, and back to it after.
        first = await browser.get(f"{PREFIX}/ui/workers", headers=html)
        assert first.status_code == 303
        assert first.headers["location"] == f"{PREFIX}/ui/login?next=%2Fgw%2Fui%2Fworkers"
        form = await browser.get(first.headers["location"])
        assert form.status_code == 200
        assert _paths(form.text)["action"] == {f"{PREFIX}/ui/login"}
        assert f'value="{PREFIX}/ui/workers"' in form.text  # the page to go back to
        csrf = _CSRF.search(form.text)
        assert csrf is not None
        signed = await browser.post(
            f"{PREFIX}/ui/login",
            data={
                "csrf": csrf.group(1),
                "token": gateway.token("alice"),
                "next": f"{PREFIX}/ui/workers",
            },
            headers={"Origin": "http://gw.test"},
        )
        assert signed.status_code == 303, signed.text
        assert signed.headers["location"] == f"{PREFIX}/ui/workers"
        cookies = signed.headers.get_list("set-cookie") + form.headers.get_list("set-cookie")
        assert {c.split("=")[0] for c in cookies} == {"sg_session", "sg_csrf"}
        assert all(f"path={PREFIX}/ui" in c.lower() for c in cookies), cookies
        # A next page outside the dashboard is never followed, even under the prefix.
        assert (await browser.get(f"{PREFIX}/ui/login?next=/gw/jobs")).text.count(
            f'value="{PREFIX}/ui/jobs"'
        ) == 1

        # A job submitted with the list page's form leads to its page.
        listing = await browser.get(f"{PREFIX}/ui/jobs")
        token = _CSRF.search(listing.text)
        assert token is not None
        submitted = await browser.post(
            f"{PREFIX}/ui/jobs",
            data={"csrf": token.group(1), "service": "echo", "inputs": '{"text": "hi"}'},
            headers={"Origin": "http://gw.test"},
        )
        assert submitted.status_code == 303, submitted.text
        job_page = submitted.headers["location"]
        assert re.fullmatch(rf"{PREFIX}/ui/jobs/[0-9a-f-]{{36}}", job_page), job_page

        # Every path the pages name is under the prefix, and every one a browser fetches
        # answers (forms are posted, not fetched).
        fetched: set[str] = set()
        for page in (f"{PREFIX}/ui/jobs", f"{PREFIX}/ui/workers", job_page, f"{PREFIX}/docs"):
            answer = await browser.get(page)
            assert answer.status_code == 200, (page, answer.text)
            paths = _paths(answer.text)
            named = set().union(*paths.values())
            outside = {p for p in named if p.startswith("/") and not p.startswith(f"{PREFIX}/")}
            assert outside <= {PREFIX}, (page, outside)  # data-root is the prefix itself
            for attribute in ("href", "src", "hx-get", "data-series"):
                fetched |= {p for p in paths.get(attribute, set()) if p.startswith("/")}
            if page.startswith(f"{PREFIX}/ui"):
                assert paths["data-root"] == {PREFIX}  # where ui.js opens its event stream
        assert f"{PREFIX}/ui/static/ui.js" in fetched
        assert f"{PREFIX}/docs" in fetched
        for path in sorted(fetched):
            answer = await browser.get(path)
            assert answer.status_code == 200, (path, answer.status_code)
        swagger = (await browser.get(f"{PREFIX}/docs")).text
        assert f"'{PREFIX}/openapi.json'" in swagger
        assert (await browser.get(f"{PREFIX}/openapi.json")).json()["openapi"].startswith("3.")

        # A form posted once the session is gone goes to the form, and back to its page.
        out_token = _CSRF.search((await browser.get(job_page)).text)
        assert out_token is not None
        out = await browser.post(
            f"{PREFIX}/ui/logout",
            data={"csrf": out_token.group(1)},
            headers={"Origin": "http://gw.test"},
        )
        assert out.status_code == 303
        assert out.headers["location"] == f"{PREFIX}/ui/login"
        assert f"path={PREFIX}/ui" in out.headers["set-cookie"].lower()
        browser.cookies.delete("sg_session")
        late = await browser.post(
            f"{job_page}/dismiss",
            data={"csrf": out_token.group(1)},
            headers={"Origin": "http://gw.test", "Referer": f"http://gw.test{job_page}", **html},
        )
        assert late.status_code == 303
        assert late.headers["location"].startswith(f"{PREFIX}/ui/login?next=%2Fgw%2Fui%2Fjobs%2F")
