"""HTML responses of the gateway's human pages: one layout (``templates/base.html``), Jinja2's
autoescaping, no external asset, and headers that keep a page from doing more than it shows:
``X-Content-Type-Options: nosniff`` and a Content-Security-Policy that allows only this
response's own inline style and script (by nonce) and requests to this gateway."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.templating import Jinja2Templates

templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")


def new_nonce() -> str:
    """A fresh CSP nonce, for one response."""
    return secrets.token_urlsafe(16)


def security_headers(nonce: str) -> dict[str, str]:
    """The headers of an HTML page whose inline ``<style>``/``<script>`` carry ``nonce``."""
    policy = (
        "default-src 'none'; "
        f"style-src 'nonce-{nonce}'; "
        f"script-src 'nonce-{nonce}'; "
        "connect-src 'self'; "
        "img-src 'self' data:; "
        "form-action 'self'; "
        "base-uri 'none'; "
        "frame-ancestors 'none'"
    )
    return {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff"}


def html_response(
    request: Request, template: str, context: dict[str, Any], *, status_code: int = 200
) -> Response:
    """Render one of the gateway's templates (they extend ``base.html``, which takes
    ``title`` and the ``csp_nonce`` set here)."""
    nonce = new_nonce()
    response: Response = templates.TemplateResponse(
        request,
        template,
        {**context, "csp_nonce": nonce},
        status_code=status_code,
        headers=security_headers(nonce),
    )
    return response
