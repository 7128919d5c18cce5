# mypy: allow-untyped-defs
"""ExampleStorageMux end to end: upstream's `j storage` commands and client API through real exporters."""

import hashlib
import os
import signal
from pathlib import Path

from harness import exporter_process, local_shell, start, stop_group, wait_for, write_config

MiB = 1024 * 1024


def sha256(path: Path) -> str:
    """The hex digest of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_storage_commands_in_local_mode(tmp_path: Path):
    """host, write-local-file, state, dut, dump and flash, in one `jmp shell` session."""
    config = write_config(tmp_path, {"storage": {"size": MiB}})  # the card: tmp_path/card.img
    image, other = tmp_path / "image.img", tmp_path / "other.img"
    image.write_bytes(os.urandom(MiB))
    other.write_bytes(os.urandom(MiB))
    script = f"""
        j storage host
        j storage write-local-file {image.name}
        j storage state
        j storage dut
        j storage dump dump.img
        j storage flash {other.name}
        j storage flash --help
    """
    out = local_shell(config, script)
    assert sha256(tmp_path / "dump.img") == sha256(image)
    assert sha256(tmp_path / "card.img") == sha256(other)
    assert f"side=host image=complete written={MiB}" in out
    assert f"wrote {MiB} bytes to card.img, synced" in out  # the driver's log reaches the shell
    assert "an http(s) URL the exporter downloads" in " ".join(out.split())  # flash's help, from methods_description


def test_failing_commands_exit_non_zero_in_direct_mode(tmp_path: Path):
    """An image larger than the card fails `j storage flash` (status 1); the card stays on the host until one fits."""
    with exporter_process(tmp_path / "exporter", {"storage": {"size": MiB}}) as exporter:
        large, small = tmp_path / "large.img", tmp_path / "small.img"
        large.write_bytes(os.urandom(2 * MiB))
        small.write_bytes(os.urandom(MiB))
        result = exporter.shell("j", "storage", "flash", str(large))
        assert result.returncode == 1, result.stdout
        assert f"card.img holds {MiB} bytes, the image has at least {2 * MiB}" in result.stdout
        result = exporter.shell("j", "storage", "dut")
        assert result.returncode == 1, result.stdout
        assert "it holds an incomplete image" in result.stdout
        with exporter.client() as client:
            assert (client.storage.state().side, client.storage.state().image) == ("host", "incomplete")
        assert exporter.shell("j", "storage", "flash", str(small)).returncode == 0
        assert sha256(exporter.path("card.img")) == sha256(small)


def test_client_killed_mid_flash_leaves_the_card_incomplete(tmp_path: Path):
    """A `j storage flash` killed mid-write leaves the card on the host, marked incomplete, and an error in the log."""
    size = 256 * MiB
    image = tmp_path / "zeros.img"
    with image.open("wb") as file:
        file.truncate(size)  # sparse: a large image that costs no disk space to make
    with exporter_process(tmp_path / "exporter", {"storage": {"size": size}}) as exporter:
        flash = start(exporter.shell_args("j", "storage", "flash", str(image)), cwd=exporter.workdir)
        with exporter.client() as client:
            try:
                wait_for(
                    lambda: (s := client.storage.state()).operation == "writing" and s.written >= MiB,
                    timeout=60,
                    what="a write",
                    context=exporter.log_tail,
                )
            finally:
                stop_group(flash, signal.SIGKILL)
            final = wait_for(lambda: (s := client.storage.state()).operation is None and s, context=exporter.log_tail)
        assert (final.side, final.image) == ("host", "incomplete"), final
        assert final.written < size, final
        went_away = "call cancelled (the client went away, or the exporter is stopping): card.img holds an incomplete"
        assert went_away in exporter.log_tail()
