"""The API documentation pages: Swagger UI at ``/docs`` and ReDoc at ``/redoc``, served from
the gateway's own copies of their files (FastAPI's defaults load them from a CDN, which a
cluster without internet cannot reach: the page stays blank).

Swagger UI's *Authorize* button takes the bearer token of the document's security scheme;
the authorization is kept across reloads in the browser's local storage
(``persistAuthorization``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse

from gateway.runtime import public_path
from gateway.ui import VENDOR_PATH

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
OPENAPI_PATH = "/openapi.json"

router = APIRouter(include_in_schema=False)

# ReDoc's footer shows Redocly's logo from their CDN, and no option turns it off: the page's
# policy keeps the browser from asking (the image is then left out), and from asking anyone
# but the gateway for anything else. ReDoc writes its styles at run time (styled-components)
# and searches in a worker it builds from a blob.
REDOC_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; "
        "script-src 'self'; "
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; "
        "font-src 'self' data:; "
        "worker-src 'self' blob:; "
        "connect-src 'self'; "
        "base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


@router.get(DOCS_PATH)
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI on this gateway's OpenAPI document, every file from this gateway."""
    root = public_path(request)
    return get_swagger_ui_html(
        openapi_url=f"{root}{OPENAPI_PATH}",
        title=f"{request.app.title} – Swagger UI",
        swagger_js_url=f"{root}{VENDOR_PATH}/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{VENDOR_PATH}/swagger-ui/swagger-ui.css",
        swagger_favicon_url=f"{root}{VENDOR_PATH}/swagger-ui/favicon-32x32.png",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_PATH}",
        # No call to the public validator (validator.swagger.io) from an offline page.
        swagger_ui_parameters={"persistAuthorization": True, "validatorUrl": None},
    )


@router.get(OAUTH2_REDIRECT_PATH)
async def swagger_ui_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page (for identity providers configured by an operator)."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get(REDOC_PATH)
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc on this gateway's OpenAPI document, without web fonts from elsewhere."""
    root = public_path(request)
    page = get_redoc_html(
        openapi_url=f"{root}{OPENAPI_PATH}",
        title=f"{request.app.title} – ReDoc",
        redoc_js_url=f"{root}{VENDOR_PATH}/redoc/redoc.standalone.js",
        redoc_favicon_url=f"{root}{VENDOR_PATH}/swagger-ui/favicon-32x32.png",
        with_google_fonts=False,
    )
    page.headers.update(REDOC_HEADERS)
    return page
