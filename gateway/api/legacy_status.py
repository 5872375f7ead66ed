"""The old gateway's view of a job: its state (PENDING, STARTED, PROGRESS, SUCCESS, FAILURE,
REVOKED, EXPIRED), its result, its numeric error codes, and the XML form of a status."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from gateway.store import JobRecord, JobStatus, Reason
from worker_sdk.wire.catalogue import ServiceSpec

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
    Reason.INVALID_INPUT: 105,  # the worker's model refused it: a ValueError to the old table
    Reason.PUBLISH_FAILED: 205,
    Reason.WORKER_LOST: 306,
    Reason.TIME_LIMIT: 306,
}


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
        case JobStatus.SUCCESSFUL if job.purged is not None:  # dismissed: its result is gone
            return "EXPIRED", None  # the old gateway's state once a result had expired
        case JobStatus.SUCCESSFUL:
            return "SUCCESS", job.result
        case JobStatus.DISMISSED if job.reason == Reason.EXPIRED:
            return "EXPIRED", None
        case JobStatus.DISMISSED:
            return "REVOKED", {"code": 109, "message": "terminated" if job.started else "revoked"}
        case _:
            return "FAILURE", _failure(job)


def running_version(job: JobRecord) -> str | None:
    """The worker version to check: the old gateway checked it in PROGRESS only."""
    return job.worker.version if job.status is JobStatus.RUNNING and job.worker else None


# XML 1.0 allows these characters only; anything else (C0 controls, lone surrogates, U+FFFE)
# would make the document ill-formed, escaped or not.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,127}$")


def _xml_text(value: Any) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def status_xml(body: dict[str, Any]) -> str:
    """The status as XML: keys that are plain XML names become elements, any other key (a
    prefix, markup, ``xml...``) becomes ``<item key="...">``; texts are escaped and stripped
    of characters XML cannot carry."""
    root = ET.Element("process_status")
    stack: list[tuple[ET.Element, Any]] = [(root, body)]
    while stack:
        parent, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                name = str(key)
                if _XML_NAME.match(name) and not name.lower().startswith("xml"):
                    child = ET.SubElement(parent, name)
                else:
                    child = ET.SubElement(parent, "item", key=_xml_text(name))
                stack.append((child, item))
        elif isinstance(value, list):
            stack.extend((ET.SubElement(parent, "item"), item) for item in value)
        elif value is not None:
            parent.text = _xml_text(value)
    return ET.tostring(root, encoding="unicode")
