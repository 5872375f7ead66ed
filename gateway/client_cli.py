"""The client side of ``sgw``: submit, follow, list and cancel jobs over HTTP (``sgw_client``).

Exit codes: 0 success; 1 the job did not succeed (failed, dismissed, no result, or still
running at ``--timeout``); 2 usage (bad arguments, unknown process or job, invalid inputs);
3 the gateway is unreachable or refuses (connection, token, scope, 429/503 after retries).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.markup import escape as escape_markup
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from sgw_client import (
    TOKEN_ENV,
    URL_ENV,
    ApiError,
    Client,
    ClientError,
    Forbidden,
    GatewayUnreachable,
    Gone,
    Job,
    JobDismissed,
    JobFailed,
    JobStatus,
    ResultNotReady,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnexpectedResponse,
    WaitTimeout,
)

OK, NOT_SUCCESSFUL, USAGE, UNREACHABLE = 0, 1, 2, 3
INTERRUPTED = 130  # as a shell reports SIGINT

INPUTS_HELP = (
    "inputs as key=value; a value that is valid JSON is taken as JSON (n=3, ratio=0.5, "
    'flag=true, tags=\'["a","b"]\', opts=\'{"x":1}\'), anything else as a string '
    "(text=hello); quote a JSON string to force a string: id='\"007\"'"
)
EPILOG = (
    f"The gateway's URL and token come from --url/--token or {URL_ENV}/{TOKEN_ENV}. "
    "Exit codes: 0 success; 1 the job failed, was dismissed or has no result (or still runs "
    "at --timeout); 2 usage (bad arguments, unknown process or job, invalid inputs); "
    "3 the gateway is unreachable or refuses (token, scope, overload)."
)

Command = Callable[[argparse.Namespace, Console, Console], int]


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _plain(text: str) -> str:
    """Text from the gateway or a worker (a host, a message) as the terminal shows it: its
    control characters (escape sequences: a title, a cleared screen, a hyperlink) replaced
    and its rich markup escaped."""
    return escape_markup(_CONTROL.sub("\ufffd", text))


def key_value(text: str) -> tuple[str, Any]:
    """Parse ``key=value``: JSON when the value is valid JSON, else the string itself."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _inputs(args: argparse.Namespace) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    if args.json is not None:
        try:
            text = sys.stdin.read() if args.json == "-" else Path(args.json).read_text()
            loaded = json.loads(text)
        except (OSError, ValueError) as exc:
            raise _Usage(f"--json {args.json}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise _Usage(f"--json {args.json}: the inputs must be a JSON object")
        inputs.update(loaded)
    inputs.update(dict(args.inputs))
    return inputs


class _Usage(Exception):
    """A usage error found after parsing (exit 2)."""


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url, args.token)


def _line(job: Job) -> str:
    text = f"job {job.id} [bold]{job.status}[/bold]"
    if job.reason:
        text += f" ({_plain(job.reason)})"
    if job.message:
        text += f": {_plain(job.message)}"
    return text


class _Spinner(SpinnerColumn):
    """Spins while the job is active, whatever its progress; a dot once it ended."""

    def render(self, task: Task) -> RenderableType:
        return self.finished_text if task.fields.get("ended") else super().render(task)


