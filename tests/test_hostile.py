"""Fault injection and hostile input for the command line: read-only and full disks, name
collisions, outputs that would destroy inputs, kills mid-run, bad config files and devices, odd
images. Each case asserts what a user sees: the exit code, one line and no traceback, and that no
file is partial, lost or left behind."""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seesr.cli import main
from seesr.cli.upscale import FALLBACK_NOTICE

REPO_ROOT = Path(__file__).resolve().parents[1]
FAST = ["--scale", "2", "--steps", "1", "--seed", "1", "--device", "cpu"]


@pytest.fixture(autouse=True)
def fast_env(monkeypatch):
    monkeypatch.setenv("SEESR_PROCESS_SIZE", "0")


@pytest.fixture()
def photos(lr_image, tmp_path) -> Path:
    """A folder of three small real images."""
    folder = tmp_path / "photos"
    folder.mkdir()
    lr_image.save(folder / "a.png")
    recoloured(lr_image, "BGR").save(folder / "b.png")
    recoloured(lr_image, "GBR").save(folder / "c.png")
    return folder


# ---------------------------------------------------------------------------- helpers
def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "seesr.cli", *args]


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "SEESR_PROCESS_SIZE": "0", "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1"}  # fmt: skip


def without_root_file_access() -> None:
    """preexec_fn: drop CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH from the bounding set, so that even
    root obeys file permissions after exec (a no-op for other users)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def file_size_limit(limit: int):
    """preexec_fn: files may not grow past ``limit`` bytes (a full disk); writes fail with EFBIG."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def assert_one_line(stderr: str, *expected: str) -> str:
    """No traceback, and the seesr line says ``expected`` (besides the fallback notice of a run
    without weights, said once)."""
    assert "Traceback" not in stderr, stderr
    assert stderr.count(FALLBACK_NOTICE) <= 1, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("seesr: ") and not line.startswith(FALLBACK_NOTICE)]
    assert len(lines) == 1, stderr
    for text in expected:
        assert text in lines[0], stderr
    return lines[0]


def assert_no_leftovers(folder: Path) -> None:
    assert not [p.name for p in folder.rglob(".*.tmp")], list(folder.rglob("*"))


