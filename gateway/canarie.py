"""What the CANARIE monitoring routes say, built from the catalogue and the project.

Every field the CANARIE Research Service / Platform specification lists has a value with zero
configuration: the service's own ``canarie:`` block first, then the catalogue's ``platform:``
block, then the service itself (title, description, version) and the project's defaults
below. Every page that is not configured has a generated one (see :func:`service_page` and
:func:`platform_page`). This module returns plain data; :mod:`gateway.api.canarie` shapes it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from gateway.pages import page_templates
from worker_sdk.wire.canarie import PageName, PageSource, PlatformInfo, parse_page_source
from worker_sdk.wire.catalogue import Catalogue, ServiceSpec

DISTRIBUTION = "service-gateway"
# The version and release time of the gateway itself, reported as the platform's when the
# platform block does not set them. Bump RELEASE_TIME with the version in pyproject.toml.
FALLBACK_VERSION = "0.1.0"
RELEASE_TIME = "2026-11-30T00:00:00Z"
DEFAULT_NAME = "Service Gateway"
DEFAULT_SYNOPSIS = "A job gateway for CPU-heavy research services."
# Neither can be guessed: `sgw check` says so until the platform block sets them.
DEFAULT_INSTITUTION = "Unspecified"
DEFAULT_SUPPORT_EMAIL = ""
DEFAULT_RESEARCH_SUBJECT = "Multi-discipline"  # the specification's value for no one subject
DEFAULT_CATEGORY = "Other"
DEFAULT_TAGS = ("service-gateway",)
# Pages a service without its own takes from the platform block before the generated one.
INHERITED_PAGES = frozenset({"licence", "provenance"})


@dataclass(frozen=True, slots=True)
class Dependency:
    name: str
    version: str
    licence: str


@dataclass(frozen=True, slots=True)
class Project:
    """The gateway's own facts, read from its installed distribution's metadata."""

    name: str
    version: str
    licence: str
    dependencies: tuple[Dependency, ...]


@lru_cache(maxsize=1)
def project() -> Project:
    """The gateway's name, version, licence and runtime dependencies (cached)."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # running from a source tree that was not installed
        return Project(DEFAULT_NAME, FALLBACK_VERSION, "MIT", ())
    dependencies = []
    for requirement in dist.requires or []:
        if "extra ==" in requirement:
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        if match is None:
            continue
        try:
            dependency = metadata.distribution(match.group())
        except metadata.PackageNotFoundError:
            continue
        dependencies.append(
            Dependency(dependency.metadata["Name"], dependency.version, _licence(dependency))
        )
    return Project(DEFAULT_NAME, dist.version, _licence(dist), tuple(dependencies))


def _licence(dist: metadata.Distribution) -> str:
    meta = dist.metadata
    for expression in meta.get_all("License-Expression") or []:
        return str(expression)
    text = str((meta.get_all("License") or [""])[0]).strip()
    if text and "\n" not in text and len(text) <= 60:
        return text
    for classifier in meta.get_all("Classifier") or []:
        if classifier.startswith("License ::"):
            return str(classifier.rsplit("::", 1)[-1].strip())
    return "see the package"


def platform_info(catalogue: Catalogue) -> dict[str, Any]:
    """The eight fields of the CANARIE platform ``info``."""
    meta = catalogue.platform
    return {
        "name": meta.name or DEFAULT_NAME,
        "synopsis": meta.synopsis or DEFAULT_SYNOPSIS,
        "version": project().version,
        "institution": meta.institution or DEFAULT_INSTITUTION,
        "releaseTime": meta.release_time or RELEASE_TIME,
        "researchSubject": meta.research_subject or DEFAULT_RESEARCH_SUBJECT,
        "supportEmail": meta.support_email or DEFAULT_SUPPORT_EMAIL,
        "tags": list(meta.tags or DEFAULT_TAGS),
    }


def service_info(spec: ServiceSpec, catalogue: Catalogue) -> dict[str, Any]:
    """The nine fields of the CANARIE service ``info``."""
    meta, platform = spec.canarie, platform_info(catalogue)
    return {
        "name": meta.name or spec.title,
        "synopsis": meta.synopsis or spec.description or spec.title,
        "version": spec.version,
        "institution": meta.institution or platform["institution"],
        "releaseTime": meta.release_time or platform["releaseTime"],
        "researchSubject": meta.research_subject or platform["researchSubject"],
        "supportEmail": meta.support_email or platform["supportEmail"],
        "category": meta.category or catalogue.platform.category or DEFAULT_CATEGORY,
        "tags": list(meta.tags) or platform["tags"],
    }


