"""Mount the dashboard on the application: its routes, and how its sign-in and CSRF errors
are answered (a page, not a problem document)."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse

from gateway.runtime import public_path
from gateway.ui import monitor, pages
from gateway.ui.session import CsrfRejected, SignInRequired
from gateway.ui.views import render

LOGIN_PATH = "/ui/login"


def _seen_path(request: Request) -> str:
    """The request's path as the browser sent it: under the gateway's public path, whether
    a proxy stripped that prefix or the server's ``root_path`` left it in."""
    path = request.url.path
    root = str(request.scope.get("root_path") or "")
    if root and path.startswith(f"{root}/"):
        path = path[len(root) :]
    return public_path(request) + path


async def _sign_in_required(request: Request, exc: Exception) -> Response:
    """A page redirects to the sign-in form (and back after); htmx is told to go there; an
    event stream gets a bare 401, which stops the browser's reconnecting."""
    assert isinstance(exc, SignInRequired)
    if request.method == "GET":
        back = _seen_path(request) + (f"?{request.url.query}" if request.url.query else "")
    else:  # a form posted after the session ended: back to the page it came from
        referer = urlsplit(request.headers.get("referer", ""))
        back = referer.path + (f"?{referer.query}" if referer.query else "")
    target = f"{public_path(request)}{LOGIN_PATH}?{urlencode({'next': back})}"
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
