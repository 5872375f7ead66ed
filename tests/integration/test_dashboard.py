"""The dashboard's sessions, forms and views over HTTP (the browser tests are in
tests/browser): the cookie's flags, CSRF refusals, who sees which jobs, and its fragments."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import pytest

from examples.echo import worker as echo_worker
from gateway.ui.pages import PAGE_SIZE
from tests.conftest import Gateway, GatewayFactory
from tests.integration.test_webhooks import HOOKS
from tests.support import eventually
from tests.webhook_receiver import receiving

pytestmark = pytest.mark.integration

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@asynccontextmanager
async def _signed_in(gateway: Gateway, sub: str, *scopes: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client signed in to the dashboard as ``sub``."""
    async with httpx.AsyncClient(transport=gateway.transport, base_url="http://gw.test") as b:
        yield await _sign_in(b, gateway, sub, *scopes)


async def _sign_in(
    browser: httpx.AsyncClient, gateway: Gateway, sub: str, *scopes: str
) -> httpx.AsyncClient:
    form = await browser.get("/ui/login")
    assert form.status_code == 200
    csrf = _CSRF.search(form.text)
    assert csrf is not None
    answer = await browser.post(
        "/ui/login",
        data={"csrf": csrf.group(1), "token": gateway.token(sub, *scopes), "next": "/ui/jobs"},
        headers={"Origin": "http://gw.test"},
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/jobs"
    return browser


async def _csrf(browser: httpx.AsyncClient, path: str = "/ui/jobs") -> str:
    page = await browser.get(path)
    found = _CSRF.search(page.text)
    assert found is not None, page.text
    return found.group(1)


async def _submit(client: httpx.AsyncClient, text: str) -> str:
    answer = await client.post(
        "/processes/echo/execution", json={"inputs": {"text": text, "delay": 30}}
    )
    assert answer.status_code == 201, answer.text
    job_id: str = answer.json()["jobID"]
    return job_id


async def test_the_session_cookie_is_httponly_strict_and_scoped(gateway: Gateway) -> None:
    browser = httpx.AsyncClient(transport=gateway.transport, base_url="http://gw.test")
    async with browser:
        form = await browser.get("/ui/login")
        csrf = _CSRF.search(form.text)
        assert csrf is not None
        answer = await browser.post(
            "/ui/login", data={"csrf": csrf.group(1), "token": gateway.token("alice")}
        )
        assert answer.status_code == 303
        cookies = answer.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("sg_session="))
        flags = {part.strip().lower() for part in session.split(";")}
        assert {"httponly", "samesite=strict", "path=/ui"} <= flags
        (max_age,) = (int(f.split("=")[1]) for f in flags if f.startswith("max-age="))
        # It ends with the token, both ways a browser reads it.
        (expires,) = (f.split("=", 1)[1] for f in flags if f.startswith("expires="))
        left = (parsedate_to_datetime(expires) - datetime.now(UTC)).total_seconds()
        assert abs(left - max_age) < 60, (expires, max_age)
        csrf_cookie = form.headers.get_list("set-cookie")
        assert any(
            "sg_csrf=" in c and "HttpOnly" in c and "SameSite=strict" in c for c in csrf_cookie
        )


async def test_a_user_sees_only_their_jobs_and_an_admin_everyones(gateway: Gateway) -> None:
    async with gateway.as_user("bob") as bob_api:
        alices = await _submit(gateway.client, "from alice")
        bobs = await _submit(bob_api, "from bob")
    admin_scope = gateway.runtime.settings.admin_scope
    async with _signed_in(gateway, "bob") as bob, _signed_in(gateway, "root", admin_scope) as admin:
        page = (await bob.get("/ui/jobs")).text
        assert bobs in page
        assert alices not in page
        assert (await bob.get(f"/ui/jobs/{alices}")).status_code == 404
        assert (await bob.get(f"/ui/jobs/{bobs}")).status_code == 200
        # A user's owner filter is ignored: still their own jobs only.
        assert alices not in (await bob.get("/ui/jobs/table", params={"owner": "alice"})).text

        everyone = (await admin.get("/ui/jobs")).text
        assert bobs in everyone
        assert alices in everyone
        only_alice = (await admin.get("/ui/jobs/table", params={"owner": "alice"})).text
        assert alices in only_alice
        assert bobs not in only_alice
        page = (await admin.get(f"/ui/jobs/{alices}")).text
        assert "from alice" in page  # the inputs


