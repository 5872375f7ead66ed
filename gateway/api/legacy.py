"""The old ServiceGateway task routes, so that its clients work unchanged.

``POST /{service}/process|annotate[/{storage_doc_id}]`` answers ``200 {"uuid"}``;
``GET /{service}/status|cancel?uuid=`` answers ``{"uuid", "status", "result"}`` with the old
states. Errors keep the old body, ``{"status", "description", "vesta": {"code", "message"}}``,
as JSON when the client accepts it and as an HTML page otherwise: every route here is a
:class:`LegacyRoute`, which renders the gateway's one error tree in that format.

``status`` answers without a token for jobs submitted on these routes when
``SG_LEGACY_OPEN_STATUS`` is on (the default with ``SG_LEGACY_TOKENS``), as the old gateway
did: the uuid (122 random bits) is the capability. docs/legacy.md lists every deliberate
difference.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from gateway.api.legacy_errors import LEGACY_ERRORS, LegacyError, LegacyRoute
from gateway.api.legacy_status import legacy_state, running_version, status_xml
from gateway.applier import version_mismatch
from gateway.auth import Principal
from gateway.errors import (
    InvalidInput,
    UnknownJob,
)
from gateway.negotiation import best_match
from gateway.runtime import Runtime, RuntimeDep
from gateway.store import JobRecord, LegacyFields
from worker_sdk.wire.catalogue import ServiceSpec

STORAGE_ID = re.compile(r"^storage_(?P<kind>.+)_id$")


router = APIRouter(tags=["legacy ServiceGateway"], route_class=LegacyRoute)


def _service(runtime: Runtime, service: str) -> ServiceSpec:
    spec = runtime.catalogue.get(service)
    if spec is None:
        raise LegacyError(400, 202, f"User requested a service which does not exist : {service}")
    return spec


async def _principal(runtime: Runtime, request: Request) -> Principal:
    return await runtime.auth.authenticate(request.headers.get("authorization"))


def _invalid_url(url: str, why: str = "") -> LegacyError:
    return LegacyError(
        400, 207, f"User provided an invalid source URL : {url}" + (f" ({why})" if why else "")
    )


def _shaped(url: object) -> str:
    """The old gateway's shape rule: a scheme, a host and a path."""
    if not isinstance(url, str):
        raise _invalid_url(repr(url), "not a string")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # a broken IPv6 literal, "http://[::1/x"
        raise _invalid_url(url, str(exc)) from None
    if not (parts.scheme and parts.netloc and parts.path):
        raise _invalid_url(url)
    return url


def _from_template(template: str, **ids: str) -> str:
    """A storage URL with each id percent-encoded into it: an id is one path segment, never
    a way to another path, query or host."""
    return template.format(**{name: quote(value, safe="") for name, value in ids.items()})


def _urls_in(value: Any, key: str = "") -> list[str]:
    """Every value of a ``*_url`` key, at any depth of a JSON body."""
    found: list[str] = []
    stack = [(key, value)]
    while stack:
        name, item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.items())
        elif isinstance(item, list):
            stack.extend((name, v) for v in item)
        elif name.endswith("_url"):
            found.append(_shaped(item))
    return found


