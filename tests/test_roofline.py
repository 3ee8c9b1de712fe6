"""The roofline benchmark: FLOPs counted per stage, bounds at the measured peak, the record's ratios."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import roofline
from benchmarks.common import machine_info
from benchmarks.report import TIME_TARGET


def test_cpu_flash_attention_is_counted():
    q, k, v = torch.randn(1, 2, 8, 4), torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 5)
    with FlopCounterMode(display=False, custom_mapping=roofline.ATTENTION_FORMULAS) as counter:
        F.scaled_dot_product_attention(q, k, v)
    assert counter.get_total_flops() == 2 * 1 * 2 * 8 * 6 * (4 + 5)


def test_seesr_attention_kernel_is_counted():
    """The AVX512-BF16 kernel's operator counts as the flash kernel does (shapes only: fake tensors)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q, k, v = (torch.empty(1, 2, n, 64, dtype=torch.bfloat16) for n in (8, 6, 6))
        with FlopCounterMode(display=False, custom_mapping=roofline.ATTENTION_FORMULAS) as counter:
            out = torch.ops.seesr.attention_avx512bf16(q, k, v, 0.125)
    assert out.shape == (1, 2, 8, 64)
    assert counter.get_total_flops() == 2 * 1 * 2 * 8 * 6 * (64 + 64)


def test_each_stage_is_counted_and_steps_add_up(tiny_pipe):
    one = roofline.count_stage_flops(tiny_pipe, 16, steps=1)
    two = roofline.count_stage_flops(tiny_pipe, 16, steps=2)
    assert all(one[stage] > 0 for stage in roofline.STAGE_NETWORKS)
    assert two["denoise"] == 2 * one["denoise"]
    assert {s: two[s] for s in ("tag", "text", "encode", "decode")} == {s: one[s] for s in ("tag", "text", "encode", "decode")}
    assert tiny_pipe.stage_hook is None, "the counting hook must be removed"
    assert roofline.stage_dtypes(tiny_pipe) == dict.fromkeys(roofline.STAGE_NETWORKS, torch.float32)


def test_bounds_efficiency_and_what_the_target_needs():
    flops = {"tag": 3e9, "denoise": 8e9, "colorfix": 1}
    dtypes = {"tag": torch.float32, "denoise": torch.bfloat16}
    peaks = {torch.float32: 1e9, torch.bfloat16: 4e9}
    rows = roofline.stage_bounds(flops, dtypes, peaks, {"tag": 6.0})
    assert [(r.stage, r.dtype, r.bound_s) for r in rows] == [("tag", "float32", 3.0), ("denoise", "bfloat16", 2.0)]
    assert rows[0].efficiency == 0.5 and rows[1].efficiency is None
    totals = roofline.summary(rows, ours_s=20.0, official_s=40.0)
    assert totals["bound_s"] == 5.0 and totals["bound_ratio"] == 5.0 / 40.0 and totals["ours_ratio"] == 0.5
    assert totals["target_needs_efficiency"] == pytest.approx(5.0 / (TIME_TARGET * 40.0))
    assert "bound_ratio" not in roofline.summary(rows, ours_s=20.0, official_s=None)


def test_matmul_peak_is_a_throughput():
    peak = roofline.matmul_peak(torch.float32, torch.device("cpu"), roofline.SMOKE_GEMM_SHAPES, repeats=2)
    assert 1e6 < peak < 1e15


def _record(machine: dict, lr_size: int, steps: int, official: bool = True) -> dict:
    stages = {name: {"median": seconds} for name, seconds in
              {"tag": 0.5, "text": 0.1, "encode": 0.2, "denoise": 1.0, "decode": 0.4, "end_to_end": 2.5}.items()}  # fmt: skip
    record = {"benchmark": "benchmarks.pipeline", "machine": machine, "variants": {"default": {"runs": [{"lr_size": lr_size, "steps": steps, "stages": stages}]}}}
    if official:
        record["official"] = {"lr_size": lr_size, "steps": steps, "end_to_end_s": {"median": 10.0}}
    return record


def test_record_times_at_the_size_and_steps():
    record = _record({}, 16, 2)
    measured, ours, official = roofline.record_times(record, 16, 2)
    assert measured["denoise"] == 1.0 and ours == 2.5 and official == 10.0
    assert roofline.record_times(_record({}, 16, 2, official=False), 16, 2)[2] is None
    with pytest.raises(SystemExit, match="no default-path run at 32 px"):
        roofline.record_times(record, 32, 2)


def test_a_record_from_another_machine_is_refused(tmp_path):
    other = {**machine_info("cpu"), "cpu": "Some Other CPU"}
    path = tmp_path / "other.json"
    path.write_text(json.dumps(_record(other, 16, 2)))
    with pytest.raises(SystemExit, match="another machine"):
        roofline.main(["--smoke", "--weights", str(tmp_path), "--record", str(path)])


def test_what_is_not_a_pipeline_record_is_refused_in_one_line(tmp_path):
    missing, training = tmp_path / "missing.json", tmp_path / "train.json"
    training.write_text(json.dumps({"benchmark": "benchmarks.training", "rows": []}))
    with pytest.raises(SystemExit, match="cannot read the record"):
        roofline.main(["--smoke", "--weights", str(tmp_path), "--record", str(missing)])
    with pytest.raises(SystemExit, match="is not a record of `python -m benchmarks.pipeline --json`"):
        roofline.main(["--smoke", "--weights", str(tmp_path), "--record", str(training)])


def test_missing_weights_are_one_line(tmp_path):
    with pytest.raises(SystemExit, match="SeeSR weights not found") as exit_info:
        roofline.main(["--smoke", "--weights", str(tmp_path / "none")])
    assert "Traceback" not in str(exit_info.value)


@pytest.mark.slow  # a subprocess: the command as typed
def test_command_prints_and_records_the_bounds(tiny_weights_dir, tmp_path):
    record = tmp_path / "bench.json"
    record.write_text(json.dumps(_record(machine_info("cpu"), 16, 2)))
    out = tmp_path / "roofline.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "roofline", "--smoke", "--weights", str(tiny_weights_dir),
         "--record", str(record), "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    saved = json.loads(out.read_text())
    assert [row["stage"] for row in saved["stages"]] == list(roofline.STAGE_NETWORKS)
    assert all(row["gflop"] > 0 and row["bound_s"] == row["gflop"] / row["peak_gflops"] for row in saved["stages"])
    assert {row["stage"]: row["measured_s"] for row in saved["stages"]}["denoise"] == 1.0
    assert saved["official_s"] == 10.0 and saved["bound_ratio"] == saved["bound_s"] / 10.0
    assert f"the {TIME_TARGET}x target needs" in done.stdout and "smallest reachable time ratio" in done.stdout
