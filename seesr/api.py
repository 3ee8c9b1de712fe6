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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from seesr.devices import PeakTracker, resolve_device
from seesr.errors import ConfigError, MissingWeightsError
from seesr.fallback import Attempt, free_memory, run_ladder
from seesr.fidelity import FidelityReport, fidelity_report
from seesr.imaging import compare_image, denoise, plan_working_size, resize
from seesr.load import LoadedImage, load_image
from seesr.models import MODELS
from seesr.outputs import PILLOW_FORMATS, SUFFIX_FORMATS, concrete_format, format_of
from seesr.planner import RunPlan, plan_run
from seesr.presets import Settings, resolve_settings
from seesr.progress import RECORD_FIELDS, ProgressCallback, RunStart, StageProgress, StageTracker
from seesr.sampling import NoiseSchedule
from seesr.save import recombine, save_image
from seesr.weights import WeightPaths, default_weights_dir, load_manifest

if TYPE_CHECKING:
    from seesr.pipeline import SeesrPipeline

logger = logging.getLogger(__name__)

ImageInput = str | Path | bytes | Image.Image | np.ndarray

@dataclass
class Result:
    """One upscaled image and how it was made."""

    image: Image.Image
    engine: str
    settings: Settings
    seed: int | None
    model: str | None = None
    """The model that made the image (a Real-ESRGAN file: its name, architecture and scale)."""
    tags: str | None = None
    prompt: str | None = None
    plan: RunPlan | None = None
    timings: dict[str, float] = field(default_factory=dict)
    peak_memory_bytes: int | None = None
    attempts: list[Attempt] = field(default_factory=list)
    fallback_reason: str | None = None
    fidelity: FidelityReport | None = None
    source: LoadedImage | None = field(default=None, repr=False)

    @property
    def output_format(self) -> str:
        """The settings' output format, with ``auto`` resolved from the input's format."""
        return self._concrete_format(self.settings.output_format)

    def _concrete_format(self, fmt: str) -> str:
        source = PILLOW_FORMATS.get(self.source.source_format) if self.source is not None else None
        return concrete_format(fmt, source)

    def save(self, path: str | Path, *, format: str | None = None, overwrite: bool = False) -> Path:  # noqa: A002
        """Write the image atomically in the format its suffix names (else ``format`` or
        :attr:`output_format`; a contradiction is a ConfigError) at the settings' ``quality``; a
        16-bit input written as PNG stays 16-bit."""
        path = Path(path)
        known = path.suffix.lower() in SUFFIX_FORMATS
        fmt = format_of(path, format) if known else self._concrete_format(format or self.settings.output_format)
        sixteen = self.source is not None and self.source.bit_depth == 16 and fmt == "png"
        return save_image(
            self.image, path, format=fmt, quality=self.settings.quality, overwrite=overwrite, sixteen_bit=sixteen,
            high_bit_source=self.source if sixteen else None,
        )  # fmt: skip

    def comparison(self) -> Image.Image:
        """The input (bicubic) | output picture of ``--compare``, labelled with the engine and model."""
        if self.source is None:
            raise ConfigError("this result does not keep its input; a comparison needs it")
        model = self.model or self.settings.model
        return compare_image(self.source.rgb, self.image.convert("RGB"), f"output: {self.engine}/{model}")

    @property
    def seconds(self) -> float:
        """Wall time of the whole call."""
        return self.timings.get("total", sum(self.timings.values()))

    def record(self) -> dict[str, Any]:
        """What a machine reads about the result (:data:`RECORD_FIELDS`), JSON-ready."""
        values = {
            "size": list(self.image.size),
            "engine": self.engine,
            "model": self.model,
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "tags": self.tags,
            "fallback_reason": self.fallback_reason,
            "fidelity": asdict(self.fidelity) if self.fidelity is not None else None,
        }
        return {key: values[key] for key in RECORD_FIELDS}

    def summary(self) -> str:
        """One line for a log or a terminal."""
        parts = [f"{self.image.width}x{self.image.height}", f"engine {self.engine}" + (f" ({self.model})" if self.model else "")]
        if self.fallback_reason:
            parts.append(f"fallback: {self.fallback_reason}")
        if self.tags:
            parts.append(f"tags: {self.tags}")
        if self.fidelity is not None:
            parts.append(self.fidelity.summary())
        parts.append(f"{self.seconds:.1f} s")
        return ", ".join(parts)