def _follow(client: Client, job: Job, err: Console, timeout: float | None) -> Job:
    """Show the job's progress from its event stream until it ends (or ``timeout``)."""
    columns = (
        _Spinner(finished_text="•"),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as progress:
        task = progress.add_task(
            f"{_plain(job.process)} {str(job.id)[:8]}", total=100, state=job.status, ended=False
        )
        seen: tuple[JobStatus, int] | None = None

        def show(state: Job) -> None:
            nonlocal seen
            if seen is None or state.status != seen[0] or state.attempt != seen[1]:
                progress.console.print(_line(state))
            seen = (state.status, state.attempt)
            label = f"{state.status}" + (f" · {_plain(state.message)}" if state.message else "")
            done = 100 if state.status is JobStatus.SUCCESSFUL else state.progress
            progress.update(task, completed=done, state=label, ended=state.terminal)

        for state in client.stream(job, timeout=timeout):
            show(state)
            job = state
        return job


def cmd_submit(args: argparse.Namespace, out: Console, err: Console) -> int:
    inputs = _inputs(args)
    with _client(args) as client:
        job = client.submit(args.service, inputs, idempotency_key=args.idempotency_key)
        if not args.wait:
            err.print(_line(job))
            out.print(str(job.id), highlight=False)
            return OK
        job = _follow(client, job, err, args.timeout)
        if job.status is not JobStatus.SUCCESSFUL:
            return NOT_SUCCESSFUL
        out.print_json(json.dumps(client.results(job)))
        return OK


def cmd_watch(args: argparse.Namespace, out: Console, err: Console) -> int:
    with _client(args) as client:
        job = _follow(client, client.status(args.id), err, args.timeout)
    return OK if job.status is JobStatus.SUCCESSFUL else NOT_SUCCESSFUL


def cmd_result(args: argparse.Namespace, out: Console, err: Console) -> int:
    with _client(args) as client:
        out.print_json(json.dumps(client.results(args.id)))
        return OK


def cmd_cancel(args: argparse.Namespace, out: Console, err: Console) -> int:
    with _client(args) as client:
        job = client.dismiss(args.id)
    if job.status is JobStatus.DISMISSED:
        err.print(_line(job))
    else:
        err.print(f"job {job.id} had already ended ({job.status}); its result is dropped")
    return OK


def _when(value: Any) -> str:
    return value.astimezone().strftime("%m-%d %H:%M:%S") if value is not None else "-"


def cmd_jobs(args: argparse.Namespace, out: Console, err: Console) -> int:
    with _client(args) as client:
        rows = list(
            islice(
                client.jobs(
                    process=args.service, status=args.status, page_size=max(1, min(args.limit, 100))
                ),
                args.limit,
            )
        )
    table = Table(title=f"{len(rows)} job(s), newest first")
    table.add_column("id", no_wrap=True, min_width=36)  # whole, to be copied
    for column in ("process", "status", "reason", "progress", "created", "finished"):
        table.add_column(column)
    for job in rows:
        table.add_row(
            str(job.id),
            _plain(job.process),
            _plain(job.status),
            _plain(job.reason or ""),
            f"{job.progress}%",
            _when(job.created),
            _when(job.finished),
        )
    out.print(table)
    return OK


def cmd_workers(args: argparse.Namespace, out: Console, err: Console) -> int:
    with _client(args) as client:
        workers = client.workers(args.service)
    table = Table(title=f"{len(workers)} live worker(s)")
    table.add_column("id", no_wrap=True)
    for column in ("service", "host", "version", "running", "last seen", "up since"):
        table.add_column(column)
    for worker in workers:
        table.add_row(
            _plain(worker.id),
            _plain(worker.service),
            _plain(worker.host),
            _plain(worker.version),
            f"{worker.load}/{worker.concurrency}",
            _when(worker.last_seen),
            _when(worker.up_since),
        )
    out.print(table)
    return OK


def run(
    command: Command, args: argparse.Namespace, out: Console | None, err: Console | None
) -> int:
    """Run a client command, turning its errors into a message and an exit code."""
    out = out or Console()
    # An error stays on one line whatever the terminal's width: it is grepped and logged.
    err = err or Console(stderr=True, soft_wrap=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        return command(args, out, err)
    except _Usage as exc:
        err.print(f"[red]error:[/red] {_plain(str(exc))}")
        return USAGE
    except WaitTimeout as exc:
        if exc.job is None:
            err.print(f"[yellow]still waiting after {args.timeout:g} s[/yellow]")
        else:
            err.print(
                f"[yellow]job {exc.job.id} still {exc.job.status} after {args.timeout:g} s"
                f"[/yellow]; follow it with: sgw watch {exc.job.id}"
            )
        return NOT_SUCCESSFUL
    except (JobFailed, JobDismissed, ResultNotReady, Gone) as exc:
        err.print(f"[red]{_plain(exc.detail)}[/red]")
        return NOT_SUCCESSFUL
    except (Unauthorized, Forbidden, TooManyRequests, ServiceUnavailable) as exc:
        err.print(f"[red]refused:[/red] {_plain(str(exc))}")
        return UNREACHABLE
    except ApiError as exc:
        if exc.errors:  # the detail repeats them: one per line reads better
            err.print(f"[red]error:[/red] {exc.status} {_plain(exc.code)}")
            for field in exc.errors:
                err.print(f"  {_plain(field.path)}: {_plain(field.message)}", highlight=False)
        else:
            err.print(f"[red]error:[/red] {_plain(str(exc))}")
        return USAGE
    except (GatewayUnreachable, UnexpectedResponse) as exc:
        err.print(f"[red]unreachable:[/red] {_plain(str(exc))}")
        return UNREACHABLE
    except ClientError as exc:
        err.print(f"[red]error:[/red] {_plain(str(exc))}")
        return UNREACHABLE
    except KeyboardInterrupt:
        return INTERRUPTED


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client subcommands to ``sgw``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the gateway's URL ({URL_ENV}, default localhost:8000)")
    common.add_argument("--token", help=f"a bearer token ({TOKEN_ENV})")

    def add(name: str, command: Command, help: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help, parents=[common], epilog=EPILOG)

        def func(
            args: argparse.Namespace, out: Console | None = None, err: Console | None = None
        ) -> int:
            return run(command, args, out, err)

        parser.set_defaults(func=func)
        return parser

    submit = add("submit", cmd_submit, "submit a job: sgw submit SERVICE key=value ...")
    submit.add_argument("service", help="the process (service) id")
    submit.add_argument("inputs", nargs="*", type=key_value, metavar="key=value", help=INPUTS_HELP)
    submit.add_argument(
        "--json",
        metavar="FILE",
        help="inputs from a JSON object file (- for stdin); key=value pairs override its keys",
    )
    submit.add_argument(
        "--wait",
        action="store_true",
        help="follow the job with a progress bar, then print its result",
    )
    submit.add_argument(
        "--timeout",
        type=float,
        help="with --wait: give up waiting after this many seconds (the job goes on)",
    )
    submit.add_argument(
        "--idempotency-key", help="your own key for this submission (default: a new UUID)"
    )

    watch = add("watch", cmd_watch, "follow a job with a progress bar until it ends")
    watch.add_argument("id", help="the job id")
    watch.add_argument("--timeout", type=float, help="give up waiting after this many seconds")

    result = add("result", cmd_result, "print a successful job's result (JSON)")
    result.add_argument("id", help="the job id")

    cancel = add("cancel", cmd_cancel, "dismiss a job: cancel it, or drop its result")
    cancel.add_argument("id", help="the job id")

    jobs = add("jobs", cmd_jobs, "list your jobs, newest first")
    jobs.add_argument(
        "--status",
        action="append",
        choices=[s.value for s in JobStatus],
        help="only this status (repeatable)",
    )
    jobs.add_argument("--service", help="only this process")
    jobs.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")

    workers = add("workers", cmd_workers, "list the live workers")
    workers.add_argument("--service", help="only this service's")
