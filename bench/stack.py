"""Our stack under test: the gateway (``sgw serve``) on a fresh store and namespace, with the
bench's catalogue, and the workers the bench starts beside it."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from bench.broker import delete_namespace
from bench.support import AMQP_URL, CATALOGUE, ROOT, SECRET, free_port, processes, wait_ready
from worker_sdk.wire import Topology

SGW = [sys.executable, "-m", "gateway.cli"]
TERMINAL = "('successful', 'failed', 'dismissed')"


# Every service of the bench's catalogue, whose queues a gateway's namespace may hold.
SERVICES = ("echo", "bench-noop-process", "bench-cpu")


class Gateway:
    """``sgw serve --workers N`` on its own port, store file and namespace, as a context:
    started on entry; stopped, and its namespace's queues and exchanges deleted, on exit. The
    gateway and its workers run the code of ``tree`` (a checkout; this one by default)."""

    def __init__(
        self,
        workdir: Path,
        log: IO[bytes],
        *,
        processes: int = 2,
        db: Path | None = None,
        tree: Path = ROOT,
    ) -> None:
        self.processes = processes
        self.tree = tree
        self.namespace = f"bench-{uuid.uuid4().hex[:8]}"
        self.db = db or workdir / "jobs.db"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {
            **os.environ,
            "SG_JWT_SECRET": SECRET,
            "SG_AMQP_URL": AMQP_URL,
            "SG_NAMESPACE": self.namespace,
            "SG_CATALOGUE": str(CATALOGUE),
            "SG_STORE_URL": f"sqlite:///{self.db}",
            "SG_PORT": str(self.port),
            "SG_LOG_LEVEL": "WARNING",
            # The tree's code whatever the environment says of sys.path (PYTHONSAFEPATH).
            "PYTHONPATH": str(tree),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._stack = ExitStack()

    @property
    def pid(self) -> int:
        """The gateway's main process (its workers are its children)."""
        if self.process is None:
            raise RuntimeError("the gateway is not started")
        return self.process.pid

    def submit_url(self, service: str = "echo") -> str:
        return f"{self.base}/processes/{service}/execution"

    def task_queue(self, service: str) -> str:
        return Topology(self.namespace).task_queue(service)

    def __enter__(self) -> Gateway:
        self._stack.callback(lambda: asyncio.run(delete_namespace(self.namespace, SERVICES)))
        command = [*SGW, "serve", "--workers", str(self.processes)]
        try:
            (self.process,) = self._stack.enter_context(
                processes([command], self.env, self.log, cwd=self.tree)
            )
            wait_ready(f"{self.base}/readyz")
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @contextmanager
    def workers(
        self, reference: str, count: int, concurrency: int
    ) -> Iterator[list[subprocess.Popen[bytes]]]:
        """``count`` worker processes ``sgw worker reference --concurrency N``."""
        command = [*SGW, "worker", reference, "--concurrency", str(concurrency)]
        command += ["--shutdown-grace", "5"]
        with processes([command] * count, self.env, self.log, cwd=self.tree) as started:
            yield started

    def store(self) -> sqlite3.Connection:
        """A read-only connection to the gateway's store (it runs in WAL mode: reads never
        block it)."""
        return sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, check_same_thread=False)


def last_rowid(store: sqlite3.Connection) -> int:
    return int(store.execute("SELECT coalesce(max(rowid), 0) FROM jobs").fetchone()[0])


def count_jobs(store: sqlite3.Connection, after: int, where: str = "1 = 1") -> int:
    """Jobs inserted after rowid ``after`` that match ``where``."""
    sql = f"SELECT count(*) FROM jobs WHERE rowid > ? AND {where}"
    return int(store.execute(sql, (after,)).fetchone()[0])
