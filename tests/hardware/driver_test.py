# mypy: allow-untyped-defs
"""The driver on its device, through whatever exporter serves it (see conftest.py for how to run these)."""

from jumpstarter_testing.pytest import JumpstarterTest


class TestTemplate(JumpstarterTest):
    """The exporter's `template` driver, as `client.children["template"]`."""

    selector = "board=my-bench"  # the exporter labels to lease when run through a controller

    def test_device_answers(self, client):
        """The device greets by name."""
        assert client.children["template"].hello("hardware test") == "Hello, hardware test!"

    def test_device_counts(self, client):
        """A streaming call delivers every item, in order."""
        assert list(client.children["template"].count(3, 0)) == [0, 1, 2]
