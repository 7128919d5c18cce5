# mypy: allow-untyped-defs
"""@validate: argument checks from pydantic for every kind of exported method, with errors naming the argument."""

from collections.abc import AsyncGenerator
from typing import Annotated

import pytest
from jumpstarter.client.core import DriverError, DriverInvalidArgument
from jumpstarter.common.utils import serve
from jumpstarter.driver import Driver, export
from pydantic import BaseModel, Field
from pydantic.dataclasses import dataclass

from .validation import validate


class Point(BaseModel):
    """A model argument: it crosses gRPC as a dict."""

    x: int
    y: int


@dataclass(kw_only=True)
class Checked(Driver):
    """One exported method of each kind, checked by @validate."""

    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    @export
    @validate
    def sync_call(self, level: Annotated[int, Field(ge=0, le=10)], labels: list[str]) -> int:
        return level + len(labels)

    @export
    @validate
    async def async_call(self, point: Point) -> Point:
        return Point(x=point.y, y=point.x)

    @export
    @validate
    async def generator(self, count: Annotated[int, Field(ge=0)]) -> AsyncGenerator[int, None]:
        for i in range(count):
            yield i

    @export
    @validate
    async def wrong_result(self) -> int:
        return "not a number"  # type: ignore[return-value]

    @export
    @validate
    async def parses_garbage(self) -> int:
        return Point.model_validate({"x": "garbage", "y": 0}).x


@pytest.fixture
def client():
    """The driver through a real gRPC session."""
    with serve(Checked()) as client:
        yield client


def test_every_kind_of_method_works(client):
    """Sync, async and async generator methods keep their kind, and a model argument arrives as the model."""
    assert client.call("sync_call", 3.0, ["a", "b"]) == 5
    assert client.call("async_call", {"x": 1, "y": 2}) == {"x": 2, "y": 1}
    assert list(client.streamingcall("generator", 3)) == [0, 1, 2]


@pytest.mark.parametrize(
    ("method", "args", "message"),
    [
        ("sync_call", (11, []), r"^.*INVALID_ARGUMENT: level: Input should be less than or equal to 10 \(got 11\.0\)$"),
        ("sync_call", (1, "ab"), "labels: Input should be a valid list"),
        ("sync_call", (1,), "labels: Missing required argument"),
        ("async_call", ({"x": 1},), r"point\.y: Field required"),
        ("async_call", ({"x": 1, "y": "two"},), r"point\.y: Input should be a valid integer.* \(got 'two'\)"),
        ("async_call", ({"x": 1, "y": 2}, 3), "argument 2: Unexpected positional argument"),
    ],
)
def test_argument_errors_name_the_argument(client, method, args, message):
    """A refused argument is INVALID_ARGUMENT, on one line, naming the argument and what it got."""
    with pytest.raises(DriverInvalidArgument, match=message):
        client.call(method, *args)


def test_generator_arguments_are_checked_before_the_first_item(client):
    """A streaming call refuses its arguments as a unary call does."""
    with pytest.raises(DriverInvalidArgument, match="count: Input should be greater than or equal to 0"):
        list(client.streamingcall("generator", -1))


def test_a_refused_result_is_the_drivers_bug_not_the_callers(client):
    """A result that does not match the annotation is UNKNOWN, not INVALID_ARGUMENT."""
    with pytest.raises(DriverError, match="returned a value its annotation refuses") as error:
        client.call("wrong_result")
    assert not isinstance(error.value, DriverInvalidArgument)


def test_validation_errors_of_the_method_itself_pass_unchanged(client):
    """A ValidationError from the method's own code keeps its message (the driver should convert it)."""
    with pytest.raises(DriverInvalidArgument, match="1 validation error for Point"):
        client.call("parses_garbage")
