"""Log records stay one line each, whatever their message holds."""

from __future__ import annotations

import io
import logging
import logging.config

from gateway.logs import LOG_FORMAT, OneLineFormatter, one_line, uvicorn_logging


def _formatted(message: str, *args: object, exc: bool = False) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter(LOG_FORMAT))
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        if exc:
            try:
                raise ValueError("inner\nline")
            except ValueError:
                logger.exception(message, *args)
        else:
            logger.warning(message, *args)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_a_message_cannot_forge_a_line_or_drive_the_terminal() -> None:
    forged = "done\n2026-12-01 00:00:00,000 ERROR gateway: forged\r\x1b[2J\u2028\x85end"
    text = _formatted("job %s: %s", "j1", forged)
    assert text.count("\n") == 1
    assert text.endswith("\n")
    assert "\\n2026-12-01 00:00:00,000 ERROR gateway: forged\\r\\x1b[2J\\u2028\\x85end" in text
    assert one_line("a\tb") == "a\tb"  # tabs stay


def test_a_traceback_keeps_its_lines_each_marked() -> None:
    text = _formatted("failed on %s", "x\ny", exc=True)
    first, *rest = text.splitlines()
    assert first.endswith("failed on x\\ny")
    assert rest[0] == "| Traceback (most recent call last):"
    assert rest[-2:] == ["| ValueError: inner", "| line"]  # the exception's text may hold lines
    assert all(line.startswith("| ") for line in rest)


def test_uvicorn_logs_the_root_logger_and_its_own_records_one_line_each() -> None:
    """uvicorn logs an application's exception ("Exception in ASGI application" and its
    traceback, whose text may hold what a client sent) on ``uvicorn.error``, which does not
    propagate to the root: its own handler formats one line per record too."""
    config = uvicorn_logging("INFO")
    assert config["root"] == {"handlers": ["one_line"], "level": "INFO"}
    (handler,) = config["loggers"]["uvicorn"]["handlers"]
    assert config["handlers"][handler]["formatter"] == "one_line"
    loggers = [logging.getLogger(name) for name in config["loggers"]]
    saved = [(lg, lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    try:
        logging.config.dictConfig({**config, "root": {"level": "INFO", "handlers": []}})
        formatter = logging.getLogger("uvicorn").handlers[0].formatter
    finally:
        for logger, handlers, propagate, level in saved:
            logger.handlers[:] = handlers
            logger.propagate, logger.level = propagate, level
    try:
        raise ValueError("bad input\n2026-12-01 00:00:00,000 ERROR gateway: forged")
    except ValueError as exc:
        record = logging.getLogger("uvicorn.error").makeRecord(
            "uvicorn.error",
            logging.ERROR,
            __file__,
            1,
            "Exception in ASGI application\n",
            (),
            (type(exc), exc, exc.__traceback__),
        )
    assert formatter is not None
    first, *rest = formatter.format(record).split("\n")
    assert first.endswith("ERROR uvicorn.error: Exception in ASGI application\\n")
    assert rest
    assert all(line.startswith("| ") for line in rest), rest