class Upscaler:
    """Loads the networks on first use and upscales many images with them.

    ``weights``: a weights directory or :class:`WeightPaths` (default: ``weights/`` or
    ``$SEESR_WEIGHTS``, then the Hugging Face cache); ``download``: fetch missing weights;
    ``progress``: receives :mod:`seesr.progress` events (engine started, stage, steps x tiles;
    :class:`~seesr.progress.TerminalProgress` draws them).
    Other keyword arguments are default settings for every call (see :class:`Settings`)."""

    def __init__(
        self,
        weights: str | Path | WeightPaths | None = None,
        *,
        download: bool = False,
        config_file: str | Path | None = None,
        progress: ProgressCallback | None = None,
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
        self._realesrgan_key: tuple | None = None

    # ---------------------------------------------------------------- models
    def pipeline(self, settings: Settings):
        """The SeeSR pipeline for these settings' model, device and dtype (loaded once per model;
        WeightsError if missing, found before diffusers is imported)."""
        device = resolve_device(settings.device)
        dtype = settings.torch_dtype(device)
        key = (device, dtype)
        if self._pipe is not None and self._pipe.model != settings.model:
            self.unload()  # one model's networks at a time
        if self._pipe is None:
            paths = self.weight_paths(settings, download=self.download).check()
            from seesr.pipeline import SeesrPipeline

            self._pipe = SeesrPipeline.from_pretrained(paths, model=settings.model, device=device, torch_dtype=dtype)
        elif self._pipe_key != key:
            self._pipe.to(device, dtype)
        self._pipe_key = key
        self._pipe.use_attention(settings.attention)
        if settings.compile:
            self._pipe.compile()
        return self._pipe

    @property
    def loaded(self) -> SeesrPipeline | None:
        """The SeeSR pipeline loaded now: None before the first SeeSR call and after :meth:`unload`."""
        return self._pipe

    def weight_paths(self, settings: Settings, *, download: bool = False) -> WeightPaths:
        """Where the SeeSR weights of ``settings.model`` are (MissingWeightsError naming the missing ones)."""
        if isinstance(self.weights, WeightPaths):
            return self.weights
        return WeightPaths.resolve(self.weights, download=download, need=[MODELS[settings.model].base])

    def realesrgan(self, settings: Settings):
        """The Real-ESRGAN engine: the settings' Real-ESRGAN model, else (the SeeSR fallback) x4plus;
        loaded once per model, device and precision."""
        from seesr.models import DEFAULT_MODEL, is_realesrgan_model
        from seesr.realesrgan import load_realesrgan

        model = settings.model if is_realesrgan_model(settings.model) else DEFAULT_MODEL
        key = (model, settings.device, settings.fp32)
        if self._realesrgan is None or self._realesrgan_key != key:
            self._realesrgan = None
            weights_dir = None if isinstance(self.weights, WeightPaths) or self.weights is None else Path(self.weights)
            self._realesrgan = load_realesrgan(weights_dir, device=settings.device, model=model, fp32=settings.fp32)
            self._realesrgan_key = key
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

    def steps_that_run(self, settings: Settings) -> int:
        """How many denoising steps a call with ``settings`` runs: the timesteps at or below
        ``start_steps`` (ConfigError when none is), by the model's scheduler config. Weights not
        downloaded yet (``download=True``): the steps asked for."""
        if self._pipe is not None and self._pipe.model == settings.model:
            schedule = self._pipe.schedule
        else:
            try:
                base = getattr(self.weight_paths(settings), MODELS[settings.model].base)
            except MissingWeightsError:
                base = None
            if base is None:
                return settings.steps
            schedule = NoiseSchedule.from_pretrained(base / "scheduler")
        return len(schedule.timesteps(settings.steps, settings.start_steps))

    def settings(self, arguments: dict[str, Any]) -> Settings:
        return resolve_settings({**self.defaults, **arguments}, config_file=self.config_file)

    def dry_run(self, image: ImageInput, **arguments: Any) -> DryRun:
        """What :meth:`upscale` would run on ``image``: the engine (Real-ESRGAN when asked for, or
        when SeeSR's weights are missing and the fallback is allowed), model, device, dtype, tile
        plan and estimated peak memory. Loads no network and imports no diffusers."""
        settings = self.settings(arguments)
        reason = None
        if settings.engine == "seesr" and self._pipe is None and not self.download:
            try:
                self.weight_paths(settings).check()
            except MissingWeightsError as error:
                if settings.no_fallback:
                    raise
                reason = self._missing_reason(error)
        loaded = load_image(image)
        if settings.engine == "realesrgan" or reason is not None:
            from seesr.models import (
                DEFAULT_MODEL, REALESRGAN_MODELS, canonical_model, is_model_file, is_realesrgan_model,
            )  # fmt: skip
            from seesr.realesrgan import (
                auto_tile,
                batch_pixels_for,
                estimated_peak_bytes,
                free_memory_bytes,
                inspect_model_file,
                planned_precision,
            )

            device = resolve_device(settings.device)
            dtype = planned_precision(device, settings.fp32)
            model = canonical_model(settings.model) if is_realesrgan_model(settings.model) else DEFAULT_MODEL
            if is_model_file(model):  # its header says what it is; its tensors are read only to run it
                header = inspect_model_file(model)
                model, net_scale = header.name, header.scale
            else:
                net_scale = REALESRGAN_MODELS[model].network_scale
            start = RunStart("realesrgan", model, str(device), _dtype_name(dtype), None,
                             realesrgan_tiles(settings.tile, settings.scale, net_scale))  # fmt: skip
            size = plan_working_size(*loaded.size, settings.scale, 0).output_size
            width, height = loaded.size
            scale = net_scale or 4  # a model file's scale is known once it is read: plan for x4
            budget = batch_pixels_for(free_memory_bytes(device), scale, dtype)
            tile = settings.tile or auto_tile(height, width, budget, settings.tile_pad)
            peak = estimated_peak_bytes(height, width, tile, scale, dtype, budget, settings.tile_pad)
            return DryRun(start, loaded.size, size, peak, reason)
        settings, plan, size = self.plan(loaded.rgb, **arguments)
        device = resolve_device(settings.device)
        dtype = _dtype_name(settings.torch_dtype(device))
        start = RunStart("seesr", settings.model, str(device), dtype, self.steps_that_run(settings), plan.describe())
        return DryRun(start, loaded.size, size, plan.estimated_peak_bytes)

    def upscale(self, image: ImageInput, **arguments: Any) -> Result:
        """Upscale one image (path, bytes, PIL image or numpy array); see :class:`Settings`."""
        settings = self.settings(arguments)
        loaded = load_image(image)
        rgb = denoise(loaded.rgb, settings.denoise) if settings.denoise else loaded.rgb
        seed = settings.seed if settings.seed is not None else random.randrange(2**32)
        start = time.perf_counter()
        with PeakTracker(resolve_device(settings.device)) as peak:
            ladder = self._run(rgb, settings, seed, StageTracker(self.progress))
        reference = resize(loaded.rgb, ladder.image.size)
        if ladder.engine == "realesrgan":
            from seesr.realesrgan import color_fix_image

            ladder.image = color_fix_image(ladder.image, reference, settings.color_fix)
        image_out = recombine(ladder.image, loaded)
        output = ladder.seesr_output
        timings = dict(getattr(output, "timings", {}) or {})
        timings["total"] = time.perf_counter() - start
        result = Result(
            image=image_out,
            engine=ladder.engine,
            settings=settings,
            seed=seed if ladder.engine == "seesr" else None,
            model=settings.model if ladder.engine == "seesr" else self._realesrgan.name,
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

    def _run(self, rgb: Image.Image, settings: Settings, seed: int, report: StageTracker):
        def load_realesrgan():
            if self._realesrgan is None:
                report(StageProgress("load", 0, 0))
            engine = self.realesrgan(settings)
            engine.progress = report
            tiles = realesrgan_tiles(settings.tile, settings.scale, engine.net_scale)
            report(RunStart("realesrgan", engine.name, str(engine.device), _dtype_name(engine.dtype), None, tiles))
            return engine

        def realesrgan_only(reason: str | None):
            return run_ladder(
                rgb,
                scale=settings.scale,
                plan=None,
                run_seesr=None,
                load_realesrgan=load_realesrgan,
                skip_reason=reason,
                realesrgan_tile=settings.tile,
                realesrgan_tile_pad=settings.tile_pad,
            )

        if settings.engine == "realesrgan":
            return realesrgan_only(None)
        try:
            if self._pipe is None or self._pipe.model != settings.model:
                report(StageProgress("load", 0, 0))
            pipe = self.pipeline(settings)
        except MissingWeightsError as error:  # absent only: unusable weights are the user's error to see
            if settings.no_fallback:
                raise
            return realesrgan_only(self._missing_reason(error))
        pipe.progress = report
        steps = len(pipe.schedule.timesteps(settings.steps, settings.start_steps))  # ConfigError before any work
        sizes = plan_working_size(rgb.width, rgb.height, settings.scale, settings.process_size)
        plan = pipe.plan_for(
            *sizes.work_size,
            batch_multiplier=settings.batch_multiplier(),
            max_latent_tile=settings.max_latent_tile,
            overrides=settings.plan_overrides(),
        )
        keywords = settings.arguments_for("pipeline")
        tried: list[str] = []

        def run_seesr(rung: RunPlan):
            retry = f"out of memory in {report.stage or 'setup'}" if tried else None
            tried.append(rung.describe())
            start = RunStart("seesr", settings.model, str(pipe.device), _dtype_name(pipe.dtype), steps, rung.describe(), retry)
            report(start)
            report.stage = None
            return pipe(rgb, **keywords, plan=rung, kds=settings.kds_config(), seed=seed)

        return run_ladder(
            rgb,
            scale=settings.scale,
            plan=plan,
            run_seesr=run_seesr,
            load_realesrgan=load_realesrgan,
            allow_fallback=not settings.no_fallback,
            stage_hook=pipe.stage_hook,
            stage=lambda: report.stage,
            realesrgan_tile=settings.tile,
            realesrgan_tile_pad=settings.tile_pad,
        )

    def _missing_reason(self, error: MissingWeightsError) -> str:
        """Why SeeSR cannot run, in one line: the missing files (by group when many) and where."""
        if not error.missing:
            return "SeeSR weights are missing: " + " ".join(str(error).split())
        manifest = load_manifest()
        known = {entry.name: entry.group for entry in manifest.entries}
        missing = list(error.missing)
        if len(missing) <= MISSING_NAMED:
            what = ", ".join(missing)
        else:
            groups: dict[str, int] = {}
            for name in missing:
                group = known.get(name, name.split("/")[0])
                groups[group] = groups.get(group, 0) + 1
            what = f"{len(missing)} files ({', '.join(f'{group} {count}' for group, count in groups.items())})"
        if isinstance(self.weights, WeightPaths):
            where = "the given weight paths"
        else:
            where = f"{Path(self.weights) if self.weights is not None else default_weights_dir()} or the Hugging Face cache"
        listed = "" if len(missing) <= MISSING_NAMED else " (`seesr weights list` names them)"
        return f"SeeSR weights are missing: {what} not found in {where}{listed}; run `seesr weights download`"


def upscale(image: ImageInput, preset: str = "balanced", scale: float = 4, **arguments: Any) -> Result:
    """Upscale one image with a fresh :class:`Upscaler` (use an Upscaler to serve many images)."""
    weights = arguments.pop("weights", None)
    return Upscaler(weights).upscale(image, preset=preset, scale=scale, **arguments)


MISSING_NAMED = 3
"""Up to this many missing weight files are named one by one; more are counted by group."""

FULL_SIZE_PARAMETERS = int(2.25e9)
"""Parameters of the full-size networks, for plans made before the networks are loaded."""


def _full_size_weights_bytes(dtype: torch.dtype) -> int:
    return FULL_SIZE_PARAMETERS * (torch.finfo(dtype).bits // 8)


def realesrgan_tiles(tile: int, scale: float, net_scale: int | None) -> str:
    """The Real-ESRGAN plan in words: network scale, resize, tiles."""
    network = f"x{net_scale} network" if net_scale else "the model file's network"
    resize_to = "" if scale == net_scale else f", resized to x{scale:g}"
    tiles = f"tiles of {tile} px" if tile else "untiled when it fits the free memory, else tiles"
    return f"{network}{resize_to}; {tiles} (smaller on out-of-memory)"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class DryRun:
    """What :meth:`Upscaler.upscale` would do with one image (``seesr upscale --dry-run``): the run's
    first line, the input's size (after EXIF orientation), the output's, and the memory it needs."""

    start: RunStart
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    estimated_peak_bytes: int
    fallback_reason: str | None = None

    def describe(self) -> str:
        peak = "" if "est. peak" in self.start.tiles else f", est. peak {self.estimated_peak_bytes / 2**30:.1f} GiB"
        why = f" (fallback: {self.fallback_reason})" if self.fallback_reason else ""
        return f"{self.start.describe()}{peak}{why}"
