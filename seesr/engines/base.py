"""The shape every engine has, and what passes between an engine, the ladder and the API.

An engine upscales one RGB image. The API builds each engine once (it keeps its networks between
calls) and steps through them with the out-of-memory ladder (:mod:`seesr.engines.ladder`):

- ``check(settings, download, dry)``: raise :class:`~seesr.errors.MissingWeightsError` when its
  weights are absent (the API then runs the engine's ``fallback`` instead, saying
  ``missing_reason``); a dry run and a run decide with this one call (a ``dry`` one downloads
  nothing: it returns what the run would download first, or raises when that could not start);
- ``load(settings, tracker)``: its networks for these settings (once; a ``load`` stage event when
  it loads);
- ``plan(image, settings)``: what it would do with ``image``, without running: the :class:`Plan`
  (engine, model, device, dtype, tiles, output size, estimated peak memory) a dry run prints;
- ``rungs(plan)``: the ladder's steps for that plan, each a :class:`Rung`, largest first;
- ``run(image, plan, rung, tracker)``: one rung of the plan: the :class:`EngineOutput`, before the
  colour fix;
- ``out_of_memory(plan, where)``: the error when its last rung ran out of memory and nothing
  stands in; ``describe()``: the model loaded and where its weights came from; ``unload()``.

The colour fix, the resize to the output size and the fidelity report are one step after any
engine (:meth:`seesr.api.Upscaler.upscale`). A third engine is one module with this shape, named
in :data:`seesr.api.ENGINES` and ``seesr.settings.models.ENGINES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from seesr.errors import MissingWeightsError, OutOfMemoryError
from seesr.progress import RunStart, StageTracker
from seesr.runtime.memory import release_memory
from seesr.settings.declare import Settings

if TYPE_CHECKING:
    import torch
    from PIL import Image


@dataclass(frozen=True)
class Plan:
    """What one engine will do with one image, before anything runs."""

    start: RunStart
    """Engine, model, device, dtype, steps and the tiles in words: the display's first line."""
    output_size: tuple[int, int]
    estimated_peak_bytes: int
    settings: Settings
    detail: Any
    """The engine's own plan (SeeSR: a :class:`~seesr.engines.seesr.planner.RunPlan`)."""


@dataclass(frozen=True)
class Rung:
    """One step of the out-of-memory ladder."""

    label: str
    """How a fallback reason names it (``planned tiles``)."""
    settings: str
    """The rung in words, as an :class:`~seesr.engines.ladder.Attempt` records it."""
    detail: Any
    """What :meth:`Engine.run` takes (SeeSR: a RunPlan; Real-ESRGAN: its tile)."""
    start: RunStart | None = None
    """Said as the rung starts (None: nothing new to say)."""


@dataclass
class EngineOutput:
    """An engine's image, before the colour fix and the resize to the output size."""

    pixels: torch.Tensor
    """(1, 3, H, W) float in [0, 1]."""
    reference: torch.Tensor | None = None
    """Where the colour fix takes the colours from, the size of ``pixels`` (None: the input,
    bicubic-upscaled to it)."""
    tags: str | None = None
    prompt: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    plan: Any = None
    """The plan of the rung that made it (SeeSR: a RunPlan), else None."""


class Engine(Protocol):
    """The shape every engine has (see the module notes)."""

    name: str
    """The ``engine`` setting's value."""
    title: str
    """How messages name it (``SeeSR``)."""
    fallback: str | None
    """The engine that stands in when this one cannot run, or None."""

    def check(self, settings: Settings, download: bool, dry: bool = False) -> str | None: ...

    def missing_reason(self, error: MissingWeightsError) -> str: ...

    def load(self, settings: Settings, tracker: StageTracker | None = None) -> object: ...

    def plan(self, image: Image.Image, settings: Settings) -> Plan: ...

    def rungs(self, plan: Plan) -> list[Rung]: ...

    def run(self, image: Image.Image, plan: Plan, rung: Rung, tracker: StageTracker) -> EngineOutput: ...

    def out_of_memory(self, plan: Plan, where: str) -> OutOfMemoryError: ...

    def describe(self) -> str: ...

    def unload(self) -> None: ...


class HeldNetworks:
    """What every engine keeps between calls: its networks (``held``, None until loaded) and the key
    (model, device, precision) they were loaded for."""

    held: Any = None
    key: tuple | None = None

    def unload(self) -> None:
        """Drop the networks and return their memory."""
        self.held, self.key = None, None
        release_memory()
