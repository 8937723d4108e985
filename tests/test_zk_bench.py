"""The replicated-registry benchmark still runs end to end (tiny sizes)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.usefixtures("zk_ensemble")  # skipped (or failed in CI) where ZooKeeper is missing
def test_quick_replicated_bench_prints_a_table():
    result = subprocess.run(
        [sys.executable, "-m", "bench.replicated", "-n", "5", "-k", "3", "--runs", "1",
         "--session-timeout", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| R")]
    assert {row.split("|")[1].strip() for row in rows} == {"R1", "R2"}
    assert any("| zookeeper |" in row and "listed again" in row for row in rows)
