"""seesr.io.read: real and generated odd inputs, limits, broken files."""

from __future__ import annotations

import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import shared_input as _input
from seesr.errors import ConfigError, InputError
from seesr.io.read import InputImage, input_file_limit, read_image
from seesr.io.write import recombine, save_image

# name: (is_gray, has_alpha, bit_depth)
REAL_INPUTS = {
    "00003.png": (False, False, 8),
    "0014.jpg": (False, False, 8),
    "0030.jpg": (False, False, 8),
    "ADE_val_00000114.jpg": (False, False, 8),
    "OST_009.png": (False, False, 8),
    "179.png": (False, False, 8),
    "00017_gray.png": (True, False, 8),
    "wolf_gray.jpg": (True, False, 8),
    "children-alpha.png": (False, True, 8),
    "tree_alpha_16bit.png": (False, True, 16),
}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but whose pixel data is a few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = _chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + idat + _chunk(b"IEND", b"")


def _with_chunk_after_ihdr(png: bytes, kind: bytes, data: bytes) -> bytes:
    end = 8 + 8 + 13 + 4
    return png[:end] + _chunk(kind, data) + png[end:]


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


# --------------------------------------------------------------------------------------------
# real inputs


@pytest.mark.parametrize("name", sorted(REAL_INPUTS))
def test_real_inputs(name):
    is_gray, has_alpha, bit_depth = REAL_INPUTS[name]
    path = _input(name)
    loaded = read_image(path)
    with Image.open(path) as header:
        assert loaded.size == header.size
        assert loaded.source_format == header.format
    assert loaded.rgb.mode == "RGB"
    assert np.asarray(loaded.rgb).std() > 5  # a real picture, not a placeholder
    assert loaded.is_gray is is_gray
    assert (loaded.alpha is not None) is has_alpha
    assert loaded.bit_depth == bit_depth
    if has_alpha:
        assert loaded.alpha.mode == "L" and loaded.alpha.size == loaded.size
        assert np.asarray(loaded.alpha).min() < 255  # the transparency is there
    if bit_depth == 16:
        assert loaded.high_bit_rgb.dtype == np.uint16 and loaded.high_bit_rgb.shape == (*loaded.size[::-1], 3)
    else:
        assert loaded.high_bit_rgb is None


def test_all_inputs_sources_agree():
    path = _input("0014.jpg")
    from_path = read_image(path)
    from_str = read_image(str(path))
    from_bytes = read_image(path.read_bytes())
    from_pil = read_image(Image.open(path))
    from_array = read_image(np.asarray(Image.open(path)))
    for other in (from_str, from_bytes, from_pil, from_array):
        assert np.array_equal(np.asarray(other.rgb), np.asarray(from_path.rgb))
    assert from_array.source_format == "ndarray"


def test_rgba_alpha_is_the_files_alpha():
    path = _input("children-alpha.png")
    loaded = read_image(path)
    with Image.open(path) as image:
        rgba = np.asarray(image.convert("RGBA"))
    assert np.array_equal(np.asarray(loaded.alpha), rgba[..., 3])
    assert np.array_equal(np.asarray(loaded.rgb), rgba[..., :3])  # stored colour, not composited


def test_16bit_rgba_keeps_full_precision():
    path = _input("tree_alpha_16bit.png")
    loaded = read_image(path)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # BGRA uint16
    assert raw.dtype == np.uint16
    assert np.array_equal(loaded.high_bit_rgb, raw[..., 2::-1])
    assert np.array_equal(loaded.high_bit_alpha, raw[..., 3])
    assert len(np.unique(loaded.high_bit_rgb % 257)) > 1  # there really is sub-8-bit data
    expected8 = np.rint(raw[..., 2::-1] / 257.0).astype(np.uint8)
    assert np.array_equal(np.asarray(loaded.rgb), expected8)
    assert np.array_equal(np.asarray(loaded.alpha), np.rint(raw[..., 3] / 257.0).astype(np.uint8))


# --------------------------------------------------------------------------------------------
# generated odd inputs


def test_cmyk_jpeg(tmp_path):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16] = (220, 30, 40)
    rgb[:, 16:32] = (20, 200, 60)
    rgb[:, 32:] = (30, 60, 210)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    loaded = read_image(path)
    assert loaded.rgb.mode == "RGB" and not loaded.is_gray and loaded.alpha is None
    centre = np.asarray(loaded.rgb)[8:24, [4, 8, 20, 24, 36, 40]].astype(int)
    expected = rgb[8:24, [4, 8, 20, 24, 36, 40]].astype(int)
    assert np.abs(centre - expected).max() <= 12  # not inverted, not shifted


