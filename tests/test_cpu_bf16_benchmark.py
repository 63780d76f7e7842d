"""benchmarks/cpu_bf16.py runs and prints its table (a smoke test; the numbers are docs/benchmarks.md's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_bf16_benchmark_prints_a_row_of_four_modes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cpu_bf16.py"), "--quick"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| resnet18@width=32 | 16 |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert len(cells) == 9 and all(float(c) > 0 for c in cells[3:7]) and cells[7].endswith("x")
