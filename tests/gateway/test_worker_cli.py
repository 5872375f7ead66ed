"""The options of ``sgw worker`` for its pool and its autoscaling, as its parser reads them."""

from __future__ import annotations

import argparse
import sys

import pytest

from gateway.cli import build_parser
from worker_sdk import Autoscale


def parse(*args: str) -> argparse.Namespace:
    return build_parser().parse_args(["worker", "examples.textstats:worker", *args])


def test_autoscale_bounds_are_read() -> None:
    args = parse("--autoscale", "1:4")
    assert args.autoscale == Autoscale(1, 4)


@pytest.mark.parametrize(
    "args",
    [
        ("--autoscale", "4:1"),
        ("--autoscale", "0:2"),
        ("--autoscale", "4"),
        ("--autoscale", "1:4", "--concurrency", "2"),  # one or the other
        ("--max-jobs-per-child", "0"),
        ("--max-memory-per-child", "lots"),
    ],
)
def test_bad_pool_and_autoscale_options_are_refused(
    args: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(*args)
    assert "error" in capsys.readouterr().err


def test_recycling_options_are_read_with_units() -> None:
    args = parse("--max-jobs-per-child", "100", "--max-memory-per-child", "512MiB")
    assert args.max_jobs_per_child == 100
    assert args.max_memory_per_child == 512 * 1024 * 1024


def test_the_event_loop_is_uvloop_unless_asked_otherwise(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvloop

    from gateway.cli import main
    from gateway.worker_process import loop_factory

    assert parse().loop == "auto"
    assert loop_factory("auto") is loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None
    with pytest.raises(SystemExit):
        parse("--loop", "trio")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # not installed
    assert loop_factory("auto") is None
    with pytest.raises(ImportError):
        loop_factory("uvloop")
    assert main(["worker", "examples.echo:worker", "--loop", "uvloop"]) == 2
    assert "uvloop is not installed" in capsys.readouterr().err