def configured_page(
    spec: ServiceSpec | None, page: PageName, platform: PlatformInfo
) -> PageSource | None:
    """The operator's value for a page (the service's, else for licence and provenance the
    platform's), or None when the page is generated."""
    value = spec.canarie.pages.get(page) if spec is not None else platform.pages.get(page)
    if value is None and spec is not None and page in INHERITED_PAGES:
        value = platform.pages.get(page)
    return parse_page_source(value) if value is not None else None


def unset_platform_fields(catalogue: Catalogue) -> list[str]:
    """The platform fields a CANARIE registration needs that still hold a placeholder."""
    meta = catalogue.platform
    return [
        field
        for field, value in (
            ("institution", meta.institution),
            ("supportEmail", meta.support_email),
        )
        if not value
    ]


def page_problems(catalogue: Catalogue, templates: Path | None) -> list[str]:
    """Every configured page naming a template that cannot be loaded from ``templates``
    (missing, not valid Jinja2, or no directory configured)."""
    problems: list[str] = []
    if templates is not None and not templates.is_dir():
        return [f"SG_CANARIE_TEMPLATES: {templates} is not a directory"]
    owners = [("platform", catalogue.platform.pages)]
    owners += [(f"service {spec.id!r}", spec.canarie.pages) for spec in catalogue]
    for owner, pages in owners:
        for page, value in pages.items():
            source = parse_page_source(value)
            if source.kind != "template":
                continue
            if templates is None:
                problems.append(
                    f"{owner}: page {page!r} names the template {source.value!r}, "
                    "but SG_CANARIE_TEMPLATES is not set"
                )
                continue
            why = page_templates(templates).check(source.value)
            if why is not None:
                problems.append(f"{owner}: page {page!r}: {why}")
    return problems


# Generated pages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Links:
    """Where things are, for one gateway root ``base``."""

    base: str
    swagger_execute: str | None  # Swagger UI's deep link to the execute operation
    docs: str | None  # Swagger UI

    def service(self, service_id: str) -> dict[str, str | None]:
        root = f"{self.base}/{service_id}/service"
        links: dict[str, str | None] = {
            page: f"{root}/{page}"
            for page in ("info", "stats", "doc", "releasenotes", "support", "tryme", "licence")
        }
        links |= {
            "provenance": f"{root}/provenance",
            "source": f"{root}/source",
            "process": f"{self.base}/processes/{service_id}",
            "execute": f"{self.base}/processes/{service_id}/execution",
            "legacy_process": f"{self.base}/{service_id}/process",
            "jobs": f"{self.base}/jobs",
            "swagger": self.swagger_execute,
            "docs": self.docs,
        }
        return links

    def platform(self) -> dict[str, str | None]:
        root = f"{self.base}/platform"
        links: dict[str, str | None] = {
            page: f"{root}/{page}"
            for page in ("info", "stats", "doc", "releasenotes", "support", "tryme", "licence")
        }
        links |= {
            "provenance": f"{root}/provenance",
            "factsheet": f"{root}/factsheet",
            "source": f"{root}/source",
            "processes": f"{self.base}/processes",
            "jobs": f"{self.base}/jobs",
            "openapi": f"{self.base}/openapi.json",
            "docs": self.docs,
        }
        return links


def platform_services(catalogue: Catalogue, links: Links) -> list[dict[str, Any]]:
    """Each service with its links, as the platform ``info`` lists them."""
    out = []
    for spec in catalogue:
        own = links.service(spec.id)
        out.append(
            {
                "id": spec.id,
                "name": spec.canarie.name or spec.title,
                "version": spec.version,
                "links": {k: own[k] for k in ("info", "doc", "tryme", "process")},
            }
        )
    return out


def _project_context() -> dict[str, Any]:
    facts = project()
    return {
        "name": facts.name,
        "version": facts.version,
        "licence": facts.licence,
        "release_time": RELEASE_TIME,
        "dependencies": [
            {"name": d.name, "version": d.version, "licence": d.licence} for d in facts.dependencies
        ],
    }


