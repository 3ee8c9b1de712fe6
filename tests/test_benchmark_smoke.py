"""The pipeline benchmark harness in smoke mode (tiny fixtures): it measures, not just runs."""

from __future__ import annotations

import json
import time

import pytest
import torch

from benchmarks import pipeline as bench
from benchmarks import report
from benchmarks.common import cpu_description
from seesr.runtime.devices import default_dtype

PIPELINE_STAGES = ("tag", "text", "encode", "denoise", "decode", "colorfix")


@pytest.fixture(scope="module")
def record(tiny_weights_dir, tmp_path_factory):
    """One smoke run of the two paths (default, naive), 2 sizes, 2 steps, 1 warm-up, 2 repeats."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    threads = torch.get_num_threads()
    returned = bench.main(["--smoke", "--weights", str(tiny_weights_dir), "--naive", "--steps", "2", "--warmup", "1", "--repeats", "2", "--json", str(path)])
    assert torch.get_num_threads() == threads, "the harness must restore the thread count"
    saved = json.loads(path.read_text())
    assert saved["settings"] == returned["settings"]
    return saved


@pytest.mark.slow  # the record fixture: one smoke run of every path
def test_record_describes_the_run(record):
    saved = record
    assert saved["versions"]["torch"] == torch.__version__
    assert saved["machine"]["logical_cpus"] >= 1 and saved["machine"]["torch_threads"] >= 1
    model, flags = cpu_description()
    assert saved["machine"]["cpu"] == model and saved["machine"]["cpu_flags"] == flags
    settings = saved["settings"]
    assert settings["smoke"] is True and settings["sizes"] == list(bench.SMOKE_SIZES) and settings["weights"]
    assert settings["steps"] == [2] and settings["repeats"] == 2 and settings["warmup"] == 1
    assert set(saved["variants"]) == {"default", "naive"}
    assert saved["variants"]["naive"]["network_dtypes"]["unet"] == "float32"
    assert saved["variants"]["naive"]["attention_processors"]["unet"] == ["AttnProcessor2_0"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["default", "naive"])
def test_every_stage_is_timed(record, variant):
    saved = record
    result = saved["variants"][variant]
    assert [r["lr_size"] for r in result["runs"]] == list(bench.SMOKE_SIZES)
    for run in result["runs"]:
        stages = run["stages"]
        assert set(stages) == set(bench.stage_names(2))
        for name in (*PIPELINE_STAGES, "step_1", "step_2", "end_to_end"):
            stats = stages[name]
            assert len(stats["samples"]) == 2, name
            assert all(s > 0 for s in stats["samples"]), name
            assert 0 < stats["min"] <= stats["median"] <= stats["max"], name
        assert stages["other"]["min"] >= 0
        for i in range(2):  # per repeat: the steps lie in the denoise stage, the stages make up the whole call
            # Exact, whatever the timing noise: step 2 runs between two step callbacks, both inside the
            # stage's timed block (step 1 starts at the stage hook, before that block: it may not fit).
            assert stages["step_2"]["samples"][i] <= stages["denoise"]["samples"][i]
            total = sum(stages[name]["samples"][i] for name in (*PIPELINE_STAGES, "other"))
            assert total == pytest.approx(stages["end_to_end"]["samples"][i], rel=1e-6, abs=1e-6)
        assert run["peak_memory"]["peak_bytes"] > 0 and run["peak_memory"]["working_bytes"] >= 0
        stage_peaks = run["peak_memory"]["stage_peak_bytes"]  # which stage holds the call's peak
        assert set(stage_peaks) == set(PIPELINE_STAGES)
        assert 0 < max(stage_peaks.values()) <= run["peak_memory"]["peak_bytes"] * 1.001
        assert run["warmup_end_to_end_s"] and run["warmup_end_to_end_s"][0] > 0
        assert run["end_to_end_cpu_s"]["min"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["default", "naive"])
def test_linear_fit_of_end_to_end_time(record, variant):
    saved = record
    result = saved["variants"][variant]
    (fit,) = result["fits"]
    assert fit["steps"] == 2 and fit["x"] == "output_megapixels"
    for key in ("slope_s_per_mp", "intercept_s", "r2", "min_slope_s_per_mp", "min_intercept_s"):
        assert isinstance(fit[key], float), key
    for (x, y), run in zip(fit["points"], result["runs"]):
        assert x == pytest.approx(run["output_size"] ** 2 / 1e6)
        assert y == run["stages"]["end_to_end"]["median"]
        assert fit["slope_s_per_mp"] * x + fit["intercept_s"] == pytest.approx(y, rel=1e-6)  # two points: exact
    assert set(fit["stages"]) == set(result["runs"][0]["stages"])


@pytest.mark.slow
def test_naive_comparison(record):
    saved = record
    naive = {r["lr_size"]: r for r in saved["variants"]["naive"]["runs"]}
    default = {r["lr_size"]: r for r in saved["variants"]["default"]["runs"]}
    pairs = [(c["reference"], c["test"]) for c in saved["comparisons"]]
    assert pairs == [("naive", "default")]
    comparison = saved["comparisons"][0]
    assert [r["lr_size"] for r in comparison["rows"]] == list(bench.SMOKE_SIZES)
    for row in comparison["rows"]:
        n, d = naive[row["lr_size"]], default[row["lr_size"]]
        assert row["reference_median_s"] == n["stages"]["end_to_end"]["median"]
        assert row["test_median_s"] == d["stages"]["end_to_end"]["median"]
        assert row["speedup_median"] == pytest.approx(row["reference_median_s"] / row["test_median_s"])
        assert row["speedup_min"] == pytest.approx(n["stages"]["end_to_end"]["min"] / d["stages"]["end_to_end"]["min"])
        assert set(row["stage_speedups_median"]) == set(d["stages"])
    # the naive path runs the official tile (scaled down for the tiny models) one tile at a time, in float32
    big = naive[bench.SMOKE_SIZES[-1]]
    assert big["plan"]["tile_batch_size"] == 1 and big["latent_tiles"] > 1
    assert saved["variants"]["default"]["network_dtypes"]["unet"] == bench.dtype_name(default_dtype("cpu"))
    assert set(saved["latent_difference"]) == {"default"}
    for diffs in saved["latent_difference"].values():
        assert [d["lr_size"] for d in diffs] == list(bench.SMOKE_SIZES)
        for diff in diffs:
            assert diff["max_abs"] >= diff["mean_abs"] >= 0


def test_time_is_attributed_to_the_right_stage(tiny_pipe, monkeypatch):
    """Slow down decode and each noise prediction by known amounts: the harness must see it there."""
    decode, predict = tiny_pipe.decode, tiny_pipe.predict_noise
    calls = []

    def slow_decode(*args, **kwargs):
        time.sleep(0.2)
        return decode(*args, **kwargs)

    def slow_predict(*args, **kwargs):
        calls.append(1)
        time.sleep(0.05)
        return predict(*args, **kwargs)

    monkeypatch.setattr(tiny_pipe, "decode", slow_decode)
    monkeypatch.setattr(tiny_pipe, "predict_noise", slow_predict)
    settings = bench.HarnessSettings(sizes=[32], steps=[2], repeats=1, warmup=0, smoke=True)
    record, latents = bench.measure_size(tiny_pipe, bench.Variant("naive", "float32", "naive"), settings, 32, bench.RunSpec(2))
    stages = record["stages"]
    tiles = record["latent_tiles"]
    assert tiles > 1 and len(calls) == 2 * tiles  # one call per tile per step (tile batch 1)
    assert stages["decode"]["min"] >= 0.2
    assert stages["step_1"]["min"] >= 0.05 * tiles and stages["step_2"]["min"] >= 0.05 * tiles
    assert stages["end_to_end"]["min"] >= 0.2 + 0.1 * tiles
    assert latents.shape == (1, 4, 16, 16)


def test_linear_fit():
    fit = report.linear_fit([1.0, 2.0, 3.0], [3.0, 5.0, 7.5])
    assert fit["slope"] == pytest.approx(2.25) and fit["intercept"] == pytest.approx(2.0 / 3.0)
    assert 0.99 < fit["r2"] <= 1.0
    assert report.linear_fit([1.0], [2.0])["slope"] is None


def test_presets_are_measured_as_the_api_runs_them(tiny_weights_dir, tmp_path):
    """``--presets``: each preset's steps, fixed tiles, KDS particles and offload, per size."""
    returned = bench.main(["--smoke", "--weights", str(tiny_weights_dir), "--sizes", "16", "--presets", "speed", "quality", "memory",
                           "--warmup", "0", "--repeats", "1", "--json", str(tmp_path / "presets.json")])  # fmt: skip
    runs = {run["preset"]: run for run in returned["variants"]["default"]["runs"]}
    assert set(runs) == {"speed", "quality", "memory"}
    assert (runs["speed"]["steps"], runs["quality"]["steps"], runs["memory"]["steps"]) == (1, 4, 2)
    assert runs["quality"]["kds_particles"] == 4 and runs["speed"]["kds_particles"] == 1
    assert runs["quality"]["plan"]["latent_tile"] == 64 and runs["quality"]["plan"]["latent_overlap"] == 16
    assert runs["memory"]["plan"]["offload"] and runs["memory"]["plan"]["vae_decoder_tile"] == 64
    assert set(runs["quality"]["stages"]) == set(bench.stage_names(4))
    assert [f["preset"] for f in returned["variants"]["default"]["fits"]] == ["speed", "quality", "memory"]
    with pytest.raises(SystemExit, match="default path only"):
        bench.main(["--smoke", "--weights", str(tiny_weights_dir), "--presets", "speed", "--naive"])
    with pytest.raises(SystemExit, match="--smoke needs --weights"):
        bench.main(["--smoke"])