async def _read(request: Request, route: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The query and form values, and (``process`` only) the JSON body that starts ``misc``."""
    # As Werkzeug's ``request.values`` read them: a name's first value, the query's before
    # the form's.
    values: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        values.setdefault(key, value)
    # The media type as Werkzeug reads it: lower case, without its parameters.
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        for key, field in (await request.form()).multi_items():
            if isinstance(field, str):
                values.setdefault(key, field)
    misc: dict[str, Any] = {}
    is_json = media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )
    if route == "process" and is_json and (await request.body()).strip():
        try:
            body = await request.json()
        except (ValueError, RecursionError) as exc:
            raise LegacyError(400, 105, f"The JSON body cannot be read: {exc}") from exc
        if isinstance(body, dict):
            misc.update(body)
    return values, misc


async def _legacy_request(
    runtime: Runtime,
    request: Request,
    spec: ServiceSpec,
    route: Literal["process", "annotate"],
    storage_doc_id: str | None,
) -> tuple[dict[str, Any], LegacyFields]:
    """The job's ``misc`` and its document and annotation URLs, every URL checked."""
    settings = runtime.settings
    values, misc = await _read(request, route)
    runtime.inputs.check_bounds(misc, root="/misc")
    to_check = _urls_in(misc)
    if storage_doc_id is not None:
        document_url: str | None = _from_template(
            settings.legacy_storage_url, storage_doc_id=storage_doc_id
        )
    else:
        document_url = values.get("doc_url")
        if document_url is None and not (route == "process" and spec.noparams):
            raise LegacyError(
                400, 206, f'A POST on the URI "/{route}" requires the following parameter : doc_url'
            )
        if document_url is not None:
            to_check.append(_shaped(document_url))
    own = {settings.legacy_upload_url}  # the gateway's URLs: the policy does not judge them
    for key, value in values.items():
        storage = STORAGE_ID.match(key)
        if storage is not None:
            kind = storage["kind"]
            if f"{kind}_url" not in values:  # a direct URL wins
                misc[f"{kind}_url"] = _from_template(
                    settings.legacy_storage_url, storage_doc_id=value
                )
                own.add(misc[f"{kind}_url"])
        elif key.endswith("_url"):
            to_check.append(_shaped(value))
    refused = await runtime.inputs.check_urls(to_check)
    if refused:
        url, why = next(iter(refused.items()))
        raise _invalid_url(url, str(why))
    misc.update(values)  # URL parameters override the JSON body
    misc["upload_url"] = settings.legacy_upload_url
    try:
        await runtime.inputs.check_legacy(spec, misc, checked=to_check, own=own)
    except InvalidInput as exc:
        raise LegacyError(
            400,
            105,
            f"{exc.detail} (the old routes give the {spec.id!r} service misc as its inputs: "
            "the JSON body, every query and form value, doc_url and upload_url)",
        ) from exc
    annotation_url = None
    if "ann_doc_id" in values:
        annotation_url = _from_template(
            settings.legacy_annotations_url, ann_doc_id=values["ann_doc_id"]
        )
    return misc, LegacyFields(document_url=document_url, annotation_service_url=annotation_url)


async def _submit(
    route: Literal["process", "annotate"],
    service: str,
    request: Request,
    runtime: Runtime,
    storage_doc_id: str | None,
) -> Response:
    spec = _service(runtime, service)
    principal = await _principal(runtime, request)
    misc, legacy = await _legacy_request(runtime, request, spec, route, storage_doc_id)
    record, _ = await runtime.jobs.submit(spec, misc, principal=principal, legacy=legacy)
    return JSONResponse({"uuid": str(record.id)})


SUBMIT_DOC: dict[str, Any] = {
    "responses": {200: {"description": '`{"uuid": "<job id>"}`'}, **LEGACY_ERRORS},
    "description": "Submits a job the old way: `doc_url` (or a storage id), `ann_doc_id`, "
    "`storage_<t>_id`, `*_url` and any other value go to the task's `misc`, which must pass "
    "the service's input schema (text taken where it spells a wanted number or boolean): "
    "else 400, code 105. Needs a token.",
    "openapi_extra": {"security": [{"bearer": []}]},
}


@router.post("/{service}/process", summary="Old ServiceGateway process", **SUBMIT_DOC)
async def process(service: str, request: Request, runtime: RuntimeDep) -> Response:
    return await _submit("process", service, request, runtime, None)


@router.post(
    "/{service}/process/{storage_doc_id}",
    summary="Old ServiceGateway process (stored document)",
    **SUBMIT_DOC,
)
async def process_stored(
    service: str, storage_doc_id: str, request: Request, runtime: RuntimeDep
) -> Response:
    return await _submit("process", service, request, runtime, storage_doc_id)


@router.post("/{service}/annotate", summary="Old ServiceGateway annotate", **SUBMIT_DOC)
async def annotate(service: str, request: Request, runtime: RuntimeDep) -> Response:
    return await _submit("annotate", service, request, runtime, None)


@router.post(
    "/{service}/annotate/{storage_doc_id}",
    summary="Old ServiceGateway annotate (stored document)",
    **SUBMIT_DOC,
)
async def annotate_stored(
    service: str, storage_doc_id: str, request: Request, runtime: RuntimeDep
) -> Response:
    return await _submit("annotate", service, request, runtime, storage_doc_id)


async def _job(
    runtime: Runtime, request: Request, spec: ServiceSpec, uuid: str | None, action: str
) -> tuple[UUID, Principal | None]:
    uuid = next(iter(request.query_params.getlist("uuid")), uuid)  # the first, as Werkzeug's
    if uuid is None:
        raise LegacyError(
            400, 206, f"A GET on the URI '/{action}' requires the following parameter : uuid"
        )
    try:
        job_id = UUID(uuid)
    except ValueError:
        raise LegacyError(400, 203, f"User requested a UUID which did not exist : {uuid}") from None
    open_status = action == "status" and runtime.settings.open_legacy_status
    if open_status and not request.headers.get("authorization"):
        return job_id, None
    return job_id, await _principal(runtime, request)


def _answer(request: Request, job: JobRecord, spec: ServiceSpec, runtime: Runtime) -> Response:
    problem = version_mismatch(runtime.catalogue, spec.id, running_version(job))
    if problem is not None:
        raise LegacyError(400, 204, problem)
    state, result = legacy_state(job, spec)
    body = {"uuid": str(job.id), "status": state, "result": result}
    accept = request.headers.get("accept")
    offers = ["application/json", "text/html", "application/xml"]
    if best_match(accept, offers) == "application/xml":
        return Response(status_xml(body), media_type="application/xml")
    return JSONResponse(body)


async def _own_job(
    runtime: Runtime, spec: ServiceSpec, job_id: UUID, principal: Principal | None
) -> JobRecord:
    """The job, if the caller may see it and it belongs to ``spec`` (203 otherwise)."""
    try:
        job = await runtime.jobs.get(job_id, principal)
    except UnknownJob:
        job = None
    if job is None or job.service != spec.id:
        raise LegacyError(400, 203, f"User requested a UUID which did not exist : {job_id}")
    return job


STATUS_DOC: dict[str, Any] = {
    "responses": {
        200: {
            "description": "`{uuid, status, result}`; XML when preferred.",
            "content": {"application/xml": {"schema": {"type": "string"}}},
        },
        **LEGACY_ERRORS,
    },
}
UuidQuery = Annotated[str | None, Query(description="The job's uuid.")]


@router.get(
    "/{service}/status",
    summary="Old ServiceGateway status",
    description="The job's old state: PENDING, STARTED, PROGRESS, SUCCESS, FAILURE, REVOKED or "
    "EXPIRED. Jobs submitted on the old routes answer without a token when "
    "SG_LEGACY_OPEN_STATUS is on (the uuid is the capability, as on the old gateway).",
    openapi_extra={"security": [{}, {"bearer": []}]},
    **STATUS_DOC,
)
@router.head("/{service}/status", include_in_schema=False)  # Flask answered HEAD as GET
async def status(
    service: str, request: Request, runtime: RuntimeDep, uuid: UuidQuery = None
) -> Response:
    spec = _service(runtime, service)
    job_id, principal = await _job(runtime, request, spec, uuid, "status")
    return _answer(request, await _own_job(runtime, spec, job_id, principal), spec, runtime)


@router.get(
    "/{service}/cancel",
    summary="Old ServiceGateway cancel",
    description="Cancels a queued or running job of the caller's, then answers its old state "
    "(REVOKED); a finished job is left as it is, result included. Needs a token.",
    openapi_extra={"security": [{"bearer": []}]},
    **STATUS_DOC,
)
async def cancel(
    service: str, request: Request, runtime: RuntimeDep, uuid: UuidQuery = None
) -> Response:
    spec = _service(runtime, service)
    job_id, principal = await _job(runtime, request, spec, uuid, "cancel")
    assert principal is not None
    await _own_job(runtime, spec, job_id, principal)  # before anything is touched
    return _answer(request, await runtime.jobs.cancel(job_id, principal), spec, runtime)


@router.head("/{service}/cancel", include_in_schema=False)
async def cancel_head(service: str) -> Response:
    """405: a HEAD is a safe request (link checkers and monitors send it) and never cancels a
    job. The old gateway's Flask rule answered HEAD as its GET, cancelling the job."""
    return Response(status_code=405, headers={"Allow": "GET"})
