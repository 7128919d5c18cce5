"""`@validate`: pydantic checks the arguments of exported methods, with errors that name the argument.

Arguments arrive from any client, decoded from protobuf Values (every number as a float, NaN and
infinity as None). Upstream's drivers stack `@export` over pydantic's `@validate_call`: a wrong
type, a value out of its bounds, a missing or an extra argument raise `ValidationError`, a
`ValueError`, which the client receives as INVALID_ARGUMENT instead of UNKNOWN. In lax mode `3.0`
passes for an `int` and `2.5` does not.

`@validate` is `validate_call(validate_return=True)` plus the two things it lacks for exported
methods (measured on pydantic 2.14 and Jumpstarter 0.9):

- Jumpstarter passes arguments by position, and pydantic locates a positional argument by its
  index: its message says `1`, not `level`. Here the message names the argument (and the field,
  `settings.level`, inside a model argument), on one line.
- On an async generator (a streaming call) `validate_call` returns a plain function, which
  `@export` would register as a unary call. Here the method stays an async generator.

A `ValidationError` raised by the method's own code (parsing a device's answer, say) is not about
the arguments: it passes unchanged, and a driver should turn it into its own error (a device that
answers garbage is not the client's fault). A result its annotation refuses is a bug of the
driver: RuntimeError (UNKNOWN), not INVALID_ARGUMENT.
"""

from __future__ import annotations

import functools
import inspect
import reprlib
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from pydantic import ValidationError, validate_call

Method = TypeVar("Method", bound=Callable[..., Any])


def validate(method: Method) -> Method:
    """Check the arguments (and the result, for unary calls) of an exported method against its annotations."""
    # The parameters a position can name, `self` first, as pydantic counts positions (not *args, **kwargs).
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [name for name, p in inspect.signature(method).parameters.items() if p.kind in positional]
    if inspect.isasyncgenfunction(method):
        checked = validate_call(method)  # calling it checks the arguments, then returns the generator

        @functools.wraps(method)
        async def generator(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
            with _argument_errors(method, names):
                items = checked(*args, **kwargs)
            async for item in items:
                yield item

        return cast(Method, generator)

    checked = validate_call(validate_return=True)(method)
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def coroutine(*args: Any, **kwargs: Any) -> Any:
            with _argument_errors(method, names):
                return await checked(*args, **kwargs)

        return cast(Method, coroutine)

    @functools.wraps(method)
    def function(*args: Any, **kwargs: Any) -> Any:
        with _argument_errors(method, names):
            return checked(*args, **kwargs)

    return cast(Method, function)


@contextmanager
def _argument_errors(method: Callable[..., Any], names: list[str]) -> Iterator[None]:
    """Turn validate_call's errors about `method`'s arguments into a ValueError that names them."""
    try:
        yield
    except ValidationError as error:
        if error.title != method.__qualname__:
            raise  # raised by the method's own code, not by the check of its arguments
        problems = error.errors(include_url=False)
        if any(not problem["loc"] for problem in problems):
            raise RuntimeError(f"{method.__qualname__} returned a value its annotation refuses: {error}") from None
        raise ValueError("; ".join(_describe(problem, names) for problem in problems)) from None


def _describe(problem: Any, names: list[str]) -> str:
    """One problem, as `name: what is wrong (got value)`; `name.field` inside a model argument."""
    where, *inside = problem["loc"]
    if isinstance(where, int):  # a position, counted from `self`
        where = names[where] if 0 < where < len(names) else f"argument {where}"
    where = ".".join([where, *map(str, inside)])
    # reprlib shortens a huge value: error messages travel in gRPC metadata, capped at 16 KiB.
    got = "" if problem["type"] == "missing_argument" else f" (got {reprlib.repr(problem['input'])})"
    return f"{where}: {problem['msg']}{got}"


# Config errors. The exporter builds each driver from its YAML entry (`config:` as keyword arguments), and
# pydantic's error starts "1 validation error for MyDriver": the class, not which of the config's
# entries it is (two entries may share a class), and the key only on the next line, at the end of a
# ~240-line traceback from `jmp run`. Jumpstarter 0.9 does not tell a driver its name: the name is the
# key of the loop over `children` (or `export`) in ExporterConfigV1Alpha1DriverInstance.instantiate,
# which is on the stack while the driver is built. That is the one place that knows it, so it is read there.

Driver = TypeVar("Driver", bound=type)


def names_its_config_errors(cls: Driver) -> Driver:
    """Class decorator: a config error of this driver, built from an exporter config, names the entry and the key.

    Its first line becomes `1 validation error for MyDriver, export entry 'outer.inner': timeout:
    Input should be greater than 0`. Built in code (a test's `MyDriver(...)`), the error is pydantic's own.
    """
    init: Callable[..., None] = vars(cls)["__init__"]  # the one pydantic's dataclass made

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except ValidationError as error:
            entry = export_entry()
            if entry is None or error.title != type(self).__name__:
                raise
            problems = error.errors()
            said = "; ".join(_config_problem(problem) for problem in problems)
            title = f"{type(self).__name__}, export entry {entry!r}: {said}"
            raise ValidationError.from_exception_data(title, problems, hide_input=False) from None  # type: ignore[arg-type]

    setattr(cls, "__init__", __init__)  # noqa: B010 (mypy refuses assigning to a method)
    return cls


def export_entry() -> str | None:
    """The path (`outer.inner`) of the exporter config entry being built on this thread, or None outside one."""
    from jumpstarter.config.exporter import ExporterConfigV1Alpha1DriverInstance

    names = []
    frame = inspect.currentframe()
    while frame is not None:
        # The loop `{name: child.instantiate() for name, child in ...children.items()}`: its own frame before
        # Python 3.12, inlined into instantiate's frame since (PEP 709); either way one name per level.
        child = frame.f_locals.get("child")
        if isinstance(child, ExporterConfigV1Alpha1DriverInstance) and isinstance(frame.f_locals.get("name"), str):
            names.append(frame.f_locals["name"])
        frame = frame.f_back
    return ".".join(reversed(names)) or None


def _config_problem(problem: Any) -> str:
    """One config problem, as `key: what is wrong`, or what is wrong with the entry as a whole (its children)."""
    message = str(problem["msg"]).removeprefix("Value error, ")
    where = ".".join(map(str, problem["loc"]))
    return f"{where}: {message}" if where else message
