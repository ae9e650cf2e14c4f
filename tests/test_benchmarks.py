"""Every script in benchmarks/ runs at its smallest size, so that a
refactor cannot break one silently."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *arguments: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *arguments],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_sides_benchmark_scores_the_side_from_the_pixels(tmp_path):
    output = _run("sides.py", "--people", "2", "--size", "128", "--seeds", "1", "--table", str(tmp_path / "sides.csv"))
    assert "skew alone" in output and "shipped: pose.SKEW_WEIGHT" in output
    assert "with the pair rule: " in output
    import pandas as pd

    table = pd.read_csv(tmp_path / "sides.csv")
    assert {"finger_gap", "skew", "side_score", "side", "truth"} <= set(table.columns)
    assert table["set"].str.startswith("generated").sum() == 6
