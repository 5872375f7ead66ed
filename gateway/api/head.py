"""HEAD beside GET: every resource of the API answers HEAD as its GET, without the body.

FastAPI adds no HEAD to a GET route (Starlette's own routes do), so without this a link
checker's, a monitor's or a cache's HEAD on ``/processes/echo`` fell through to the CANARIE
routes' ``HEAD /{service}/{page}`` and answered 404. The HEAD route is left out of the OpenAPI
document, as the CANARIE routes' are: an operation id names one function's one operation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
# The options of a GET that shape its answer, which its HEAD must answer alike.
_ANSWER = ("response_model", "response_model_exclude_none", "response_class", "dependencies")


def get_and_head(router: APIRouter, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
    """``router.get(path, **options)``, and ``HEAD path`` answered by the same function."""
    head = router.head(
        path, include_in_schema=False, **{k: v for k, v in options.items() if k in _ANSWER}
    )
    get = router.get(path, **options)

    def decorate(endpoint: Endpoint) -> Endpoint:
        return get(head(endpoint))

    return decorate
