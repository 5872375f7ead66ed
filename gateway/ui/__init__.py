"""The gateway's browser side: the operator dashboard at ``/ui`` and the files it and the API
docs are served from (``/ui/static``, vendored from their packages: see
``static/vendor/VENDOR.md``), so that neither needs the internet."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_PATH = "/ui/static"
VENDOR_PATH = f"{STATIC_PATH}/vendor"
