"""``sgw``: serve the gateway, check a configuration, run a worker; submit and follow jobs."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pydantic import ByteSize, TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table

from gateway import client_cli
from gateway.logs import configure, uvicorn_logging
from gateway.settings import Settings, load_settings
from gateway.settings_file import SettingsFileMissing
from gateway.worker_process import loop_factory, run_worker
from worker_sdk import Autoscale, UnknownService, Worker
from worker_sdk.wire import MAX_CONCURRENCY, TopologyMismatch
from worker_sdk.wire.catalogue import Catalogue, CatalogueError, load_catalogue, size_problems
from worker_sdk.wire.supervisor import BrokerUnreachable


def _settings(console: Console, env_file: Path | None = None) -> Settings | None:
    try:
        settings = load_settings(env_file)
    except SettingsFileMissing as exc:
        console.print(f"[red]{exc}[/red]")
        return None
    except ValidationError as exc:
        console.print("[red]invalid settings[/red]")
        for error in exc.errors():
            loc = error["loc"]
            name = "SG_" + "_".join(str(p) for p in loc).upper() if loc else "settings"
            console.print(f"  {name}: {error['msg']}", markup=False)
        return None
    logging.getLogger().setLevel(settings.log_level)
    if settings.env_file is not None:
        # The gateway's processes and anything they start read the same file.
        os.environ["SG_ENV_FILE"] = str(settings.env_file.resolve())
    return settings


# The web application and what only its commands use are imported by those commands: a worker
# or a client command starts without loading them (a second less on every start).


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.auth import AuthConfigError, check_auth_settings
    from gateway.server import GuardedHttpProtocol

    console = Console(stderr=True)
    settings = _settings(console, args.env_file)
    if settings is None:
        return 2
    try:
        check_auth_settings(settings)
        catalogue = load_catalogue(settings.catalogue)
    except AuthConfigError as exc:
        console.print(f"[red]invalid settings: {exc}[/red]", markup=True)
        return 2
    except CatalogueError as exc:
        _print_catalogue_error(console, exc)
        return 2
    if not _pages_ok(console, catalogue, settings):
        return 2
    workers = args.workers or settings.workers
    if workers > 1 and settings.prometheus_multiproc_dir is None:
        # prometheus-client finds its multiprocess directory in the environment of every
        # process (it chooses its storage when imported), so the worker processes inherit it.
        directory = tempfile.mkdtemp(prefix="sg-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    uvicorn.run(
        "gateway.app:app_factory",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=workers,
        log_level=settings.log_level.lower(),
        log_config=uvicorn_logging(settings.log_level),
        access_log=args.access_log,
        http=GuardedHttpProtocol,
        proxy_headers=True,
        forwarded_allow_ips=list(settings.forwarded_allow_ips),
        timeout_graceful_shutdown=settings.shutdown_grace,
        # uvicorn kills a worker process that does not answer its ping within this long; a
        # process still importing on a loaded host must not count as hung.
        timeout_worker_healthcheck=30,
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.app import create_app
    from gateway.auth import AuthConfigError, check_auth_settings
    from gateway.canarie import DEFAULT_INSTITUTION, unset_platform_fields
    from gateway.checks import route_warnings, secret_warnings

    console = Console()
    settings = _settings(console, args.env_file)
    if settings is None:
        return 1
    try:
        check_auth_settings(settings)
    except AuthConfigError as exc:
        console.print("[red]invalid settings[/red]")
        console.print(f"  {exc}", markup=False)
        return 1
    path = args.catalogue or settings.catalogue
    try:
        catalogue = load_catalogue(path)
    except CatalogueError as exc:
        _print_catalogue_error(console, exc)
        return 1
    if not _pages_ok(console, catalogue, settings):
        return 1
    oversized = size_problems(
        catalogue,
        broker_max_bytes=settings.broker_max_message_bytes,
        store_max_bytes=settings.store_max_bytes,
    )
    if oversized:
        _print_catalogue_error(console, CatalogueError(str(path), oversized))
        return 1
    table = Table(title=f"{path}: {len(catalogue)} service(s)")
    for column in (
        "id",
        "version",
        "queue TTL (s)",
        "time limit (s)",
        "delivery limit",
        "max queued",
    ):
        table.add_column(column)
    for spec in catalogue:
        table.add_row(
            spec.id,
            spec.version,
            f"{spec.queue_ttl:g}",
            f"{spec.time_limit:g}" if spec.time_limit else "-",
            str(spec.delivery_limit),
            str(spec.max_queued or "-"),
        )
    console.print(table)
    console.print(
        f"broker {settings.amqp_url.split('@')[-1]}, namespace {settings.namespace!r}, "
        f"store {settings.store_url}"
    )
    for name in unset_platform_fields(catalogue):
        shown = "an empty address" if name == "supportEmail" else repr(DEFAULT_INSTITUTION)
        console.print(
            f"[yellow]platform.{name} is not set: the CANARIE info reports {shown}[/yellow]"
        )
    app = create_app(settings, catalogue=catalogue)
    for warning in secret_warnings(settings) + route_warnings(app, catalogue):
        console.print(warning, style="yellow", markup=False)
    console.print("[green]configuration OK[/green]")
    return 0


def _pages_ok(console: Console, catalogue: Catalogue, settings: Settings) -> bool:
    from gateway.canarie import page_problems

    problems = page_problems(catalogue, settings.canarie_templates)
    if problems:
        console.print("[red]CANARIE pages that cannot be served[/red]")
        for problem in problems:
            console.print(f"  {problem}", markup=False)
    return not problems


def _print_catalogue_error(console: Console, exc: CatalogueError) -> None:
    console.print(f"[red]{exc.source}: the catalogue is invalid[/red]")
    for problem in exc.problems:
        console.print(f"  {problem}", markup=False)


def _autoscale(text: str) -> Autoscale:
    try:
        return Autoscale.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _concurrency(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"{text} is more than {MAX_CONCURRENCY}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _byte_size(text: str) -> int:
    try:
        value = int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (bytes, or 512MiB, 1GB)") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive size")
    return value


def load_worker(reference: str) -> Worker:
    """Import ``module:attribute`` and return the :class:`Worker` it names."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{reference!r} is not module:attribute")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as uvicorn's --app-dir: workers live in the project
    module = importlib.import_module(module_name)
    worker = getattr(module, attribute, None)
    if not isinstance(worker, Worker):
        raise ValueError(f"{reference} is not a worker_sdk.Worker")
    return worker


