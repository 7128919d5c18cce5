# mypy: allow-untyped-defs
"""@validate: argument checks from pydantic for every kind of exported method, with errors naming the argument."""

from collections.abc import AsyncGenerator
from typing import Annotated

import pytest
from jumpstarter.client.core import DriverError, DriverInvalidArgument
from jumpstarter.common.utils import serve
from jumpstarter.config.exporter import ExporterConfigV1Alpha1DriverInstance
from jumpstarter.driver import Driver, export
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from .validation import names_its_config_errors, validate


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


@names_its_config_errors
@dataclass(kw_only=True, config=ConfigDict(extra="forbid"))
class Configured(Driver):
    """A driver with one checked config key, and a check of the whole entry."""

    timeout: float = Field(default=1.0, gt=0)

    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.timeout == 13:
            raise ValueError("13 s is unlucky")


def build(config: str):
    """Build a tree from exporter YAML as the exporter does: `Configured` as the child `inner` of `group`."""
    text = f"""
children:
  group:
    children:
      inner:
        type: {__name__}.Configured
        config: {config}
"""
    return ExporterConfigV1Alpha1DriverInstance.from_str(text).instantiate()


@pytest.mark.parametrize(
    ("config", "first_line"),
    [
        ("{timeout: -1}", "inner': timeout: Input should be greater than 0"),
        ("{timeot: 2}", "inner': timeot: Unexpected keyword argument"),
        ("{timeout: soon, x: 1}", "inner': timeout: Input should be a valid number, unable to parse string as a "
         "number; x: Unexpected keyword argument"),
        ("{timeout: 13}", "inner': 13 s is unlucky"),
    ],
)  # fmt: skip
def test_config_error_names_the_entry_and_the_key_in_its_first_line(config: str, first_line: str):
    """Built from exporter YAML, a config error's first line names the export entry (by its path) and the key."""
    with pytest.raises(ValidationError) as error:
        build(config)
    lines = str(error.value).splitlines()
    assert lines[0].startswith("1 validation error for Configured, export entry 'group.inner': ") or lines[
        0
    ].startswith("2 validation errors for Configured, export entry 'group.inner': "), lines[0]
    assert lines[0].endswith(first_line), lines[0]


def test_config_error_in_code_is_pydantics_own():
    """Built in code, outside an exporter config, the driver raises pydantic's error as it is."""
    with pytest.raises(ValidationError) as error:
        Configured(timeout=-1)
    assert str(error.value).splitlines()[:2] == ["1 validation error for Configured", "timeout"]


def test_valid_config_builds_the_driver():
    """The decorator changes nothing for a valid config."""
    tree = build("{timeout: 2}")
    assert tree.children["group"].children["inner"].timeout == 2
