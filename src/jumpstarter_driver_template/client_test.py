# mypy: allow-untyped-defs
"""The exact output of every `j template` command, and its errors, through click's CliRunner."""

import pytest
from click.testing import CliRunner
from jumpstarter.common.utils import serve

from .driver import Template


@pytest.fixture
def client():
    """The driver served over gRPC, as `j template` sees it."""
    with serve(Template()) as client:
        yield client


def run(client, *args: str) -> str:
    """Run `j template ARGS...` and return its output; it must succeed."""
    result = CliRunner().invoke(client.cli(), list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_help_lists_the_commands(client):
    """`--help` shows the group's and each command's docstring."""
    output = run(client, "--help")
    assert "Template driver" in output
    assert "count  Print numbers as the device counts." in output
    assert "hello  Greet NAME." in output


def test_hello(client):
    """`hello NAME` prints the greeting."""
    assert run(client, "hello", "world") == "Hello, world!\n"


def test_count(client):
    """`count -n 3 -i 0` prints one number a line."""
    assert run(client, "count", "-n", "3", "-i", "0") == "0\n1\n2\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hello", ""], "name: String should have at least 1 character"),  # refused by the driver
        (["count", "-n", "1001"], "Invalid value for '--count' / '-n': 1001 is not in the range 0<=x<=1000."),
        (["count", "-i", "soon"], "Invalid value for '--interval' / '-i': 'soon' is not a valid float range."),
        (["hello"], "Missing argument 'NAME'."),
    ],
)
def test_bad_input_is_one_error_line(client, args, message):
    """Bad input exits 2 with one `Error:` line saying why, never a traceback."""
    result = CliRunner().invoke(client.cli(), args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output
