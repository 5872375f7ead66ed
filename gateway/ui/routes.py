"""Mount the dashboard on the application: its routes, and how its sign-in and CSRF errors
are answered (a page, not a problem document)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse

from gateway.ui import monitor, pages
from gateway.ui.session import CsrfRejected, SignInRequired
from gateway.ui.views import render

LOGIN_PATH = "/ui/login"


async def _sign_in_required(request: Request, exc: Exception) -> Response:
    """A page redirects to the sign-in form (and back after); htmx is told to go there; an
    event stream gets a bare 401, which stops the browser's reconnecting."""
    assert isinstance(exc, SignInRequired)
    if request.method == "GET":
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    else:  # a form posted after the session ended: back to the page it came from
        back = request.headers.get("referer", "/ui/jobs").split(request.url.netloc, 1)[-1]
    target = f"{LOGIN_PATH}?{urlencode({'next': back})}"
    if request.headers.get("hx-request"):
        return Response(status_code=401, headers={"HX-Redirect": target})
    if "text/html" not in request.headers.get("accept", ""):
        return Response(exc.detail, status_code=401, media_type="text/plain")
    return RedirectResponse(target, status_code=303)


async def _csrf_rejected(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CsrfRejected)
    context = {"title": "Form refused", "session": None, "message": exc.detail}
    return render(request, "message.html", context, status_code=exc.status)


def install(app: FastAPI) -> None:
    """The dashboard at ``/ui`` (its static files are mounted by the application)."""
    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.add_exception_handler(CsrfRejected, _csrf_rejected)
    app.include_router(pages.router)
    app.include_router(monitor.router)
