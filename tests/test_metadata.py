"""Outputs faithful to the source: a camera JPEG's EXIF, XMP, ICC profile and DPI kept where each
output format holds them (orientation normal, the pixels rotated, dimensions and DPI updated, no
thumbnail), ``--strip-metadata`` writing none, and TIFF outputs (8 and 16 bits, alpha kept)."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms
from PIL.PngImagePlugin import PngInfo

from conftest import run_seesr as seesr, shared_input
from seesr.api import Upscaler
from seesr.io.read import read_image
from seesr.io.write import recombine, save_image

REALESRGAN = ["--engine", "realesrgan", "--device", "cpu", "--scale", "2"]
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
    b'tiff:Orientation="6"><dc:creator>Ann Example</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>'
)
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
THUMBNAIL = b"\xff\xd8thumbnail-bytes-that-must-not-survive\xff\xd9"
GPS = {1: "N", 2: (52.0, 31.0, 12.5), 3: "E", 4: (13.0, 24.0, 0.0)}


def with_thumbnail(exif: bytes) -> bytes:
    """EXIF (``Exif\\0\\0`` + TIFF data) with an IFD1 holding a JPEG thumbnail, as cameras write it."""
    tiff = bytearray(exif[6:])
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd0,) = struct.unpack(order + "I", tiff[4:8])
    (count,) = struct.unpack(order + "H", tiff[ifd0 : ifd0 + 2])
    ifd1 = len(tiff) + len(tiff) % 2
    struct.pack_into(order + "I", tiff, ifd0 + 2 + 12 * count, ifd1)
    data_at = ifd1 + 2 + 2 * 12 + 4
    entries = struct.pack(order + "HHII", 0x0201, 4, 1, data_at)  # JPEGInterchangeFormat: where, LONG
    entries += struct.pack(order + "HHII", 0x0202, 4, 1, len(THUMBNAIL))  # and its length
    tiff += b"\0" * (ifd1 - len(tiff)) + struct.pack(order + "H", 2) + entries + b"\0\0\0\0" + THUMBNAIL
    return b"Exif\x00\x00" + bytes(tiff)


@pytest.fixture(scope="module")
def camera_jpeg(tmp_path_factory) -> Path:
    """A 40x30 JPEG stored sideways (orientation 6: the upright picture is 30x40) whose left columns
    are black (the top rows once upright), with EXIF (make, model, date taken, GPS, 300 dpi, a
    thumbnail), XMP, an ICC profile and 300 DPI."""
    pixels = np.asarray(Image.open(shared_input("0014.jpg")).convert("RGB").crop((60, 60, 100, 90))).copy()
    pixels[:, :8] = 0
    exif = Image.Exif()
    exif[ExifTags.Base.Make], exif[ExifTags.Base.Model] = "Canon", "EOS R5"
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.XResolution] = exif[ExifTags.Base.YResolution] = 300
    exif[ExifTags.Base.ResolutionUnit] = 2
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2021:06:01 12:34:56"
    exif.get_ifd(ExifTags.IFD.GPSInfo).update(GPS)
    path = tmp_path_factory.mktemp("camera") / "photo.jpg"
    camera = {"exif": with_thumbnail(exif.tobytes()), "xmp": XMP, "icc_profile": ICC, "dpi": (300, 300)}
    Image.fromarray(pixels).save(path, quality=95, **camera)
    with Image.open(path) as written:  # the fixture is what a camera writes
        assert written.getexif().get_ifd(ExifTags.IFD.IFD1)[0x0202] == len(THUMBNAIL)
    return path


def assert_kept(path: Path, fmt: str) -> None:
    """What ``fmt`` holds of the camera JPEG is in ``path``, for the upright picture at x2 (60x80)."""
    with Image.open(path) as written:
        assert written.size == (60, 80)
        exif = written.getexif()
        assert (exif[ExifTags.Base.Make], exif[ExifTags.Base.Model]) == ("Canon", "EOS R5")
        assert exif.get(ExifTags.Base.Orientation) == 1
        details = exif.get_ifd(ExifTags.IFD.Exif)
        assert details[ExifTags.Base.DateTimeOriginal] == "2021:06:01 12:34:56"
        assert (details[ExifTags.Base.ExifImageWidth], details[ExifTags.Base.ExifImageHeight]) == (60, 80)
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        assert (gps[1], tuple(map(float, gps[2])), gps[3]) == ("N", (52.0, 31.0, 12.5), "E")
        assert float(exif[ExifTags.Base.XResolution]) == float(exif[ExifTags.Base.YResolution]) == 600
        assert not exif.get_ifd(ExifTags.IFD.IFD1)  # the thumbnail of the old picture is gone
        assert written.info.get("icc_profile") == ICC
        xmp = written.info.get("xmp")
        xmp = xmp.encode() if isinstance(xmp, str) else xmp
        assert b"<dc:creator>Ann Example</dc:creator>" in xmp and b'tiff:Orientation="1"' in xmp
        dpi = written.info.get("dpi")
        if fmt == "webp":  # no DPI field: the EXIF resolution stands for it
            assert dpi is None
        else:
            assert dpi == pytest.approx((600, 600), abs=0.01)
        pixels = np.asarray(written.convert("L"), dtype=np.float32)
    assert THUMBNAIL not in path.read_bytes()
    assert pixels[:12].mean() < 20 < pixels[20:].mean()  # the black columns are on top: rotated


def assert_stripped(path: Path) -> None:
    with Image.open(path) as written:
        assert not written.getexif() or set(written.getexif()) <= LAYOUT_TAGS
        assert not {"icc_profile", "xmp", "exif"} & set(written.info)
        assert written.info.get("dpi") in (None, (1, 1))  # TIFF readers report 1 dpi when none is given
    assert b"Canon" not in path.read_bytes() and b"xmpmeta" not in path.read_bytes()


LAYOUT_TAGS = {256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 338, 339}
"""What a TIFF's first IFD (its 'EXIF' to Pillow) holds about its own pixels."""


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tiff"])
def test_a_camera_jpeg_keeps_its_metadata_in_every_format(camera_jpeg, tmp_path, fmt):
    done = seesr("upscale", str(camera_jpeg), "-o", "out", "--ext", fmt, *REALESRGAN, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_kept(tmp_path / "out" / f"photo.{'tiff' if fmt == 'tiff' else fmt}", fmt)


@pytest.mark.slow
def test_strip_metadata_writes_none(camera_jpeg, tmp_path):
    done = seesr("upscale", str(camera_jpeg), "-o", "out.tiff", "--strip-metadata", *REALESRGAN, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_stripped(tmp_path / "out.tiff")
    with Image.open(tmp_path / "out.tiff") as written:
        assert written.size == (60, 80)  # still upright


@pytest.fixture(scope="module")
def upscaled(camera_jpeg):
    return Upscaler(device="cpu").upscale(camera_jpeg, engine="realesrgan", scale=2)


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tiff"])
def test_the_library_keeps_and_strips_alike(upscaled, tmp_path, fmt):
    assert_kept(upscaled.save(tmp_path / f"kept.{fmt}"), fmt)
    stripped = dataclasses.replace(upscaled, settings=dataclasses.replace(upscaled.settings, strip_metadata=True))
    assert_stripped(stripped.save(tmp_path / f"stripped.{fmt}"))


def test_png_text_and_dpi_are_kept_in_8_and_16_bit_png(tmp_path):
    info = PngInfo()
    info.add_text("Title", "Harbour at dawn")
    info.add_itxt("Description", "Hafen im Morgengrauen, Ä")
    source = tmp_path / "text.png"
    Image.new("RGB", (20, 10), (90, 120, 150)).save(source, pnginfo=info, dpi=(72, 72))
    loaded = read_image(source)
    out = recombine(loaded.rgb.resize((40, 20)), loaded)
    save_image(out, tmp_path / "8.png", metadata=loaded.metadata)
    save_image(out, tmp_path / "16.png", metadata=loaded.metadata, sixteen_bit=True)
    for name in ("8.png", "16.png"):
        with Image.open(tmp_path / name) as written:
            assert written.text == {"Title": "Harbour at dawn", "Description": "Hafen im Morgengrauen, Ä"}
            assert written.info["dpi"] == pytest.approx((144, 144), abs=0.05)  # PNG stores pixels per metre
    assert cv2.imread(str(tmp_path / "16.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16


# ------------------------------------------------------------------ TIFF
@pytest.mark.slow
def test_a_16_bit_png_to_tiff_is_16_bit_within_one_level_of_the_png_output(tmp_path):
    ramp = np.linspace(0, 65535, 24 * 16, dtype=np.float64).reshape(16, 24)
    rgba = np.stack([ramp, ramp[::-1], np.full_like(ramp, 30000.5), ramp.T.reshape(16, 24)], axis=2)
    cv2.imwrite(str(tmp_path / "deep.png"), np.rint(rgba).astype(np.uint16)[..., [2, 1, 0, 3]])
    for ext in ("png", "tiff"):
        done = seesr("upscale", "deep.png", "-o", f"out.{ext}", *REALESRGAN, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    png = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    tiff = cv2.imread(str(tmp_path / "out.tiff"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == tiff.dtype == np.uint16 and tiff.shape == png.shape == (32, 48, 4)  # alpha kept
    assert np.abs(tiff.astype(np.int32) - png.astype(np.int32)).max() <= 1
    assert (tiff[..., :3] % 257 != 0).mean() > 0.5  # the source's 16-bit detail, not 257 * 8-bit values
    with Image.open(tmp_path / "out.tiff") as written:
        assert written.info["compression"] == "tiff_adobe_deflate"

    (tmp_path / "out.tiff").rename(tmp_path / "scan.tif")  # a 16-bit TIFF in: `--ext auto` keeps TIFF
    done = seesr("upscale", "scan.tif", "-o", "out/", "--ext", "auto", *REALESRGAN, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    again = cv2.imread(str(tmp_path / "out" / "scan.tiff"), cv2.IMREAD_UNCHANGED)
    assert again.dtype == np.uint16 and again.shape == (64, 96, 4)


def test_tiff_8_bit_alpha_gray_and_auto(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (12, 20, 4), dtype=np.uint8)
    save_image(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.tiff")
    with Image.open(tmp_path / "rgba.tiff") as written:
        assert written.mode == "RGBA" and np.array_equal(np.asarray(written), rgba)
        assert written.info["compression"] == "tiff_adobe_deflate"
    gray = rgba[..., 0]
    save_image(Image.fromarray(gray, "L"), tmp_path / "gray.tif")
    with Image.open(tmp_path / "gray.tif") as written:
        assert written.mode == "L" and np.array_equal(np.asarray(written), gray)
    deep = read_image(tmp_path / "rgba.tiff")
    assert deep.source_format == "TIFF" and deep.alpha is not None
    result = Upscaler(device="cpu").upscale(tmp_path / "rgba.tiff", engine="realesrgan", scale=2, output_format="auto")
    assert result.output_format == "tiff"
    with Image.open(result.save(tmp_path / "auto.tiff")) as written:
        assert written.mode == "RGBA" and written.size == (40, 24)


def test_16_bit_tiff_round_trips_exactly(tmp_path):
    deep = np.random.default_rng(1).integers(0, 65536, (200, 700, 3), dtype=np.uint16)  # four strips
    save_image(deep, tmp_path / "deep.tiff", sixteen_bit=True)
    assert np.array_equal(cv2.imread(str(tmp_path / "deep.tiff"), cv2.IMREAD_UNCHANGED)[..., ::-1], deep)
    loaded = read_image(tmp_path / "deep.tiff")
    assert loaded.bit_depth == 16 and np.array_equal(loaded.high_bit_rgb, deep)
