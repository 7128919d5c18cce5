# mypy: allow-untyped-defs
"""Lease hooks (examples/exporter-hooks.yaml) run by a direct-mode exporter: when, with what effect, and on failure.

Jumpstarter 0.9 runs hooks in two of its three modes: through a controller around each lease (not
testable here), and in direct mode (`jmp run --tls-grpc-listener`), beforeLease once when the exporter
starts and afterLease when it stops. Local mode (`jmp shell --exporter-config`) never runs them. The
exporters here listen on 127.0.0.1 *without* a passphrase: with one, the passphrase check also guards
the socket the hook's `j` uses (the last test shows it, and the way around it). A hook's output and its
result are in the exporter's log.
"""

import secrets
from pathlib import Path

import pytest
import yaml
from harness import (
    EXAMPLE_CONFIG,
    HOOKS_CONFIG,
    Exporter,
    exported,
    hooked_exporter,
    hooks_config,
    wait_for,
)

SUCCEEDED = "{hook} hook completed successfully"
FAILED = "Hook failed with exit code"


def session(exporter: Exporter, *command: str):
    """Run `jmp shell --tls-grpc ... -- command` against an exporter without a passphrase."""
    return exporter.shell(*command, passphrase=exporter.passphrase or None, timeout=180)


def test_hooks_example_exports_what_the_example_exports():
    """examples/exporter-hooks.yaml is examples/exporter.yaml plus hooks: the same drivers, the same config."""
    hooks, plain = yaml.safe_load(HOOKS_CONFIG.read_text()), yaml.safe_load(EXAMPLE_CONFIG.read_text())
    assert hooks["export"] == plain["export"], "copy examples/exporter.yaml's `export:` into exporter-hooks.yaml"
    assert set(hooks["hooks"]) == {"beforeLease", "afterLease"}


def test_example_hooks_run_when_the_exporter_starts_and_stops(tmp_path: Path):
    """beforeLease has succeeded before the first session runs; afterLease runs, and succeeds, on SIGTERM."""
    config = hooks_config()
    with hooked_exporter(tmp_path, config) as exporter:
        result = session(exporter, "j", "--help")
        assert result.returncode == 0, result.stdout + exporter.log_tail()
        assert all(f"\n  {name} " in result.stdout for name in exported(config)), result.stdout
        assert SUCCEEDED.format(hook="beforeLease") in exporter.log.read_text(), exporter.log_tail()
    log = exporter.log.read_text()
    assert exporter.process.returncode == 0
    assert SUCCEEDED.format(hook="afterLease") in log, log
    assert FAILED not in log, log
    assert "before lease" in log and "after lease" in log, log  # what a hook prints is in the exporter's log
    after = log.split("Executing after-lease hook", 1)[-1]
    assert "Session server stopped" in after, log  # afterLease ran before the exporter stopped serving


@pytest.mark.parametrize("on_failure", ["endLease", "warn", "exit"])
def test_failing_before_lease_hook(tmp_path: Path, on_failure: str):
    """A failing beforeLease: endLease refuses every session (exit 1); warn warns and runs; exit stops jmp run (0).

    Only under warn does afterLease run later.
    """
    failing = {"script": "echo failing on purpose\nexit 3\n", "timeout": 30, "onFailure": on_failure}
    evidence = {"script": "echo ran > after-lease.ran\n", "timeout": 30}  # in jmp run's directory
    with hooked_exporter(tmp_path, hooks_config(beforeLease=failing, afterLease=evidence)) as exporter:
        result = session(exporter, "echo", "COMMAND RAN")
        if on_failure == "endLease":
            assert result.returncode == 1, result.stdout
            assert f"Error: beforeLease hook failed (on_failure=endLease): {FAILED} 3" in result.stdout
            assert "COMMAND RAN" not in result.stdout
            assert exporter.process.poll() is None  # still serving, and refusing every session
            assert session(exporter, "true").returncode == 1
        elif on_failure == "warn":
            assert result.returncode == 0, result.stdout
            assert f"Warning: beforeLease hook warning: {FAILED} 3" in result.stdout
            assert "COMMAND RAN" in result.stdout
        else:
            assert result.returncode != 0 and "COMMAND RAN" not in result.stdout, result.stdout
            wait_for(lambda: exporter.process.poll() is not None, 60, "jmp run exiting", context=exporter.log_tail)
            assert exporter.process.returncode == 0  # a service manager sees a clean stop: watch the log instead
    log = exporter.log.read_text()
    assert "failing on purpose" in log, log  # the hook's output is in the exporter's log
    # After a failed beforeLease, afterLease runs only under warn: cleanup must not rely on it.
    assert (tmp_path / "after-lease.ran").exists() == (on_failure == "warn"), log


def test_hook_j_with_a_passphrase_needs_tcp(tmp_path: Path):
    """Under `jmp run --passphrase`, a hook's `j` on its socket is refused; over TCP with the passphrase it works."""
    script = (
        "if j --help >/dev/null 2>&1; then echo SOCKET-OK; else echo SOCKET-REFUSED; fi\n"
        'JUMPSTARTER_HOST="$HOOK_ADDRESS" JMP_GRPC_INSECURE=1 JMP_GRPC_PASSPHRASE="$HOOK_PASSPHRASE" '
        "j --help >/dev/null && echo TCP-OK\n"
    )
    hook = {"script": script, "timeout": 60, "onFailure": "endLease"}
    with hooked_exporter(tmp_path, hooks_config(beforeLease=hook), passphrase=secrets.token_urlsafe(16)) as exporter:
        result = session(exporter, "true")
        assert result.returncode == 0, result.stdout + exporter.log_tail()
    log = exporter.log.read_text()
    assert "SOCKET-REFUSED" in log, log  # if this fails, Jumpstarter fixed it: update docs/running-exporters.md
    assert "TCP-OK" in log, log
