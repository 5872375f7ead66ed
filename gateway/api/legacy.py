"""The old ServiceGateway task routes, so that its clients work unchanged.

``POST /{service}/process|annotate[/{storage_doc_id}]`` answers ``200 {"uuid"}``;
``GET /{service}/status|cancel?uuid=`` answers ``{"uuid", "status", "result"}`` with the old
states. Errors keep the old body, ``{"status", "description", "vesta": {"code", "message"}}``,
as JSON when the client accepts it and as an HTML page otherwise. docs/legacy.md lists every
deliberate difference.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from http import HTTPStatus
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from gateway.applier import version_mismatch
from gateway.auth import Principal
from gateway.catalogue import ServiceSpec
from gateway.errors import (
    GatewayError,
    ServiceUnavailable,
    StoreUnavailable,
    UnknownJob,
    UnknownProcess,
)
from gateway.jobs import LegacyRequest
from gateway.runtime import Runtime, RuntimeDep
from gateway.store import JobRecord, JobStatus, Reason
from worker_sdk import UrlRefused

router = APIRouter(tags=["legacy ServiceGateway"])

# Vesta codes of the old gateway (reference §6.2), for failures named by exception type.
VESTA_CODES = {
    "Exception": 101,
    "TypeError": 104,
    "ValueError": 105,
    "KeyError": 108,
    "OSError": 107,
    "IOError": 107,
    "RuntimeError": 306,
    "InvalidAnnotationFormat": 300,
    "DownloadError": 301,
    "UploadError": 302,
}
REASON_CODES: dict[str, int] = {
    Reason.PUBLISH_FAILED: 205,
    Reason.WORKER_LOST: 306,
    Reason.TIME_LIMIT: 306,
}


class VestaError(BaseModel):
    code: int
    message: str


class LegacyErrorBody(BaseModel):
    """The old gateway's error body."""

    status: int
    description: str
    vesta: VestaError


LEGACY_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "model": LegacyErrorBody,
        "description": "The old error body (JSON when accepted, else an HTML page).",
        "content": {"text/html": {"schema": {"type": "string"}}},
    }
    for status in (400, 401, 403, 429, 503)
}


