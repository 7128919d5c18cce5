# mypy: allow-untyped-defs
"""ExampleStorageMux end to end: upstream's `j storage` commands and client API through real exporters."""

import hashlib
import lzma
import os
import re
import signal
from pathlib import Path

from harness import drivers_only, exporter_process, local_shell, start, stop_group, wait_for, write_config

# The exporters here serve this driver alone: each `j` loads one client.
CONFIG = drivers_only("storage")

MiB = 1024 * 1024


def sha256(path: Path) -> str:
    """The hex digest of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_storage_commands_in_local_mode(tmp_path: Path):
    """A missing file, write-local-file (which switches), state, dut, dump and flash, in one `jmp shell` session."""
    config = write_config(tmp_path, {"storage": {"size": MiB}}, config=CONFIG)  # the card: tmp_path/card.img
    image, other = tmp_path / "image.img", tmp_path / "other.img"
    image.write_bytes(os.urandom(MiB))
    other.write_bytes(os.urandom(MiB))
    script = f"""
        j storage dut
        ! j storage flash missing.img
        j storage state
        j storage write-local-file {image.name}
        j storage state
        j storage dut
        j storage dump dump.img
        j storage flash {other.name}
        j storage flash --help
    """
    out = local_shell(config, script)
    # A typo costs nothing: one line, before anything moved the card.
    missing = f"Error: File not found. Verify the path and retry. Details: no image at {tmp_path / 'missing.img'}: "
    assert missing + "the card was not touched\n" in out  # j's words for a FileNotFoundError, then ours
    assert "Traceback" not in out
    assert "side=dut image=unknown written=0" in out
    assert sha256(tmp_path / "dump.img") == sha256(image)
    assert sha256(tmp_path / "card.img") == sha256(other)
    assert f"side=host image=complete written={MiB}" in out  # write-local-file switched the card itself
    assert f"wrote {MiB} bytes to card.img, synced" in out  # the driver's log reaches the shell
    assert "an http(s) URL the exporter downloads" in " ".join(out.split())  # flash's help, from methods_description


def test_failing_commands_exit_non_zero_in_direct_mode(tmp_path: Path):
    """Too large or truncated, `j storage flash` fails (status 1); the card stays on the host until an image fits."""
    with exporter_process(tmp_path / "exporter", {"storage": {"size": MiB}}, config=CONFIG) as exporter:
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
        truncated = tmp_path / "truncated.img.xz"
        truncated.write_bytes(lzma.compress(os.urandom(MiB // 2), preset=0)[: MiB // 4])
        result = exporter.shell("j", "storage", "flash", "--compression", "xz", str(truncated))
        assert result.returncode == 1, result.stdout
        assert f"the xz data ends after {MiB // 4} compressed bytes, before its end marker" in result.stdout
        assert exporter.shell("j", "storage", "flash", str(small)).returncode == 0
        assert sha256(exporter.path("card.img")) == sha256(small)


def test_client_killed_mid_flash_leaves_the_card_incomplete(tmp_path: Path):
    """A `j storage flash` killed mid-write leaves the card on the host, marked incomplete, and an error in the log."""
    size = 256 * MiB
    image = tmp_path / "zeros.img"
    with image.open("wb") as file:
        file.truncate(size)  # sparse: a large image that costs no disk space to make
    with exporter_process(tmp_path / "exporter", {"storage": {"size": size}}, config=CONFIG) as exporter:
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
        # The image's length tells a cut-off stream at once; the call's cancellation may arrive first.
        went_away = r"call cancelled \(the client went away, or the exporter is stopping\)"
        cut_off = rf"the client's file ended after \d+ of its {size} bytes: the image is truncated"
        assert re.search(
            rf"write stopped after \d+ bytes: ({went_away}|{cut_off}): card.img holds an incomplete image",
            exporter.log_tail(),
        )
