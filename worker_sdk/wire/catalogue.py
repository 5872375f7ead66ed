"""The services catalogue (``services.yaml``): parsed once at start into frozen models.

A broken file fails with :class:`CatalogueError`, whose lines each name the service, the field
and the line of the file that is wrong.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from .canarie import CanarieInfo, PlatformInfo
from .schema_loops import in_place_loop
from .topology import DEFAULT_DELIVERY_LIMIT, TaskQueueOptions

DEFAULT_RETENTION = 7 * 86400
DEFAULT_MAX_RESULT_BYTES = 8 * 1024 * 1024
MAX_MESSAGE_BYTES_CEILING = 512 * 1024 * 1024  # RabbitMQ's own ceiling for max_message_size
SERVICE_ID_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
# The first path segments of the gateway's own routes: a service of one of these names would
# lose its old and CANARIE routes (/{service}/status, /{service}/service/info) to them.
RESERVED_SERVICE_IDS = frozenset(
    {
        "api",
        "capacity",
        "conformance",
        "docs",
        "healthz",
        "jobs",
        "metrics",
        "platform",
        "processes",
        "readyz",
        "redoc",
        "service",
        "ui",
        "workers",
    }
)
MIN_MEMORY_LIMIT = 16 * 1024 * 1024  # below an idle interpreter's own: every job would fail


class CatalogueError(ValueError):
    """The catalogue cannot be used; ``problems`` holds one line per defect."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class _SchemaProblem(ValueError):
    """An invalid input schema, with the path of the defect inside the schema."""

    def __init__(self, message: str, path: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.path = path


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


DEFAULT_OUTPUT = "result"
OUTPUT_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"


class OutputSpec(_Frozen):
    """One output of a service, in the OGC form of ``outputs``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    title: str | None = None
    description: str = ""
    value_schema: Mapping[str, Any] = Field(
        alias="schema", description="JSON Schema (2020-12) of the output's value."
    )
    media_type: str = Field(default="application/json", alias="mediaType")

    @field_validator("value_schema")
    @classmethod
    def _valid_schema(cls, value: Mapping[str, Any]) -> Mapping[str, Any]:
        _check_schema(value)
        return value

    @field_validator("media_type")
    @classmethod
    def _json_only(cls, value: str) -> str:
        # Results travel as JSON from the worker: no other encoding can be served as it is.
        if value != "application/json":
            raise ValueError("only application/json outputs can be served")
        return value


def _check_schema(value: Mapping[str, Any]) -> None:
    try:
        Draft202012Validator.check_schema(dict(value))
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        raise _SchemaProblem(
            f"not a valid JSON Schema at {where}: {exc.message}", tuple(exc.path)
        ) from exc
    loop = in_place_loop(value)
    if loop is not None:
        where = "/".join(loop) or "(root)"
        raise _SchemaProblem(
            f"the schema at {where} applies itself to its own value again ($ref, allOf, "
            "anyOf, ...) without descending into a member or an item: no value's "
            "validation would end",
            loop,
        )


def _is_output_map(outputs: Mapping[str, Any]) -> bool:
    """The OGC form (ids to descriptions that each have a ``schema``), as opposed to the
    free form (a description, or a JSON Schema, of the one result)."""
    return bool(outputs) and all(isinstance(o, Mapping) and "schema" in o for o in outputs.values())


class ServiceSpec(_Frozen):
    """One service of the catalogue."""

    id: str = Field(pattern=SERVICE_ID_PATTERN)
    title: str
    description: str = ""
    version: str
    inputs: Mapping[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        description="JSON Schema (2020-12) of the inputs object.",
    )
    outputs: Mapping[str, Any] = Field(
        default_factory=dict,
        description="Either the outputs by id, each with title, description and schema (the "
        "OGC form), or a description (or JSON Schema) of the one result, output "
        f"{DEFAULT_OUTPUT!r}.",
    )
    sync_execute: bool | None = Field(
        default=None,
        description="Offer OGC synchronous execution (the request waits for the result). "
        "Unset: offered when time_limit is set and at most SG_MAX_WAIT.",
    )
    queue_ttl: float = Field(
        default=7200, gt=0, description="Seconds a task may wait for a worker before it expires."
    )
    time_limit: float | None = Field(default=None, gt=0, description="Seconds a run may take.")
    memory_limit: ByteSize | None = Field(
        default=None,
        ge=MIN_MEMORY_LIMIT,
        description="Memory a job's child process may hold (process handlers), in bytes or "
        "with a unit (512MiB, 2GB): its heap and private memory, the interpreter's own "
        "included. A job that needs more fails with reason memory_limit.",
    )
    cpu_time_limit: float | None = Field(
        default=None,
        gt=0,
        le=366 * 86400,
        description="CPU seconds a job may use (process handlers; counted in whole seconds). "
        "A job that uses more is stopped and fails with reason cpu_time_limit.",
    )
    target_wait: float | None = Field(
        default=None,
        gt=0,
        description="Seconds a job should wait for a worker at most: the capacity API says "
        "how many workers keep the predicted wait within it.",
    )
    max_attempts: int = Field(default=1, ge=1, le=100, description="Retries included.")
    delivery_limit: int = Field(
        default=DEFAULT_DELIVERY_LIMIT,
        ge=1,
        le=1000,
        description="Redeliveries (worker crashes) before the task is dead-lettered.",
    )
    max_queued: int | None = Field(
        default=None, ge=1, description="Backlog bound: submissions past it get 429."
    )
    priority: int | None = Field(
        default=None,
        ge=0,
        le=9,
        description="AMQP priority set on this service's tasks (honoured by RabbitMQ 4 "
        "quorum queues: 5 and above is high; ignored by 3.x).",
    )
    max_result_bytes: int = Field(
        default=DEFAULT_MAX_RESULT_BYTES,
        ge=1,
        le=MAX_MESSAGE_BYTES_CEILING,
        description="Largest result (as JSON) a job may return; a larger one fails the job "
        "with reason result_too_large instead of reaching the broker.",
    )
    retention: float = Field(
        default=DEFAULT_RETENTION,
        gt=0,
        description="Seconds a finished job and its result are kept; then they are purged "
        "and the job id answers 410.",
    )
    noparams: bool = Field(
        default=False, description="The old process route may be called without doc_url."
    )
    scopes: tuple[str, ...] = Field(
        default=(), description="Token scopes a caller needs to submit to this service."
    )
    canarie: CanarieInfo = Field(default_factory=CanarieInfo)

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_SERVICE_IDS:
            raise ValueError(f"{value!r} is a path of the gateway's own: choose another id")
        return value

    @field_validator("inputs")
    @classmethod
    def _valid_schema(cls, value: Mapping[str, Any]) -> Mapping[str, Any]:
        _check_schema(value)
        if value.get("type", "object") != "object":
            raise ValueError("the inputs schema must describe an object")
        return value

    @field_validator("outputs")
    @classmethod
    def _valid_outputs(cls, value: Mapping[str, Any]) -> Mapping[str, Any]:
        if _is_output_map(value):
            for output_id, output in value.items():
                if not re.fullmatch(OUTPUT_ID_PATTERN, str(output_id)):
                    raise ValueError(f"output id {output_id!r} does not match {OUTPUT_ID_PATTERN}")
                OutputSpec.model_validate(output)
        return value

    @cached_property
    def output_specs(self) -> Mapping[str, OutputSpec]:
        """The outputs by id: those of the OGC form, else one, ``result``, described by the
        free form (its ``description``, and its schema when it is one). Built once per spec:
        each build checks every output schema, which cost a submission more than its own
        inputs' validation."""
        if _is_output_map(self.outputs):
            return MappingProxyType(
                {k: OutputSpec.model_validate(v) for k, v in self.outputs.items()}
            )
        free = dict(self.outputs)
        description = free.pop("description", "")
        schema: Mapping[str, Any] = free if _is_schema(free) else {}
        only = OutputSpec(title=self.title, description=str(description), value_schema=schema)
        return MappingProxyType({DEFAULT_OUTPUT: only})

    def sync_capable(self, max_wait: float) -> bool:
        """Whether the process offers synchronous execution: as configured, else when its
        runs are bounded by a time limit that fits the gateway's longest wait."""
        if self.sync_execute is not None:
            return self.sync_execute
        return self.time_limit is not None and self.time_limit <= max_wait

    @property
    def inputs_digest(self) -> str:
        """A digest of the inputs schema (its canonical JSON), naming the schema a generated
        inputs model was made from."""
        canonical = json.dumps(self.inputs, sort_keys=True, separators=(",", ":"), default=list)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def queue_options(self) -> TaskQueueOptions:
        return TaskQueueOptions(delivery_limit=self.delivery_limit, max_length=self.max_queued)


_SCHEMA_KEYWORDS = frozenset(
    {"type", "properties", "items", "enum", "const", "$ref", "allOf", "anyOf", "oneOf"}
)


def _is_schema(free: Mapping[str, Any]) -> bool:
    if not _SCHEMA_KEYWORDS & set(free):
        return False
    try:
        Draft202012Validator.check_schema(dict(free))
    except SchemaError:
        return False
    return True


class Catalogue:
    """The frozen set of services, looked up by id."""

    def __init__(
        self,
        services: list[ServiceSpec],
        platform: PlatformInfo | None = None,
        *,
        source: str = "<catalogue>",
    ) -> None:
        self._services = {s.id: s for s in services}
        self.platform = platform if platform is not None else PlatformInfo()
        self.source = source

    def __iter__(self) -> Iterator[ServiceSpec]:
        return iter(self._services.values())

    def __len__(self) -> int:
        return len(self._services)

    def get(self, service_id: str) -> ServiceSpec | None:
        return self._services.get(service_id)

    def retention(self, service_id: str) -> timedelta:
        """How long a finished job of the service is kept (the default for unknown ones)."""
        spec = self._services.get(service_id)
        return timedelta(seconds=spec.retention if spec is not None else DEFAULT_RETENTION)


class _Document(_Frozen):
    services: Mapping[str, Mapping[str, Any]]
    platform: Mapping[str, Any] | None = None


def load_catalogue(path: Path) -> Catalogue:
    """Read and validate ``path``; raise :class:`CatalogueError` naming every defect."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogueError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    return parse_catalogue(text, source=str(path))


def parse_catalogue(text: str, *, source: str = "<catalogue>") -> Catalogue:
    """Parse catalogue YAML text (see :func:`load_catalogue`)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogueError(source, [f"not valid YAML: {exc}"]) from exc
    lines = _line_index(node) if node is not None else {}

    def where(loc: tuple[str | int, ...]) -> str:
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in lines:
                return f"line {lines[loc[:cut]]}"
        return "line ?"

    try:
        document = _Document.model_validate(raw)
    except ValidationError as exc:
        raise CatalogueError(source, _describe(exc, (), where)) from exc

    problems: list[str] = []
    services: list[ServiceSpec] = []
    for key, body in document.services.items():
        try:
            services.append(ServiceSpec.model_validate({**body, "id": key}))
        except ValidationError as exc:
            problems.extend(
                f"service {key!r}: {p}" for p in _describe(exc, ("services", key), where)
            )
    if not document.services:
        problems.append("no services are declared under 'services'")
    platform = None
    try:
        platform = PlatformInfo.model_validate(document.platform or {})
    except ValidationError as exc:
        problems.extend(f"platform: {p}" for p in _describe(exc, ("platform",), where))
    if problems:
        raise CatalogueError(source, problems)
    return Catalogue(services, platform, source=source)


def _describe(exc: ValidationError, prefix: tuple[str | int, ...], where: Any) -> list[str]:
    out = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        field = ".".join(str(p) for p in loc) or "(top level)"
        cause = error.get("ctx", {}).get("error")
        inner = cause.path if isinstance(cause, _SchemaProblem) else ()
        out.append(f"{where(prefix + loc + inner)}: field {field!r}: {error['msg']}")
    return out


def _line_index(node: yaml.Node) -> dict[tuple[str | int, ...], int]:
    """Map every path of the YAML tree to the (1-based) line where its value starts."""
    index: dict[tuple[str | int, ...], int] = {}

    def walk(n: yaml.Node, path: tuple[str | int, ...]) -> None:
        index[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for key_node, value_node in n.value:
                key = key_node.value
                index[(*path, key)] = key_node.start_mark.line + 1
                walk(value_node, (*path, key))
                index[(*path, key)] = key_node.start_mark.line + 1
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*path, i))

    walk(node, ())
    return index


ENVELOPE_BYTES = 64 * 1024  # a terminal event's fields around its result, with room to spare


def size_problems(
    catalogue: Catalogue, *, broker_max_bytes: int, store_max_bytes: int
) -> list[str]:
    """Services whose largest result would not fit the broker's or the store's limit.

    A result travels in one message (the worker's terminal event) and is kept in one record.
    """
    problems = []
    for spec in catalogue:
        for limit, where in (
            (broker_max_bytes, "the broker's message"),
            (store_max_bytes, "a stored job"),
        ):
            if spec.max_result_bytes + ENVELOPE_BYTES > limit:
                problems.append(
                    f"service {spec.id!r}: max_result_bytes {spec.max_result_bytes} does not fit "
                    f"{where} limit of {limit} bytes (less {ENVELOPE_BYTES} for the envelope)"
                )
    return problems