class LegacyError(Exception):
    """An error in the old format: HTTP status, vesta code, message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def of(cls, exc: GatewayError) -> LegacyError:
        if isinstance(exc, UnknownProcess):
            return cls(400, 202, f"User requested a service which does not exist : {exc.detail}")
        code = (
            102
            if isinstance(exc, StoreUnavailable)
            else (205 if isinstance(exc, ServiceUnavailable) else 101)
        )
        return cls(exc.status, code, exc.detail)


def _prefers(accept: str | None, *choices: str) -> str | None:
    """Werkzeug's best_match: the highest quality; the first listed choice wins a tie; no
    Accept header matches nothing (the old gateway then answered HTML)."""
    if not accept:
        return None
    best, best_q = None, 0.0
    for choice in choices:
        for part in accept.split(","):
            media, *params = (p.strip() for p in part.split(";"))
            q = next((float(p[2:]) for p in params if p.startswith("q=")), 1.0)
            if media in (choice, "*/*", choice.split("/")[0] + "/*") and q > best_q:
                best, best_q = choice, q
    return best


def render_error(request: Request, exc: LegacyError) -> Response:
    reason = HTTPStatus(exc.status).phrase
    accept = request.headers.get("accept")
    if _prefers(accept, "application/json", "text/html") == "application/json":
        body = {
            "status": exc.status,
            "description": reason,
            "vesta": {"code": exc.code, "message": exc.message},
        }
        return JSONResponse(body, status_code=exc.status)
    page = (
        f"<!doctype html><title>{exc.status} {html.escape(reason)}</title>"
        f"<h2>{exc.status} : {html.escape(reason)}</h2>"
        f"<p>Internal error code: {exc.code} : {html.escape(exc.message)}</p>"
    )
    return HTMLResponse(page, status_code=exc.status)


def _service(runtime: Runtime, service: str) -> ServiceSpec:
    spec = runtime.catalogue.get(service)
    if spec is None:
        raise LegacyError(400, 202, f"User requested a service which does not exist : {service}")
    return spec


async def _principal(runtime: Runtime, request: Request) -> Principal:
    try:
        return await runtime.auth.authenticate(request.headers.get("authorization"))
    except GatewayError as exc:
        raise LegacyError(exc.status, 101, exc.detail) from exc


async def _check_url(runtime: Runtime, url: str) -> str:
    parts = urlsplit(url)
    if not (parts.scheme and parts.netloc and parts.path):
        raise LegacyError(400, 207, f"User provided an invalid source URL : {url}")
    try:
        await runtime.jobs.inputs.check_url(url)
    except UrlRefused as exc:
        raise LegacyError(400, 207, f"User provided an invalid source URL : {url} ({exc})") from exc
    return url


async def _read(request: Request, route: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The query and form values, and (``process`` only) the JSON body that starts ``misc``."""
    values: dict[str, Any] = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        values.update({k: v for k, v in (await request.form()).items() if isinstance(v, str)})
    misc: dict[str, Any] = {}
    if route == "process" and content_type.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError as exc:
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
) -> LegacyRequest:
    settings = runtime.settings
    values, misc = await _read(request, route)
    if storage_doc_id is not None:
        document_url: str | None = settings.legacy_storage_url.format(storage_doc_id=storage_doc_id)
    else:
        document_url = values.get("doc_url")
        if document_url is None and not (route == "process" and spec.noparams):
            raise LegacyError(
                400, 206, f'A POST on the URI "/{route}" requires the following parameter : doc_url'
            )
    if document_url is not None and storage_doc_id is None:
        await _check_url(runtime, document_url)
    for key, value in list(values.items()):
        if key.startswith("storage_") and key.endswith("_id"):
            kind = key.removeprefix("storage_").removesuffix("_id")
            if f"{kind}_url" not in values:  # a direct URL wins
                misc[f"{kind}_url"] = settings.legacy_storage_url.format(storage_doc_id=value)
        elif key.endswith("_url") and key != "doc_url":
            await _check_url(runtime, value)
    misc.update(values)  # URL parameters override the JSON body
    misc["upload_url"] = settings.legacy_upload_url
    annotation_url = None
    if "ann_doc_id" in values:
        annotation_url = settings.legacy_annotations_url.format(ann_doc_id=values["ann_doc_id"])
    return LegacyRequest(
        document_url=document_url, misc=misc, annotation_service_url=annotation_url
    )


def _submit_route(route: Literal["process", "annotate"], with_id: bool) -> None:
    path = f"/{{service}}/{route}" + ("/{storage_doc_id}" if with_id else "")

    async def submit(
        service: str, request: Request, runtime: RuntimeDep, storage_doc_id: str | None = None
    ) -> Response:
        try:
            spec = _service(runtime, service)
            principal = await _principal(runtime, request)
            legacy = await _legacy_request(runtime, request, spec, route, storage_doc_id)
            record, _ = await runtime.jobs.submit(
                spec, legacy.misc, principal=principal, legacy=legacy
            )
        except GatewayError as exc:
            raise LegacyError.of(exc) from exc
        return JSONResponse({"uuid": str(record.id)})

    router.add_api_route(
        path,
        submit,
        methods=["POST"],
        responses={200: {"description": '`{"uuid": "<job id>"}`'}, **LEGACY_ERRORS},
        summary=f"Old ServiceGateway {route}",
        description="Submits a job the old way: `doc_url` (or a storage id), `ann_doc_id`, "
        "`storage_<t>_id`, `*_url` and any other value go to the task's `misc`.",
    )


for _route in ("process", "annotate"):
    for _with_id in (False, True):
        _submit_route(_route, _with_id)


