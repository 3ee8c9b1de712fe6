"""seesr.io.write: recombination, 16-bit output, formats, atomic and no-overwrite saving."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import shared_input as _input
from seesr.io import write as ssave
from seesr.errors import ConfigError, InputError
from seesr.io.read import read_image
from seesr.io.write import recombine, save_image, to_high_bit

# --------------------------------------------------------------------------------------------
# recombination and 16-bit output


def test_alpha_recombined_at_output_size():
    loaded = read_image(_input("children-alpha.png"))
    output = loaded.rgb.resize((loaded.size[0] * 2, loaded.size[1] * 2), Image.Resampling.BICUBIC)
    result = recombine(output, loaded)
    assert result.mode == "RGBA" and result.size == output.size
    expected = loaded.alpha.resize(output.size, Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(result)[..., 3], np.asarray(expected))
    assert np.array_equal(np.asarray(result)[..., :3], np.asarray(output))
    assert output.mode == "RGB"  # the caller's image is not modified


def test_gray_and_gray_alpha_recombination():
    gray = read_image(_input("wolf_gray.jpg"))
    out = recombine(gray.rgb.resize((472, 472)), gray)
    assert out.mode == "L" and out.size == (472, 472)
    la = np.zeros((16, 16, 2), np.uint8)
    la[..., 0] = np.arange(16)[None] * 16
    la[..., 1] = 128
    loaded = read_image(Image.fromarray(la, "LA"))
    assert loaded.is_gray and loaded.alpha is not None
    out = recombine(loaded.rgb.resize((32, 32)), loaded)
    assert out.mode == "LA" and out.size == (32, 32)
    assert (np.asarray(out)[..., 1] == 128).all()


def test_16bit_rgba_round_trip_is_bit_exact(tmp_path):
    path = _input("tree_alpha_16bit.png")
    loaded = read_image(path)
    identity = recombine(loaded.rgb.copy(), loaded)  # an "upscale" that changes nothing
    out = save_image(identity, tmp_path / "tree.png", sixteen_bit=True, high_bit_source=loaded)
    assert np.array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
    with Image.open(out) as written:  # a valid PNG, with the source's ICC profile
        assert written.info.get("icc_profile") == loaded.icc_profile
    again = read_image(out)
    assert again.bit_depth == 16 and np.array_equal(again.high_bit_rgb, loaded.high_bit_rgb)


def test_16bit_output_of_an_upscale_stays_on_the_model_output():
    loaded = read_image(_input("tree_alpha_16bit.png"))
    size = (loaded.size[0] * 2, loaded.size[1] * 2)
    output = recombine(loaded.rgb.resize(size, Image.Resampling.BICUBIC), loaded)
    high = to_high_bit(output, loaded)
    assert high.shape == (size[1], size[0], 4) and high.dtype == np.uint16
    promoted = np.asarray(output).astype(np.int64) * 257
    assert np.abs(high[..., :3].astype(np.int64) - promoted[..., :3]).max() <= 200  # < 1 8-bit step
    assert len(np.unique(high[..., :3] % 257)) > 1  # the source's fine detail came back
    alpha = Image.fromarray(loaded.high_bit_alpha.astype(np.float32), "F").resize(size, Image.Resampling.BICUBIC)
    alpha = np.asarray(alpha)
    assert np.array_equal(high[..., 3], np.clip(np.rint(alpha), 0, 65535).astype(np.uint16))


def test_sixteen_bit_from_8bit_and_arrays(tmp_path):
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3), "RGB")
    out = save_image(image, tmp_path / "p.png", sixteen_bit=True)
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert back.dtype == np.uint16 and np.array_equal(back, np.asarray(image).astype(np.uint16) * 257)
    array = np.random.default_rng(1).integers(0, 65536, (5, 6, 4), dtype=np.uint16)
    out = save_image(array, tmp_path / "a.png", sixteen_bit=True)
    assert np.array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[..., [2, 1, 0, 3]], array)
    with pytest.raises(ConfigError, match="16-bit output needs PNG"):
        save_image(image, tmp_path / "p.jpg", sixteen_bit=True)


# --------------------------------------------------------------------------------------------
# saving


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".jpeg", ".webp"])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_save_formats(tmp_path, suffix, mode):
    rng = np.random.default_rng(2)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    array = rng.integers(0, 256, (12, 16, channels), dtype=np.uint8)
    image = Image.fromarray(array[..., 0] if channels == 1 else array, mode)
    path = save_image(image, tmp_path / f"out{suffix}")
    with Image.open(path) as back:
        assert back.size == (16, 12)
        if suffix == ".png":
            assert back.mode == mode and np.array_equal(np.asarray(back), np.asarray(image))
        if suffix in (".jpg", ".jpeg"):
            assert back.mode == ("L" if mode == "L" else "RGB")
        if suffix == ".webp" and mode == "RGBA":
            assert back.mode == "RGBA"
    assert [p.name for p in tmp_path.iterdir()] == [f"out{suffix}"]  # no temp file left


def test_jpeg_composites_alpha_on_white(tmp_path, caplog):
    array = np.zeros((16, 16, 4), np.uint8)
    array[..., 0] = 200
    array[:, 8:, 3] = 255  # left half fully transparent
    with caplog.at_level(logging.WARNING, logger="seesr.io.write"):
        path = save_image(Image.fromarray(array, "RGBA"), tmp_path / "flat.jpg")
    assert "no alpha channel" in caplog.text
    back = np.asarray(Image.open(path)).astype(int)
    assert (back[4:12, :4] >= 245).all()  # white where transparent
    assert (np.abs(back[4:12, 12:] - (200, 0, 0)) <= 8).all()


def test_save_format_override_and_errors(tmp_path):
    image = Image.new("RGB", (8, 8), (1, 2, 3))
    path = save_image(image, tmp_path / "noext", format="png")
    with Image.open(path) as back:
        assert back.format == "PNG"
    with pytest.raises(ConfigError, match="not an output format"):
        save_image(image, tmp_path / "out.bmp")
    with pytest.raises(ConfigError, match="quality"):
        save_image(image, tmp_path / "out.jpg", quality=0)
    with pytest.raises(InputError, match="does not exist"):
        save_image(image, tmp_path / "nope" / "out.png")


def test_save_refuses_to_overwrite(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"keep me")
    with pytest.raises(InputError, match="exists; pass overwrite=True"):
        save_image(Image.new("RGB", (8, 8)), path)
    assert path.read_bytes() == b"keep me"
    save_image(Image.new("RGB", (8, 8)), path, overwrite=True)
    with Image.open(path) as back:
        assert back.size == (8, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_save_never_clobbers_a_file_that_appears_while_writing(tmp_path, monkeypatch):
    path = tmp_path / "race.png"
    real_link = os.link

    def link_after_someone_else(src, dst):
        Path(dst).write_bytes(b"theirs")
        return real_link(src, dst)

    monkeypatch.setattr(ssave.os, "link", link_after_someone_else)
    with pytest.raises(InputError, match="exists"):
        save_image(Image.new("RGB", (8, 8)), path)
    assert path.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race.png"]


def test_atomic_save_leaves_nothing_on_error(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    path.write_bytes(b"old")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ssave.os, "fsync", broken_fsync)
    with pytest.raises(InputError, match="No space left"):
        save_image(Image.new("RGB", (8, 8)), path, overwrite=True)
    assert path.read_bytes() == b"old"  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    with pytest.raises(InputError, match="No space left"):
        save_image(Image.new("RGB", (8, 8)), tmp_path / "new.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
