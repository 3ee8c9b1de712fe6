"""The Python API: ``seesr.upscale(image, ...)`` and the ``Upscaler`` that serves many images.

An ``Upscaler`` loads its networks lazily, once, and keeps them until :meth:`Upscaler.unload`.
Each call resolves its settings (arguments > ``SEESR_*`` environment > config file > preset >
defaults), decodes the input (any format, alpha, grayscale, 16-bit), plans tiles for the memory it
has, runs SeeSR down the out-of-memory ladder (Real-ESRGAN last), and returns a :class:`Result`.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from seesr.devices import PeakTracker, resolve_device
from seesr.errors import MissingWeightsError
from seesr.fallback import Attempt, free_memory, run_ladder
from seesr.fidelity import FidelityReport, fidelity_report
from seesr.imaging import plan_working_size, resize
from seesr.io import LoadedImage, denoise, load_image, recombine, save_image
from seesr.models import MODELS
from seesr.outputs import SUFFIX_FORMATS, format_of
from seesr.planner import RunPlan, plan_run
from seesr.presets import Settings, resolve_settings
from seesr.weights import WeightPaths

logger = logging.getLogger(__name__)

ImageInput = str | Path | bytes | Image.Image | np.ndarray


@dataclass
class Result:
    """One upscaled image and how it was made."""

    image: Image.Image
    engine: str
    settings: Settings
    seed: int | None
    tags: str | None = None
    prompt: str | None = None
    plan: RunPlan | None = None
    timings: dict[str, float] = field(default_factory=dict)
    peak_memory_bytes: int | None = None
    attempts: list[Attempt] = field(default_factory=list)
    fallback_reason: str | None = None
    fidelity: FidelityReport | None = None
    source: LoadedImage | None = field(default=None, repr=False)

    def save(self, path: str | Path, *, format: str | None = None, overwrite: bool = False) -> Path:  # noqa: A002
        """Write the image atomically in the format its suffix names (else ``format`` or the
        settings' output format; a contradiction is a ConfigError); a 16-bit input written as PNG
        stays 16-bit."""
        path = Path(path)
        known = path.suffix.lower() in SUFFIX_FORMATS
        fmt = format_of(path, format) if known else (format or self.settings.output_format)
        sixteen = self.source is not None and self.source.bit_depth == 16 and fmt == "png"
        return save_image(
            self.image, path, format=fmt, overwrite=overwrite, sixteen_bit=sixteen,
            high_bit_source=self.source if sixteen else None,
        )  # fmt: skip

    def summary(self) -> str:
        """One line for a log or a terminal."""
        parts = [f"{self.image.width}x{self.image.height}", f"engine {self.engine}"]
        if self.fallback_reason:
            parts.append(f"fallback: {self.fallback_reason}")
        if self.tags:
            parts.append(f"tags: {self.tags}")
        if self.fidelity is not None:
            parts.append(self.fidelity.summary())
        parts.append(f"{sum(self.timings.values()):.1f} s")
        return ", ".join(parts)


class Upscaler:
    """Loads the networks on first use and upscales many images with them.

    ``weights``: a weights directory or :class:`WeightPaths` (default: ``weights/`` or
    ``$SEESR_WEIGHTS``, then the Hugging Face cache); ``download``: fetch missing weights;
    ``progress``: progress bars over denoising steps and tiles.
    Other keyword arguments are default settings for every call (see :class:`Settings`)."""

    def __init__(
        self,
        weights: str | Path | WeightPaths | None = None,
        *,
        download: bool = False,
        config_file: str | Path | None = None,
        progress: bool = False,
        **defaults: Any,
    ) -> None:
        self.weights = weights
        self.progress = progress
        self.download = download
        self.config_file = config_file
        self.defaults = defaults
        resolve_settings(defaults, config_file=config_file)
        self._pipe = None
        self._pipe_key: tuple | None = None
        self._realesrgan = None

    # ---------------------------------------------------------------- models
    def pipeline(self, settings: Settings):
        """The SeeSR pipeline for these settings' model, device and dtype (loaded once per model;
        WeightsError if missing)."""
        from seesr.pipeline import SeesrPipeline

        device = resolve_device(settings.device)
        dtype = settings.torch_dtype(device)
        key = (device, dtype)
        if self._pipe is not None and self._pipe.model != settings.model:
            self.unload()  # one model's networks at a time
        if self._pipe is None:
            need = [MODELS[settings.model].base]
            paths = self.weights if isinstance(self.weights, WeightPaths) else WeightPaths.resolve(
                self.weights, download=self.download, need=need
            )
            self._pipe = SeesrPipeline.from_pretrained(paths, model=settings.model, device=device, torch_dtype=dtype)
            self._pipe.show_progress = self.progress
        elif self._pipe_key != key:
            self._pipe.to(device, dtype)
        self._pipe_key = key
        if settings.compile:
            self._pipe.compile()
        return self._pipe

    def realesrgan(self, settings: Settings):
        """The Real-ESRGAN engine (bundled weights unless RealESRGAN_x4plus.pth is in the weights dir)."""
        from seesr.realesrgan import load_realesrgan

        if self._realesrgan is None:
            weights_dir = None if isinstance(self.weights, WeightPaths) or self.weights is None else Path(self.weights)
            self._realesrgan = load_realesrgan(weights_dir=weights_dir, device=settings.device)
        return self._realesrgan

    def unload(self) -> None:
        """Drop every network and return their memory."""
        self._pipe = None
        self._realesrgan = None
        free_memory()

    # ---------------------------------------------------------------- the call
    def plan(self, image: ImageInput, **arguments: Any) -> tuple[Settings, RunPlan, tuple[int, int]]:
        """What a call would do, without running it: settings, plan (with estimated peak memory)
        and output size. Does not load the networks."""
        settings = self.settings(arguments)
        loaded = load_image(image)
        sizes = plan_working_size(*loaded.size, settings.scale, settings.process_size)
        device = resolve_device(settings.device)
        dtype = settings.torch_dtype(device)
        overrides, multiplier = settings.plan_overrides(), settings.batch_multiplier()
        planning = dict(batch_multiplier=multiplier, max_latent_tile=settings.max_latent_tile, overrides=overrides)
        if self._pipe is not None:
            plan = self._pipe.plan_for(*sizes.work_size, **planning)
        else:  # nothing loaded yet: plan for the full-size weights in this dtype
            weights = _full_size_weights_bytes(dtype)
            plan = plan_run(*sizes.work_size, device=device, dtype=dtype, weights_bytes=weights, **planning)
        return settings, plan, sizes.output_size

    def settings(self, arguments: dict[str, Any]) -> Settings:
        return resolve_settings({**self.defaults, **arguments}, config_file=self.config_file)

    def upscale(self, image: ImageInput, **arguments: Any) -> Result:
        """Upscale one image (path, bytes, PIL image or numpy array); see :class:`Settings`."""
        settings = self.settings(arguments)
        loaded = load_image(image)
        rgb = denoise(loaded.rgb, settings.denoise) if settings.denoise else loaded.rgb
        seed = settings.seed if settings.seed is not None else random.randrange(2**32)
        start = time.perf_counter()
        with PeakTracker(resolve_device(settings.device)) as peak:
            ladder = self._run(rgb, settings, seed)
        image_out = recombine(ladder.image, loaded)
        reference = resize(loaded.rgb, ladder.image.size)
        output = ladder.seesr_output
        timings = dict(getattr(output, "timings", {}) or {})
        timings["total"] = time.perf_counter() - start
        result = Result(
            image=image_out,
            engine=ladder.engine,
            settings=settings,
            seed=seed if ladder.engine == "seesr" else None,
            tags=getattr(output, "tags", None),
            prompt=getattr(output, "prompt", None),
            plan=ladder.plan,
            timings=timings,
            peak_memory_bytes=peak.peak,
            attempts=ladder.attempts,
            fallback_reason=ladder.reason,
            fidelity=fidelity_report(reference, ladder.image),
            source=loaded,
        )
        del ladder, output
        free_memory()
        return result

    def _run(self, rgb: Image.Image, settings: Settings, seed: int):
        def realesrgan_only(reason: str):
            return run_ladder(
                rgb,
                scale=settings.scale,
                plan=settings.full_plan(),
                run_seesr=None,
                load_realesrgan=lambda: self.realesrgan(settings),
                skip_reason=reason,
            )

        if settings.engine == "realesrgan":
            return realesrgan_only("engine 'realesrgan' was asked for")
        try:
            pipe = self.pipeline(settings)
        except MissingWeightsError as error:  # absent only: unusable weights are the user's error to see
            if settings.no_fallback:
                raise
            named = ", ".join(error.missing) or " ".join(str(error).split())
            return realesrgan_only(f"SeeSR weights are missing ({named}); run `seesr weights download`")
        sizes = plan_working_size(rgb.width, rgb.height, settings.scale, settings.process_size)
        plan = pipe.plan_for(
            *sizes.work_size,
            batch_multiplier=settings.batch_multiplier(),
            max_latent_tile=settings.max_latent_tile,
            overrides=settings.plan_overrides(),
        )

        def run_seesr(rung: RunPlan):
            keywords = settings.arguments_for("pipeline")
            return pipe(rgb, **keywords, plan=rung, kds=settings.kds_config(), seed=seed)

        return run_ladder(
            rgb,
            scale=settings.scale,
            plan=plan,
            run_seesr=run_seesr,
            load_realesrgan=lambda: self.realesrgan(settings),
            allow_fallback=not settings.no_fallback,
            stage_hook=pipe.stage_hook,
        )


def upscale(image: ImageInput, preset: str = "balanced", scale: float = 4, **arguments: Any) -> Result:
    """Upscale one image with a fresh :class:`Upscaler` (use an Upscaler to serve many images)."""
    weights = arguments.pop("weights", None)
    return Upscaler(weights).upscale(image, preset=preset, scale=scale, **arguments)


FULL_SIZE_PARAMETERS = int(2.25e9)
"""Parameters of the full-size networks, for plans made before the networks are loaded."""


def _full_size_weights_bytes(dtype: torch.dtype) -> int:
    return FULL_SIZE_PARAMETERS * (torch.finfo(dtype).bits // 8)