def service_context(spec: ServiceSpec, catalogue: Catalogue, links: Links) -> dict[str, Any]:
    """Plain data about a service for its generated pages and for operator templates."""
    extra = {k: v for k, v in _plain(spec.outputs).items() if k != "description"}
    return {
        "service": {
            "id": spec.id,
            "title": spec.title,
            "description": spec.description,
            "version": spec.version,
            "info": service_info(spec, catalogue),
            "inputs": _plain(spec.inputs),
            "outputs": _plain(spec.outputs),
            "input_rows": input_rows(spec.inputs),
            "open_inputs": spec.inputs.get("additionalProperties", True) is not False,
            "example_inputs": json.dumps(example_inputs(spec.inputs), indent=2),
            "schema_json": json.dumps(_plain(spec.inputs), indent=2),
            "outputs_json": json.dumps(extra, indent=2) if extra else "",
            "policies": {
                "queue_ttl": spec.queue_ttl,
                "time_limit": spec.time_limit,
                "max_attempts": spec.max_attempts,
                "retention": spec.retention,
                "max_queued": spec.max_queued,
                "scopes": list(spec.scopes),
            },
        },
        "platform": platform_info(catalogue),
        "project": _project_context(),
        "links": links.service(spec.id),
        "platform_links": links.platform(),
    }


def platform_context(catalogue: Catalogue, links: Links) -> dict[str, Any]:
    """Plain data about the platform for its generated pages and for operator templates."""
    return {
        "platform": platform_info(catalogue),
        "services": [
            {
                "id": spec.id,
                "title": spec.title,
                "version": spec.version,
                "info": service_info(spec, catalogue),
                "links": links.service(spec.id),
            }
            for spec in catalogue
        ],
        "project": _project_context(),
        "links": links.platform(),
    }


def input_rows(schema: Any) -> list[dict[str, str]]:
    """One row per property of an object JSON Schema: name, type, required, default,
    constraints, description."""
    if not hasattr(schema, "get"):
        return []
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    rows = []
    for name, prop in properties.items():
        prop = prop if hasattr(prop, "get") else {}
        rows.append(
            {
                "name": str(name),
                "type": _type_of(prop),
                "required": "yes" if name in required else "no",
                "default": json.dumps(_plain(prop["default"])) if "default" in prop else "",
                "constraints": ", ".join(
                    f"{key} {json.dumps(_plain(prop[key]))}" for key in _CONSTRAINTS if key in prop
                ),
                "description": str(prop.get("description") or prop.get("title") or ""),
            }
        )
    return rows


_CONSTRAINTS = (
    "enum",
    "const",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minItems",
    "maxItems",
)
_PLACEHOLDERS: dict[str, Any] = {
    "string": "",
    "number": 0,
    "integer": 0,
    "boolean": False,
    "array": [],
    "object": {},
    "null": None,
}


def _type_of(prop: Any) -> str:
    kind = prop.get("type")
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    if kind:
        items = prop.get("items")
        if kind == "array" and hasattr(items, "get") and items.get("type"):
            return f"array of {items['type']}"
        return str(kind)
    for key in ("anyOf", "oneOf"):
        if isinstance(prop.get(key), list):
            return " or ".join(_type_of(p) for p in prop[key] if hasattr(p, "get"))
    if "$ref" in prop:
        return str(prop["$ref"])
    return "any"


def example_inputs(schema: Any) -> dict[str, Any]:
    """A starting point for the inputs: the required properties and those with a default,
    each with its default, first example, const, first enum value or a typed placeholder."""
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    out: dict[str, Any] = {}
    for name, prop in properties.items():
        if not hasattr(prop, "get") or (name not in required and "default" not in prop):
            continue
        if "default" in prop:
            out[name] = _plain(prop["default"])
        elif isinstance(prop.get("examples"), list) and prop["examples"]:
            out[name] = _plain(prop["examples"][0])
        elif "const" in prop:
            out[name] = _plain(prop["const"])
        elif isinstance(prop.get("enum"), list) and prop["enum"]:
            out[name] = _plain(prop["enum"][0])
        else:
            kind = prop.get("type")
            kind = kind[0] if isinstance(kind, list) and kind else kind
            out[name] = _PLACEHOLDERS.get(kind) if isinstance(kind, str) else None
    return out


def _plain(value: Any) -> Any:
    """Mappings and sequences of the frozen catalogue as dicts and lists (JSON-ready)."""
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