async def test_forms_need_the_csrf_token_and_the_gateways_origin(gateway: Gateway) -> None:
    async with gateway.as_user("alice") as api:
        job = await _submit(api, "keep me")
    async with _signed_in(gateway, "alice") as browser:
        csrf = await _csrf(browser, f"/ui/jobs/{job}")
        refused = await browser.post(f"/ui/jobs/{job}/dismiss", data={})
        assert refused.status_code == 403
        wrong = await browser.post(f"/ui/jobs/{job}/dismiss", data={"csrf": "x" * 43})
        assert wrong.status_code == 403
        foreign = await browser.post(
            f"/ui/jobs/{job}/dismiss",
            data={"csrf": csrf},
            headers={"Origin": "https://evil.example"},
        )
        assert foreign.status_code == 403
        cross_site = await browser.post(
            f"/ui/jobs/{job}/dismiss", data={"csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert cross_site.status_code == 403
        status = await gateway.client.get(f"/jobs/{job}")
        assert status.json()["status"] == "accepted"  # none of them dismissed it

        done = await browser.post(
            f"/ui/jobs/{job}/dismiss", data={"csrf": csrf}, headers={"Origin": "http://gw.test"}
        )
        assert done.status_code == 303
        status = await gateway.client.get(f"/jobs/{job}")
        assert status.json()["status"] == "dismissed"


async def test_without_a_session_pages_lead_to_the_sign_in_form(gateway: Gateway) -> None:
    async with httpx.AsyncClient(transport=gateway.transport, base_url="http://gw.test") as anon:
        page = await anon.get("/ui/workers", headers={"Accept": "text/html"})
        assert page.status_code == 303
        assert page.headers["location"] == "/ui/login?next=%2Fui%2Fworkers"
        fragment = await anon.get("/ui/jobs/table", headers={"HX-Request": "true"})
        assert fragment.status_code == 401
        assert fragment.headers["HX-Redirect"].startswith("/ui/login")
        stream = await anon.get(
            "/ui/events", params={"job": "00000000-0000-4000-8000-000000000000"}
        )
        assert stream.status_code == 401

        form = await anon.get("/ui/login")
        csrf = _CSRF.search(form.text)
        assert csrf is not None
        bad = await anon.post("/ui/login", data={"csrf": csrf.group(1), "token": "not.a.jwt"})
        assert bad.status_code == 401
        assert "invalid token" in bad.text
        assert "sg_session" not in bad.headers.get("set-cookie", "")
        # The sign-in form leads back only to the dashboard.
        for elsewhere in (
            "https://evil.example/",
            "//evil.example/ui",
            "/uiother",
            "/ui/../admin",
            "/ui/%2e%2e/admin",
            "/ui/.%2E/%2e/admin",
            "/ui\\..\\admin",
        ):
            page = await anon.get("/ui/login", params={"next": elsewhere})
            assert 'name="next" value="/ui/jobs"' in page.text, elsewhere
        kept = await anon.get("/ui/login", params={"next": "/ui/jobs?status=failed"})
        assert 'name="next" value="/ui/jobs?status=failed"' in kept.text


async def test_pages_allow_only_the_gateways_own_files(gateway: Gateway) -> None:
    async with _signed_in(gateway, "alice") as browser:
        for path in ("/ui/jobs", "/ui/workers"):
            page = await browser.get(path)
            assert page.status_code == 200
            policy = page.headers["content-security-policy"]
            assert "script-src 'self';" in policy
            assert "unsafe" not in policy
            assert "<script>" not in page.text  # no inline script
            assert not re.search(r"""(src|href)="(https?:)?//""", page.text), path
        series = await browser.get("/ui/workers/series")
        assert series.status_code == 200
        assert len(series.json()["t"]) == 60


async def test_the_list_pages_with_the_stores_keyset_cursor(gateway: Gateway) -> None:
    made = [await _submit(gateway.client, f"job {i}") for i in range(PAGE_SIZE + 2)]
    async with _signed_in(gateway, "alice") as browser:
        first = (await browser.get("/ui/jobs", params={"service": "echo"})).text
        older = re.search(r'href="/ui/jobs\?([^"]+)" rel="next"', first)
        assert older is not None
        second = (await browser.get(f"/ui/jobs?{older.group(1).replace('&amp;', '&')}")).text
    shown_first = [job for job in made if job in first]
    shown_second = [job for job in made if job in second]
    assert len(shown_first) == PAGE_SIZE
    assert sorted(shown_second) == sorted(made[:2])  # the oldest two, newest first
    assert 'rel="next"' not in second


async def test_a_refused_submission_shows_why_on_the_form(gateway: Gateway) -> None:
    async with _signed_in(gateway, "alice") as browser:
        csrf = await _csrf(browser)
        bad = await browser.post(
            "/ui/jobs",
            data={"csrf": csrf, "service": "echo", "inputs": '{"delay": -1}'},
            headers={"Origin": "http://gw.test"},
        )
        assert bad.status_code == 422
        assert 'role="alert"' in bad.text
        assert "delay" in bad.text
        not_json = await browser.post(
            "/ui/jobs",
            data={"csrf": csrf, "service": "echo", "inputs": "{nope"},
            headers={"Origin": "http://gw.test"},
        )
        assert not_json.status_code == 400
        assert "not JSON" in not_json.text
        for beyond in ("[" * 20_000 + "]" * 20_000, '{"x": ' + "9" * 5000 + "}"):
            refused = await browser.post(
                "/ui/jobs",
                data={"csrf": csrf, "service": "echo", "inputs": beyond},
                headers={"Origin": "http://gw.test"},
            )
            assert refused.status_code == 400, refused.text[:200]  # was a 500
            assert "not JSON" in refused.text
        good = await browser.post(
            "/ui/jobs",
            data={"csrf": csrf, "service": "echo", "inputs": '{"text": "hi"}'},
            headers={"Origin": "http://gw.test"},
        )
        assert good.status_code == 303
        job = good.headers["location"].rsplit("/", 1)[1]
    status = await gateway.client.get(f"/jobs/{job}")
    assert status.json()["processID"] == "echo"


async def test_a_session_ends_with_its_token(gateway: Gateway) -> None:
    expired = gateway.token("alice", lifetime=-60)
    async with httpx.AsyncClient(transport=gateway.transport, base_url="http://gw.test") as b:
        b.cookies.set("sg_session", expired, domain="gw.test", path="/ui")
        page = await b.get("/ui/jobs", headers={"Accept": "text/html"})
        assert page.status_code == 303
        assert page.headers["location"].startswith("/ui/login")
        b.cookies.set("sg_session", gateway.token("alice"), domain="gw.test", path="/ui")
        assert (await b.get("/ui/jobs")).status_code == 200


async def test_a_jobs_page_shows_its_webhook_deliveries(
    gateway_factory: GatewayFactory, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    gateway = await gateway_factory(**HOOKS)
    run_worker(echo_worker)
    with receiving() as receiver:
        answer = await gateway.client.post(
            "/processes/echo/execution",
            json={"inputs": {"text": "hi"}, "subscriber": {"successUri": f"{receiver.url}/done"}},
        )
        assert answer.status_code == 201, answer.text
        job = answer.json()["jobID"]

        async def delivered() -> bool:
            hooks = (await gateway.client.get(f"/jobs/{job}/webhooks")).json()["webhooks"]
            return any(h["state"] == "delivered" for h in hooks)

        await eventually(delivered, within=30, what="the webhook delivered")
    async with _signed_in(gateway, "alice") as browser:
        page = (await browser.get(f"/ui/jobs/{job}")).text
    table = page[page.index('id="job-webhooks"') :]
    assert "job.successful" in table
    assert f"{receiver.url}/done" in table
    assert "HTTP 204" in table
    assert "delivered 20" in table  # delivered <when>


async def test_the_workers_page_shows_capacity_to_admins_and_waiting_jobs_their_wait(
    gateway: Gateway,
) -> None:
    job = await _submit(gateway.client, "nobody serves echo here")
    admin_scope = gateway.runtime.settings.admin_scope
    async with (
        _signed_in(gateway, "alice") as user,
        _signed_in(gateway, "root", admin_scope) as admin,
    ):
        page = (await user.get(f"/ui/jobs/{job}")).text
        assert "No live worker of echo" in page
        mine = (await user.get("/ui/workers")).text
        assert 'id="no-workers"' in mine
        assert 'id="capacity"' not in mine
        everyone = (await admin.get("/ui/workers/table")).text
        assert 'id="capacity"' in everyone
        assert 'data-capacity="echo"' in everyone


async def test_the_workers_table_names_a_running_job_to_its_owner_and_admins_only(
    gateway: Gateway, run_worker: Callable[..., asyncio.Task[None]]
) -> None:
    run_worker(echo_worker)
    job = await _submit(gateway.client, "alice's long job")  # runs 30 s unless cancelled
    link = f'href="/ui/jobs/{job}"'
    async with (
        _signed_in(gateway, "alice") as alice,
        _signed_in(gateway, "bob") as bob,
        _signed_in(gateway, "root", gateway.runtime.settings.admin_scope) as admin,
    ):

        async def running_it() -> str | None:
            table = (await alice.get("/ui/workers/table")).text
            return table if link in table else None

        await eventually(running_it, what="alice's job in the workers table")
        assert link in (await admin.get("/ui/workers/table")).text
        others = (await bob.get("/ui/workers/table")).text
        assert job[:8] not in others
        assert "1 job<" in others  # counted, not named
    assert (await gateway.client.delete(f"/jobs/{job}")).status_code == 200


async def test_a_form_posted_after_the_session_ended_leads_to_the_sign_in_form(
    gateway: Gateway,
) -> None:
    job = await _submit(gateway.client, "still mine")
    async with _signed_in(gateway, "alice") as browser:
        csrf = await _csrf(browser, f"/ui/jobs/{job}")
        browser.cookies.delete("sg_session", domain="gw.test", path="/ui")
        answer = await browser.post(
            f"/ui/jobs/{job}/dismiss",
            data={"csrf": csrf},
            headers={"Accept": "text/html", "Referer": f"http://gw.test/ui/jobs/{job}"},
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/ui/login?next=%2Fui%2Fjobs%2F{job}"
    assert (await gateway.client.get(f"/jobs/{job}")).json()["status"] == "accepted"


async def test_a_job_panel_refreshed_after_the_csrf_cookie_expired_keeps_its_form_working(
    gateway: Gateway,
) -> None:
    """The CSRF cookie lives 12 hours, a session as long as its token: a job's page left open
    past it gets its dismiss button from the panel's refresh, which must set the cookie its
    new token needs."""
    job = await _submit(gateway.client, "left open")
    async with _signed_in(gateway, "alice") as browser:
        await browser.get(f"/ui/jobs/{job}")
        browser.cookies.delete("sg_csrf", path="/ui")  # it expired
        panel = await browser.get(f"/ui/jobs/{job}/panel", headers={"HX-Request": "true"})
        found = _CSRF.search(panel.text)
        assert found is not None, panel.text
        done = await browser.post(
            f"/ui/jobs/{job}/dismiss",
            data={"csrf": found.group(1)},
            headers={"Origin": "http://gw.test"},
        )
        assert done.status_code == 303, done.text