FAKE_OFFICIAL_TOOL = '''
import argparse, json
ap = argparse.ArgumentParser()
for name in ("--src", "--size", "--steps", "--runs", "--tile", "--threads", "--budget-s", "--json-out"):
    ap.add_argument(name)
a = ap.parse_args()
stages = {"end_to_end_s": {"min": 90.0, "median": 100.0}, "ram_tagging_s": {"min": 1.0, "median": 1.0}}
official = {"untiled_summary": {"n": int(a.runs), "stages": stages, "pipeline": {"denoise_total_s": {"min": 50.0, "median": 50.0}}},
            "process_peak_rss_mib": 8192.0, "config": {"threads": int(a.threads)}, "env": {"size": int(a.size)}}
open(a.json_out, "w").write(json.dumps({"official": official}))
'''


def fake_official_reference(root) -> tuple:
    """An official environment whose harness reports 100 s and 8 GiB (the real one takes minutes)."""
    import sys

    (root / "venv" / "bin").mkdir(parents=True)
    (root / "venv" / "bin" / "python").symlink_to(sys.executable)
    (root / "src").mkdir()
    (root / "src" / "test_seesr_turbo.py").write_text("")
    tool = root / "official_speed.py"
    tool.write_text(FAKE_OFFICIAL_TOOL)
    return root, tool


