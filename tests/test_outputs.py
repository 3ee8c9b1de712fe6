"""The output rules (seesr/io/naming.py): formats from suffixes, one distinct output per input, no
input or side file ever overwritten, output folders checked first, leftovers of killed runs removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from seesr.errors import ConfigError
from seesr.io.naming import format_of, plan_outputs, prepare_folder
from seesr.io.files import remove_stale_temp_files


def touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"image")


@pytest.mark.parametrize(("name", "fmt"), [("a.png", "png"), ("a.JPG", "jpg"), ("a.jpeg", "jpg"), ("a.webp", "webp")])
def test_the_suffix_decides_the_format(name, fmt):
    assert format_of(Path(name)) == fmt
    assert format_of(Path(name), fmt) == fmt


def test_unknown_or_contradicting_suffixes_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"suffix '\.gif' is not an output format"):
        format_of(Path("a.gif"))
    with pytest.raises(ConfigError, match=r"a\.png is PNG by its suffix but output_format='jpg'"):
        format_of(Path("a.png"), "jpg")
    source = tmp_path / "in.png"
    touch(source)
    with pytest.raises(ConfigError, match="not an output format"):
        plan_outputs([source], tmp_path / "out.bmp")
    assert format_of(Path("a.tif")) == format_of(Path("a.TIFF")) == "tiff"
    with pytest.raises(ConfigError, match="output_format='webp'"):
        plan_outputs([source], tmp_path / "out.jpg", requested_format="webp")


def test_a_single_output_keeps_its_name_and_a_folder_gets_the_requested_format(tmp_path):
    source = tmp_path / "in.png"
    touch(source)
    (job,), folder = plan_outputs([source], tmp_path / "x.jpg")
    assert job.target == tmp_path / "x.jpg" and folder is None
    (job,), folder = plan_outputs([source], None, default_format="webp")
    assert job.target == tmp_path / "in_seesr.webp" and folder is None
    (job,), folder = plan_outputs([source], tmp_path / "out", requested_format="jpg")
    assert job.target == tmp_path / "out" / "in.jpg" and folder == tmp_path / "out"


def test_same_named_inputs_get_distinct_outputs(tmp_path):
    inputs = [tmp_path / "pic.jpg", tmp_path / "pic.png", tmp_path / "other.png"]
    touch(*inputs)
    jobs, _ = plan_outputs(inputs, tmp_path / "out", folder_input=True)
    assert [job.target.name for job in jobs] == ["pic_jpg.png", "pic_png.png", "other.png"]


def test_suffix_is_added_to_every_name_derived_from_an_input(tmp_path):
    inputs = [tmp_path / "pic.jpg", tmp_path / "pic.png", tmp_path / "other.png"]
    touch(*inputs)
    jobs, _ = plan_outputs(inputs, tmp_path / "out", folder_input=True, suffix="_x2", compare=True)
    assert [job.target.name for job in jobs] == ["pic_jpg_x2.png", "pic_png_x2.png", "other_x2.png"]
    assert jobs[2].compare.name == "other_x2_compare.png"
    (job,), _ = plan_outputs(inputs[:1], None, suffix="-up")
    assert job.target == tmp_path / "pic-up.png"  # beside the input: the suffix replaces _seesr
    (job,), _ = plan_outputs(inputs[:1], tmp_path / "single", suffix="_x2")
    assert job.target == tmp_path / "single" / "pic_x2.png"
    with pytest.raises(ConfigError, match="names the output file, so suffix='_x2' has nothing to add to"):
        plan_outputs(inputs[:1], tmp_path / "named.png", suffix="_x2")
    for bad in ("a/b", "a\\b", "a\0b"):
        with pytest.raises(ConfigError, match="path separator"):
            plan_outputs(inputs[:1], tmp_path / "out", suffix=bad)


def test_auto_format_follows_each_input(tmp_path):
    inputs = [tmp_path / "a.jpeg", tmp_path / "b.webp", tmp_path / "c.png", tmp_path / "d.tif", tmp_path / "e.bmp"]
    touch(*inputs)
    jobs, _ = plan_outputs(inputs, tmp_path / "out", default_format="auto")
    assert [job.target.name for job in jobs] == ["a.jpg", "b.webp", "c.png", "d.tiff", "e.png"]
    (job,), _ = plan_outputs(inputs[:1], None, requested_format="auto")
    assert job.target == tmp_path / "a_seesr.jpg"
    (job,), _ = plan_outputs(inputs[:1], tmp_path / "x.webp", requested_format="auto")  # a named file wins
    assert job.target == tmp_path / "x.webp"
    pair = [tmp_path / "p.jpg", tmp_path / "p.png"]  # auto keeps them apart by format
    touch(*pair)
    jobs, _ = plan_outputs(pair, tmp_path / "out", requested_format="auto")
    assert [job.target.name for job in jobs] == ["p.jpg", "p.png"]


def test_inputs_that_still_collide_are_listed(tmp_path):
    inputs = [tmp_path / "a" / "pic.png", tmp_path / "b" / "pic.png"]
    touch(*inputs)
    with pytest.raises(ConfigError, match=r"same file in .*out: .*a/pic\.png, .*b/pic\.png; rename"):
        plan_outputs(inputs, tmp_path / "out")


def test_several_inputs_into_one_image_file_are_refused(tmp_path):
    inputs = [tmp_path / "a.png", tmp_path / "b.png"]
    touch(*inputs)
    with pytest.raises(ConfigError, match="names an image file, but there are 2 inputs"):
        plan_outputs(inputs, tmp_path / "out.png")


def test_an_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path):
    source = tmp_path / "photos" / "a.png"
    touch(source)
    for output in (source, tmp_path / "photos" / "." / "a.png", tmp_path / "photos"):
        with pytest.raises(ConfigError, match="is one of the inputs"):
            plan_outputs([source], output, folder_input=output.is_dir(), overwrite=True)
    link = tmp_path / "hard.png"
    os.link(source, link)
    with pytest.raises(ConfigError, match="is one of the inputs"):
        plan_outputs([source], link, overwrite=True)


def test_an_existing_side_file_is_not_overwritten(tmp_path):
    source = tmp_path / "a.png"
    touch(source, tmp_path / "out_compare.png")
    with pytest.raises(ConfigError, match="out_compare.png exists; pass --overwrite"):
        plan_outputs([source], tmp_path / "out.png", compare=True)
    (job,), _ = plan_outputs([source], tmp_path / "out.png", compare=True, overwrite=True)
    assert job.compare == tmp_path / "out_compare.png"
    (job,), _ = plan_outputs([source], tmp_path / "out.png")
    assert job.compare is None
    source_compare = tmp_path / "b_compare.png"  # a side file may not be an input either
    touch(source_compare)
    with pytest.raises(ConfigError, match="is one of the inputs"):
        plan_outputs([source, source_compare], tmp_path, folder_input=True, compare=True, overwrite=True)


def test_an_unusable_output_folder_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    with pytest.raises(ConfigError, match=f"cannot write to the output folder {blocker}/out"):
        prepare_folder(blocker / "out")
    prepare_folder(tmp_path / "new" / "out")
    assert (tmp_path / "new" / "out").is_dir() and not list((tmp_path / "new" / "out").iterdir())


def test_only_leftovers_of_dead_writers_are_removed(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)
    stale = tmp_path / f".a.png.{dead}-0123abcd.tmp"
    live = tmp_path / f".b.png.{os.getpid()}-0123abcd.tmp"
    other = tmp_path / ".c.png.tmp"
    touch(stale, live, other)
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()


def test_a_shard_removes_only_the_leftovers_of_its_own_outputs(tmp_path):
    """On a shared volume another machine's writer has a process id that means nothing here: a
    shard leaves the temporary files of outputs that are not its own alone."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)
    mine, theirs = tmp_path / f".a.png.{dead}-0123abcd.tmp", tmp_path / f".b.png.{dead}-4567abcd.tmp"
    touch(mine, theirs)
    assert remove_stale_temp_files(tmp_path, names={"a.png", "c.png"}) == [mine]
    assert theirs.exists()


