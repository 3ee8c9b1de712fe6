"""The Python API: ``seesr.upscale(image, ...)`` and the ``Upscaler`` that serves many images.

An ``Upscaler`` holds one of each engine (:data:`ENGINES`), which load their networks lazily, once,
and keep them until :meth:`Upscaler.unload`. A call (:meth:`Upscaler.upscale` for one image,
:meth:`Upscaler.upscale_samples` for ``num_samples`` of them):

1. resolves its settings (arguments > ``SEESR_*`` environment > config file > model > engine >
   preset > defaults) and reads the input (:func:`seesr.io.read.read_image`: any format, alpha,
   grayscale, 16-bit), pre-filtered when ``denoise`` asks; a ``width`` / ``height`` becomes the
   scale of this input (:func:`seesr.imaging.convert.scale_for_size`);
2. steps through the engines (:meth:`Upscaler.engines_for`: the one asked for, then those that
   stand in for it) with the out-of-memory ladder (:func:`seesr.engines.ladder.run_ladder`: from
   the first whose weights are there, each engine's plan, then its rungs);
3. finishes any engine's output (each sample) alike: the colour fix, the output size, the fidelity
   report, and the input's alpha, grayness and bit depth given back (:func:`seesr.io.write.recombine`).

A dry run (:meth:`Upscaler.dry_run`) is step 2's choice (:func:`~seesr.engines.ladder.runnable`) and
the first engine's plan, run no further.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from seesr.engines.base import Engine
from seesr.engines.ladder import Attempt, run_ladder, runnable
from seesr.engines.realesrgan.engine import RealesrganEngine
from seesr.engines.seesr.engine import SeesrEngine
from seesr.engines.seesr.planner import RunPlan
from seesr.errors import ConfigError
from seesr.imaging.colorfix import fix_colours
from seesr.imaging.compare import compare_image
from seesr.imaging.convert import pil_to_tensor, resize, scale_for_size
from seesr.imaging.fidelity import FidelityReport, fidelity_report
from seesr.imaging.prefilter import nl_means
from seesr.io.naming import PILLOW_FORMATS, SUFFIX_FORMATS, concrete_format, format_of
from seesr.io.read import InputImage, read_image
from seesr.io.write import recombine, save_image
from seesr.progress import RECORD_FIELDS, ProgressCallback, RunStart, StageHook, StageTracker
from seesr.runtime.devices import resolve_device
from seesr.runtime.memory import PeakMemory, release_memory
from seesr.settings.declare import Settings, setting_info
from seesr.settings.resolve import resolve_settings
from seesr.weights import WeightPaths

if TYPE_CHECKING:
    import torch

    from seesr.engines.realesrgan.upscaler import RealEsrganUpscaler
    from seesr.engines.seesr.pipeline import SeesrPipeline

ImageInput = str | Path | bytes | Image.Image | np.ndarray
ENGINES: dict[str, type[Engine]] = {"seesr": SeesrEngine, "realesrgan": RealesrganEngine}
"""Every engine by the name the ``engine`` setting takes (:data:`seesr.settings.models.ENGINES`)."""


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
    source: InputImage | None = field(default=None, repr=False)

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
        16-bit input written as PNG or TIFF stays 16-bit; the input's metadata is kept where the
        format holds it, unless the settings' ``strip_metadata``."""
        path = Path(path)
        known = path.suffix.lower() in SUFFIX_FORMATS
        fmt = format_of(path, format) if known else self._concrete_format(format or self.settings.output_format)
        sixteen = self.source is not None and self.source.bit_depth == 16 and fmt in ("png", "tiff")
        return save_image(
            self.image, path, format=fmt, quality=self.settings.quality, overwrite=overwrite, sixteen_bit=sixteen,
            high_bit_source=self.source if sixteen else None, strip_metadata=self.settings.strip_metadata,
            metadata=self.source.metadata if self.source is not None else None,
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
    :class:`~seesr.progress.TerminalProgress` draws them). ``stage_hook``: the context every stage
    of every engine runs under (see :data:`~seesr.progress.StageHook`; tests inject out-of-memory
    errors with it). Other keyword arguments are default settings for every call (see :class:`Settings`)."""

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
        self.stage_hook: StageHook | None = None
        resolve_settings(defaults, config_file=config_file)
        self.engines: dict[str, Engine] = {name: engine(weights, download) for name, engine in ENGINES.items()}

    # ---------------------------------------------------------------- models
    def pipeline(self, settings: Settings) -> SeesrPipeline:
        """The SeeSR pipeline for these settings' model, device and dtype (loaded once per model;
        WeightsError if missing, found before diffusers is imported)."""
        return self.engines["seesr"].load(settings)

    @property
    def loaded(self) -> SeesrPipeline | None:
        """The SeeSR pipeline loaded now: None before the first SeeSR call and after :meth:`unload`."""
        return self.engines["seesr"].pipeline

    def realesrgan(self, settings: Settings) -> RealEsrganUpscaler:
        """The Real-ESRGAN network: the settings' Real-ESRGAN model, else (the SeeSR fallback) x4plus;
        loaded once per model, device and precision."""
        return self.engines["realesrgan"].load(settings)

    def unload(self) -> None:
        """Drop every network and return their memory."""
        for engine in self.engines.values():
            engine.unload()
        release_memory()

    # ---------------------------------------------------------------- the call
    def settings(self, arguments: dict[str, Any]) -> Settings:
        return resolve_settings({**self.defaults, **arguments}, config_file=self.config_file)

    @staticmethod
    def sized(settings: Settings, size: tuple[int, int]) -> Settings:
        """The settings for an input of ``size``: a ``width`` / ``height`` becomes the scale that gives
        it (ConfigError when that scale is outside the ``scale`` setting's range); else unchanged."""
        if settings.width is None and settings.height is None:
            return settings
        scale = scale_for_size(size, settings.width, settings.height)
        low, high = setting_info("scale").range
        if not low <= scale <= high:
            asked = " and ".join(f"{name}={value}" for name, value in (("width", settings.width), ("height", settings.height)) if value)
            raise ConfigError(
                f"{asked} on a {size[0]}x{size[1]} input is a scale of {scale:.3g}; seesr upscales by {low:g} to "
                f"{high:g}: ask for {round(size[0] * low)}x{round(size[1] * low)} to {round(size[0] * high)}x{round(size[1] * high)} or within"
            )
        return dataclasses.replace(settings, scale=scale)

    def engines_for(self, settings: Settings) -> list[Engine]:
        """The engines a call may step through, in turn: the one the settings ask for, then the
        ones standing in for it (its ``fallback``, and so on), unless ``no_fallback``."""
        chain = [self.engines[settings.engine]]
        while not settings.no_fallback and chain[-1].fallback is not None:
            chain.append(self.engines[chain[-1].fallback])
        return chain

    def plan(self, image: ImageInput, **arguments: Any) -> tuple[Settings, RunPlan, tuple[int, int]]:
        """What a SeeSR call would do, without running it: settings, plan (with estimated peak
        memory) and output size. Does not load the networks."""
        rgb = read_image(image).rgb
        settings = self.sized(self.settings(arguments), rgb.size)
        plan = self.engines["seesr"].plan(rgb, settings)
        return settings, plan.detail, plan.output_size

    def dry_run(self, image: ImageInput, **arguments: Any) -> DryRun:
        """What :meth:`upscale` would run on ``image``: the engine (Real-ESRGAN when asked for, or
        when SeeSR's weights are missing and the fallback is allowed), model, device, dtype, tile
        plan and estimated peak memory. Loads no network, downloads nothing, imports no diffusers."""
        source = read_image(image)
        settings = self.sized(self.settings(arguments), source.size)
        engines, reason = self.engines_for(settings), None
        if not self.download:  # weights that would be downloaded first are taken as there
            engines, reason = runnable(engines, settings, download=False)
        plan = engines[0].plan(source.rgb, settings)
        return DryRun(plan.start, source.size, plan.output_size, plan.estimated_peak_bytes, reason)

    def upscale(self, image: ImageInput, **arguments: Any) -> Result:
        """Upscale one image (path, bytes, PIL image or numpy array) once; see :class:`Settings`
        (``num_samples`` above 1 is a ConfigError: :meth:`upscale_samples` makes several)."""
        settings = self.settings(arguments)
        if settings.num_samples > 1:
            raise ConfigError(
                f"num_samples={settings.num_samples}: Upscaler.upscale() makes one image; call "
                "Upscaler.upscale_samples() for several"
            )
        return self._run(image, settings)[0]

    def upscale_samples(self, image: ImageInput, **arguments: Any) -> list[Result]:
        """Upscale one image ``num_samples`` times with SeeSR, with the seeds ``seed``, ``seed + 1``, ...
        (a random ``seed`` when none is given): sample k is what :meth:`upscale` gives with
        ``seed + k``. The tags, prompt embeddings and the input's encoding are computed once, each
        sample draws its own noise; the results share the call's timings and peak memory. When
        Real-ESRGAN stands in for SeeSR (its weights missing, out of memory), its one deterministic
        image is every sample's result, each with the fallback reason and no seed."""
        return self._run(image, self.settings(arguments))

    def _run(self, image: ImageInput, settings: Settings) -> list[Result]:
        source = read_image(image)
        settings = self.sized(settings, source.rgb.size)
        rgb = nl_means(source.rgb, settings.denoise) if settings.denoise else source.rgb
        seed = settings.seed if settings.seed is not None else random.randrange(2**32)
        start = time.perf_counter()
        with PeakMemory(resolve_device(settings.device)) as peak:
            tracker = StageTracker(self.progress, self.stage_hook)
            run_settings = dataclasses.replace(settings, seed=seed)
            ladder = run_ladder(rgb, run_settings, self.engines_for(settings), tracker, download=self.download)
        by_seesr = ladder.engine.name == "seesr"
        output = ladder.output
        images: list[Image.Image] = []
        finishing = time.perf_counter()
        for pixels in output.pixels.split(1):
            images.append(finish(pixels, output.reference, source, settings.color_fix, ladder.plan.output_size))
        timings = {**output.timings, "colorfix": time.perf_counter() - finishing, "total": time.perf_counter() - start}
        bicubic = resize(source.rgb, ladder.plan.output_size)
        fidelity = [fidelity_report(bicubic, each) for each in images]
        results = [
            Result(
                image=recombine(images[min(sample, len(images) - 1)], source),
                engine=ladder.engine.name,
                settings=settings,
                seed=seed + sample if by_seesr else None,
                model=ladder.plan.start.model,
                tags=output.tags,
                prompt=output.prompt,
                plan=output.plan,
                timings=timings,
                peak_memory_bytes=peak.total,
                attempts=ladder.attempts,
                fallback_reason=ladder.reason,
                fidelity=fidelity[min(sample, len(images) - 1)],
                source=source,
            )
            for sample in range(settings.num_samples)
        ]  # fmt: skip
        del ladder, output
        release_memory()
        return results


def finish(
    pixels: torch.Tensor, reference: torch.Tensor | None, source: InputImage, color_fix: str, size: tuple[int, int]
) -> Image.Image:
    """The one step after any engine, for one image (1, 3, H, W): its colours from ``reference``
    (None: the input, bicubic-upscaled to it) by ``color_fix``, quantised to 8 bits, at the output
    ``size``."""
    height, width = pixels.shape[-2:]
    reference = reference if reference is not None else pil_to_tensor(resize(source.rgb, (width, height)))
    return resize(fix_colours(pixels.to(reference.device), reference, color_fix), size)


def upscale(image: ImageInput, preset: str = Settings.preset, scale: float | None = None, **arguments: Any) -> Result:
    """Upscale one image with a fresh :class:`Upscaler` (use an Upscaler to serve many images);
    ``scale`` None: ``Settings.scale`` unless a ``width`` or ``height`` is given."""
    weights = arguments.pop("weights", None)
    if scale is not None:
        arguments["scale"] = scale
    return Upscaler(weights).upscale(image, preset=preset, **arguments)


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
