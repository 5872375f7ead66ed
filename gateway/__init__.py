"""Service Gateway: an asyncio FastAPI job gateway in front of RabbitMQ workers.

``create_app`` and ``Settings`` are imported on first use, so that the commands which need
neither (``sgw worker``, the client commands) start without loading the web application.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.app import create_app
    from gateway.settings import Settings

__all__ = ["Settings", "create_app"]

_LAZY = {"create_app": "gateway.app", "Settings": "gateway.settings"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
