"""`seesr evaluate`: PSNR / SSIM against BasicSR's formulas, pairing, odd inputs, missing weights, --run."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, SHARED
from seesr.imaging import metrics
from seesr.cli import main
from seesr.errors import InputError

REALSR = SHARED / "data" / "realsr"
PAIRS = ("Canon_001_LR4", "Canon_002_LR4", "Nikon_050_LR4")


# --------------------------------------------------------------------------- BasicSR's formulas, in numpy


def reference_y(rgb: np.ndarray) -> np.ndarray:
    """BasicSR's to_y_channel on an RGB image: its BGR copy as float32 / 255, the BT.601 weights
    in BGR order plus 16, back to float32 on [0, 1], times 255 in float32."""
    bgr = rgb[..., ::-1].astype(np.float32) / 255.0
    y = (np.dot(bgr, [24.966, 128.553, 65.481]) + 16.0) / 255.0
    return (y.astype(np.float32) * 255.0)[..., None]


def reference_planes(sr, hr, crop_border, y_only):
    sr, hr = (a[..., None] if a.ndim == 2 else a for a in (sr, hr))
    if crop_border:
        sr, hr = (a[crop_border:-crop_border, crop_border:-crop_border] for a in (sr, hr))
    if y_only and sr.shape[2] == 3:
        sr, hr = reference_y(sr), reference_y(hr)
    return sr.astype(np.float64), hr.astype(np.float64)


def reference_psnr(sr, hr, crop_border=0, y_only=True) -> float:
    a, b = reference_planes(sr, hr, crop_border, y_only)
    return 10.0 * np.log10(255.0**2 / np.mean((a - b) ** 2))


def reference_ssim(sr, hr, crop_border=0, y_only=True) -> float:
    """11x11 Gaussian (sigma 1.5) correlation over the valid region by explicit sums, per channel."""
    offsets = np.arange(11) - 5
    g = np.exp(-(offsets**2) / (2 * 1.5**2))
    window = np.outer(g / g.sum(), g / g.sum())

    def blur(x):
        return np.einsum("ijkl,kl->ij", np.lib.stride_tricks.sliding_window_view(x, (11, 11)), window)

    a, b = reference_planes(sr, hr, crop_border, y_only)
    values = []
    for c in range(a.shape[2]):
        x, y = a[..., c], b[..., c]
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        values.append(np.mean(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))
    return float(np.mean(values))


def realsr_pair(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(the LR image upscaled with bicubic, the HR image), uint8 RGB 512x512."""
    hr = Image.open(REALSR / "hr" / f"{name}.png").convert("RGB")
    sr = Image.open(REALSR / "lr" / f"{name}.png").convert("RGB").resize(hr.size, Image.Resampling.BICUBIC)
    return np.asarray(sr), np.asarray(hr)


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize(("crop_border", "y_only"), [(0, True), (4, True), (0, False)])
def test_psnr_ssim_equal_basicsr_formulas_on_real_pairs(name, crop_border, y_only):
    sr, hr = realsr_pair(name)
    assert metrics.psnr(sr, hr, crop_border=crop_border, y_channel=y_only) == pytest.approx(
        reference_psnr(sr, hr, crop_border, y_only), abs=1e-6)  # fmt: skip
    assert metrics.ssim(sr, hr, crop_border=crop_border, y_channel=y_only) == pytest.approx(
        reference_ssim(sr, hr, crop_border, y_only), abs=1e-6)  # fmt: skip


def test_identical_images_and_bad_shapes():
    sr, hr = realsr_pair(PAIRS[0])
    assert metrics.psnr(hr, hr) == float("inf") and metrics.ssim(hr, hr) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(InputError, match="differ in shape"):
        metrics.psnr(sr[:-1], hr)
    with pytest.raises(InputError, match="nothing left"):
        metrics.psnr(sr[:8, :8], hr[:8, :8], crop_border=4)
    with pytest.raises(InputError, match="smaller than SSIM's 11x11 window"):
        metrics.ssim(sr[:10, :10], hr[:10, :10])