def test_palette_png_with_transparency(tmp_path):
    indices = np.zeros((16, 16), np.uint8)
    indices[:, 8:] = 1
    indices[:4] = 2
    image = Image.fromarray(indices, "P")
    image.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * (253 * 3))
    path = tmp_path / "palette.png"
    image.save(path, transparency=2)
    loaded = read_image(path)
    alpha = np.asarray(loaded.alpha)
    assert (alpha[:4] == 0).all() and (alpha[4:] == 255).all()
    rgb = np.asarray(loaded.rgb)
    assert (rgb[8, 0] == (255, 0, 0)).all() and (rgb[8, 12] == (0, 0, 255)).all()
    assert not loaded.is_gray


def test_gray_palette_is_gray(tmp_path):
    image = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16), "L").convert("P")
    path = tmp_path / "graypal.png"
    image.save(path)
    assert read_image(path).is_gray


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (20, 12), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3
    loaded = read_image(path)
    assert loaded.size == (20, 12)
    assert (np.asarray(loaded.rgb) == (255, 0, 0)).all()


def test_exif_rotated_jpeg(tmp_path):
    pixels = np.full((20, 40, 3), (0, 0, 255), np.uint8)  # 40 wide, 20 high, blue
    pixels[:10, :20] = (255, 0, 0)  # top-left quadrant red
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, quality=95, exif=_exif_orientation(6))
    loaded = read_image(path)
    assert loaded.size == (20, 40)  # swapped
    rgb = np.asarray(loaded.rgb).astype(int)
    # orientation 6 = rotate 90 degrees clockwise to display: top-left goes to top-right
    assert rgb[5, 15, 0] > 200 and rgb[5, 15, 2] < 60
    assert rgb[5, 5, 2] > 200 and rgb[35, 15, 2] > 200


@pytest.mark.parametrize("orientation", range(1, 9))
def test_16bit_png_orientation_matches_pillow(orientation):
    rng = np.random.default_rng(orientation)
    data = rng.integers(0, 65536, (6, 10, 3), dtype=np.uint16)
    ok, png = cv2.imencode(".png", data[..., ::-1])
    assert ok
    png = _with_chunk_after_ihdr(png.tobytes(), b"eXIf", _exif_orientation(orientation))
    loaded = read_image(png, min_side=1)
    assert loaded.bit_depth == 16
    expected = []
    for c in range(3):
        channel = Image.fromarray(data[..., c])  # I;16, transposed by Pillow itself
        channel.getexif()[0x0112] = orientation
        expected.append(np.asarray(ImageOps.exif_transpose(channel)).astype(np.uint16))
    assert np.array_equal(loaded.high_bit_rgb, np.stack(expected, axis=2))


def test_16bit_gray_png(tmp_path):
    gray = (np.arange(24 * 40, dtype=np.uint32).reshape(24, 40) * 67 % 65536).astype(np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(gray).save(path)  # I;16
    loaded = read_image(path)
    assert loaded.is_gray and loaded.bit_depth == 16 and loaded.alpha is None
    assert np.array_equal(loaded.high_bit_rgb, np.repeat(gray[..., None], 3, axis=2))
    out = save_image(recombine(loaded.rgb, loaded), tmp_path / "out.png", sixteen_bit=True, high_bit_source=loaded)
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.ndim == 2
    assert np.array_equal(back, gray)


def test_float_tiff(tmp_path):
    values = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    path = tmp_path / "float.tif"
    Image.fromarray(values, "F").save(path)
    loaded = read_image(path)
    assert loaded.is_gray and loaded.bit_depth == 16
    assert np.array_equal(loaded.high_bit_rgb[..., 0], np.rint(values * 65535).astype(np.uint16))


def test_numpy_inputs():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (10, 12), dtype=np.uint8)
    for array in (gray, gray[..., None]):
        loaded = read_image(array)
        assert loaded.is_gray and loaded.size == (12, 10) and loaded.bit_depth == 8
    rgb16 = rng.integers(0, 65536, (10, 12, 3), dtype=np.uint16)
    loaded = read_image(rgb16)
    assert loaded.bit_depth == 16 and np.array_equal(loaded.high_bit_rgb, rgb16)
    rgba = rng.random((10, 12, 4))
    loaded = read_image(rgba)
    assert loaded.alpha is not None and loaded.high_bit_alpha is not None
    assert np.array_equal(np.asarray(loaded.rgb), np.rint(rgba[..., :3] * 255).astype(np.uint8))

    bad = [
        (rng.random((10, 12, 2)), "must be HxW"),
        (rng.random((2, 10, 12, 3)), "must be HxW"),
        (rng.integers(0, 255, (10, 12, 3)).astype(np.int32), "dtype int32"),
        (rng.random((10, 12, 3)) * 255, r"expected \[0, 1\]"),
        (np.full((10, 12, 3), np.nan), "NaN"),
    ]
    for array, message in bad:
        with pytest.raises(InputError, match=message):
            read_image(array)
    with pytest.raises(InputError, match="cannot read an image from a list"):
        read_image([[1, 2], [3, 4]])


