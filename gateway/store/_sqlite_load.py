"""The SQLite store's reads of a service's load (the capacity figures) and of a job's place
in its queue. Every statement is a count or a bounded read on an index: ``(service, status,
created)`` for the queue and the arrivals, ``(service, finished)`` for the completions."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from ._sqlite_schema import stored_ts
from .base import ServiceLoad
from .model import JobRecord, JobStatus

_STATUSES = tuple(str(s) for s in JobStatus)
_ANY_STATUS = "status IN ({})".format(", ".join(f"'{s}'" for s in _STATUSES))


def service_load(
    db: sqlite3.Connection, service: str, *, since: Sequence[datetime], sample: int
) -> ServiceLoad:
    params: dict[str, object] = {"service": service}
    active = dict(
        db.execute(
            "SELECT status, count(*) FROM jobs WHERE service = :service "
            "AND status IN ('accepted', 'running') GROUP BY status",
            params,
        ).fetchall()
    )
    arrivals = []
    completions = []
    for cut in since:
        at = {"service": service, "since": stored_ts(cut)}
        # The status list lets the (service, status, created) index serve the range.
        arrivals.append(
            db.execute(
                f"SELECT count(*) FROM jobs WHERE service = :service AND {_ANY_STATUS} "
                "AND created >= :since",
                at,
            ).fetchone()[0]
        )
        completions.append(
            db.execute(
                "SELECT count(*) FROM jobs WHERE service = :service AND finished >= :since "
                "AND started IS NOT NULL",
                at,
            ).fetchone()[0]
        )
    firsts = [
        row[0]
        for status in _STATUSES
        for row in db.execute(
            "SELECT min(created) FROM jobs WHERE service = :service AND status = :status",
            {"service": service, "status": status},
        )
        if row[0] is not None
    ]
    rows = db.execute(
        "SELECT created, started, finished FROM jobs WHERE service = :service "
        "AND finished IS NOT NULL AND started IS NOT NULL ORDER BY finished DESC LIMIT :n",
        {"service": service, "n": sample},
    )
    runs = []
    for created, started, finished in rows:
        created_at, started_at = datetime.fromisoformat(created), datetime.fromisoformat(started)
        finished_at = datetime.fromisoformat(finished)
        runs.append(
            (
                max((started_at - created_at).total_seconds(), 0.0),
                max((finished_at - started_at).total_seconds(), 0.0),
            )
        )
    return ServiceLoad(
        accepted=int(active.get("accepted", 0)),
        running=int(active.get("running", 0)),
        arrivals=tuple(int(n) for n in arrivals),
        completions=tuple(int(n) for n in completions),
        first_created=datetime.fromisoformat(min(firsts)) if firsts else None,
        runs=tuple(runs),
    )


def queue_position(db: sqlite3.Connection, record: JobRecord) -> int:
    row = db.execute(
        "SELECT count(*) FROM jobs WHERE service = :service AND status = 'accepted' "
        "AND created <= :created AND (created < :created OR id < :id)",
        {"service": record.service, "created": stored_ts(record.created), "id": str(record.id)},
    ).fetchone()
    return int(row[0])
