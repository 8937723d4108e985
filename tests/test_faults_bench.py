"""``python -m bench.faults`` still runs end to end (its quick form, one transport)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.faultnet import unavailable  # noqa: E402

pytestmark = pytest.mark.skipif(bool(reason := unavailable()), reason=str(reason))


def test_quick_fault_bench_prints_the_table():
    result = subprocess.run(
        [sys.executable, "-m", "bench.faults", "--quick", "--transports", "styx"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("`python -m bench.faults --quick --transports styx`")
    faults = {line.split("|")[1].strip() for line in lines if line.startswith("| ")}
    assert {"hung registry 12 s", "silent restart 5 s", "restore after an outage",
            "persist + reconnect", "registration confirmed but not ours"} <= faults