def test_against_official_prints_the_ratios_and_their_targets(tiny_weights_dir, tmp_path, capsys):
    ref, tool = fake_official_reference(tmp_path / "ref")
    record = bench.main(["--smoke", "--weights", str(tiny_weights_dir), "--sizes", "16", "--steps", "1", "--warmup", "0",
                         "--repeats", "1", "--against-official", str(ref), "--official-tool", str(tool)])  # fmt: skip
    assert record["official"]["end_to_end_s"]["median"] == 100.0 and record["official"]["process_peak_rss_bytes"] == 8 * 2**30
    assert set(record["variants"]) == {"default", "naive"}  # the float32 parity path comes along
    rows = {row["path"]: row for row in record["official_ratios"]}
    default, naive = rows["default"], rows["naive"]
    ours = record["variants"]["default"]["runs"][0]["stages"]["end_to_end"]["median"]
    assert default["time_ratio"] == pytest.approx(ours / 100.0) and default["time_ok"] is (ours <= 33.0)
    peak = record["variants"]["default"]["process_peak_rss_bytes"]
    assert default["memory_ratio"] == pytest.approx(peak / (8 * 2**30)) and default["memory_target"] == 0.5
    assert naive["time_target"] == 1.0 and naive["memory_target"] is None
    out = capsys.readouterr().out
    assert "ours (default) vs official, 16->64 steps 1: time" in out and "(target <= 0.33: met)" in out
    assert "ours (naive) vs official" in out
    with pytest.raises(SystemExit, match="official reference not usable"):
        bench.main(["--smoke", "--weights", str(tiny_weights_dir), "--against-official", str(tmp_path / "nowhere")])


def test_report_prints_a_record_and_compares_only_records_of_one_machine(record, tmp_path):
    import subprocess
    import sys

    from conftest import REPO_ROOT

    saved = record
    first, same, other = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    first.write_text(json.dumps(saved))
    same.write_text(json.dumps(saved))
    elsewhere = {**saved, "machine": {**saved["machine"], "cpu": "Another CPU", "cpu_flags": ["avx2"]}}
    other.write_text(json.dumps(elsewhere))

    def report(*paths):
        return subprocess.run([sys.executable, "-m", "benchmarks.report", *map(str, paths)], capture_output=True,
                              text=True, env={"PYTHONPATH": str(REPO_ROOT), "PATH": ""}, timeout=120)  # fmt: skip

    done = report(first, same)
    assert done.returncode == 0, done.stderr
    assert saved["machine"]["cpu"] in done.stdout and "== default:" in done.stdout
    assert "default, 16->64 steps 2: a.json" in done.stdout and "= x1.00" in done.stdout
    refused = report(first, other)
    assert refused.returncode == 2 and "not compared" in refused.stderr and "Another CPU [avx2]" in refused.stderr


