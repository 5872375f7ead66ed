"""The CANARIE metadata of the catalogue: each service's ``canarie:`` block, the ``platform:``
block, and what a page value may be.

A page value (``canarie.pages.<page>`` of a service, ``platform.pages.<page>``) is one of:

- a URL (``http://`` or ``https://``): the page answers 302 to it;
- a template name (``doc.html``, ``notes/1.2.j2``): a file the gateway renders in a sandbox
  (``gateway.pages``);
- ``"text,status"``: that text with that status (``",204"`` is an empty 204);
- any other text: sent as the HTML of the page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

PageName = Literal[
    "doc", "releasenotes", "support", "source", "tryme", "licence", "provenance", "factsheet"
]
PAGE_NAMES: tuple[PageName, ...] = get_args(PageName)

_TEMPLATE_NAME = re.compile(
    r"^(?!.*(?:^|/)\.\.?(?:/|$))[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}\.(?:html?|j2|jinja2?)(?:#.*)?$"
)
_TEXT_STATUS = re.compile(r"^(?P<text>.*),(?P<status>\d{3})$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class PageSource:
    """A configured page value, classified."""

    kind: Literal["redirect", "template", "text"]
    value: str
    status: int = 200


def parse_page_source(value: str) -> PageSource:
    """Classify a page value; raise ``ValueError`` when it cannot be served."""
    if value.startswith(("http://", "https://")):
        return PageSource("redirect", value, 302)
    if _TEMPLATE_NAME.match(value):
        # The old gateway allowed "page.html#anchor"; the anchor means nothing on the server.
        return PageSource("template", value.split("#", 1)[0])
    if "/" in value and value.rsplit(".", 1)[-1] in {"html", "htm", "j2", "jinja", "jinja2"}:
        raise ValueError(f"{value!r} is not a template name inside the templates directory")
    match = _TEXT_STATUS.match(value)
    if match is not None:
        status = int(match["status"])
        if not (200 <= status <= 299 or 400 <= status <= 599):
            raise ValueError(
                f"status {status} of {value!r} is not a success or an error (2xx, 4xx, 5xx); "
                "for a redirect give its http(s) URL"
            )
        return PageSource("text", match["text"], status)
    return PageSource("text", value)


def _release_time(value: object) -> object:
    """ISO 8601 (a date, or a date and time; naive means UTC) to the CANARIE form
    ``YYYY-MM-DDThh:mm:ssZ``. YAML reads unquoted dates as date or datetime objects."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError("not an ISO 8601 date or date and time") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


def _split_tags(value: object) -> object:
    # The old gateway kept tags as one comma-separated string.
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    return value


def _page_value(value: str) -> str:
    parse_page_source(value)
    return value


def _email(value: str) -> str:
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value) or len(value) > 254:
        raise ValueError("not an e-mail address")
    return value


ReleaseTime = Annotated[str, BeforeValidator(_release_time)]
Tags = Annotated[
    tuple[Annotated[str, Field(min_length=1, max_length=100)], ...],
    BeforeValidator(_split_tags),
]
Email = Annotated[str, AfterValidator(_email)]
Pages = Annotated[
    Mapping[PageName, Annotated[str, AfterValidator(_page_value)]],
    Field(
        description="doc, releasenotes, support, source, tryme, licence, provenance, "
        "factsheet: a URL, a template name or 'text,status'."
    ),
]


class CanarieInfo(BaseModel):
    """The CANARIE registry metadata of a service (served by the monitoring routes); what is
    left out comes from the platform block and the service itself."""

    name: str | None = None
    synopsis: str | None = None
    institution: str | None = None
    release_time: ReleaseTime | None = Field(default=None, alias="releaseTime")
    support_email: Email | None = Field(default=None, alias="supportEmail")
    category: str | None = None
    research_subject: str | None = Field(default=None, alias="researchSubject")
    tags: Tags = ()
    pages: Pages = Field(default_factory=dict)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class PlatformInfo(CanarieInfo):
    """The ``platform:`` block: the gateway as a CANARIE platform, and the defaults of its
    services' CANARIE metadata (institution, releaseTime, researchSubject, supportEmail,
    category, tags). Unset fields take the defaults of :mod:`gateway.canarie`."""
