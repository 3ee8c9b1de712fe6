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


def test_a_record_has_the_keys_of_the_json_lines(upscaler, lr_image, tmp_path):
    """``Result.record()`` is what ``seesr upscale --json`` prints for a file done: input, output and
    status first (input None for an image in memory, output None until saved)."""
    from seesr.progress import JOB_FIELDS, RECORD_FIELDS

    source = tmp_path / "in.png"
    lr_image.save(source)
    result = upscaler.upscale(str(source), engine="realesrgan", scale=2)
    record = result.record()
    assert list(record) == [*JOB_FIELDS, *RECORD_FIELDS]
    assert (record["input"], record["output"], record["status"]) == (str(source), None, "done")
    result.save(tmp_path / "out.png")
    assert result.record()["output"] == str(tmp_path / "out.png")
    assert upscaler.upscale(lr_image, engine="realesrgan", scale=2).record()["input"] is None


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


def test_a_dry_run_decides_a_download_as_the_run_would(tmp_path, lr_image, monkeypatch):
    """Missing weights with download=True: offline or no source reachable, the dry run plans the
    fallback the run would take, saying what would be tried; a source reachable, it plans SeeSR
    after the download, saying that depends on the network. Nothing is downloaded."""
    import seesr.weights.fetch as fetch

    empty = tmp_path / "empty"
    planner = Upscaler(empty, download=True, device="cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = planner.dry_run(lr_image, **FAST)
    assert offline.start.engine == "realesrgan" and offline.first is None
    assert offline.fallback_reason.endswith("; no download was tried: HF_HUB_OFFLINE is set")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    asked = []
    monkeypatch.setattr(fetch, "_reachable", lambda address, timeout=5.0: asked.append(address) or False)
    unreachable = planner.dry_run(lr_image, **FAST)
    assert unreachable.start.engine == "realesrgan" and ("huggingface.co", 443) in asked
    assert "; a download would be tried from 4 sources (" in unreachable.fallback_reason
    assert unreachable.fallback_reason.endswith("): none can be reached now")
    monkeypatch.setattr(fetch, "_reachable", lambda address, timeout=5.0: address[0] == "huggingface.co")
    online = planner.dry_run(lr_image, **FAST)
    assert online.start.engine == "seesr" and online.fallback_reason is None
    assert online.first.startswith("a download of 20 files (at least 5.63 GB) from huggingface.co")
    assert online.first.endswith(", which depends on the network") and "(after a download of 20" in online.describe()
    assert not empty.exists()  # nothing downloaded, no folder made
    without = Upscaler(empty, device="cpu").dry_run(lr_image, **FAST)  # no download asked: the fallback, and how to fix it
    assert without.start.engine == "realesrgan" and without.fallback_reason.endswith("run `seesr weights download`")


def test_the_terminal_line_from_the_api_names_the_file_and_counts_from_its_start(tmp_path, lr_image):
    import io

    from seesr.progress import TerminalProgress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    lr_image.save(tmp_path / "photo.png")
    stream, now = Terminal(), [1_000_000.0]  # a clock far from zero, as time.monotonic is after a long uptime
    display = TerminalProgress(stream, clock=lambda: now[0])
    Upscaler(tmp_path / "empty", progress=display, device="cpu").upscale(tmp_path / "photo.png", engine="realesrgan",
                                                                          **FAST)  # fmt: skip
    lines = [part for part in stream.getvalue().split("\r\x1b[K") if part.strip()]
    drawn = [line for line in lines if not line.startswith("engine ")]
    assert drawn and all(line.startswith("photo.png: ") for line in drawn), lines
    assert all("  0:00" in line for line in drawn)  # elapsed since the image started, not the clock's zero
    assert stream.getvalue().endswith("\r\x1b[K")  # the line is cleared when the call ends
