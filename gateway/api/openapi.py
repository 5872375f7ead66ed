"""The OpenAPI document: OpenAPI 3.0 (OGC's ``oas30`` class), readable operation ids, and
one execute body per process.

FastAPI writes OpenAPI 3.1 with JSON Schema 2020-12; :mod:`gateway.oas30` turns each schema
position into a 3.0 schema object. The execute operation is one route for every process, so
its body cannot be one pydantic model: each process gets a component ``Execute_<id>`` whose
``inputs`` is the process's own input schema, and the operation's body is any of them, with
an example per process.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from gateway.canarie import example_inputs
from gateway.oas30 import OPENAPI_VERSION, to_oas30
from worker_sdk.wire.catalogue import Catalogue

EXECUTE_PATH = "/processes/{processID}/execution"
GENERIC_BODY = "ExecuteRequest"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def operation_id(route: APIRoute) -> str:
    """An operation id from the handler's name (``service_info_route`` → ``serviceInfo``),
    prefixed ``legacy`` for the old ServiceGateway routes; routes of the OGC API name theirs
    explicitly (``execute``, ``getStatus``, ...)."""
    words = re.sub(r"_route$", "", route.name).split("_")
    name = words[0] + "".join(w.capitalize() for w in words[1:])
    if any("legacy" in str(tag) for tag in route.tags or ()):
        name = "legacy" + name[:1].upper() + name[1:]
    return name


def install(app: FastAPI, catalogue: Catalogue, routes: list[BaseRoute]) -> None:
    """Serve the 3.0 document from ``app.openapi()`` (``/openapi.json``, ``/docs``, ``/api``):
    ``routes`` in the order the document lists them (the app may match them in another)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=OPENAPI_VERSION,
                # 3.0's info has no summary: it leads the description.
                description="\n\n".join(filter(None, [app.summary, app.description])),
                routes=routes,
            )
            _per_process_bodies(document, catalogue)
            app.openapi_schema = downgrade(document)
        return app.openapi_schema

    setter: Callable[[], dict[str, Any]] = build
    app.openapi = setter  # type: ignore[method-assign]  # FastAPI's documented override


def _per_process_bodies(document: dict[str, Any], catalogue: Catalogue) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    generic = schemas.get(GENERIC_BODY)
    operation = document.get("paths", {}).get(EXECUTE_PATH, {}).get("post")
    if generic is None or operation is None:
        return
    choices = []
    examples = {}
    for spec in catalogue:
        name = f"Execute_{spec.id}"
        properties = dict(generic.get("properties", {}))
        properties["inputs"] = {
            **to_oas30(spec.inputs, strict=False),
            "title": f"Inputs of {spec.id}",
            "description": f"The inputs of process `{spec.id}` ({spec.title}).",
        }
        schemas[name] = {
            **generic,
            "title": f"Execute {spec.id}",
            "description": f"An execute request of process `{spec.id}`: POST it to "
            f"`/processes/{spec.id}/execution`.",
            "properties": properties,
        }
        choices.append({"$ref": f"#/components/schemas/{name}"})
        examples[spec.id] = {
            "summary": f"{spec.id}: {spec.title}",
            "value": {"inputs": example_inputs(spec.inputs)},
        }
    content = operation["requestBody"]["content"]["application/json"]
    content["schema"] = {
        "anyOf": choices,
        "description": "The execute request of the process named in the path: see the "
        "`Execute_<processID>` schemas.",
    }
    content["examples"] = examples


def downgrade(document: dict[str, Any]) -> dict[str, Any]:
    """Every schema of an OpenAPI document (components, parameters, bodies, responses) as a
    3.0 schema object."""
    components = document.get("components", {})
    for name, schema in list(components.get("schemas", {}).items()):
        components["schemas"][name] = to_oas30(schema, strict=False)
    for path_item in document.get("paths", {}).values():
        for method in _METHODS:
            operation = path_item.get(method)
            if operation is None:
                continue
            for parameter in operation.get("parameters", []):
                if "schema" in parameter:
                    parameter["schema"] = to_oas30(parameter["schema"], strict=False)
            bodies = [operation.get("requestBody", {})]
            bodies += list(operation.get("responses", {}).values())
            for body in bodies:
                for media in body.get("content", {}).values():
                    if "itemSchema" in media:  # 3.2's event streams: 3.0 has a string
                        media["x-itemSchema"] = to_oas30(media.pop("itemSchema"), strict=False)
                        media.setdefault("schema", {"type": "string"})
                    if "schema" in media:
                        media["schema"] = to_oas30(media["schema"], strict=False)
    return document
