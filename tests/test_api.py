"""The Python API and the out-of-memory ladder, end to end on the tiny official fixtures (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from oom import OomInjector
from seesr.api import Result, Upscaler
from seesr.errors import ConfigError, InputError, OutOfMemoryError
from seesr.runtime.memory import is_out_of_memory

FAST = dict(scale=2, steps=1, process_size=0, seed=3)


@pytest.fixture(scope="module")
def upscaler(tiny_weights):
    return Upscaler(tiny_weights, device="cpu")


@pytest.fixture(autouse=True)
def no_faults(upscaler):
    yield
    upscaler.stage_hook = None


def test_upscale_returns_a_full_result(upscaler, lr_image):
    result = upscaler.upscale(lr_image, **FAST)
    assert isinstance(result, Result)
    assert result.engine == "seesr" and result.fallback_reason is None
    assert result.image.size == (lr_image.width * 2, lr_image.height * 2)
    assert result.seed == 3 and isinstance(result.tags, str)
    assert result.prompt == f"{result.tags}, ," + "clean, high-resolution, 8k"
    assert [a.engine for a in result.attempts] == ["seesr"] and result.attempts[0].ok
    assert {"tag", "text", "encode", "denoise", "decode", "total"} <= set(result.timings)
    assert result.peak_memory_bytes > 0 and result.plan is not None
    assert 0 <= result.fidelity.structure <= 1
    assert np.asarray(result.image).std() > 1  # a real picture, not a flat placeholder


def test_same_seed_same_image_and_inputs_of_any_kind(upscaler, lr_image, tmp_path):
    path = tmp_path / "lr.png"
    lr_image.save(path)
    from_path = upscaler.upscale(path, **FAST).image
    from_array = upscaler.upscale(np.asarray(lr_image), **FAST).image
    from_bytes = upscaler.upscale(path.read_bytes(), **FAST).image
    assert np.array_equal(np.asarray(from_path), np.asarray(from_array))
    assert np.array_equal(np.asarray(from_path), np.asarray(from_bytes))


def test_models_load_once(upscaler, lr_image):
    upscaler.upscale(lr_image, **FAST)
    pipe = upscaler.loaded
    upscaler.upscale(lr_image, **FAST)
    assert pipe is not None and upscaler.loaded is pipe


def test_alpha_and_gray_come_back(upscaler, lr_image):
    rgba = lr_image.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(lr_image.size))
    out = upscaler.upscale(rgba, **FAST).image
    assert out.mode == "RGBA" and out.size == (lr_image.width * 2, lr_image.height * 2)
    assert out.getchannel("A").getextrema()[1] > 200
    gray = upscaler.upscale(lr_image.convert("L"), **FAST).image
    assert gray.mode == "L"


@pytest.mark.parametrize("stage", ["tag", "encode", "denoise", "decode"])
def test_out_of_memory_at_any_stage_goes_to_a_smaller_plan(upscaler, lr_image, stage):
    upscaler.stage_hook = injector = OomInjector({stage: 1})
    result = upscaler.upscale(lr_image, **FAST)
    assert injector.raised == [stage]
    assert result.engine == "seesr"
    assert [a.ok for a in result.attempts] == [False, True]
    assert "out of memory" in result.attempts[0].outcome
    first, second = (a.settings for a in result.attempts)
    assert first != second


def test_offload_rung_then_realesrgan(upscaler, lr_image):
    upscaler.stage_hook = OomInjector({"denoise": 2})
    result = upscaler.upscale(lr_image, **FAST)
    assert result.engine == "seesr" and "offload" in result.attempts[-1].settings
    assert len(result.attempts) == 3

    upscaler.stage_hook = OomInjector({"denoise": 3, "realesrgan": 1})
    result = upscaler.upscale(lr_image, **FAST)
    assert result.engine == "realesrgan" and "every rung" in result.fallback_reason
    assert [a.engine for a in result.attempts] == ["seesr"] * 3 + ["realesrgan"] * 2
    assert result.image.size == (lr_image.width * 2, lr_image.height * 2)
    assert np.asarray(result.image).std() > 1


def test_no_fallback_raises_typed_error_with_advice(upscaler, lr_image):
    upscaler.stage_hook = OomInjector({"denoise": 1})
    with pytest.raises(OutOfMemoryError, match="memory"):
        upscaler.upscale(lr_image, no_fallback=True, **FAST)


def test_everything_out_of_memory_is_a_typed_error(upscaler, lr_image):
    """Real-ESRGAN's rungs: its planned tile (untiled for this small image), then 256, 128, 64."""
    injector = OomInjector({"denoise": 3, "realesrgan": 4})
    upscaler.stage_hook = injector
    with pytest.raises(OutOfMemoryError, match="every rung"):
        upscaler.upscale(lr_image, **FAST)
    assert injector.raised == ["denoise"] * 3 + ["realesrgan"] * 4