def test_result_save_writes_the_format_its_suffix_names(tmp_path):
    from PIL import Image

    from seesr.api import Result
    from seesr.errors import ConfigError
    from seesr.settings.declare import Settings

    result = Result(image=Image.new("RGB", (8, 6), (10, 200, 30)), engine="realesrgan", settings=Settings(), seed=None)
    assert Image.open(result.save(tmp_path / "a.jpg")).format == "JPEG"
    assert Image.open(result.save(tmp_path / "b.webp")).format == "WEBP"
    assert Image.open(result.save(tmp_path / "c")).format == "PNG"  # no suffix: the settings' format
    with pytest.raises(ConfigError, match="by its suffix"):
        result.save(tmp_path / "d.png", format="jpg")
    assert not (tmp_path / "d.png").exists()


def test_result_save_uses_quality_and_auto_format(tmp_path):
    import numpy as np
    from PIL import Image

    from seesr.api import Result
    from seesr.io.read import read_image
    from seesr.settings.declare import Settings

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8), "RGB")
    photo.save(tmp_path / "in.webp")
    source = read_image(tmp_path / "in.webp")
    sizes = {}
    for quality in (90, 30):
        settings = Settings(output_format="auto", quality=quality)
        result = Result(image=photo, engine="realesrgan", settings=settings, seed=None, source=source)
        assert result.output_format == "webp"
        written = result.save(tmp_path / f"q{quality}")
        assert Image.open(written).format == "WEBP"
        sizes[quality] = written.stat().st_size
    assert sizes[30] < 0.7 * sizes[90]
    without_source = Result(image=photo, engine="seesr", settings=Settings(output_format="auto"), seed=None)
    assert without_source.output_format == "png"
