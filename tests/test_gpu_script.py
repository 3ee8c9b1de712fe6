"""The GPU measurement script in its dry run (CPU, tiny), run as a user types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO_ROOT


def test_gpu_script_dry_run_writes_one_complete_record(tiny_weights_dir, tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--tiny-weights", str(tiny_weights_dir), "--json", str(out),
         "--dry-run", "--realesrgan-weights", str(tmp_path / "esrgan")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["dry_run"] is True and record["machine"]["cpu"]
    parity = record["half_parity"]
    for check in ("epsilon_relative_l2", "latents_relative_l2", "image_max_abs"):
        assert 0 < parity[check]["value"] <= parity[check]["tolerance"], check  # half precision differs, a little
    assert parity["finite"]["ok"] and parity["ok"]
    rows = record["presets"]["rows"]
    assert [row["preset"] for row in rows] == ["speed", "balanced", "quality", "memory"]
    assert [row["steps"] for row in rows] == [1, 2, 4, 2]
    assert all(row["end_to_end_s"] > 0 and row["peak_bytes"] > 0 for row in rows)
    esr = record["realesrgan_half"]
    assert {(row["dtype"], row["tile"]) for row in esr["times"]} == {(d, t) for d in ("float32", "float16") for t in (0, 256)}
    assert 0 < esr["max_abs"] <= 0.1 and esr["psnr_db"] > 30 and esr["ok"]
    assert record["ok"] is True
    assert set(record["timings_s"]) == {"half_parity", "presets", "realesrgan_half", "total"}
    assert "half parity: ok" in done.stdout and "preset quality" in done.stdout and "Real-ESRGAN float16: ok" in done.stdout
