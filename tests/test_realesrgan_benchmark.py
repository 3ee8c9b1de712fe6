"""`python -m benchmarks.realesrgan`, quality and speed modes, on a small model and inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT, SHARED


def run_benchmark(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "SEESR_SHARED": str(SHARED)}
    command = [sys.executable, "-m", "benchmarks", "realesrgan", "--model", "realesr-animevideov3-x4",
               "--weights-dir", str(tmp_path / "weights"), "--threads", "1", *args]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)


def test_quality_scores_each_colour_fix(tmp_path: Path) -> None:
    record = tmp_path / "quality.json"
    done = run_benchmark("--limit", "2", "--color-fix", "none", "adain", "--json", str(record), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ours none" in done.stdout and "ours adain" in done.stdout and "ncnn" in done.stdout
    summary = json.loads(record.read_text())
    assert summary["images"] == 2 and set(summary["ours"]) == {"none", "adain"}
    # our untiled float32 output is the ncnn runtime's, so the scores agree
    assert abs(summary["ours"]["none"]["psnr_y"] - summary["ncnn"]["psnr_y"]) < 0.05
    assert 15 < summary["ours"]["none"]["psnr_y"] < 40 and "cpu_flags" in summary["machine"]


def test_speed_rows_and_ratios(tmp_path: Path) -> None:
    record = tmp_path / "speed.json"
    done = run_benchmark("--speed", "--size", "32", "--tiles", "0", "16", "--strip", "60x6", "--repeats", "1",
                         "--json", str(record), tmp_path=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "ours/ncnn thr." in done.stdout and "ours tiled/untiled" in done.stdout
    rows = json.loads(record.read_text())["rows"]
    assert [(row["input"], row["tile"]) for row in rows] == [
        ("32x32", 0), ("32x32", 16), ("60x6 strip", 0), ("60x6 strip", 64)
    ]
    assert [row["ours_forward_calls"] for row in rows] == [1, 1, 1, 1]  # 2x2 tiles of one window size: one batch
    assert all(row["ours_s"] > 0 and row["ncnn_s"] > 0 and row["ours_over_ncnn_throughput"] > 0 for row in rows)
