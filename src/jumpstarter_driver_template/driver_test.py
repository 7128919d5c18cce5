# mypy: allow-untyped-defs
"""Template through a real gRPC session: `serve()` runs the driver in-process and hands back its client."""

import pytest
from jumpstarter.client.core import DriverInvalidArgument
from jumpstarter.common.utils import serve
from jumpstarter.config.exporter import ExporterConfigV1Alpha1DriverInstance
from pydantic import ValidationError

from .driver import Template


@pytest.fixture
def client():
    """The driver with its default config, as a client sees it."""
    with serve(Template()) as client:
        yield client


def test_hello_greets(client):
    """hello returns the greeting for the name it was given."""
    assert client.hello("world") == "Hello, world!"


def test_greeting_comes_from_config():
    """The `greeting` config key changes what hello says."""
    with serve(Template(greeting="Bonjour")) as client:
        assert client.hello("le monde") == "Bonjour, le monde!"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("",), "name: String should have at least 1 character"),
        (("x" * 101,), "name: String should have at most 100 characters"),
        ((42,), "name: Input should be a valid string"),
        ((), "name: Missing required argument"),
        (("a", "b"), "argument 2: Unexpected positional argument"),
    ],
)
def test_hello_refuses_bad_arguments(client, args, message):
    """Wrong, missing or extra arguments are INVALID_ARGUMENT naming the argument; the driver keeps serving."""
    with pytest.raises(DriverInvalidArgument, match=message):
        client.call("hello", *args)
    assert client.hello("again") == "Hello, again!"


def test_count_streams_numbers(client):
    """count yields 0..count-1 as ints, and nothing for 0."""
    assert list(client.count(4, 0)) == [0, 1, 2, 3]
    assert list(client.count(0, 0)) == []


def test_count_accepts_a_whole_float():
    """Numbers cross gRPC as floats: 3.0 is a valid count."""
    with serve(Template()) as client:
        assert list(client.streamingcall("count", 3.0, 0)) == [0, 1, 2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((2.5, 0), "count: Input should be a valid integer, got a number with a fractional part"),
        ((1001, 0), "count: Input should be less than or equal to 1000"),
        ((-1, 0), "count: Input should be greater than or equal to 0"),
        ((2, 61), "interval: Input should be less than or equal to 60"),
        ((2, float("inf")), "interval: Input should be a valid number"),  # inf and nan arrive as None
    ],
)
def test_count_refuses_bad_arguments(client, args, message):
    """Streaming calls check their arguments too, before the first item."""
    with pytest.raises(DriverInvalidArgument, match=message):
        list(client.streamingcall("count", *args))


def test_count_stops_when_the_client_leaves(client):
    """A client that stops reading gets its call cancelled: the next call is served at once."""
    numbers = client.count(1000, 60)  # would take 16 hours
    assert next(numbers) == 0
    numbers.close()
    assert client.hello("still here") == "Hello, still here!"


def test_config_errors_name_the_key():
    """A typo or a wrong value under `config:` fails when the exporter builds the driver, naming the key."""
    for config, key in [({"greting": "Hi"}, "greting"), ({"greeting": ""}, "greeting")]:
        instance = {"type": "jumpstarter_driver_template.driver.Template", "config": config}
        with pytest.raises(ValidationError, match=key):
            ExporterConfigV1Alpha1DriverInstance.model_validate(instance).instantiate()
