"""The processes' logging: every record on one line, whatever its message holds.

A message may carry what a client or a worker chose (a job's message, a URL, a service's
error): a line break or a terminal escape in it would forge log lines or rewrite the terminal.
Control characters are written escaped (``\\n``, ``\\x1b``). A traceback keeps its lines,
each begun with ``| ``: only a record's first line begins at the margin.

``sgw serve`` gives uvicorn the same configuration (:func:`uvicorn_logging`): its worker
processes configure logging from it when they start, and would otherwise drop the gateway's
records below WARNING and print the others without time, level or logger.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators; tabs stay.
_ESCAPES = {
    code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if code != 0x09
}
_ESCAPES.update({0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def one_line(text: str) -> str:
    """``text`` with its control characters escaped."""
    return text.translate(_ESCAPES)


class OneLineFormatter(logging.Formatter):
    """A formatter that escapes the control characters of each record's message, and marks
    each line of a traceback (whose exception's text may hold anything too)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        # The message is one line now: what follows it is the traceback or the stack (which
        # another handler's formatter may have cached on the record already).
        head, _, tail = super().format(record).partition("\n")
        lines = (f"| {one_line(line)}" for line in tail.split("\n")) if tail else ()
        return "\n".join((head, *lines))


def configure(level: str | int = logging.INFO) -> None:
    """Log to stderr, one line per record, from ``level`` up (the commands' logging)."""
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def uvicorn_logging(level: str) -> dict[str, Any]:
    """uvicorn's own logging configuration, its records and the root logger's (the
    gateway's) logged as :func:`configure` does; its access log keeps its own format (the
    request line comes quoted)."""
    from uvicorn.config import LOGGING_CONFIG  # only the serve command imports uvicorn

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["one_line"] = {"()": f"{__name__}.OneLineFormatter", "fmt": LOG_FORMAT}
    config["handlers"]["one_line"] = {
        "formatter": "one_line",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    # uvicorn's own records (an application's exception and its traceback among them) are
    # one line each too: its loggers keep their handler, which formats as the root's does.
    config["handlers"]["default"]["formatter"] = "one_line"
    config["root"] = {"handlers": ["one_line"], "level": level}
    return config
