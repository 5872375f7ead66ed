"""``sgw submit/watch/result/cancel/jobs`` against a gateway served over HTTP and a worker on
the real broker, with the rich consoles captured."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from examples.echo import worker as echo
from gateway.cli import build_parser, main
from gateway.client_cli import key_value
from tests.client.conftest import LiveGateway, until
from tests.integration.test_hostile_fleet import Send, _beat, publishing
from tests.support import eventually
from tests.workers import slow

pytestmark = pytest.mark.integration

RunWorker = Callable[..., asyncio.Task[None]]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Captured:
    """The two consoles of one command: stdout (results) and stderr (progress, messages)."""

    def __init__(self, *, terminal: bool = False) -> None:
        self.out_file, self.err_file = StringIO(), StringIO()
        self.out = Console(file=self.out_file, width=120, color_system=None)
        self.err = Console(  # soft-wrapped, as the command's own: an error stays on one line
            file=self.err_file,
            width=120,
            force_terminal=terminal,
            color_system=None,
            soft_wrap=True,
        )

    @property
    def stdout(self) -> str:
        return self.out_file.getvalue()

    @property
    def stderr(self) -> str:
        return ANSI.sub("", self.err_file.getvalue())


async def sgw(live: LiveGateway, *argv: str, captured: Captured | None = None) -> int:
    """Run ``sgw ARGV --url ... --token ...`` in a thread (it blocks), as alice."""
    captured = captured or Captured()
    args = build_parser().parse_args([*argv, "--url", live.url, "--token", live.token()])
    code: int = await asyncio.to_thread(args.func, args, captured.out, captured.err)
    return code


async def test_submit_wait_draws_a_progress_bar_from_the_stream_and_prints_the_result(
    live: LiveGateway, run_worker: RunWorker, tmp_path: Path
) -> None:
    run_worker(slow)
    gate = tmp_path / "gate"
    captured = Captured(terminal=True)  # a live progress bar, as in a terminal
    command = asyncio.create_task(
        sgw(live, "submit", "slow", f"gate={gate}", "progress=40", "--wait", captured=captured)
    )
    await until(lambda: " 40%" in captured.stderr, what="the bar at 40%")
    assert "waiting for the gate" in captured.stderr  # the job's message beside the bar
    assert not command.done()
    gate.touch()
    assert await asyncio.wait_for(command, timeout=30) == 0

    result = json.loads(captured.stdout)
    assert set(result) == {"worker", "pid"}
    stderr = captured.stderr
    assert "━" in stderr  # the bar itself
    assert re.search(r"job [0-9a-f-]{36} running", stderr)
    assert re.search(r"job [0-9a-f-]{36} successful", stderr)
    assert stderr.index(" 40%") < stderr.rindex("100%")


async def test_submit_then_result_jobs_watch(live: LiveGateway, run_worker: RunWorker) -> None:
    run_worker(echo)
    submitted = Captured()
    assert await sgw(live, "submit", "echo", "text=hi", "n=3", "flag=true", captured=submitted) == 0
    job_id = submitted.stdout.strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", job_id)
    assert "accepted" in submitted.stderr

    watched = Captured()  # not a terminal: the states as lines, the final bar once
    assert await sgw(live, "watch", job_id, "--timeout", "30", captured=watched) == 0
    assert "successful" in watched.stderr
    assert "100%" in watched.stderr

    result = Captured()
    assert await sgw(live, "result", job_id, captured=result) == 0
    assert json.loads(result.stdout) == {"text": "hi", "n": 3, "flag": True}

    listed = Captured()
    assert (
        await sgw(live, "jobs", "--service", "echo", "--status", "successful", captured=listed) == 0
    )
    assert job_id in listed.stdout
    assert "1 job(s)" in listed.stdout


async def test_cancel_then_watch_and_result_say_it_did_not_succeed(
    live: LiveGateway, run_worker: RunWorker, tmp_path: Path
) -> None:
    run_worker(slow)
    submitted = Captured()
    gate = f"gate={tmp_path / 'never'}"
    assert await sgw(live, "submit", "slow", gate, captured=submitted) == 0
    job_id = submitted.stdout.strip()
    async with live.async_client() as client:

        async def running() -> bool:
            return (await client.status(job_id)).status == "running"

        await eventually(running, what="the job to run")

    cancelled = Captured()
    assert await sgw(live, "cancel", job_id, captured=cancelled) == 0
    assert "dismissed (cancelled)" in cancelled.stderr
    watched = Captured()
    assert await sgw(live, "watch", job_id, captured=watched) == 1
    assert "dismissed" in watched.stderr
    result = Captured()
    assert await sgw(live, "result", job_id, captured=result) == 1
    assert "was dismissed" in result.stderr
    assert result.stdout == ""


async def test_failures_and_exit_codes(
    live: LiveGateway, run_worker: RunWorker, tmp_path: Path
) -> None:
    run_worker(echo)
    failed = Captured()
    assert await sgw(live, "submit", "echo", "fail=boom", "--wait", captured=failed) == 1
    assert "failed (handler_error): boom" in failed.stderr
    assert failed.stdout == ""

    invalid = Captured()
    assert await sgw(live, "submit", "echo", 'delay="soon"', captured=invalid) == 2
    assert "422 invalid-input" in invalid.stderr
    assert "/inputs/delay" in invalid.stderr

    unknown = Captured()
    assert await sgw(live, "watch", "6f1c2b5e-0000-4000-8000-000000000000", captured=unknown) == 2
    assert "no-such-job" in unknown.stderr
    assert await sgw(live, "submit", "nope") == 2

    inputs = tmp_path / "inputs.json"
    inputs.write_text("[1, 2]")
    not_an_object = Captured()
    assert await sgw(live, "submit", "echo", "--json", str(inputs), captured=not_an_object) == 2
    assert "must be a JSON object" in not_an_object.stderr
    inputs.write_text('{"text": "from the file", "n": 1}')
    merged = Captured()
    code = await sgw(
        live, "submit", "echo", "n=2", "--json", str(inputs), "--wait", captured=merged
    )
    assert code == 0
    assert json.loads(merged.stdout) == {"text": "from the file", "n": 2}

    args = build_parser().parse_args(["jobs", "--url", live.url, "--token", "expired.or.wrong"])
    refused = Captured()
    assert await asyncio.to_thread(args.func, args, refused.out, refused.err) == 3
    assert "401 unauthorized" in refused.stderr

    queued = Captured()
    assert await sgw(live, "submit", "slow", "--wait", "--timeout", "1", captured=queued) == 1
    assert "still accepted after 1 s" in queued.stderr


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as usage:
        main(["submit", "echo", "no-equals-sign"])
    assert usage.value.code == 2
    assert "is not key=value" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n=3", ("n", 3)),
        ("ratio=0.5", ("ratio", 0.5)),
        ("flag=true", ("flag", True)),
        ("none=null", ("none", None)),
        ('tags=["a","b"]', ("tags", ["a", "b"])),
        ('opts={"x":1}', ("opts", {"x": 1})),
        ("text=hello world", ("text", "hello world")),
        ('id="007"', ("id", "007")),
        ("id=007", ("id", "007")),  # not JSON (a leading zero): kept as written
        ("url=https://x/?a=b", ("url", "https://x/?a=b")),
        ("empty=", ("empty", "")),
    ],
)
def test_key_value_takes_json_when_it_is_json(text: str, expected: tuple[str, object]) -> None:
    assert key_value(text) == expected


async def test_workers_lists_the_live_workers(live: LiveGateway, run_worker: RunWorker) -> None:
    run_worker(slow, concurrency=2)

    async def listed() -> Captured | None:
        captured = Captured()
        assert await sgw(live, "workers", captured=captured) == 0
        return captured if "1 live worker(s)" in captured.stdout else None

    captured = await eventually(listed, within=30, what="the worker in sgw workers")
    row = next(line for line in captured.stdout.splitlines() if "slow@" in line)
    assert "1.0.0" in row
    assert "0/2" in row  # running / concurrency
    other = Captured()
    assert await sgw(live, "workers", "--service", "echo", captured=other) == 0
    assert "0 live worker(s)" in other.stdout


@pytest.fixture
async def rogue_events(namespace: str) -> AsyncIterator[Send]:
    async with publishing(namespace) as send:
        yield send


async def test_workers_shows_what_a_worker_announces_as_text_not_as_terminal_codes(
    live: LiveGateway, rogue_events: Send
) -> None:
    """A worker's host and version go to the operator's terminal: an escape sequence (a
    window title, a cleared screen) is refused with the heartbeat at the gateway, and rich
    markup (a hyperlink) is shown, not run."""
    escape = "\x1b]0;owned\x1b\\\x1b[2Jnode-1"
    version = "[link=https://evil.example]1.0[/link]"
    await rogue_events(_beat("escaper", "echo", host=escape), "echo.heartbeat")
    await rogue_events(_beat("rogue", "echo", host="node-1", version=version), "echo.heartbeat")
    captured = Captured()
    captured.out = Console(file=captured.out_file, width=200, force_terminal=True)

    async def listed() -> bool:
        captured.out_file.seek(0)
        captured.out_file.truncate()
        assert await sgw(live, "workers", captured=captured) == 0
        return "1 live worker(s)" in ANSI.sub("", captured.stdout)

    await eventually(listed, within=30, what="the rogue worker in sgw workers")
    raw = captured.stdout
    assert "\x1b]" not in raw  # no operating-system command: no title, no hyperlink
    assert "\x1b[2J" not in raw
    shown = ANSI.sub("", raw)
    assert "node-1" in shown
    assert "[link=https://evil.example]1.0[/link]" in shown
