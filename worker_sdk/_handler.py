"""A registered handler: the function, how it runs, and the inputs model its signature names."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_type_hints

import pydantic_core
from pydantic import BaseModel

Isolation = Literal["async", "thread", "process"]


@dataclass(frozen=True, slots=True)
class Handler:
    """``fn(ctx, inputs)``, run on the event loop, a thread or a child process."""

    fn: Callable[..., Any]
    isolation: Isolation
    inputs_model: type[BaseModel] | None

    @classmethod
    def of(cls, fn: Callable[..., Any], isolation: Isolation) -> Handler:
        """Check ``fn`` against ``isolation`` and read its inputs model from its signature."""
        is_coroutine = inspect.iscoroutinefunction(fn)
        if isolation == "async" and not is_coroutine:
            raise TypeError("isolation='async' needs an async def handler")
        if isolation != "async" and is_coroutine:
            raise TypeError(f"isolation={isolation!r} needs a plain def handler")
        return cls(fn, isolation, inputs_model(fn))

    def parse_inputs(self, inputs: dict[str, Any]) -> Any:
        """The inputs as the handler takes them (raises ``ValidationError`` on a mismatch)."""
        if self.inputs_model is None:
            return inputs
        return self.inputs_model.model_validate(inputs)


def inputs_model(fn: Callable[..., Any]) -> type[BaseModel] | None:
    """The pydantic model ``fn``'s second parameter is annotated with, if any."""
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 2:
        raise TypeError(
            f"handler {fn.__qualname__} must take (ctx, inputs), got {len(params)} args"
        )
    hints = get_type_hints(fn)
    annotation = hints.get(params[1].name)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


class InputsModelOutOfDate(ValueError):
    """The handler's inputs model was generated from another schema than the catalogue's."""


def check_inputs_model(handler: Handler, service: str, digest: str) -> str | None:
    """Refuse a model generated (``sgw models``) from another schema of ``service`` than the
    one whose digest is ``digest``; a hand-written model is allowed, with a warning returned."""
    model = handler.inputs_model
    if model is None:
        return None
    module = sys.modules.get(model.__module__)
    generated = getattr(module, "CATALOGUE_DIGESTS", {}).get(model.__name__)
    if generated is None:
        return (
            f"{model.__module__}.{model.__name__} is not generated from the catalogue "
            "(sgw models): nothing keeps it in step with the schema the gateway checks"
        )
    if tuple(generated) != (service, digest):
        raise InputsModelOutOfDate(
            f"{model.__module__}.{model.__name__} was generated from another inputs schema "
            f"than the catalogue's for {service!r}: run sgw models"
        )
    return None


def to_json(value: Any) -> Any:
    """Turn a handler's return value into JSON-compatible data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return pydantic_core.to_jsonable_python(value)
