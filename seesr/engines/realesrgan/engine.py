"""The Real-ESRGAN engine: a bundled model or a model file spandrel loads, in the shape every engine
has (:mod:`seesr.engines.base`).

``check``: nothing (the bundled models ship with the install); ``load``: the settings' Real-ESRGAN
model, else x4plus (standing in for SeeSR), once per model, device and precision; ``plan``: the
tile for the free memory and the estimated peak, from the loaded network, else from the model
table or the model file's header (a dry run reads no tensor); ``rungs``: the planned tile, then
the smaller of 256, 128 and 64 px; ``run``: the network at its own scale, resized to the settings'.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from seesr.engines.base import EngineOutput, HeldNetworks, Plan, Rung
from seesr.engines.realesrgan.sources import inspect_model_file, load_realesrgan, planned_precision
from seesr.engines.realesrgan.upscaler import (
    RealEsrganUpscaler, auto_tile, batch_pixels_for, estimated_peak_bytes, tile_rungs,
)  # fmt: skip
from seesr.errors import MissingWeightsError, OutOfMemoryError
from seesr.imaging.convert import output_size, pil_to_tensor
from seesr.progress import RunStart, StageProgress, StageTracker
from seesr.runtime.devices import dtype_name, resolve_device
from seesr.runtime.memory import free_memory_bytes
from seesr.settings.declare import Settings
from seesr.settings.models import DEFAULT_MODEL, REALESRGAN_MODELS, canonical_model, is_model_file, is_realesrgan_model
from seesr.weights import WeightPaths


@dataclass(frozen=True)
class Tiling:
    """How Real-ESRGAN cuts one image: ``tile`` px (0: untiled) with ``tile_pad`` px of context."""

    tile: int
    tile_pad: int


def realesrgan_tiles(tile: int, scale: float, net_scale: int | None) -> str:
    """The Real-ESRGAN plan in words: network scale, resize, tiles."""
    network = f"x{net_scale} network" if net_scale else "the model file's network"
    resize_to = "" if scale == net_scale else f", resized to x{scale:g}"
    tiles = f"tiles of {tile} px" if tile else "untiled when it fits the free memory, else tiles"
    return f"{network}{resize_to}; {tiles} (smaller on out-of-memory)"


class RealesrganEngine(HeldNetworks):
    """Real-ESRGAN with the bundled models from ``weights`` (a folder holding official files or the
    cached conversions; default: ``weights/`` or ``$SEESR_WEIGHTS``) or a model file."""

    name = "realesrgan"
    title = "Real-ESRGAN"
    fallback = None

    def __init__(self, weights: str | Path | WeightPaths | None = None, download: bool = False) -> None:
        self.weights_dir = None if isinstance(weights, WeightPaths) or weights is None else Path(weights)

    @property
    def network(self) -> RealEsrganUpscaler | None:
        """The network loaded now, or None."""
        return self.held

    @staticmethod
    def model_for(settings: Settings) -> str:
        """The settings' Real-ESRGAN model, else (standing in for SeeSR) x4plus."""
        return settings.model if is_realesrgan_model(settings.model) else DEFAULT_MODEL

    def _key_for(self, settings: Settings) -> tuple:
        return self.model_for(settings), settings.device, settings.fp32

    def check(self, settings: Settings, download: bool, dry: bool = False) -> None:
        """Nothing to check: the bundled models come with the install (a model file is read on load)."""

    def missing_reason(self, error: MissingWeightsError) -> str:
        return f"Real-ESRGAN weights are missing: {' '.join(str(error).split())}"

    def load(self, settings: Settings, tracker: StageTracker | None = None) -> RealEsrganUpscaler:
        """The network of :meth:`model_for`, loaded once per model, device and precision."""
        if self.network is None or self.key != self._key_for(settings):
            if self.network is None and tracker is not None:
                tracker(StageProgress("load", 0, 0))
            self.held = None  # the old network's memory is free before the new one loads
            self.held = load_realesrgan(
                self.weights_dir, device=settings.device, model=self.model_for(settings), fp32=settings.fp32
            )
            self.key = self._key_for(settings)
        return self.network

    def describe(self) -> str:
        """The model loaded and the file its weights came from."""
        if self.network is None:
            return "nothing loaded"
        return f"{self.network.name} from {self.network.source}"

    def plan(self, image: Image.Image, settings: Settings) -> Plan:
        """The tile for the free memory now and the estimated peak (the loaded network's numbers,
        else the model table's or the model file header's, in the planned precision)."""
        if self.network is not None and self.key == self._key_for(settings):
            network = self.network
            model, device, dtype, net_scale = network.name, network.device, network.dtype, network.net_scale
        else:
            model = canonical_model(self.model_for(settings))
            device = resolve_device(settings.device)
            dtype = planned_precision(device, settings.fp32)
            if is_model_file(model):  # its header says what it is; its tensors are read only to run it
                header = inspect_model_file(model)
                model, net_scale = header.name, header.scale
            else:
                net_scale = REALESRGAN_MODELS[model].network_scale
        width, height = image.size
        scale = net_scale or 4  # a model file's scale is known once it is read: plan for x4
        budget = batch_pixels_for(free_memory_bytes(device), scale, dtype)
        tile = settings.tile or auto_tile(height, width, budget, settings.tile_pad)
        peak = estimated_peak_bytes(height, width, tile, scale, dtype, budget, settings.tile_pad)
        start = RunStart(
            self.name, model, str(device), dtype_name(dtype), None, realesrgan_tiles(settings.tile, settings.scale, net_scale)
        )
        return Plan(start, output_size(width, height, settings.scale), peak, settings, Tiling(tile, settings.tile_pad))

    def rungs(self, plan: Plan) -> list[Rung]:
        """The planned tile, then the smaller of 256, 128 and 64 px; said once, as the first starts."""
        tiles = tile_rungs(plan.detail.tile)
        return [
            Rung(f"tile {tile}" if tile else "untiled", f"tile {tile}" if tile else "untiled",
                 replace(plan.detail, tile=tile), plan.start if index == 0 else None)
            for index, tile in enumerate(tiles)
        ]  # fmt: skip

    def run(self, image: Image.Image, plan: Plan, rung: Rung, tracker: StageTracker) -> EngineOutput:
        """The network on one rung's tiles, resized to the settings' scale."""
        self.network.progress = tracker
        hook = tracker.stage_hook
        with hook("realesrgan") if hook is not None else nullcontext():
            out = self.network.upscale(image, scale=plan.settings.scale, tile=rung.detail.tile, tile_pad=rung.detail.tile_pad)
        return EngineOutput(pil_to_tensor(out))

    def out_of_memory(self, plan: Plan, where: str) -> OutOfMemoryError:
        return OutOfMemoryError(
            "out of memory on every rung, Real-ESRGAN with 64 px tiles included: free memory (close other "
            "programs or GPU jobs), or use a smaller scale or a smaller input"
        )
