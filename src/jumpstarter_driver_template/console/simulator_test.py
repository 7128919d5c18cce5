# mypy: allow-untyped-defs
"""The simulated device console, fed bytes directly: what it prints back for what it is sent."""

from .simulator import LOGIN, PROMPT, UNAME, Console


def reply(console: Console, data: bytes) -> bytes:
    """Everything the console prints in answer to `data`."""
    return b"".join(console.respond(data))


def logged_in() -> Console:
    console = Console()
    reply(console, b"root\njumpstarter\n")
    return console


def test_boot_ends_at_the_login_prompt():
    """The boot log comes first, the login prompt last."""
    assert Console().boot().endswith(b"\r\n" + LOGIN)


def test_password_is_not_echoed_and_a_wrong_one_is_refused():
    """The user name is echoed, the password not; a wrong password gives the login prompt again."""
    console = Console()
    assert reply(console, b"root\r") == b"root\r\nPassword: "
    assert reply(console, b"guess\r") == b"\r\n\r\nLogin incorrect\r\n" + LOGIN


def test_commands_answer_and_the_prompt_follows():
    """A command's output, then the prompt; an unknown command is 'not found'; CR LF is one Enter."""
    console = logged_in()
    assert reply(console, b"uname -a\r\n") == b"uname -a\r\n" + UNAME.encode() + b"\r\n" + PROMPT
    assert reply(console, b"frobnicate\n") == b"frobnicate\r\n-sh: frobnicate: not found\r\n" + PROMPT


def test_bytes_and_backspace_are_handled_as_a_terminal_does():
    """A byte that is not UTF-8 is echoed as it is; backspace erases the last one."""
    console = logged_in()
    assert reply(console, b"echo \xff\xfex\x7f\n") == b"echo \xff\xfex\b \b\r\n\xff\xfe\r\n" + PROMPT


def test_exit_logs_out_and_poweroff_ends_the_console():
    """`exit` goes back to the login prompt; `poweroff` ends the console and ignores what follows."""
    console = logged_in()
    assert reply(console, b"exit\n").endswith(b"logout\r\n\r\n" + LOGIN)
    console = logged_in()
    assert reply(console, b"poweroff\nuname -a\n") == b"poweroff\r\nreboot: Power down\r\n"
    assert console.powered_off