# --------------------------------------------------------------------------------------------
# limits and broken files


def test_too_small_image(tmp_path):
    path = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(path)
    with pytest.raises(InputError, match=r"1x1, smaller than the 4 px minimum side"):
        read_image(path)
    assert read_image(path, min_side=1).size == (1, 1)
    with pytest.raises(InputError, match="minimum side"):
        read_image(_input("179.png"), min_side=200)


def test_pixel_limit_checked_before_decoding(tmp_path):
    # The pixel data is a few bytes: decoding would fail, so a limit error proves the header check.
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(5000, 4000))
    with pytest.raises(InputError, match=r"5000x4000 = 20\.0 MP, above the 16\.8 MP input limit; downscale it"):
        read_image(path)
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_image(path, max_pixels=5000 * 4000)  # allowed: now it is decoded, and is broken


def test_decompression_bomb_is_an_input_error(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(30000, 30000))  # 900 MP, above Pillow's hard limit
    with pytest.raises(InputError, match=r"900\.0 MP, above the 16\.8 MP input limit"):
        read_image(path)
    with pytest.raises(InputError, match="decompression-bomb"):
        read_image(path, max_pixels=10**9)


def test_max_pixels_on_real_image_and_arrays():
    with pytest.raises(InputError, match="raise max_pixels"):
        read_image(_input("OST_009.png"), max_pixels=100_000)
    with pytest.raises(InputError, match="raise max_pixels"):
        read_image(np.zeros((400, 400, 3), np.uint8), max_pixels=100_000)
    with pytest.raises(ConfigError):
        read_image(_input("179.png"), max_pixels=0)


@pytest.mark.parametrize("name", ["OST_009.png", "tree_alpha_16bit.png", "0030.jpg"])
def test_truncated_files(tmp_path, name):
    data = _input(name).read_bytes()
    path = tmp_path / f"cut_{name}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_image(path)


def test_unreadable_sources(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty \(0 bytes\)"):
        read_image(empty)
    with pytest.raises(InputError, match="empty"):
        read_image(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture\n")
    with pytest.raises(InputError, match="not an image file"):
        read_image(text)
    missing = tmp_path / "missing.png"
    with pytest.raises(InputError, match=f"{missing}.*does not exist"):
        read_image(missing)
    with pytest.raises(InputError, match="is a folder, not a file"):
        read_image(tmp_path)


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda p: os.mkfifo(p), "is a pipe (FIFO), not a file"),
        (lambda p: p.symlink_to("/dev/zero"), "is a device, not a file"),
        (lambda p: p.symlink_to(p), "is a symbolic link loop"),
        (
            lambda p: p.write_bytes(b"") or os.truncate(p, input_file_limit() + 2**30),  # sparse: no disk used
            "is 1.3 GiB, over the 272 MiB limit",
        ),
    ],
    ids=["fifo", "dev-zero", "symlink-loop", "sparse-giant"],
)
def test_inputs_that_would_hang_or_exhaust_memory_are_refused_before_reading(tmp_path, make, says):
    path = tmp_path / "input.png"
    make(path)
    with pytest.raises(InputError) as refused:
        read_image(path)
    assert str(refused.value).startswith(f"input {path} {says}"), refused.value


def test_loaded_image_is_a_dataclass():
    loaded = read_image(np.zeros((8, 8, 3), np.uint8))
    assert isinstance(loaded, InputImage) and loaded.size == (8, 8) and not loaded.has_alpha