def _failure(job: JobRecord) -> dict[str, Any]:
    error = job.error
    if error is not None and error.code.isdigit():
        code = int(error.code)
    elif error is not None and error.type in VESTA_CODES:
        code = VESTA_CODES[error.type]
    else:
        code = REASON_CODES.get(job.reason or "", 101)
    return {"code": code, "message": error.message if error else (job.reason or "failed")}


def legacy_state(job: JobRecord, spec: ServiceSpec) -> tuple[str, Any]:
    """The old state and result of a job."""
    match job.status:
        case JobStatus.ACCEPTED:
            return "PENDING", None
        case JobStatus.RUNNING:
            if job.progress == 0 and job.message is None:
                return "STARTED", None
            return "PROGRESS", {
                "current": job.progress,
                "total": 100,
                "worker_id_version": job.worker.version if job.worker else None,
                "start_time": job.started.strftime("%Y-%m-%dT%H:%M:%S") if job.started else None,
                "host": job.worker.host if job.worker else None,
                "type": spec.id,
            }
        case JobStatus.SUCCESSFUL:
            return "SUCCESS", job.result
        case JobStatus.DISMISSED if job.reason == Reason.EXPIRED:
            return "EXPIRED", None
        case JobStatus.DISMISSED:
            return "REVOKED", {"code": 109, "message": "terminated" if job.started else "revoked"}
        case _:
            return "FAILURE", _failure(job)


def _running_version(job: JobRecord) -> str | None:
    """The worker version to check: the old gateway checked it in PROGRESS only."""
    return job.worker.version if job.status is JobStatus.RUNNING and job.worker else None


def _xml(body: dict[str, Any]) -> str:
    def fill(parent: ET.Element, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                fill(ET.SubElement(parent, str(key)), item)
        elif isinstance(value, list):
            for item in value:
                fill(ET.SubElement(parent, "item"), item)
        elif value is not None:
            parent.text = str(value)

    root = ET.Element("process_status")
    fill(root, body)
    return ET.tostring(root, encoding="unicode")


def _status_route(action: Literal["status", "cancel"]) -> None:
    async def status(
        service: str,
        request: Request,
        runtime: RuntimeDep,
        uuid: Annotated[str | None, Query(description="The job's uuid.")] = None,
    ) -> Response:
        try:
            spec = _service(runtime, service)
            if uuid is None:
                raise LegacyError(
                    400,
                    206,
                    f"A GET on the URI '/{action}' requires the following parameter : uuid",
                )
            unknown = LegacyError(400, 203, f"User requested a UUID which did not exist : {uuid}")
            try:
                job_id = UUID(uuid)
            except ValueError:
                raise unknown from None
            principal = await _principal(runtime, request)
            try:
                job = (
                    await runtime.jobs.dismiss(job_id, principal)
                    if action == "cancel"
                    else await runtime.jobs.get(job_id, principal)
                )
            except UnknownJob:
                raise unknown from None
            if job.service != spec.id:
                raise unknown
            problem = version_mismatch(runtime.catalogue, spec.id, _running_version(job))
            if problem is not None:
                raise LegacyError(400, 204, problem)
        except GatewayError as exc:
            raise LegacyError.of(exc) from exc
        state, result = legacy_state(job, spec)
        body = {"uuid": str(job.id), "status": state, "result": result}
        if (
            _prefers(
                request.headers.get("accept"), "application/json", "text/html", "application/xml"
            )
            == "application/xml"
        ):
            return Response(_xml(body), media_type="application/xml")
        return JSONResponse(body)

    router.add_api_route(
        f"/{{service}}/{action}",
        status,
        methods=["GET"],
        responses={
            200: {
                "description": "`{uuid, status, result}`; XML when preferred.",
                "content": {"application/xml": {"schema": {"type": "string"}}},
            },
            **LEGACY_ERRORS,
        },
        summary=f"Old ServiceGateway {action}",
        description="The job's old state: PENDING, STARTED, PROGRESS, SUCCESS, FAILURE, "
        "REVOKED or EXPIRED" + (" (after cancelling it)." if action == "cancel" else "."),
    )


for _action in ("status", "cancel"):
    _status_route(_action)
