"""Registering a handler: its signature, its isolation, and its inputs model."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
from pydantic import BaseModel

from worker_sdk import JobContext, Worker
from worker_sdk._handler import Handler, InputsModelOutOfDate, check_inputs_model, inputs_model


class Inputs(BaseModel):
    n: int


def test_the_inputs_model_is_read_from_the_signature() -> None:
    def typed(ctx: JobContext, inputs: Inputs) -> None: ...

    def plain(ctx: JobContext, inputs: dict[str, Any]) -> None: ...

    assert inputs_model(typed) is Inputs
    assert inputs_model(plain) is None
    assert Handler.of(typed, "thread").parse_inputs({"n": "3"}) == Inputs(n=3)
    assert Handler.of(plain, "thread").parse_inputs({"n": "3"}) == {"n": "3"}


def test_a_handler_takes_ctx_and_inputs() -> None:
    def wrong(ctx: JobContext) -> None: ...

    with pytest.raises(TypeError, match=r"must take \(ctx, inputs\)"):
        inputs_model(wrong)


def test_the_isolation_must_fit_the_function() -> None:
    async def coroutine(ctx: JobContext, inputs: Any) -> None: ...

    def function(ctx: JobContext, inputs: Any) -> None: ...

    with pytest.raises(TypeError, match="async def"):
        Handler.of(function, "async")
    with pytest.raises(TypeError, match="plain def"):
        Handler.of(coroutine, "process")
    worker = Worker("echo", version="1")
    worker.handler(coroutine)
    with pytest.raises(RuntimeError, match="already has a handler"):
        worker.handler(coroutine)


def _generated(digests: dict[str, tuple[str, str]]) -> type[BaseModel]:
    """A model in a module shaped like the one ``sgw models`` writes."""
    module = types.ModuleType("generated_for_test")
    model = type("EchoInputs", (BaseModel,), {"__module__": module.__name__})
    module.EchoInputs = model  # type: ignore[attr-defined]
    module.CATALOGUE_DIGESTS = digests  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    return model


def test_a_generated_model_must_come_from_the_catalogues_schema() -> None:
    model = _generated({"EchoInputs": ("echo", "abc")})

    def handler(ctx: JobContext, inputs: Any) -> None: ...

    handler.__annotations__["inputs"] = model
    typed = Handler(handler, "thread", model)
    assert check_inputs_model(typed, "echo", "abc") is None
    with pytest.raises(InputsModelOutOfDate, match="run sgw models"):
        check_inputs_model(typed, "echo", "def")
    with pytest.raises(InputsModelOutOfDate):
        check_inputs_model(typed, "other", "abc")


def test_a_hand_written_model_is_allowed_with_a_warning() -> None:
    def handler(ctx: JobContext, inputs: Inputs) -> None: ...

    warning = check_inputs_model(Handler.of(handler, "thread"), "echo", "abc")
    assert warning is not None
    assert "not generated from the catalogue" in warning