def test_the_default_path_runs_the_attention_asked_for(tiny_weights_dir, monkeypatch):
    """``--attention sdpa`` keeps torch's attention on the default path (an A/B of seesr's kernel
    against torch's on one machine); the record says which processors ran."""
    from seesr.engines.seesr.models import attention

    monkeypatch.setattr(attention, "cpu_bf16_units", lambda: (True, False))
    monkeypatch.setattr(attention, "load_kernel", lambda: print)  # built (the tiny heads never reach it)
    common = ["--smoke", "--weights", str(tiny_weights_dir), "--dtype", "bfloat16", "--sizes", "16", "--steps", "1",
              "--warmup", "0", "--repeats", "1"]  # fmt: skip
    for choice, processor in (("sdpa", "AttnProcessor2_0"), ("auto", "Avx512Bf16AttnProcessor")):
        record = bench.main([*common, "--attention", choice])
        default = record["variants"]["default"]
        assert default["variant"]["attention"] == choice
        assert default["attention_processors"] == dict.fromkeys(("unet", "controlnet", "vae"), [processor])


def test_candidates_profile_attention_and_unet_run_as_typed(tiny_weights_dir, tmp_path):
    """``python -m benchmarks.candidates profile attention unet`` as the README types it (tiny weights)."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    out = tmp_path / "candidates.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.candidates", "profile", "attention", "unet", "--latent", "8", "--warmup", "0",
         "--repeats", "1", "--threads", "1", "--weights", str(tiny_weights_dir), "--json", str(out)],
        capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(REPO_ROOT), "PATH": "", "OMP_WAIT_POLICY": "PASSIVE"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["machine"]["cpu"] and "cpu_flags" in record["machine"]
    profiles = record["candidates"]["profile"]
    assert [p["what"] for p in profiles][:2] == ["controlnet+unet forward", "vae decode"]
    for profile in profiles:
        shares = [op["share"] for op in profile["top_ops"]]
        assert 0 < sum(shares) <= 1.0 + 1e-9 and shares == sorted(shares, reverse=True)
        assert all(op["calls"] >= 1 and op["op"] for op in profile["top_ops"])
    assert any(op["op"].startswith("aten::") for op in profiles[0]["top_ops"])
    assert "| op | calls | self s | share |" in done.stdout and "| GFLOP | GFLOP/s |" in done.stdout
    convolutions = [op for op in profiles[0]["flop_ops"] if op["op"] == "aten::conv2d"]
    assert convolutions and convolutions[0]["gflop"] > 0 and convolutions[0]["gflops"] > 0
    attention = record["candidates"]["attention"]
    if attention[0].get("kernel") == "sdpa":  # a CPU where the rule keeps torch's SDPA: nothing to time
        assert len(attention) == 1
    else:
        calls = [r for r in attention if r["what"] == "attention call"]
        assert calls and all(r["calls_per_forward"] >= 1 and r["gflop"] > 0 for r in calls)
        for row in calls:  # the tiny networks' heads (8, 32 wide) are not the kernel's: both are torch's SDPA
            assert row["kernel_vs_sdpa"]["max_abs"] == 0
            assert row["sdpa_vs_float32"]["relative_l2"] < 1e-2
        whole = {r["what"]: r for r in attention if r["what"] != "attention call"}
        assert set(whole) == {"controlnet+unet forward", "vae decode"}
        assert all(len(r["sdpa"]["samples"]) == len(r["auto"]["samples"]) == 1 for r in whole.values())
        assert whole["controlnet+unet forward"]["kernel_vs_float32"]["relative_l2"] < 0.05
    unet = record["candidates"]["unet"]
    assert [(r["dtype"], r["channels_last"]) for r in unet] == [("float32", False), ("float32", True),
                                                                ("bfloat16", False), ("bfloat16", True)]  # fmt: skip
    assert all(r["median"] > 0 for r in unet)


def test_every_listed_benchmark_is_a_module_with_a_main():
    import importlib

    from benchmarks.__main__ import BENCHMARKS

    for name in BENCHMARKS:
        assert callable(importlib.import_module(f"benchmarks.{name}").main), name
