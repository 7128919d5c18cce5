"""The benchmark runs end to end. It is not a test of speed: no figure is checked here."""

import os
import signal
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def test_bench_quick_prints_every_target():
    """`bench.py --quick` runs one tiny round through serve() and a real exporter and ends with the summary line."""
    process = subprocess.Popen(
        [sys.executable, str(BENCH), "--quick"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # bench.py stops its exporter on SIGTERM
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
    assert process.returncode == 0, output
    last = output.rstrip().splitlines()[-1]
    assert last.startswith("SUMMARY "), output
    for mode in ("serve", "exporter"):
        for target in ("fast/naive64K", "fast/ceiling", "upload/ceiling", "busy/idle", "configure/ping_sync"):
            assert f"{mode} {target}" in last
    assert "client import" in last
    assert "peak RSS growth" in last
