"""The output flags (--ext, --quality, --suffix), --compare and `seesr weights list`, run as a user
types them (the `seesr` command of the environment running the tests)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_seesr as seesr, shared_input
from seesr.imaging.compare import COMPARE_DIVIDER, DIVIDER_COLOUR
from seesr.weights import load_manifest
from seesr.weights.listing import HEADER, human_size


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    """A 64x48 crop of a real photo (texture, so that JPEG/WebP quality shows in the file size)."""
    path = tmp_path / "photo.png"
    Image.open(shared_input("0014.jpg")).convert("RGB").crop((60, 60, 124, 108)).save(path)
    return path


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_ext_quality_and_suffix(photo, tmp_path):
    sizes = {}
    for quality in (80, 20):
        out = tmp_path / f"out{quality}"
        done = seesr("upscale", str(photo), "--engine", "realesrgan", "--scale", "2", "--ext", "webp",
                     "--quality", str(quality), "--suffix", "_x2", "-o", str(out), cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert visible(out) == ["photo_x2.webp"]
        with Image.open(out / "photo_x2.webp") as written:
            assert written.format == "WEBP" and written.size == (128, 96)
        sizes[quality] = (out / "photo_x2.webp").stat().st_size
    assert sizes[20] < 0.8 * sizes[80], sizes


def test_compare_image_and_no_overwrite(photo, tmp_path):
    out = tmp_path / "out.png"
    command = ["upscale", str(photo), "-o", str(out), "--engine", "realesrgan", "--scale", "2", "--compare"]
    done = seesr(*command, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    compare = tmp_path / "out_compare.png"
    canvas = np.asarray(Image.open(compare).convert("RGB")).astype(int)
    strip = canvas.shape[0] - 96
    assert canvas.shape[1] == 2 * 128 + COMPARE_DIVIDER and 10 <= strip <= 40
    assert (canvas[:, 128 : 128 + COMPARE_DIVIDER] == DIVIDER_COLOUR).all()
    bicubic = np.asarray(Image.open(photo).convert("RGB").resize((128, 96), Image.Resampling.BICUBIC))
    assert np.array_equal(canvas[strip:, :128], bicubic)
    assert np.array_equal(canvas[strip:, 128 + COMPARE_DIVIDER :], np.asarray(Image.open(out).convert("RGB")))
    for half in (canvas[:strip, :128], canvas[:strip, 128 + COMPARE_DIVIDER :]):
        assert ((half > 200).all(axis=2)).sum() > 20  # white label text on the black strip

    out.unlink()  # the output is gone but its comparison is still there: refused, nothing written
    before = compare.read_bytes()
    again = seesr(*command, cwd=tmp_path)
    assert again.returncode == 2 and "out_compare.png exists; pass --overwrite" in again.stderr
    assert again.stderr.count("\n") == 1 and "Traceback" not in again.stderr
    assert compare.read_bytes() == before and not out.exists()


def parse_table(text: str) -> tuple[list[str], dict[str, dict[str, str]], dict[str, str]]:
    """(header, rows by file, totals by label) of `seesr weights list`."""
    lines = text.splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    end = lines.index("")
    rows = {}
    for line in lines[1:end]:
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(header), line
        rows[cells[0]] = dict(zip(header, cells))
    totals = dict(line.split(": ", 1) for line in lines[end + 1 :] if line.split(":")[0] in ("total", "present", "missing"))
    return header, rows, totals


def test_weights_list_table(tiny_weights_dir, tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    done = seesr("weights", "list", "--weights", str(tiny_weights_dir), cwd=tmp_path, **env)
    assert done.returncode == 0, done.stderr
    header, rows, totals = parse_table(done.stdout)
    assert header == list(HEADER) == ["file", "group", "size", "status", "checksum", "where found"]
    manifest = load_manifest()
    conversion = "RealESRGAN_x4plus_from_ncnn.safetensors"
    assert list(rows) == [*manifest.names(), conversion]
    dape = rows["DAPE.pth"]
    assert dape["status"] == "present" and dape["group"] == "seesr"
    assert dape["where found"] == f"weights dir: {tiny_weights_dir / 'DAPE.pth'}"
    assert dape["size"] == human_size((tiny_weights_dir / "DAPE.pth").stat().st_size)  # no size in the manifest
    ram = rows["ram_swin_large_14m.pth"]  # the tiny RAM: the manifest's size is listed, and it does not match
    assert ram["size"] == "5.63 GB" and ram["status"] == "wrong size" and ram["checksum"] == "sha256"
    assert rows["sd-2-base/vae/config.json"]["status"] == "missing (optional)"
    assert rows["sd-2-base/vae/config.json"]["checksum"] == "unverified"
    assert rows[conversion]["status"] == "made on first use"
    assert rows[conversion]["where found"] == f"weights dir: {tiny_weights_dir / conversion}"
    present = [name for name, row in rows.items() if row["status"] in ("present", "wrong size")]
    assert totals["total"].startswith(f"{len(rows)} files ({sum(e.required for e in manifest.entries)} required)")
    assert totals["present"].startswith(f"{len(present)} files")
    assert totals["missing"].startswith(f"{len(rows) - len(present)} files")
    assert f"Real-ESRGAN in use: {tiny_weights_dir / conversion} (not converted yet" in done.stdout


def test_weights_list_group_filter_and_the_file_in_use(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    cached = weights / "RealESRGAN_x4plus_from_ncnn.safetensors"
    cached.write_bytes(b"\0" * 1500)
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    done = seesr("weights", "list", "realesrgan", "--weights", str(weights), cwd=tmp_path, **env)
    assert done.returncode == 0, done.stderr
    _, rows, totals = parse_table(done.stdout)
    assert list(rows) == ["RealESRGAN_x4plus.pth", cached.name]
    assert rows[cached.name]["status"] == "in use" and rows[cached.name]["size"] == "1.5 KB"
    assert rows["RealESRGAN_x4plus.pth"]["status"] == "missing (optional)"
    assert totals == {"total": "2 files (0 required), 67.0 MB", "present": "1 file (0 required), 1.5 KB",
                      "missing": "1 file (0 required), 67.0 MB"}  # fmt: skip
    ram = seesr("weights", "list", "ram", "--weights", str(weights), cwd=tmp_path, **env)
    _, rows, totals = parse_table(ram.stdout)
    assert set(rows) == {e.name for e in load_manifest().select(["ram"])} and len(rows) == 4
    assert totals["total"] == "4 files (4 required), 5.63 GB" and "Real-ESRGAN in use" not in ram.stdout
    unknown = seesr("weights", "list", "nosuch", cwd=tmp_path, **env)
    assert unknown.returncode == 2 and "unknown weights 'nosuch'" in unknown.stderr


def test_human_sizes():
    assert [human_size(n) for n in (None, 0, 999, 1500, 67_040_989, 5_625_634_877)] == [
        "?", "0 B", "999 B", "1.5 KB", "67.0 MB", "5.63 GB"
    ]  # fmt: skip
