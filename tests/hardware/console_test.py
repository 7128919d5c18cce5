# mypy: allow-untyped-defs
"""The device's console, through whatever exporter serves it (see conftest.py for how to run these)."""

from jumpstarter_testing.pytest import JumpstarterTest

# The simulated console's login; write your device's here (or read them from the environment, not from git).
USER, PASSWORD = "root", "jumpstarter"


class TestConsole(JumpstarterTest):
    """The exporter's `console` driver, as `client.console`: upstream's PySerialClient."""

    selector = "board=my-bench"  # the exporter labels to lease when run through a controller

    def test_log_in_and_run_a_command(self, client):
        """The console shows a login prompt; logged in, a command's output comes back."""
        with client.console.pexpect() as console:
            console.timeout = 30
            console.sendline("")  # a console attached after boot shows nothing until it gets a line
            console.expect("login: ")
            console.sendline(USER)
            console.expect("Password: ")
            console.sendline(PASSWORD)
            console.expect("# ")
            console.sendline("echo console-ok")
            console.expect("\r\nconsole-ok\r\n")