def mean_colour(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(0)


def assert_is_upscaled(path: Path, source: Path, fmt: str = "PNG", siblings: tuple[Path, ...] = ()) -> None:
    """A complete image of the right format and size; with ``siblings`` (the other inputs, which
    differ in colour), its colours are nearest ``source``'s, which the colour fix carries over."""
    with Image.open(path) as image, Image.open(source) as lr:
        assert image.format == fmt
        image.load()
        assert image.size == (lr.width * 2, lr.height * 2)
        got = mean_colour(image)
    distances = {}
    for candidate in (source, *siblings):
        with Image.open(candidate) as other:
            distances[candidate] = float(np.abs(got - mean_colour(other)).sum())
    assert min(distances, key=distances.get) == source, f"{path} is not the upscale of {source}: {distances}"


def recoloured(image: Image.Image, order: str) -> Image.Image:
    """The image with its colour channels reordered ("BGR", "GRB"): same content, other colours."""
    channels = dict(zip("RGB", image.split()))
    return Image.merge("RGB", [channels[c] for c in order])


# ---------------------------------------------------------------------------- output faults
def test_a_read_only_output_folder_is_one_line_before_any_model_loads(photos, tmp_path, tiny_weights_dir):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        for args in ([str(photos), "-o", str(out)], [str(photos / "a.png"), "-o", str(out / "a.png")]):
            done = subprocess.run(
                cli_command("upscale", *args, "--weights", str(tiny_weights_dir), *FAST),
                env={**cli_env(), "SEESR_LOG_LEVEL": "INFO"}, capture_output=True, text=True, timeout=300,
                preexec_fn=without_root_file_access,
            )  # fmt: skip
            assert done.returncode == 2, done.stderr
            assert_one_line(done.stderr, f"cannot write to the output folder {out}", "Permission denied")
            assert "seesr.engines.seesr.pipeline" not in done.stderr and "loading" not in done.stderr.lower()
            assert list(out.iterdir()) == []
    finally:
        out.chmod(0o755)


@pytest.mark.slow
def test_a_full_disk_fails_the_file_with_one_line_and_no_partial_output(photos, tmp_path, tiny_weights_dir):
    target = tmp_path / "out" / "a.png"
    done = subprocess.run(
        cli_command("upscale", str(photos / "a.png"), "-o", str(target), "--weights", str(tiny_weights_dir), *FAST),
        env=cli_env(), capture_output=True, text=True, timeout=300, preexec_fn=file_size_limit(1024),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "a.png: failed: cannot write" in done.stderr and "File too large" in done.stderr, done.stderr
    assert not target.exists()
    assert_no_leftovers(tmp_path / "out")


def test_same_named_inputs_each_get_their_own_output(tiny, tmp_path, tiny_weights_dir, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    lr = Image.open(tiny / "inputs" / "pipeline_lr_crop.png").convert("RGB")
    lr.save(folder / "pic.png")
    recoloured(lr, "BGR").save(folder / "pic.jpg", quality=95)
    out = tmp_path / "out"
    args = ["upscale", str(folder), "-o", str(out), "--weights", str(tiny_weights_dir), *FAST]
    assert main(args) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["pic_jpg.png", "pic_png.png"]
    assert_is_upscaled(out / "pic_png.png", folder / "pic.png", siblings=(folder / "pic.jpg",))
    assert_is_upscaled(out / "pic_jpg.png", folder / "pic.jpg", siblings=(folder / "pic.png",))
    first = {p.name: p.read_bytes() for p in out.glob("pic_*.png")}
    assert main([*args, "--overwrite"]) == 0
    assert {p.name: p.read_bytes() for p in out.glob("pic_*.png")} == first  # same seed, same images, none lost


@pytest.mark.parametrize("folder_run", [False, True])
def test_an_output_that_is_its_input_is_refused_even_with_overwrite(photos, folder_run, capsys):
    original = (photos / "a.png").read_bytes()
    args = [str(photos), "-o", str(photos)] if folder_run else [str(photos / "a.png"), "-o", str(photos / "a.png")]
    for extra in ([], ["--overwrite"]):
        assert main(["upscale", *args, *FAST, *extra]) == 2
        line = assert_one_line(capsys.readouterr().err, "is one of the inputs")
        assert "--overwrite" not in line
    assert (photos / "a.png").read_bytes() == original
    assert sorted(p.name for p in photos.iterdir()) == ["a.png", "b.png", "c.png"]


def test_compare_does_not_overwrite_a_users_file(photos, tmp_path, tiny_weights_dir, capsys):
    mine = tmp_path / "up_compare.png"
    mine.write_bytes(b"my own file")
    args = ["upscale", str(photos / "a.png"), "-o", str(tmp_path / "up.png"), "--compare",
            "--weights", str(tiny_weights_dir), *FAST]  # fmt: skip
    assert main(args) == 2
    assert_one_line(capsys.readouterr().err, "up_compare.png exists; pass --overwrite")
    assert mine.read_bytes() == b"my own file" and not (tmp_path / "up.png").exists()
    assert main([*args, "--overwrite"]) == 0
    assert Image.open(mine).size[0] == 2 * 72 + 4  # input | divider | output, labels above


@pytest.mark.parametrize(
    ("name", "extra", "fmt"),
    [("out.jpg", [], "JPEG"), ("out.jpeg", ["--output-format", "jpg"], "JPEG"), ("out.webp", [], "WEBP"),
     ("out.png", [], "PNG")],
)  # fmt: skip
def test_the_output_suffix_decides_the_format(photos, tmp_path, tiny_weights_dir, name, extra, fmt):
    target = tmp_path / name
    args = ["upscale", str(photos / "a.png"), "-o", str(target), "--weights", str(tiny_weights_dir), *FAST, *extra]
    assert main(args) == 0
    assert_is_upscaled(target, photos / "a.png", fmt)


@pytest.mark.parametrize(
    ("name", "extra", "message"),
    [("a.png", ["--output-format", "jpg"], "is PNG by its suffix but output_format='jpg'"),
     ("a.gif", [], "suffix '.gif' is not an output format")],
)  # fmt: skip
def test_a_wrong_suffix_is_refused_before_any_work(photos, tmp_path, name, extra, message, capsys):
    assert main(["upscale", str(photos / "a.png"), "-o", str(tmp_path / name), *FAST, *extra]) == 2
    assert_one_line(capsys.readouterr().err, message)
    assert list(tmp_path.iterdir()) == [photos]


# ---------------------------------------------------------------------------- kills
def start_folder_run(photos: Path, out: Path, weights: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cli_command("upscale", str(photos), "-o", str(out), "--weights", str(weights), *FAST),
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for_first_result(process: subprocess.Popen) -> str:
    line = process.stdout.readline()  # "<target>: <summary>" once the first file is done
    assert line, process.communicate(timeout=60)
    return line


@pytest.mark.slow
@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGINT])
def test_a_killed_folder_run_leaves_no_partial_file_and_resumes(photos, tmp_path, tiny_weights_dir, kill):
    out = tmp_path / "out"
    process = start_folder_run(photos, out, tiny_weights_dir)
    try:
        first = Path(wait_for_first_result(process).split(": ", 1)[0])
        process.send_signal(kill)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    if kill == signal.SIGINT:
        assert process.returncode == 130
        assert_one_line(stderr, "interrupted; finished outputs are kept")
    else:
        assert process.returncode == -signal.SIGKILL
    kept = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert first.name in kept
    for name in kept:  # whatever exists is a whole image
        assert_is_upscaled(out / name, photos / name, siblings=tuple(photos.iterdir()))
    first_bytes = first.read_bytes()
    # a writer killed mid-rename leaves its hidden temporary file: the next run removes it
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / f".b.png.{int(dead.stdout)}-0123abcd.tmp").write_bytes(b"\x89PNG partial")
    resumed = subprocess.run(
        cli_command("upscale", str(photos), "-o", str(out), "--weights", str(tiny_weights_dir), *FAST),
        env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"{first.name}: skipped" in resumed.stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.png", "b.png", "c.png"]
    for name in ("a.png", "b.png", "c.png"):
        assert_is_upscaled(out / name, photos / name, siblings=tuple(photos.iterdir()))
    assert first.read_bytes() == first_bytes
    assert_no_leftovers(out)


# ---------------------------------------------------------------------------- config, devices, inputs
def test_bad_config_files_are_one_line(photos, tmp_path, capsys):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"steps: \xff\xfe\n")
    bomb = tmp_path / "bomb.yaml"
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb.write_text("\n".join(levels) + "\nprompt: *a8\n")  # 9**9 strings once expanded
    cases = ((tmp_path, "is a folder, not a file"), (binary, "is not UTF-8 text"), (bomb, "uses YAML aliases"))
    for config, message in cases:
        assert main(["upscale", str(photos / "a.png"), "-o", str(tmp_path / "x.png"), "--config", str(config)]) == 2
        assert_one_line(capsys.readouterr().err, f"config file {config}", message)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("device", ["banana", "mps", "cuda:99", *([] if torch.cuda.is_available() else ["cuda"])])
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_device_this_machine_lacks_is_one_line(photos, tmp_path, device, dry_run, monkeypatch, capsys):
    args = ["upscale", str(photos / "a.png"), "-o", str(tmp_path / "x.png"), *(["--dry-run"] if dry_run else [])]
    assert main([*args, "--device", device]) == 2
    assert_one_line(capsys.readouterr().err, f"device {device!r}", "has: cpu")
    monkeypatch.setenv("SEESR_DEVICE", device)
    assert main(args) == 2
    assert_one_line(capsys.readouterr().err, f"device {device!r}")
    assert not (tmp_path / "x.png").exists()


def test_files_a_folder_scan_skips_are_named_once(photos, tmp_path, capsys):
    (photos / "logo.svg").write_text("<svg/>")
    (photos / "notes.txt").write_text("hello")
    (photos / ".DS_Store").write_bytes(b"\0")
    assert main(["upscale", str(photos), "-o", str(tmp_path / "out"), "--dry-run", *FAST]) == 0
    line = assert_one_line(capsys.readouterr().err, "skipped 2 file(s) that are not images")
    assert line.endswith(": logo.svg, notes.txt")


def test_a_side_at_or_below_the_overlap_is_one_tile_wide():
    from seesr.errors import ConfigError
    from seesr.imaging.tiling import plan_tiles

    tiles = plan_tiles(16, 300, 64, 16)  # Real-ESRGAN on a 300x16 image: 16 rows, overlap 16
    assert {(t.top, t.height) for t in tiles} == {(0, 16)} and tiles[-1].left + tiles[-1].width == 300
    assert [t.left for t in tiles] == [0, 48, 96, 144, 192, 236]
    assert [(t.top, t.left) for t in plan_tiles(300, 8, 64, 16)][:2] == [(0, 0), (48, 0)]
    assert len(plan_tiles(4, 4, 16, 16)) == 1
    with pytest.raises(ConfigError, match="overlap 16 must be smaller than the tile size 16"):
        plan_tiles(300, 300, 16, 16)  # a split axis still needs overlap < tile


@pytest.mark.parametrize("size", [(300, 16), (16, 300)])
def test_thin_images_upscale(size, tmp_path, tiny_weights_dir, capsys):
    rng = np.random.default_rng(0)
    source = tmp_path / "thin.png"
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(source)
    target = tmp_path / "thin_x2.png"
    tiles = ["--latent-tile", "16", "--latent-overlap", "8"]  # tiles smaller than one side, larger than the other
    assert main(["upscale", str(source), "-o", str(target), "--weights", str(tiny_weights_dir), *FAST, *tiles]) == 0, (
        capsys.readouterr().err
    )
    assert Image.open(target).size == (size[0] * 2, size[1] * 2)


def test_ctrl_c_is_one_line_and_exit_130(photos, tmp_path, monkeypatch, capsys):
    import seesr.api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(seesr.api.Upscaler, "upscale_samples", interrupted)
    assert main(["upscale", str(photos / "a.png"), "-o", str(tmp_path / "x.png"), *FAST]) == 130
    assert_one_line(capsys.readouterr().err, "interrupted")
    assert not (tmp_path / "x.png").exists()


def test_the_fallback_reason_counts_the_missing_files_by_group(tmp_path, monkeypatch):
    import seesr

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("SEESR_WEIGHTS", raising=False)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8))
    result = seesr.Upscaler(tmp_path / "empty").upscale(image, scale=2, device="cpu")
    reason = result.fallback_reason
    assert result.engine == "realesrgan" and "\n" not in reason and "..." not in reason
    assert reason == (
        f"SeeSR weights are missing: 20 files (sd-turbo 11, seesr 5, ram 4) not found in {tmp_path / 'empty'} or "
        "the Hugging Face cache (`seesr weights list` names them); run `seesr weights download`"
    )
