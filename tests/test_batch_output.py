"""Batch output faithful to the source: folder trees mirrored (-r), several samples per input
(--num-samples), the size asked for (--width / --height), run as a user types them, and the
library calls under them."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image

from conftest import run_seesr as seesr, shared_input
from seesr.api import Upscaler
from seesr.errors import ConfigError
from seesr.imaging.convert import output_size, scale_for_size
from seesr.io.inputs import find_inputs
from seesr.io.naming import plan_outputs

REALESRGAN = ["--engine", "realesrgan", "--device", "cpu"]
TINY_SEESR = ["--scale", "2", "--steps", "1", "--process-size", "0", "--device", "cpu"]


def photo(size: tuple[int, int] = (16, 12), left: int = 60) -> Image.Image:
    """A small crop of a real photo (texture, so that different samples show)."""
    return Image.open(shared_input("0014.jpg")).convert("RGB").crop((left, 60, left + size[0], 60 + size[1]))


def visible_tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and ".seesr" not in str(p))


# ------------------------------------------------------------------ -r: folder trees
@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """in/a/x.png, in/b/x.png, in/b/c/y.jpg (same-named files in two sub-folders)."""
    root = tmp_path / "in"
    for relative, left in (("a/x.png", 40), ("b/x.png", 80), ("b/c/y.jpg", 120)):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        photo(left=left).save(root / relative, quality=95)
    return root


@pytest.mark.slow
def test_recursive_run_mirrors_the_tree_and_a_rerun_skips_all(tree, tmp_path):
    command = ["upscale", "in", "-r", "-o", "out", "--scale", "2", *REALESRGAN]
    first = seesr(*command, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert visible_tree(tmp_path / "out") == ["a/x.png", "b/c/y.png", "b/x.png"]
    for name in ("a/x.png", "b/c/y.png", "b/x.png"):
        with Image.open(tmp_path / "out" / name) as written:
            assert written.format == "PNG" and written.size == (32, 24)
    with Image.open(tmp_path / "out/a/x.png") as a, Image.open(tmp_path / "out/b/x.png") as b:
        assert not np.array_equal(np.asarray(a), np.asarray(b))  # each x.png is its own input's
    records = [json.loads(line) for line in (tmp_path / "out/.seesr-batch/rank0.jsonl").read_text().splitlines()]
    assert {(r["source"], r["target"]) for r in records if r["status"] == "done"} == {
        ("a/x.png", "a/x.png"), ("b/x.png", "b/x.png"), ("b/c/y.jpg", "b/c/y.png")
    }  # fmt: skip

    again = seesr(*command, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout == ""
    lines = again.stderr.splitlines()
    assert sorted(line.split(":")[0] for line in lines) == ["a/x.png", "b/c/y.jpg", "b/x.png"]
    assert all("skipped" in line and "finished by an earlier run" in line for line in lines), lines

    flat = seesr("upscale", "in", "-o", "flat", "--scale", "2", *REALESRGAN, cwd=tmp_path)
    assert flat.returncode == 2 and flat.stderr.strip() == "seesr: no input images found"


@pytest.mark.slow
def test_a_symlink_loop_is_one_line(tree, tmp_path):
    (tree / "b" / "c" / "loop").symlink_to("..", target_is_directory=True)
    done = seesr("upscale", "in", "-r", "-o", "out", *REALESRGAN, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "in/b/c/loop is a symbolic link loop" in done.stderr
    assert not (tmp_path / "out").exists()


def test_links_that_loop_or_leave_the_folder_are_refused(tree, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    photo().save(tmp_path / "elsewhere" / "z.png")
    (tree / "a" / "outside").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ConfigError, match="leads outside the input folder"):
        find_inputs([str(tree)], recursive=True)
    (tree / "a" / "outside").unlink()
    (tree / "a" / "self").symlink_to("self")  # a loop the operating system sees
    with pytest.raises(ConfigError, match="self is a symbolic link loop"):
        find_inputs([str(tree)], recursive=True)
    (tree / "a" / "self").unlink()
    (tree / "a" / "to_b").symlink_to("../b", target_is_directory=True)  # inside the tree: followed
    found, _ = find_inputs([str(tree)], recursive=True)
    assert [str(f.relative) for f in found] == ["a/to_b/c/y.jpg", "a/to_b/x.png", "a/x.png", "b/c/y.jpg", "b/x.png"]


def test_relative_paths_of_files_folders_and_globs(tree, tmp_path):
    (tree / "top.png").write_bytes((tree / "a/x.png").read_bytes())
    found, _ = find_inputs([str(tree)])
    assert [f.relative for f in found] == [PurePosixPath("top.png")]  # without -r: the folder only
    found, _ = find_inputs([str(tree)], recursive=True, exclude=[tree / "b"])
    assert [str(f.relative) for f in found] == ["a/x.png", "top.png"]  # the output folder is left out
    found, _ = find_inputs([str(tree / "b" / "c" / "y.jpg"), str(tree / "*" / "x.png")])
    assert [str(f.relative) for f in found] == ["y.jpg", "a/x.png", "b/x.png"]
    jobs, folder = plan_outputs(found, tmp_path / "out", suffix="_x2")
    assert folder == tmp_path / "out"
    assert [job.target.relative_to(folder).as_posix() for job in jobs] == ["y_x2.png", "a/x_x2.png", "b/x_x2.png"]
    assert [job.relative for job in jobs] == [f.relative for f in found]


# ------------------------------------------------------------------ --num-samples
@pytest.fixture(scope="module")
def upscaler(tiny_weights):
    return Upscaler(tiny_weights, device="cpu")


def test_sample_k_is_a_single_run_with_seed_plus_k(upscaler, lr_image):
    fast = dict(scale=2, steps=1, process_size=0, sampler="ddpm")
    samples = upscaler.upscale_samples(lr_image, num_samples=3, seed=10, **fast)
    assert [r.seed for r in samples] == [10, 11, 12] and all(r.engine == "seesr" for r in samples)
    pixels = [np.asarray(r.image) for r in samples]
    assert not np.array_equal(pixels[0], pixels[1]) and not np.array_equal(pixels[1], pixels[2])
    for k in (0, 2):
        single = upscaler.upscale(lr_image, seed=10 + k, **fast)
        assert np.array_equal(np.asarray(single.image), pixels[k])
    assert samples[0].tags == samples[2].tags
    tagged = upscaler.loaded.tag  # the tagger ran once for all three samples
    calls = []
    upscaler.loaded.tag = lambda image: calls.append(1) or tagged(image)
    try:
        upscaler.upscale_samples(lr_image, num_samples=2, seed=1, **fast)
    finally:
        del upscaler.loaded.tag
    assert calls == [1]


def test_upscale_makes_one_image_and_realesrgan_one_sample(upscaler, lr_image):
    with pytest.raises(ConfigError, match=r"upscale\(\) makes one image; call Upscaler.upscale_samples\(\)"):
        upscaler.upscale(lr_image, num_samples=2)
    with pytest.raises(ConfigError, match="num_samples=2 .Real-ESRGAN is deterministic"):
        upscaler.upscale_samples(lr_image, num_samples=2, engine="realesrgan")
    (result,) = upscaler.upscale_samples(lr_image, engine="realesrgan", scale=2)
    assert result.seed is None and result.image.size == (lr_image.width * 2, lr_image.height * 2)


@pytest.mark.slow
def test_num_samples_writes_each_seed_with_its_record(tiny_weights_dir, tmp_path):
    photo((24, 16)).save(tmp_path / "photo.png")
    command = ["upscale", "photo.png", "-o", "out", "--num-samples", "3", "--seed", "7", "--json",
               "--weights", str(tiny_weights_dir), *TINY_SEESR]  # fmt: skip
    done = seesr(*command, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(Path(r["output"]).name, r["seed"], r["status"]) for r in lines] == [
        ("photo_s7.png", 7, "done"), ("photo_s8.png", 8, "done"), ("photo_s9.png", 9, "done")
    ]  # fmt: skip
    images = [np.asarray(Image.open(tmp_path / "out" / f"photo_s{seed}.png")) for seed in (7, 8, 9)]
    assert all(image.shape == (32, 48, 3) for image in images)
    assert len({image.tobytes() for image in images}) == 3
    records = [json.loads(line) for line in (tmp_path / "out/.seesr-batch/rank0.jsonl").read_text().splitlines()]
    assert [(r["target"], r["seed"]) for r in records if r["status"] == "done"] == [
        ("photo_s7.png", 7), ("photo_s8.png", 8), ("photo_s9.png", 9)
    ]  # fmt: skip
    (tmp_path / "out" / "photo_s8.png").unlink()
    again = seesr(*command, cwd=tmp_path)
    statuses = [(Path(r["output"]).name, r["status"]) for r in map(json.loads, again.stdout.splitlines())]
    assert statuses == [("photo_s7.png", "skipped"), ("photo_s9.png", "skipped"), ("photo_s8.png", "done")]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "photo_s8.png")), images[1])

    refused = seesr("upscale", "photo.png", "--num-samples", "2", *REALESRGAN, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "num_samples=2 (Real-ESRGAN is deterministic" in refused.stderr


# ------------------------------------------------------------------ --width / --height
@pytest.mark.parametrize(
    ("size", "width", "height", "expected"),
    [((40, 30), 100, None, (100, 75)), ((40, 30), None, 75, (100, 75)), ((40, 30), 100, 50, (67, 50)),
     ((40, 30), 100, 100, (100, 75)), ((37, 23), 100, None, (100, 62)), ((23, 37), 1000, 999, (621, 999))],
)  # fmt: skip
def test_the_size_asked_for_is_met_exactly(size, width, height, expected):
    scale = scale_for_size(size, width, height)
    assert output_size(*size, scale) == expected
    assert expected[0] <= (width or 10**9) and expected[1] <= (height or 10**9)


@pytest.mark.slow
def test_width_and_height_as_typed(tmp_path):
    photo((40, 30)).save(tmp_path / "photo.png")
    done = seesr("upscale", "photo.png", "-o", "w.png", "--width", "100", *REALESRGAN, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "w.png").size == (100, 75)
    done = seesr("upscale", "photo.png", "-o", "box.png", "--width", "100", "--height", "50", *REALESRGAN, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "box.png").size == (67, 50)
    refused = seesr("upscale", "photo.png", "--width", "100", "--scale", "2", *REALESRGAN, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "scale=2.0 (argument) and width=100 (argument) exclude each other" in refused.stderr


def test_width_on_seesr_and_sizes_out_of_range(upscaler):
    image = photo((40, 30))
    result = upscaler.upscale(image, width=100, steps=1, process_size=0, seed=1)
    assert result.image.size == (100, 75) and result.settings.scale == 2.5
    assert upscaler.dry_run(image, height=75, steps=1, process_size=0).output_size == (100, 75)
    with pytest.raises(ConfigError, match="width=20 on a 40x30 input is a scale of 0.5; seesr upscales by 1 to 8"):
        upscaler.upscale(image, width=20)
    with pytest.raises(ConfigError, match="exclude each other"):
        Upscaler(scale=2).settings({"height": 50})