def test_missing_weights_fall_back_to_realesrgan_and_say_why(tmp_path, lr_image):
    result = Upscaler(tmp_path / "empty", device="cpu").upscale(lr_image, **FAST)
    assert result.engine == "realesrgan"
    assert "weights are missing" in result.fallback_reason and "seesr weights download" in result.fallback_reason
    assert result.image.size == (lr_image.width * 2, lr_image.height * 2)
    from seesr.errors import WeightsError

    with pytest.raises(WeightsError):
        Upscaler(tmp_path / "empty", device="cpu").upscale(lr_image, no_fallback=True, **FAST)


def test_bad_settings_and_bad_input_are_refused(upscaler, lr_image):
    with pytest.raises(ConfigError) as error:
        upscaler.upscale(lr_image, steps=0, scale=50)
    assert "steps=0" in str(error.value) and "scale=50" in str(error.value)
    with pytest.raises(InputError):
        upscaler.upscale(b"not an image")


def test_plan_without_running(upscaler, lr_image):
    settings, plan, size = upscaler.plan(lr_image, scale=4, latent_tile=16)
    assert settings.scale == 4 and settings.latent_tile == 16
    assert size == (lr_image.width * 4, lr_image.height * 4)
    assert plan.latent_tile == 16 and plan.estimated_peak_bytes > 0


def test_is_out_of_memory_recognises_allocator_errors():
    import torch

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_compile_is_opt_in(tiny_weights, monkeypatch):
    """``compile=True`` (API, CLI ``--compile``, ``SEESR_COMPILE``) compiles ControlNet + UNet;
    the default leaves them eager."""
    fresh = Upscaler(tiny_weights, device="cpu")
    pipe = fresh.pipeline(fresh.settings({}))
    assert not pipe.compiled
    calls = []
    monkeypatch.setattr(type(pipe), "compile", lambda self, **kw: calls.append(self))
    assert fresh.pipeline(fresh.settings({"compile": True})) is pipe and calls == [pipe]
    monkeypatch.setenv("SEESR_COMPILE", "yes")
    assert fresh.settings({}).compile
    from seesr.cli import build_parser

    assert build_parser().parse_args(["upscale", "x.png", "--compile"]).compile is True


def test_progress_events_and_the_out_of_memory_reason(upscaler, lr_image):
    """Each rung starts with a RunStart (a retry says why), stages report as they start, and the
    fallback reason names the stage that ran out of memory on each rung."""
    from seesr.progress import RunStart, StageProgress

    events = []
    upscaler.progress = events.append
    try:
        upscaler.stage_hook = OomInjector({"tag": 1, "denoise": 2})
        result = upscaler.upscale(lr_image, **FAST)
    finally:
        upscaler.progress = None
    assert result.engine == "realesrgan" and result.model == "realesrgan-x4plus"
    assert result.fallback_reason == (
        "SeeSR ran out of memory on every rung (planned tiles: tag; smaller tiles: denoise; "
        "smaller tiles with CPU offload: denoise)"
    )
    starts = [e for e in events if isinstance(e, RunStart)]
    assert [(s.engine, s.retry) for s in starts] == [
        ("seesr", None), ("seesr", "out of memory in tag"), ("seesr", "out of memory in denoise"), ("realesrgan", None)
    ]
    assert starts[0].model == "seesr-turbo" and starts[0].steps == 1 and starts[0].device == "cpu"
    assert "offload" in starts[2].tiles
    starts = [e.stage for e in events if isinstance(e, StageProgress) and e.done == 0 and e.stage != "load"]
    stages = [stage for i, stage in enumerate(starts) if i == 0 or stage != starts[i - 1]]
    assert stages == ["tag", "text", "encode", "denoise", "tag", "text", "encode", "denoise", "realesrgan"]
    assert [e.done for e in events if isinstance(e, StageProgress) and e.stage == "realesrgan"] == [0, 1]


def test_an_engine_asked_for_is_no_fallback(upscaler, lr_image):
    result = upscaler.upscale(lr_image, engine="realesrgan", scale=2)
    assert result.engine == "realesrgan" and result.fallback_reason is None and "fallback" not in result.summary()
    assert result.record()["model"] == "realesrgan-x4plus" and result.record()["size"] == [72, 48]


def test_start_steps_counts_only_the_steps_that_run(upscaler, tiny_weights, lr_image):
    """4 trailing steps with start_steps 500: t=999 and 749 are skipped, so the run start, the
    denoise progress and the dry run (loaded or not) all say 2 steps; a start below every timestep
    is a ConfigError before anything runs."""
    from seesr.progress import RunStart, StageProgress

    fast = {**FAST, "steps": 4, "start_steps": 500}
    events = []
    upscaler.progress = events.append
    try:
        upscaler.upscale(lr_image, **fast)
    finally:
        upscaler.progress = None
    assert [e.steps for e in events if isinstance(e, RunStart)] == [2]
    assert [e.total for e in events if isinstance(e, StageProgress) and e.stage == "denoise"][-1] == 2  # 1 tile
    assert upscaler.dry_run(lr_image, **fast).start.steps == 2
    assert Upscaler(tiny_weights, device="cpu").dry_run(lr_image, **fast).start.steps == 2  # scheduler read from disk
    for run in (upscaler.upscale, upscaler.dry_run):
        with pytest.raises(ConfigError, match="start_steps=500 is below every timestep of 1 step"):
            run(lr_image, **{**fast, "steps": 1})
