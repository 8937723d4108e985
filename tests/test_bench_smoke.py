"""The benchmark harness still runs end to end (tiny sizes; it measures nothing)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_bench_prints_a_table():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--runs", "1", "--scenarios", "B1,B2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("`python -m bench --quick --runs 1 --scenarios B1,B2`: ")
    assert "| id | metric | transport |" in result.stdout
    rows = [line for line in lines if line.startswith("| B")]
    assert {row.split("|")[1].strip() for row in rows} == {"B1", "B2"}
    assert any("| tcp |" in row for row in rows)
