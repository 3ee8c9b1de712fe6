"""The SeeSR engine: :class:`~seesr.engines.seesr.pipeline.SeesrPipeline` in the shape every engine
has (:mod:`seesr.engines.base`).

``check``: the weights of the settings' model, and its base folder, are found (downloaded when
asked); ``load``: the pipeline for the model, device and dtype (once per model); ``plan``: the
working size and the tiles for the free memory, from the loaded networks, else from the full-size
networks in this dtype (so a dry run imports no diffusers); ``rungs``: the planned tiles, half the
tiles one at a time, the same with the networks offloaded to the CPU; ``run``: the pipeline on one
rung, which returns the decoded image and the upscaled input its colours come from.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from seesr.engines.base import EngineOutput, HeldNetworks, Plan, Rung
from seesr.engines.seesr.kds import KdsConfig
from seesr.engines.seesr.planner import RunPlan, plan_run, plan_working_size
from seesr.engines.seesr.sampling import NoiseSchedule
from seesr.errors import MissingWeightsError, OutOfMemoryError
from seesr.progress import RunStart, StageProgress, StageTracker
from seesr.runtime.devices import dtype_name, resolve_device
from seesr.settings.declare import Settings
from seesr.settings.models import MODELS
from seesr.weights import DOWNLOAD_COMMAND, MISSING_NAMED, WeightPaths, default_weights_dir, download_plan, missing_summary

if TYPE_CHECKING:
    from seesr.engines.seesr.pipeline import SeesrPipeline

SEESR_RUNGS = ("planned tiles", "smaller tiles", "smaller tiles with CPU offload")
"""The rungs of :meth:`SeesrEngine.rungs`, in words."""
FULL_SIZE_PARAMETERS = int(2.25e9)
"""Parameters of the full-size networks, for plans made before the networks are loaded."""


def kds_config(settings: Settings) -> KdsConfig | None:
    """Kernel Density Steering for these settings, None with a single particle (plain sampling)."""
    if settings.kds_particles <= 1:
        return None
    return KdsConfig(**settings.arguments_for("kds"))


class SeesrEngine(HeldNetworks):
    """SeeSR-Turbo or SeeSR on the weights in ``weights`` (a folder, or :class:`WeightPaths`;
    default: ``weights/`` or ``$SEESR_WEIGHTS``, then the Hugging Face cache); ``download``: fetch
    what is missing when loading."""

    name = "seesr"
    title = "SeeSR"
    fallback = "realesrgan"

    def __init__(self, weights: str | Path | WeightPaths | None = None, download: bool = False) -> None:
        self.weights = weights
        self.download = download

    @property
    def pipeline(self) -> SeesrPipeline | None:
        """The pipeline loaded now, or None."""
        return self.held

    # ---------------------------------------------------------------- weights and networks
    def weight_paths(self, settings: Settings, *, download: bool = False) -> WeightPaths:
        """Where the weights of ``settings.model`` are (MissingWeightsError naming the missing ones)."""
        if isinstance(self.weights, WeightPaths):
            return self.weights
        return WeightPaths.resolve(self.weights, download=download, need=[MODELS[settings.model].base])

    def loaded_for(self, settings: Settings) -> bool:
        return self.pipeline is not None and self.pipeline.model == settings.model

    def check(self, settings: Settings, download: bool, dry: bool = False) -> str | None:
        """MissingWeightsError when a file of the model, or its base folder, is absent (found
        before diffusers is imported; with ``download``, after a download was tried); nothing to
        check once the model is loaded. ``dry`` downloads nothing: with ``download``, missing files
        that could be downloaded now (not offline, a source host reachable) give what the run would
        download first (:class:`~seesr.weights.DownloadPlan`), else the error saying what was tried."""
        if self.loaded_for(settings):
            return None
        try:
            self.weight_paths(settings, download=download and not dry).check().base_folder(settings.model)
        except MissingWeightsError as error:
            if not (dry and download) or isinstance(self.weights, WeightPaths):
                raise
            plan = download_plan(error.missing, self.weights)
            return f"{plan.describe()}, which depends on the network"
        return None

    def missing_reason(self, error: MissingWeightsError) -> str:
        """Why SeeSR cannot run, in one line: the missing files (by group when many), where, and
        what was tried to get them."""
        if not error.missing:
            return "SeeSR weights are missing: " + " ".join(str(error).split())
        listed = "" if len(error.missing) <= MISSING_NAMED else " (`seesr weights list` names them)"
        found = f"SeeSR weights are missing: {missing_summary(error.missing)} not found in {self._where()}{listed}"
        if error.tried is None:
            return f"{found}; run `{DOWNLOAD_COMMAND}`"
        return f"{found}; {error.tried}"

    def _where(self) -> str:
        if isinstance(self.weights, WeightPaths):
            return "the given weight paths"
        return f"{Path(self.weights) if self.weights is not None else default_weights_dir()} or the Hugging Face cache"

    def load(self, settings: Settings, tracker: StageTracker | None = None) -> SeesrPipeline:
        """The pipeline for these settings' model, device and dtype (loaded once per model; moved
        when the device or dtype changes; compiled when ``settings.compile``)."""
        device = resolve_device(settings.device)
        dtype = settings.torch_dtype(device)
        if self.pipeline is not None and self.pipeline.model != settings.model:
            self.unload()  # one model's networks at a time
        if self.pipeline is None:
            if tracker is not None:
                tracker(StageProgress("load", 0, 0))
            paths = self.weight_paths(settings, download=self.download).check()
            from seesr.engines.seesr.pipeline import SeesrPipeline

            self.held = SeesrPipeline.from_pretrained(paths, model=settings.model, device=device, torch_dtype=dtype)
        elif self.key != (device, dtype):
            self.pipeline.to(device, dtype)
        self.key = (device, dtype)
        self.pipeline.use_attention(settings.attention)
        if settings.compile:
            self.pipeline.compile()
        return self.pipeline

    def describe(self) -> str:
        """The model loaded and where its weights are."""
        model = self.pipeline.model if self.pipeline is not None else "nothing loaded"
        return f"{model}, weights from {self._where()}"

    # ---------------------------------------------------------------- the engine shape
    def steps(self, settings: Settings) -> int:
        """The denoising steps a call runs: the timesteps at or below ``start_steps`` (ConfigError
        when none is), by the model's scheduler config; weights not there yet: the steps asked for."""
        if self.loaded_for(settings):
            schedule = self.pipeline.schedule
        else:
            try:
                base = self.weight_paths(settings).base_folder(settings.model)
            except MissingWeightsError:
                return settings.steps
            schedule = NoiseSchedule.from_pretrained(base / "scheduler")
        return len(schedule.timesteps(settings.steps, settings.start_steps))

    def plan(self, image: Image.Image, settings: Settings) -> Plan:
        """The working size (computed here, once) and the tiles for the free memory."""
        sizes = plan_working_size(image.width, image.height, settings.scale, settings.process_size)
        planning = dict(
            batch_multiplier=settings.batch_multiplier(), max_latent_tile=settings.max_latent_tile,
            overrides=settings.plan_overrides(),
        )  # fmt: skip
        if self.loaded_for(settings):
            device, dtype = self.pipeline.device, self.pipeline.dtype
            run_plan = self.pipeline.plan_for(*sizes.work_size, **planning)
        else:  # nothing loaded yet: plan for the full-size weights in this dtype
            device = resolve_device(settings.device)
            dtype = settings.torch_dtype(device)
            weights = FULL_SIZE_PARAMETERS * (torch.finfo(dtype).bits // 8)
            run_plan = plan_run(*sizes.work_size, device=device, dtype=dtype, weights_bytes=weights, **planning)
        run_plan = dataclasses.replace(run_plan, sizes=sizes)
        start = RunStart(self.name, settings.model, str(device), dtype_name(dtype), self.steps(settings), run_plan.describe())
        return Plan(start, sizes.output_size, run_plan.estimated_peak_bytes, settings, run_plan)

    def rungs(self, plan: Plan) -> list[Rung]:
        """The plan, half the tiles one at a time, the same with CPU offload (:data:`SEESR_RUNGS`);
        with ``no_fallback`` the plan only."""
        first: RunPlan = plan.detail
        smaller = first.smaller()
        plans = [first] if plan.settings.no_fallback else [first, smaller, dataclasses.replace(smaller, offload=True)]
        return [
            Rung(label, each.describe(), each, dataclasses.replace(plan.start, tiles=each.describe()))
            for label, each in zip(SEESR_RUNGS, plans)
        ]

    def run(self, image: Image.Image, plan: Plan, rung: Rung, tracker: StageTracker) -> EngineOutput:
        """The pipeline on one rung, asked for the decoded image before its colour fix (the API
        fixes the colours of every engine's output alike) and the upscaled input to fix it from."""
        pipe = self.pipeline
        pipe.progress, pipe.stage_hook = tracker, tracker.stage_hook
        settings = plan.settings
        keywords = {**settings.arguments_for("pipeline"), "color_fix": None}
        output = pipe(image, **keywords, plan=rung.detail, kds=kds_config(settings), seed=settings.seed, output_type="pt")
        return EngineOutput(output.images, output.condition, output.tags, output.prompt, output.timings, output.plan)

    def out_of_memory(self, plan: Plan, where: str) -> OutOfMemoryError:
        return OutOfMemoryError(
            f"SeeSR ran out of memory in {where} ({plan.detail.describe()}). Use the 'memory' "
            "preset, a smaller scale, smaller tiles, or allow the fallback chain (drop no_fallback)."
        )
