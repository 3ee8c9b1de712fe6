"""`./start_seesr.sh predict IMAGE [name=value ...]` run as the README types it.

Offline and without SeeSR weights (an empty weights folder, ``HF_HUB_OFFLINE=1``) the predictor,
started as a server allowed to fall back (``SEESR_ALLOW_FALLBACK=1``), runs the bundled
Real-ESRGAN, which is enough to check the command itself: the exit code, the line it prints and
the file it writes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def photo(tiny, tmp_path) -> Path:
    """A small real photo as ``photo.jpg`` (Real-ESRGAN on the CPU takes seconds per few pixels)."""
    with Image.open(tiny / "inputs" / "pipeline_lr_crop.png") as image:
        image.convert("RGB").crop((0, 0, 12, 8)).save(tmp_path / "photo.jpg", quality=95)
    return tmp_path / "photo.jpg"


def predict(photo: Path, *options: str, allow_fallback: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEESR_", "HF_", "COG_"))}
    env.update(
        SEESR_WEIGHTS=str(photo.parent / "no-weights"),
        SEESR_DEVICE="cpu",
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(photo.parent / "hf-cache"),
        OMP_NUM_THREADS="2",
    )
    if allow_fallback:
        env["SEESR_ALLOW_FALLBACK"] = "1"
    command = [str(REPO_ROOT / "start_seesr.sh"), "predict", photo.name, *options]
    return subprocess.run(command, cwd=photo.parent, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_predict_as_typed_writes_a_png(photo):
    done = predict(photo)
    assert done.returncode == 0, done.stderr[-3000:]
    target = photo.with_name("photo_seesr.png")
    assert done.stdout.strip().splitlines()[-1] == str(Path(photo.name).with_name("photo_seesr.png"))
    with Image.open(target) as image:
        assert image.format == "PNG" and image.size == (48, 32)  # the default scale, 4
    assert "engine realesrgan" in done.stdout and "SeeSR weights are missing" in done.stdout


def test_predict_without_seesr_weights_stops_in_one_line(photo):
    """As a Cog server would: no stand-in model unless SEESR_ALLOW_FALLBACK is set."""
    done = predict(photo, allow_fallback=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("seesr: SeeSR weights are missing: 20 files (sd-turbo 11, seesr 5, ram 4)"), line
    assert "SEESR_ALLOW_FALLBACK=1" in line
    assert not photo.with_name("photo_seesr.png").exists()


@pytest.mark.slow
def test_predict_with_options(photo):
    done = predict(photo, "scale=2", "output_format=webp", "offload=no", "seed=")
    assert done.returncode == 0, done.stderr[-3000:]
    with Image.open(photo.with_name("photo_seesr.webp")) as image:
        assert image.format == "WEBP" and image.size == (24, 16)


@pytest.mark.slow
def test_predict_writes_each_sample_named_by_its_seed(photo):
    (photo.parent / "photo_seesr_s8.png").write_bytes(b"an earlier result")
    done = predict(photo, "num_samples=2", "seed=7", "scale=2")
    assert done.returncode == 1 and "photo_seesr_s8.png exists; pass --overwrite" in done.stderr, done.stderr[-3000:]
    assert not photo.with_name("photo_seesr_s7.png").exists()  # refused before anything ran
    done = predict(photo, "num_samples=2", "seed=7", "scale=2", "--overwrite")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-2:] == ["photo_seesr_s7.png", "photo_seesr_s8.png"]
    for name in ("photo_seesr_s7.png", "photo_seesr_s8.png"):
        with Image.open(photo.with_name(name)) as image:
            assert image.format == "PNG" and image.size == (24, 16)


@pytest.mark.parametrize(
    ("option", "message"),
    [("tile=64", "is not NAME=VALUE with NAME one of: preset, engine"), ("scale=big", "scale='big' is not a float")],
)
def test_predict_refuses_unknown_or_mistyped_options(photo, option, message):
    done = predict(photo, option)
    assert done.returncode == 1 and message in done.stderr, done.stderr[-2000:]
    assert not photo.with_name("photo_seesr.png").exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("scale=100", "seesr: invalid settings: scale=100.0 (allowed: 1.0 to 8.0)"),
        ("model=/srv/models/net.pth", "seesr: model must be one of: seesr-turbo, seesr, realesrgan-x4plus"),
    ],
)
def test_predict_refuses_a_bad_value_in_one_line_before_any_model_loads(photo, option, message):
    done = predict(photo, option)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(message)
    assert not photo.with_name("photo_seesr.png").exists()


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (os.mkfifo, "is a pipe (FIFO), not a file"),
        (lambda p: p.symlink_to("/dev/zero"), "is a device, not a file"),
        (lambda p: p.symlink_to(p), "is a symbolic link loop; point it at a file"),
    ],
    ids=["fifo", "dev-zero", "symlink-loop"],
)
def test_predict_refuses_what_is_not_an_image_file_in_one_line(tmp_path, make, says):
    image = tmp_path / "photo.jpg"
    make(image)
    done = predict(image)  # a FIFO would block this forever if it were opened
    assert done.returncode == 1 and done.stderr.strip() == f"seesr: input photo.jpg {says}", done.stderr


def test_predict_never_overwrites_an_earlier_result(photo):
    earlier = photo.with_name("photo_seesr.png")  # say, from an earlier run on photo.png
    earlier.write_bytes(b"an earlier result")
    done = predict(photo)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "seesr: photo_seesr.png exists; pass --overwrite to replace it, or move it away"
    assert earlier.read_bytes() == b"an earlier result"


@pytest.mark.slow
def test_predict_overwrite_replaces_an_earlier_result(photo):
    earlier = photo.with_name("photo_seesr.png")
    earlier.write_bytes(b"an earlier result")
    done = predict(photo, "--overwrite")  # as the README types it
    assert done.returncode == 0, done.stderr[-3000:]
    with Image.open(earlier) as image:
        assert image.format == "PNG" and image.size == (48, 32)