def cmd_worker(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    settings = _settings(console, args.env_file)
    if settings is None:
        return 2
    try:
        worker = load_worker(args.reference)
        catalogue = load_catalogue(settings.catalogue)
        worker.spec(catalogue)
    except CatalogueError as exc:
        _print_catalogue_error(console, exc)
        return 2
    except (ImportError, ValueError, UnknownService) as exc:
        console.print(f"[red]{exc}[/red]", markup=False)
        return 2
    try:
        new_loop = loop_factory(args.loop)
    except ImportError:
        console.print("[red]--loop uvloop: uvloop is not installed[/red]")
        return 2
    for option in ("shutdown_grace", "max_jobs_per_child", "max_memory_per_child"):
        if (value := getattr(args, option)) is not None:
            setattr(worker, option, value)

    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(
                run_worker(
                    worker,
                    amqp_url=settings.amqp_url,
                    catalogue=catalogue,
                    namespace=settings.namespace,
                    concurrency=args.concurrency,
                    burst=args.burst,
                    url_policy=settings.url_policy(),
                    autoscale=args.autoscale,
                )
            )
    except (TopologyMismatch, BrokerUnreachable) as exc:
        console.print(f"[red]{exc}[/red]", markup=False)
        return 3
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from gateway.codegen import CodegenUnavailable, generate_models

    console = Console(stderr=True)
    settings = _settings(console, args.env_file)
    if settings is None:
        return 2
    path = args.catalogue or settings.catalogue
    try:
        catalogue = load_catalogue(path)
        source = generate_models(catalogue, output=str(args.output or "<module>.py"))
    except CatalogueError as exc:
        _print_catalogue_error(console, exc)
        return 1
    except CodegenUnavailable as exc:
        console.print(f"[red]{exc}[/red]", markup=False)
        return 2
    if args.output is None:
        print(source, end="")  # noqa: T201 - the command's output
    else:
        args.output.write_text(source)
        console.print(f"wrote the inputs models of {len(catalogue)} service(s) to {args.output}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from gateway.auth import mint_token

    console = Console(stderr=True)
    settings = _settings(console, args.env_file)
    if settings is None:
        return 2
    private_key = args.private_key.read_text() if args.private_key else None
    try:
        token = mint_token(
            settings,
            subject=None if args.legacy else args.sub,
            scopes=args.scope,
            lifetime=args.lifetime,
            private_key=private_key,
            algorithm=args.algorithm,
        )
    except (ValueError, TypeError) as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    print(token)  # noqa: T201 - the command's output
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgw", description="Service Gateway: job gateway and workers (settings: SG_*)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--env-file",
        type=Path,
        help="settings file (SG_ENV_FILE; default: .env beside the catalogue, else here)",
    )

    serve = commands.add_parser("serve", parents=[common], help="run the HTTP gateway")
    serve.add_argument("--host", help="bind address (SG_HOST)")
    serve.add_argument("--port", type=int, help="port (SG_PORT)")
    serve.add_argument("--workers", type=int, help="gateway processes (SG_WORKERS)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(func=cmd_serve)

    check = commands.add_parser(
        "check", parents=[common], help="validate settings and the catalogue, then exit"
    )
    check.add_argument("--catalogue", type=Path, help="catalogue file (SG_CATALOGUE)")
    check.set_defaults(func=cmd_check)

    worker = commands.add_parser(
        "worker", parents=[common], help="run a worker: sgw worker module:attribute"
    )
    worker.add_argument("reference", help="e.g. examples.thumbnail:worker")
    scale = worker.add_mutually_exclusive_group()
    scale.add_argument(
        "--concurrency",
        type=_concurrency,
        default=1,
        help=f"jobs at once (= prefetch), 1 to {MAX_CONCURRENCY}",
    )
    scale.add_argument(
        "--autoscale",
        type=_autoscale,
        metavar="MIN:MAX",
        help="follow the backlog: grow the concurrency (process handlers: child processes) up "
        "to MAX while tasks wait, shrink it down to MIN when idle, never cutting a job",
    )
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the event loop, as the gateway's (auto: uvloop when installed)",
    )
    worker.add_argument(
        "--shutdown-grace",
        type=float,
        help="seconds running jobs get to finish after SIGTERM before they are handed back",
    )
    worker.add_argument(
        "--max-jobs-per-child",
        type=_positive_int,
        help="process handlers: jobs a child process runs before a fresh one replaces it",
    )
    worker.add_argument(
        "--max-memory-per-child",
        type=_byte_size,
        help="process handlers: resident memory (bytes, or 512MiB, 1GB) past which a child "
        "process is replaced after its job",
    )
    worker.set_defaults(func=cmd_worker)
    models = commands.add_parser(
        "models",
        parents=[common],
        help="generate typed inputs models of the catalogue's services for worker handlers",
    )
    models.add_argument("--catalogue", type=Path, help="catalogue file (SG_CATALOGUE)")
    models.add_argument("--output", type=Path, help="write the module here (default: stdout)")
    models.set_defaults(func=cmd_models)
    token = commands.add_parser(
        "token", parents=[common], help="mint a JWT the gateway accepts (development)"
    )
    token.add_argument("--sub", default="dev", help="the owner of the caller's jobs")
    token.add_argument("--scope", action="append", default=[], help="a scope (repeatable)")
    token.add_argument("--lifetime", type=float, default=3600, help="seconds until it expires")
    token.add_argument("--algorithm", help="default: the first of SG_JWT_ALGORITHMS")
    token.add_argument("--private-key", type=Path, help="PEM private key for RS*/PS*/ES*/EdDSA")
    token.add_argument(
        "--legacy", action="store_true", help="no sub, as the old gateway minted (aud + exp)"
    )
    token.set_defaults(func=cmd_token)
    client_cli.add_commands(commands)  # submit, watch, result, cancel, jobs, workers
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure(logging.INFO)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