def test_psnr_and_ssim_import_no_torch():
    code = "import sys, numpy as np; from seesr.imaging import metrics; from seesr import evaluate; a = np.zeros((16, 16, 3)); " \
           "metrics.ssim(a, a + 1); metrics.psnr(a, a + 1); print('torch' in sys.modules)"  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# --------------------------------------------------------------------------- folders


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """sr/, hr/, lr/ of the three RealSR pairs (SR: the LR images upscaled with bicubic)."""
    sr_dir, hr_dir, lr_dir = (tmp_path / name for name in ("sr", "hr", "lr"))
    for folder in (sr_dir, hr_dir, lr_dir):
        folder.mkdir()
    for name in PAIRS:
        sr, hr = realsr_pair(name)
        Image.fromarray(sr).save(sr_dir / f"{name}.png")
        Image.fromarray(hr).save(hr_dir / f"{name}.png")
        Image.open(REALSR / "lr" / f"{name}.png").save(lr_dir / f"{name}.png")
    return sr_dir, hr_dir, lr_dir


def evaluate_json(capsys, *args: str) -> tuple[int, dict, list[str]]:
    code = main(["evaluate", *args, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err.splitlines()


def test_command_scores_every_pair_as_basicsr_does(folders, capsys):
    sr_dir, hr_dir, lr_dir = folders
    code, record, errors = evaluate_json(capsys, str(sr_dir), str(hr_dir), "--lr", str(lr_dir),
                                         "--metrics", "psnr,ssim,psnr_rgb", "--crop-border", "4")  # fmt: skip
    assert code == 0 and errors == [] and record["status"] == "complete"
    assert record["metrics"] == ["psnr", "ssim", "psnr_rgb"] and record["crop_border"] == 4
    folder_row, bicubic_row = record["rows"]
    assert (folder_row["name"], bicubic_row["name"]) == ("sr", "bicubic")
    # the bicubic row is the SR folder made again from lr/, so both rows have the same numbers
    for row in (folder_row, bicubic_row):
        assert sorted(row["per_image"]) == sorted(PAIRS) and row["images"] == 3
        for name in PAIRS:
            sr, hr = realsr_pair(name)
            scores = row["per_image"][name]
            assert scores["psnr"] == pytest.approx(reference_psnr(sr, hr, 4), abs=1e-6)
            assert scores["ssim"] == pytest.approx(reference_ssim(sr, hr, 4), abs=1e-6)
            assert scores["psnr_rgb"] == pytest.approx(reference_psnr(sr, hr, 4, y_only=False), abs=1e-6)
        assert row["mean"]["psnr"] == pytest.approx(np.mean([s["psnr"] for s in row["per_image"].values()]), abs=1e-12)


def test_pairing_by_name_reports_what_it_left_out(folders, tmp_path, capsys):
    sr_dir, hr_dir, _ = folders
    (sr_dir / f"{PAIRS[0]}.png").rename(sr_dir / f"{PAIRS[0]}.webp")  # another suffix pairs the same
    Image.open(sr_dir / f"{PAIRS[1]}.png").save(sr_dir / f"{PAIRS[1]}.jpg")  # two SR files of one name
    Image.open(sr_dir / f"{PAIRS[2]}.png").save(sr_dir / "extra.png")  # no HR image of that name
    (sr_dir / "notes.txt").write_text("not an image")
    Image.open(hr_dir / f"{PAIRS[2]}.png").save(hr_dir / "lonely.png")  # no SR image of that name
    code, record, errors = evaluate_json(capsys, str(sr_dir), str(hr_dir))
    assert code == 1 and record["status"] == "partial"
    assert sorted(record["rows"][0]["per_image"]) == [PAIRS[0], PAIRS[2]]
    assert len(errors) == 3 and errors == record["problems"]
    assert f"{PAIRS[1]}: several files of that name in {sr_dir} ({PAIRS[1]}.jpg, {PAIRS[1]}.png); pair skipped" in errors
    assert "no HR image for SR image extra; skipped" in errors and "no SR image for HR image lonely; skipped" in errors


def test_size_mismatch_and_unreadable_file_skip_only_their_pair(folders, capsys):
    sr_dir, hr_dir, _ = folders
    Image.open(sr_dir / f"{PAIRS[0]}.png").resize((510, 510)).save(sr_dir / f"{PAIRS[0]}.png")
    (sr_dir / f"{PAIRS[1]}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code, record, errors = evaluate_json(capsys, str(sr_dir), str(hr_dir))
    assert code == 1 and list(record["rows"][0]["per_image"]) == [PAIRS[2]]
    assert len(errors) == 2
    assert errors[0] == f"sr {PAIRS[0]}: SR 510x510 and HR 512x512 differ in size; pair skipped"
    assert errors[1].startswith(f"sr {PAIRS[1]}: ") and errors[1].endswith("; pair skipped")


def test_missing_folders_and_empty_evaluations_are_one_line(folders, tmp_path, capsys):
    sr_dir, hr_dir, _ = folders
    assert main(["evaluate", str(tmp_path / "nowhere"), str(hr_dir)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"seesr: SR folder {tmp_path / 'nowhere'} does not exist"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", str(sr_dir), str(empty)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"seesr: HR folder {empty} holds no images "
                                                    "(.bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp)"]  # fmt: skip
    assert main(["evaluate", str(sr_dir), str(hr_dir), "--metrics", "psnr,sharpness"]) == 2
    assert "unknown metric 'sharpness'" in capsys.readouterr().err
    assert main(["evaluate", str(sr_dir), str(hr_dir), "--steps", "4"]) == 2
    assert capsys.readouterr().err.strip() == "seesr: --steps only apply with --run"


def test_gray_alpha_and_16_bit_inputs(tmp_path, capsys):
    sr, hr = realsr_pair(PAIRS[0])
    sr, hr = sr[:96, :128], hr[:96, :128]
    rng = np.random.default_rng(0)
    sr16 = sr.astype(np.uint16) * 257 + rng.integers(0, 257, sr.shape, dtype=np.uint16)  # 16 bits of detail
    gray_sr, gray_hr = (np.asarray(Image.fromarray(a).convert("L")) for a in (sr, hr))
    sr_dir, hr_dir = tmp_path / "sr", tmp_path / "hr"
    sr_dir.mkdir(), hr_dir.mkdir()
    Image.fromarray(gray_sr).save(sr_dir / "gray.png")
    Image.fromarray(gray_hr).save(hr_dir / "gray.png")
    Image.fromarray(np.dstack([sr, np.full(sr.shape[:2], 30, np.uint8)])).save(sr_dir / "alpha.png")
    Image.fromarray(hr).save(hr_dir / "alpha.png")
    cv2.imwrite(str(sr_dir / "deep.png"), np.ascontiguousarray(sr16[..., ::-1]))
    Image.fromarray(hr).save(hr_dir / "deep.png")
    code, record, errors = evaluate_json(capsys, str(sr_dir), str(hr_dir), "--metrics", "psnr,ssim")
    assert code == 0 and errors == []
    scores = record["rows"][0]["per_image"]
    # gray pairs: one channel, no Y conversion (BasicSR on one-channel images)
    assert scores["gray"]["psnr"] == pytest.approx(reference_psnr(gray_sr, gray_hr), abs=1e-6)
    assert scores["gray"]["ssim"] == pytest.approx(reference_ssim(gray_sr, gray_hr), abs=1e-6)
    # alpha is not part of the picture
    assert scores["alpha"]["psnr"] == pytest.approx(reference_psnr(sr, hr), abs=1e-6)
    # 16-bit: every bit counts, on the 0-255 scale
    deep = sr16.astype(np.float64) * (255 / 65535)
    assert scores["deep"]["psnr"] == pytest.approx(reference_psnr(deep, hr), abs=1e-6)
    assert scores["deep"]["ssim"] == pytest.approx(reference_ssim(deep, hr), abs=1e-6)
    assert abs(scores["deep"]["psnr"] - reference_psnr(sr, hr)) > 1e-3


# --------------------------------------------------------------------------- learned metrics without their weights


@pytest.fixture()
def empty_caches(tmp_path, monkeypatch):
    """No weights anywhere and no downloads, as on a machine that has never fetched them."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(metrics, "_LOADED", {})


def test_metric_without_weights_offline_is_one_line_and_the_rest_is_reported(folders, empty_caches, tmp_path, capsys):
    sr_dir, hr_dir, _ = folders
    assert main(["evaluate", str(sr_dir), str(hr_dir), "--metrics", "psnr,lpips,ssim,fid"]) == 1
    captured = capsys.readouterr()
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    assert captured.err.splitlines() == [
        f"lpips: alexnet-owt-7be5be79.pth is not in {checkpoints} and downloads are off (HF_HUB_OFFLINE=1)",
        f"fid: inception-2015-12-05.pt is not in {checkpoints} and downloads are off (HF_HUB_OFFLINE=1)",
    ]
    lines = captured.out.splitlines()
    assert lines[0].split() == ["method", "image", "psnr", "ssim"] and len(lines[1].split()) == 4
    assert lines[-3].split() == ["method", "images", "psnr", "ssim"] and lines[-2].split()[:2] == ["sr", "3"]


def test_paper_metrics_offline_leave_psnr_and_ssim(folders, empty_caches, capsys):
    """`seesr evaluate out/ hr/ --metrics paper` on a machine without any metric weights."""
    sr_dir, hr_dir, _ = folders
    code, record, errors = evaluate_json(capsys, str(sr_dir), str(hr_dir), "--metrics", "paper")
    assert code == 1 and record["metrics"] == ["psnr", "ssim"] and record["rows"][0]["images"] == 3
    learned = [m for m in metrics.METRIC_GROUPS["paper"] if m not in ("psnr", "ssim")]
    assert sorted(record["unavailable"]) == sorted(learned) and len(errors) == len(learned)
    assert all(line.startswith(f"{name}: ") for name, line in record["unavailable"].items())


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")
def test_lpips_runs_from_the_torch_hub_cache(empty_caches, tmp_path):
    """With the trunk file in the cache (random AlexNet weights here: the real ones cannot be
    downloaded) LPIPS loads offline and scores as the lpips package does on [-1, 1] inputs."""
    import lpips
    import torch
    import torchvision

    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), checkpoints / metrics.ALEXNET.name)
    score = metrics.load_metric("lpips")
    sr, hr = (a[:64, :64].astype(np.float64) for a in realsr_pair(PAIRS[0]))
    reference = lpips.LPIPS(net="alex", verbose=False).eval()
    with torch.no_grad():
        expected = reference(*(torch.from_numpy(a.transpose(2, 0, 1) / 127.5 - 1).float()[None] for a in (sr, hr)))
    assert score(sr, hr) == pytest.approx(float(expected), rel=1e-5) and score(sr, hr) > 0
    assert score(hr, hr) == 0


def test_failed_download_names_the_file(empty_caches, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    unreachable = dataclasses.replace(metrics.ALEXNET, url="http://127.0.0.1:9/alexnet-owt-7be5be79.pth")
    monkeypatch.setitem(metrics.METRICS, "lpips", dataclasses.replace(metrics.METRICS["lpips"], weights=(unreachable,)))
    with pytest.raises(metrics.MetricUnavailable, match=r"^lpips: alexnet-owt-7be5be79.pth is not in .* could not be downloaded: "):
        metrics.load_metric("lpips")
    with pytest.raises(metrics.MetricUnavailable):  # the answer is remembered: no second download attempt
        monkeypatch.setattr(metrics, "_fetch", lambda metric: pytest.fail("fetched twice"))
        metrics.load_metric("lpips")


@pytest.mark.skipif(importlib.util.find_spec("pyiqa") is not None, reason="pyiqa is installed here")
def test_pyiqa_metrics_name_their_extra(folders, empty_caches, capsys):
    sr_dir, hr_dir, _ = folders
    code, record, errors = evaluate_json(capsys, str(sr_dir), str(hr_dir), "--metrics", "niqe,psnr")
    assert code == 1 and record["metrics"] == ["psnr"]
    assert errors == ["niqe: needs pyiqa (PolyForm Noncommercial 1.0.0 licence, not installed by default): "
                      "pip install 'seesr[iqa]'"]  # fmt: skip


def test_declared_weight_files_are_the_libraries_own():
    import torchvision
    from cleanfid.downloads_helper import inception_url

    assert metrics.ALEXNET.url == torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url
    assert metrics.VGG16.url == torchvision.models.VGG16_Weights.IMAGENET1K_V1.url
    assert metrics.INCEPTION.url == inception_url
    assert all(w.name == w.url.rsplit("/", 1)[1] for w in (metrics.ALEXNET, metrics.VGG16, metrics.INCEPTION))


def test_metric_table_matches_the_docs():
    page = (REPO_ROOT / "docs" / "evaluation.md").read_text()
    assert metrics.metric_table() in page


# --------------------------------------------------------------------------- --run and the start script


def run_command(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_WAIT_POLICY": "PASSIVE", **env}
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_run_reproduces_the_realesrgan_benchmark(tmp_path):
    """x4plus on two cropped RealSR pairs: the row of `seesr evaluate --run` is the benchmark's figure;
    a SeeSR preset without weights says so in its row, and bicubic is the bicubic baseline."""
    from benchmarks.realesrgan import run

    data = tmp_path / "realsr"
    for folder in ("lr", "hr"):
        (data / folder).mkdir(parents=True)
    for name in PAIRS[:2]:
        Image.open(REALSR / "lr" / f"{name}.png").crop((32, 32, 80, 80)).save(data / "lr" / f"{name}.png")
        Image.open(REALSR / "hr" / f"{name}.png").crop((128, 128, 320, 320)).save(data / "hr" / f"{name}.png")
    weights = tmp_path / "weights"
    done = run_command(
        [sys.executable, "-m", "seesr.cli", "evaluate", "--run", "realesrgan-x4plus,balanced,bicubic",
         str(data / "lr"), str(data / "hr"), "--fp32", "--color-fix", "none", "--weights", str(weights), "--json"],
        tmp_path, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    record = json.loads(done.stdout)
    x4plus, balanced, bicubic = record["rows"]
    assert balanced["name"] == "balanced" and balanced["images"] == 0
    assert balanced["missing_weights"].startswith("SeeSR weights are missing: ")
    assert done.stderr.splitlines() == [f"balanced: not run, {balanced['missing_weights']}"]
    benchmark = run(data, with_ncnn=False, fp32=True, weights_dir=weights, color_fixes=("none",))
    assert x4plus["images"] == 2 and benchmark["images"] == 2
    assert x4plus["mean"]["psnr"] == pytest.approx(benchmark["ours"]["none"]["psnr_y"], abs=1e-9)
    assert x4plus["mean"]["ssim"] == pytest.approx(benchmark["ours"]["none"]["ssim_y"], abs=1e-9)
    for name in PAIRS[:2]:
        lr, hr = Image.open(data / "lr" / f"{name}.png"), np.asarray(Image.open(data / "hr" / f"{name}.png"))
        baseline = np.asarray(lr.resize((192, 192), Image.Resampling.BICUBIC))
        assert bicubic["per_image"][name]["psnr"] == pytest.approx(reference_psnr(baseline, hr), abs=1e-6)


@pytest.mark.slow
def test_start_script_evaluate_as_the_readme_types_it(folders, tmp_path):
    sr_dir, hr_dir, lr_dir = folders
    sr_dir.rename(tmp_path / "out")
    done = run_command([str(REPO_ROOT / "start_seesr.sh"), "evaluate", "out/", "hr/", "--lr", "lr/", "--crop-border",
                        "4", "--csv", "scores.csv"], tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-3].split() == ["out", "3", *lines[-3].split()[2:]] and lines[-2].split()[0] == "bicubic"
    rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert rows[0] == "method,image,psnr,ssim" and len(rows) == 1 + 6 + 2
    psnr = float(rows[1].split(",")[2])
    sr, hr = realsr_pair(rows[1].split(",")[1])
    assert psnr == pytest.approx(reference_psnr(sr, hr, 4), abs=1e-6)
    done = run_command([str(REPO_ROOT / "start_seesr.sh"), "evaluate", "out/", "hr/", "--json"], tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout)["rows"][0]["images"] == 3
