"""OGC API – Processes execution: the negotiated mode, and a finished job's results in the
form the client asked for.

Execution mode (OGC 18-062r2, requirements /req/core/process-execute-default-execution-mode
and -auto-execution-mode, and RFC 7240):

- ``Prefer: respond-async``: asynchronous (201 + statusInfo) for every process;
- no ``Prefer`` (or none of ours): synchronous when the process offers ``sync-execute``,
  waiting at most ``SG_MAX_WAIT``; else asynchronous;
- ``Prefer: wait=N`` (the gateway's extension, any process): wait up to N seconds (at most
  ``SG_MAX_WAIT``) and answer as a synchronous execution if the job ended by then.

A synchronous wait that ends before the job does answers as an asynchronous execution (201,
statusInfo, ``Location``): a request is never held past ``SG_MAX_WAIT``.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import Response
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from gateway.api.schemas import ExecuteRequest
from gateway.errors import (
    InvalidParameterValue,
    JobDismissed,
    JobFailed,
    NoSuchOutput,
    ResultNotReady,
    ResultPurged,
)
from gateway.store import Delivery, JobRecord, JobStatus
from worker_sdk.wire.catalogue import OutputSpec, ServiceSpec

_TOKEN = re.compile(r"^\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s*(?:=\s*(\S*?))?\s*$")


@dataclass(frozen=True, slots=True)
class Mode:
    """How long to wait for the job before answering (``None``: answer at once), and the
    ``Preference-Applied`` value to send."""

    wait: float | None
    applied: str | None


def prefer_header(headers: Headers) -> str | None:
    """Every ``Prefer`` line of a request as one value: RFC 7240 §2 reads several lines as
    one comma-separated list (the first of a repeated preference counts)."""
    lines = headers.getlist("prefer")
    return ", ".join(lines) if lines else None


def preferences(prefer: str | None) -> dict[str, str]:
    """The preferences of a ``Prefer`` header (RFC 7240 §2): names lower-cased, values with
    their quotes removed; parameters after ``;`` are ignored, as is a malformed entry."""
    found: dict[str, str] = {}
    for entry in (prefer or "").split(",")[:32]:
        match = _TOKEN.match(entry.split(";", 1)[0])
        if match is not None:
            found.setdefault(match.group(1).lower(), (match.group(2) or "").strip('"'))
    return found


def execution_mode(prefer: str | None, *, sync_capable: bool, max_wait: float) -> Mode:
    """The negotiated execution mode (see the module's docstring)."""
    wanted = preferences(prefer)
    if "respond-async" in wanted:
        return Mode(wait=None, applied="respond-async")
    seconds = wanted.get("wait", "")
    if seconds.isascii() and seconds.isdigit():  # any length: a long one is clamped too
        wait = max_wait if len(seconds) > 6 else min(float(seconds), max_wait)
        return Mode(wait=wait, applied=f"wait={int(wait)}")
    if sync_capable:
        return Mode(wait=max_wait, applied=None)
    return Mode(wait=None, applied=None)


def delivery(body: ExecuteRequest, spec: ServiceSpec) -> Delivery:
    """The results form asked for, checked against the process's outputs: an unknown output
    id is ``no-such-output``; a transmission or format the gateway cannot serve is 400."""
    outputs = spec.output_specs
    chosen: tuple[str, ...] | None = None
    if body.outputs is not None:
        for output_id, wanted in body.outputs.items():
            if output_id not in outputs:
                raise NoSuchOutput(
                    f"process {spec.id!r} has no output {output_id!r}; "
                    f"its outputs: {', '.join(outputs)}"
                )
            if wanted.transmissionMode == "reference":
                raise InvalidParameterValue(
                    f"output {output_id!r}: results are sent by value only "
                    "(outputTransmission: value)"
                )
            media = (wanted.format or {}).get("mediaType")
            if media is not None and media != outputs[output_id].media_type:
                raise InvalidParameterValue(
                    f"output {output_id!r} is available as {outputs[output_id].media_type} only"
                )
        chosen = tuple(body.outputs)
    return Delivery(response=body.response or "raw", outputs=chosen)


def output_values(job: JobRecord, spec: ServiceSpec) -> dict[str, Any]:
    """Each output's value: a process with one output returns it as its result; one with
    several returns an object with a member per output."""
    outputs = spec.output_specs
    if len(outputs) == 1:
        return {next(iter(outputs)): job.result}
    result = job.result if isinstance(job.result, dict) else {}
    return {output_id: result.get(output_id) for output_id in outputs}


def check_finished(job: JobRecord) -> None:
    """Raise the OGC exception of a job that has no results to give."""
    if job.purged is not None:
        raise ResultPurged(f"job {job.id}'s result was purged at {job.purged.isoformat()}")
    match job.status:
        case JobStatus.SUCCESSFUL:
            return
        case JobStatus.FAILED:
            raise JobFailed(
                f"job {job.id} failed ({job.reason}): "
                + (job.error.message if job.error else "no detail"),
                job_error=job.error,
            )
        case JobStatus.DISMISSED:
            raise JobDismissed(f"job {job.id} was dismissed ({job.reason}); it has no result")
        case _:
            raise ResultNotReady(f"job {job.id} is {job.status}; its result is not ready")


def results_response(
    job: JobRecord, spec: ServiceSpec | None, headers: dict[str, str] | None = None
) -> Response:
    """A successful job's results as its submission asked: ``raw`` (one output: its value
    with its media type; several: ``multipart/related``, one part per output named by
    ``Content-ID``) or ``document`` (the OGC results document: each output as a qualified
    value with its media type)."""
    check_finished(job)
    form = job.delivery or Delivery()
    if spec is None:  # a process that left the catalogue: its result as it is
        return JSONResponse(job.result, headers=headers)
    values = output_values(job, spec)
    outputs = spec.output_specs
    chosen = [o for o in (form.outputs or tuple(values)) if o in values]
    if form.response == "document":
        document = {o: {"value": values[o], "mediaType": outputs[o].media_type} for o in chosen}
        return JSONResponse(document, headers=headers)
    if len(chosen) == 1:
        only = chosen[0]
        return Response(
            json.dumps(values[only], separators=(",", ":")),
            media_type=outputs[only].media_type,
            headers=headers,
        )
    return _multipart({o: (outputs[o], values[o]) for o in chosen}, headers)


def _multipart(
    parts: dict[str, tuple[OutputSpec, Any]], headers: dict[str, str] | None
) -> Response:
    """RFC 2387 ``multipart/related``: one part per output, its id as ``Content-ID``."""
    boundary = secrets.token_hex(16)
    body = bytearray()
    for output_id, (spec, value) in parts.items():
        body += (
            f"--{boundary}\r\nContent-ID: <{output_id}>\r\nContent-Type: {spec.media_type}\r\n\r\n"
        ).encode()
        body += json.dumps(value, separators=(",", ":")).encode() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    first = next(iter(parts.values()))[0].media_type if parts else "application/json"
    return Response(
        bytes(body),
        media_type=f'multipart/related; boundary="{boundary}"; type="{first}"',
        headers=headers,
    )
