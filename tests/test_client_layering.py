"""The client package stands alone: it imports neither the gateway nor the worker SDK, and it
knows every problem code the gateway answers with."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from gateway import errors
from sgw_client._errors import ApiError, error_class
from tests.test_layering import ROOT, _imports


def test_the_client_imports_neither_the_gateway_nor_the_worker_sdk() -> None:
    files = sorted((ROOT / "sgw_client").glob("**/*.py"))
    assert files
    offenders = [str(f.relative_to(ROOT)) for f in files if _imports(f) & {"gateway", "worker_sdk"}]
    assert offenders == []
    # Nor through a dependency: importing it loads neither.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, sgw_client; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'gateway', 'worker_sdk'}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"


def test_the_client_ships_type_information() -> None:
    assert (ROOT / "sgw_client" / "py.typed").exists()


def test_the_image_copies_every_package_before_installing() -> None:
    """``pip install .`` in the Dockerfile installs what was copied: a package missing there
    would make ``sgw`` fail to import in the image."""
    included = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {p.rstrip("*") for p in included["packages"]["find"]["include"]}
    assert "sgw_client" in packages
    lines = [line.split() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    install = next(i for i, words in enumerate(lines) if words[:3] == ["RUN", "pip", "install"])
    copied = {words[1] for words in lines[:install] if words[:1] == ["COPY"] and len(words) == 3}
    assert packages <= copied


def _subclasses(cls: type[errors.GatewayError]) -> list[type[errors.GatewayError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_each_gateway_error_has_its_client_class() -> None:
    # The dashboard's own errors (sign in, CSRF) are pages of /ui, never a problem document.
    gateway_errors = [
        error
        for error in _subclasses(errors.GatewayError)
        if not error.__module__.startswith("gateway.ui.")
    ]
    assert len(gateway_errors) > 15
    for error in gateway_errors:
        client = error_class(error.status, error.code)
        assert client.__name__ == error.__name__, error.code
        assert issubclass(client, ApiError)
    # The framework's own problems (malformed requests, unknown routes, large bodies).
    assert error_class(400, "invalid-request").__name__ == "BadRequest"
    assert error_class(404, "not-found").__name__ == "NotFound"
    assert error_class(413, "body-too-large").__name__ == "BodyTooLarge"
    assert error_class(429, "a-new-code").__name__ == "TooManyRequests"
    assert error_class(418, "teapot") is ApiError
