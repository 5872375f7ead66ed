"""How a job in the pool of child processes fails: its handler raised there, or its child
died without a result (a crash, a signal, a resource limit)."""

from __future__ import annotations

import signal


class ChildDied(RuntimeError):
    """The child process exited without reporting a result; ``code`` names the job's error."""

    def __init__(self, message: str, code: str = "handler_crashed") -> None:
        super().__init__(message)
        self.code = code


class ChildFailed(Exception):
    """The handler raised in the child; carries what the job's error needs."""

    def __init__(self, type_name: str, message: str, code: str, retryable: bool) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.code = code
        self.retryable = retryable


def died(exitcode: int | None) -> ChildDied:
    """The job's error for a child that ended with ``exitcode`` (negative: a signal)."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else exitcode
        if exitcode == -signal.SIGXCPU:
            return ChildDied("the job used more CPU time than its cpu_time_limit", "cpu_time_limit")
        return ChildDied(f"the job's child process was killed by {name}")
    return ChildDied(f"the job's child process exited with code {exitcode}")
