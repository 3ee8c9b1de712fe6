"""What `seesr upscale` tells its user: result lines, --json, --quiet, --verbose, --version, the
progress line on a terminal, fallback reasons, --dry-run per engine, and that the Real-ESRGAN path
and --dry-run start without diffusers or transformers. Commands run as typed, in subprocesses."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from PIL import Image

from seesr.progress import RECORD_FIELDS, LogProgress, RunStart, StageProgress, TerminalProgress

REPO = Path(__file__).resolve().parents[1]
SEESR = Path(sys.executable).parent / "seesr"
FAST = ["--scale", "2", "--device", "cpu"]
ESCAPES = ("\r", "\x1b[")


def environment(tmp_path: Path) -> dict[str, str]:
    """This checkout's seesr, offline, an empty Hugging Face cache, one thread."""
    return {**os.environ, "PYTHONPATH": str(REPO), "SEESR_PROCESS_SIZE": "0", "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}  # fmt: skip


def seesr(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``seesr ARGS`` as a user types it (stdout and stderr are pipes, not a terminal)."""
    return subprocess.run([str(SEESR), *args], env=environment(tmp_path), capture_output=True, text=True, timeout=600)


@pytest.fixture()
def images(lr_image, tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    lr_image.save(folder / "a.png")
    lr_image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "b.png")
    return folder


def test_version_is_the_package_metadata(tmp_path):
    done = seesr(tmp_path, "--version")
    assert done.returncode == 0 and done.stdout == f"seesr {version('seesr')}\n" and done.stderr == ""


def test_quiet_and_verbose_exclude_each_other(tmp_path):
    done = seesr(tmp_path, "upscale", "x.png", "--quiet", "--verbose")
    assert done.returncode == 2 and "not allowed with argument" in done.stderr


def test_explicit_engine_prints_result_lines_only_and_no_fallback(images, tmp_path):
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    done = seesr(tmp_path, "upscale", str(images), "-o", str(out), "--engine", "realesrgan", *FAST)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [str(out / "a.png"), str(out / "b.png")]
    assert all("engine realesrgan" in line and "fallback" not in line for line in lines)
    assert done.stderr.splitlines() == [
        "broken.png: failed: " + done.stderr.split(": failed: ")[1].strip()  # named by its path in the folder
    ]
    assert not any(escape in done.stdout + done.stderr for escape in ESCAPES)  # not a terminal: no progress
    assert Image.open(out / "a.png").size == (72, 48)


def test_json_and_a_missing_weights_fallback_said_once_and_complete(images, tmp_path):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    out = tmp_path / "out"
    done = seesr(tmp_path, "upscale", str(images), "-o", str(out), "--weights", str(empty), "--json", *FAST)
    assert done.returncode == 0 and done.stderr == ""
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [Path(r["input"]).name for r in records] == ["a.png", "b.png"]
    for record in records:
        assert list(record) == ["input", "output", "status", *RECORD_FIELDS]
        assert record["status"] == "done" and record["size"] == [72, 48] and Path(record["output"]).is_file()
        assert record["engine"] == "realesrgan" and record["model"] == "realesrgan-x4plus" and record["seconds"] > 0
        assert set(record["fidelity"]) == {"structure", "color_error", "edge_precision", "edge_recall"}
        assert record["fallback_reason"] == (
            f"SeeSR weights are missing: 20 files (sd-turbo 11, seesr 5, ram 4) not found in {empty} or the Hugging "
            "Face cache (`seesr weights list` names them); run `seesr weights download`"
        )
    assert done.stdout.count("SeeSR weights are missing") == 2  # once per image, nowhere else


def test_quiet_prints_nothing_on_success(images, tmp_path):
    out = tmp_path / "a_x2.png"
    done = seesr(tmp_path, "upscale", str(images / "a.png"), "-o", str(out), "--engine", "realesrgan", "--quiet", *FAST)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert Image.open(out).size == (72, 48)
    again = seesr(
        tmp_path, "upscale", str(images / "a.png"), "-o", str(out), "--engine", "realesrgan", "--quiet", *FAST
    )
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")  # a skip is no error


def cpu_dtype() -> str:
    """The precision Real-ESRGAN runs in on this CPU (bfloat16 where the CPU has native bf16)."""
    from seesr.engines.realesrgan.sources import planned_precision

    return str(planned_precision(torch.device("cpu"))).removeprefix("torch.")


def test_verbose_logs_the_engine_line(images, tmp_path):
    done = seesr(tmp_path, "upscale", str(images / "a.png"), "-o", str(tmp_path / "o.png"), "--engine", "realesrgan",
                 "--verbose", *FAST)  # fmt: skip
    assert done.returncode == 0
    assert f"INFO seesr.progress: engine realesrgan, model realesrgan-x4plus, cpu {cpu_dtype()}; x4 network" in done.stderr


def test_dry_run_plans_the_engine_that_would_run(images, tmp_path, tiny_weights_dir):
    image, out = str(images / "a.png"), str(tmp_path / "o.png")
    esrgan = seesr(tmp_path, "upscale", image, "-o", out, "--engine", "realesrgan", "--dry-run", *FAST)
    assert esrgan.returncode == 0 and esrgan.stderr == ""
    assert esrgan.stdout.startswith(
        f"{image} -> {out} (72x48): engine realesrgan, model realesrgan-x4plus, cpu {cpu_dtype()};"
    )
    assert "x4 network, resized to x2; untiled when it fits the free memory" in esrgan.stdout
    assert "est. peak 0.0 GiB" in esrgan.stdout
    tiled = seesr(tmp_path, "upscale", image, "-o", out, "-n", "realesr-animevideov3-x2", "-t", "32", "--dry-run", *FAST)
    assert "model realesr-animevideov3-x2" in tiled.stdout and "x4 network, resized to x2; tiles of 32 px" in tiled.stdout
    turbo = seesr(
        tmp_path, "upscale", image, "-o", out, "--weights", str(tiny_weights_dir), "--dry-run", "--json", *FAST
    )
    (plan,) = [json.loads(line) for line in turbo.stdout.splitlines()]
    assert plan["status"] == "planned" and plan["engine"] == "seesr" and plan["model"] == "seesr-turbo"
    assert plan["steps"] == 2 and plan["device"] == "cpu" and plan["estimated_peak_bytes"] > 0
    assert plan["dtype"] in ("bfloat16", "float32") and "latent 9x6" in plan["tiles"]
    missing = seesr(tmp_path, "upscale", image, "-o", out, "--weights", str(tmp_path / "none"), "--dry-run", *FAST)
    assert "engine realesrgan" in missing.stdout and "(fallback: SeeSR weights are missing: 20 files" in missing.stdout
    assert not Path(out).exists()


def test_realesrgan_and_dry_runs_import_neither_diffusers_nor_transformers(images, tmp_path, tiny_weights_dir):
    image, out = str(images / "a.png"), str(tmp_path / "o.png")
    script = f"""
import sys
import seesr.cli
seesr.cli.build_parser()
assert "torch" not in sys.modules, "building the parser imported torch"
runs = [
    ["upscale", {image!r}, "-o", {out!r}, "--engine", "realesrgan", "--scale", "2", "--device", "cpu"],
    ["upscale", {image!r}, "-o", {out!r}, "--dry-run", "--weights", {str(tiny_weights_dir)!r}],
    ["upscale", {image!r}, "-o", {out!r}, "--dry-run", "--engine", "realesrgan"],
    ["upscale", {image!r}, "-o", {out!r}, "--weights", {str(tmp_path / "none")!r}, "--overwrite", "--scale", "2"],
]
for argv in runs:
    assert seesr.cli.main(argv) == 0, argv
print(sorted(m for m in sys.modules if m.split(".")[0] in ("diffusers", "transformers")))
"""
    done = subprocess.run([sys.executable, "-c", script], env=environment(tmp_path), capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "[]"


def test_progress_line_on_a_terminal(images, tmp_path, tiny_weights_dir):
    """Under a pseudo-terminal: the engine line first, then one updating line with steps x tiles."""
    import pty

    primary, secondary = pty.openpty()
    command = [str(SEESR), "upscale", str(images / "a.png"), "-o", str(tmp_path / "o.png"), "--weights",
               str(tiny_weights_dir), "--steps", "2", "--latent-tile", "8", "--latent-overlap", "2", *FAST]  # fmt: skip
    process = subprocess.Popen(command, env=environment(tmp_path), stdout=subprocess.PIPE, stderr=secondary)
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    assert process.wait(timeout=600) == 0
    terminal = shown.decode()
    first = next(line for line in terminal.split("\r\n") if line.startswith("engine "))
    assert (
        first.startswith("engine seesr, model seesr-turbo, cpu ") and ", 2 steps; latent 9x6 in 2x1 tiles of 8" in first
    )
    assert terminal.startswith("\r\x1b[Kseesr: starting  0:00")  # before torch is imported
    assert "\r\x1b[Ka.png: denoising  step 1/2, tile 0/2" in terminal  # a stage start is always drawn
    assert "\r\x1b[Ka.png: denoising  step 2/2, tile 2/2" in terminal and "\r\x1b[Ka.png: VAE decode" in terminal
    assert terminal.endswith("\r\x1b[K")  # the progress line is erased at the end
    assert process.stdout.read().decode().startswith(f"{tmp_path / 'o.png'}: 72x48, engine seesr")


# ------------------------------------------------------------------ the display, on a fake terminal
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_terminal_progress_draws_steps_tiles_and_eta():
    stream, clock = io.StringIO(), Clock()
    display = TerminalProgress(stream, clock)
    display.image(2, 3, "a.png")
    display(RunStart("seesr", "seesr-turbo", "cpu", "float32", 2, "latent 16x16 in 2x2 tiles of 8"))
    display(StageProgress("denoise", 0, 8))
    display(StageProgress("denoise", 0, 0))  # the stage's start once more: nothing new
    clock.now = 4.0
    display(StageProgress("denoise", 4, 8))
    clock.now = 4.05  # too soon: not drawn
    display(StageProgress("denoise", 5, 8))
    clock.now = 5.0
    display(StageProgress("denoise", 8, 8))
    display.clear()
    assert stream.getvalue().split("\r\x1b[K") == [
        "engine seesr, model seesr-turbo, cpu float32, 2 steps; latent 16x16 in 2x2 tiles of 8\n",
        "[2/3] a.png: denoising  step 1/2, tile 0/4  0:00",
        "[2/3] a.png: denoising  step 1/2, tile 4/4  0:04  ETA 0:04",
        "[2/3] a.png: denoising  step 2/2, tile 4/4  0:05  ETA 0:00",
        "",
    ]


def test_terminal_progress_repeats_the_engine_line_only_when_it_changes():
    stream = io.StringIO()
    display = TerminalProgress(stream, Clock())
    start = RunStart("realesrgan", "realesrgan-x4plus", "cpu", "float32", None, "tiles of 256 px")
    display(start)
    display(start)
    display(RunStart("seesr", "seesr-turbo", "cpu", "float32", 1, "untiled", retry="out of memory in denoise"))
    assert stream.getvalue().splitlines() == [
        "engine realesrgan, model realesrgan-x4plus, cpu float32; tiles of 256 px",
        "out of memory in denoise; retrying: engine seesr, model seesr-turbo, cpu float32, 1 step; untiled",
    ]


def test_log_progress_writes_a_line_per_stage_and_at_most_one_per_interval():
    """Whole lines for a log (Cog's prediction logs): the terminal line's words when a stage starts,
    then within the stage one line per LogProgress.INTERVAL (5) seconds at most."""
    lines, clock = [], Clock()
    log = LogProgress(lines.append, clock)
    log.image("sample 1/2")
    log(RunStart("seesr", "seesr-turbo", "cpu", "float32", 2, "latent 16x16 in 2x2 tiles of 8"))  # StageTracker logs it
    log(StageProgress("tag", 0, 0))
    clock.now = 1.0
    log(StageProgress("denoise", 0, 8))
    for done, now in [(1, 2.0), (2, 5.9), (3, 6.0), (4, 6.5), (8, 12.0)]:
        clock.now = now
        log(StageProgress("denoise", done, 8))
    clock.now = 12.5
    log(StageProgress("decode", 0, 0))
    assert lines == [
        "sample 1/2: tagging (RAM)  0:00",
        "sample 1/2: denoising  step 1/2, tile 0/4  0:01",
        "sample 1/2: denoising  step 1/2, tile 3/4  0:06  ETA 0:08",
        "sample 1/2: denoising  step 2/2, tile 4/4  0:12  ETA 0:00",
        "sample 1/2: VAE decode  0:13",
    ]


def test_help_lists_the_report_flags_from_their_declaration(capsys, monkeypatch):
    from seesr.cli import build_parser
    from seesr.cli.flags import REPORT_FLAGS

    monkeypatch.setenv("COLUMNS", "10000")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["upscale", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "what is printed: --quiet" in help_text and set(REPORT_FLAGS) == {"quiet", "verbose", "json"}
    for name, text in REPORT_FLAGS.items():
        assert f"--{name} {' '.join(text.split())}" in help_text
    assert ", ".join(RECORD_FIELDS) in REPORT_FLAGS["json"]
