"""The out-of-memory ladder: when memory runs out, degrade and say so, never crash.

Rungs, in order: SeeSR with the planned tiles -> SeeSR with half the tiles and one tile at a time
-> the same with the networks offloaded to the CPU between stages -> Real-ESRGAN (its planned or
chosen tile, then the smaller of 256, 128, 64 px). Between rungs, references are dropped and caches emptied. Each
attempt is recorded; the result names the engine that produced the image. Missing SeeSR weights
go straight to Real-ESRGAN, with the reason.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch
from PIL import Image

from seesr.errors import OutOfMemoryError, WeightsError
from seesr.engines.seesr.planner import RunPlan

logger = logging.getLogger(__name__)

SEESR_RUNGS = ("planned tiles", "smaller tiles", "smaller tiles with CPU offload")
"""The SeeSR rungs of :func:`seesr_rungs`, in words."""


@dataclass(frozen=True)
class Attempt:
    """One rung tried: which engine, with what settings, and how it ended."""

    engine: str
    settings: str
    outcome: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass
class LadderResult:
    """The image, the engine that made it, every attempt, and (SeeSR only) its pipeline output."""

    image: Image.Image
    engine: str
    attempts: list[Attempt] = field(default_factory=list)
    reason: str | None = None
    seesr_output: object | None = None

    @property
    def plan(self) -> RunPlan | None:
        return getattr(self.seesr_output, "plan", None)


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA OOM, host allocation failures and MemoryError."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "out of memory" in message or "can't allocate memory" in message or "failed to allocate" in message
    )


def free_memory() -> None:
    """Drop unreachable tensors and return cached device memory."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class OomInjector:
    """A stage hook (``SeesrPipeline.stage_hook``) that raises an out-of-memory error as named
    stages start, a set number of times.

    ``OomInjector({"denoise": 2})`` fails the next two runs of the denoising stage. Stage names
    are those of :meth:`seesr.engines.seesr.pipeline.SeesrPipeline.stage` (``tag``, ``text``, ``encode``,
    ``denoise``, ``decode``, ``colorfix``) plus ``"realesrgan"``."""

    def __init__(self, failures: dict[str, int]) -> None:
        self.remaining = dict(failures)
        self.raised: list[str] = []

    def __call__(self, stage: str) -> AbstractContextManager[None]:
        if self.remaining.get(stage, 0) > 0:
            self.remaining[stage] -= 1
            self.raised.append(stage)
            raise torch.OutOfMemoryError(f"injected out-of-memory at stage {stage!r}")
        return nullcontext()


def seesr_rungs(plan: RunPlan) -> list[RunPlan]:
    """The SeeSR rungs (:data:`SEESR_RUNGS`): the plan, a smaller plan, the smaller plan with CPU offload."""
    smaller = plan.smaller()
    return [plan, smaller, dataclasses.replace(smaller, offload=True)]


def run_ladder(
    image: Image.Image,
    *,
    scale: float,
    plan: RunPlan | None,
    run_seesr: Callable[[RunPlan], object] | None,
    load_realesrgan: Callable[[], object],
    allow_fallback: bool = True,
    skip_reason: str | None = None,
    stage_hook: Callable[[str], AbstractContextManager[object]] | None = None,
    stage: Callable[[], str | None] = lambda: None,
    realesrgan_tile: int = 0,
    realesrgan_tile_pad: int | None = None,
) -> LadderResult:
    """Upscale ``image``, going down the ladder on out-of-memory errors.

    ``run_seesr(plan)`` returns a pipeline output (``images[0]`` is the result); None means SeeSR
    cannot run (``skip_reason`` says why, e.g. missing weights; None: Real-ESRGAN was asked for,
    which is no fallback). ``load_realesrgan()`` returns an engine with ``tile_rungs(height, width,
    tile, tile_pad)`` and ``upscale(image, scale=, tile=, tile_pad=)``; ``realesrgan_tile`` (0: the
    engine's plan) and ``realesrgan_tile_pad`` (None: the engine's default) are its first rung.
    ``stage()`` names the stage running when memory ran out (for the reason). With
    ``allow_fallback=False`` only the first rung runs and an out-of-memory error is raised as
    :class:`OutOfMemoryError` with advice.
    """
    attempts: list[Attempt] = []
    if run_seesr is not None:
        if plan is None:
            raise ValueError("run_ladder needs the SeeSR plan to run SeeSR")
        failed_in: list[str] = []
        for label, rung_plan in zip(SEESR_RUNGS, seesr_rungs(plan) if allow_fallback else [plan]):
            start = time.perf_counter()
            try:
                output = run_seesr(rung_plan)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                where = stage() or "setup"
                failed_in.append(f"{label}: {where}")
                outcome = f"out of memory in {where}: {error}"
                attempts.append(Attempt("seesr", rung_plan.describe(), outcome, _since(start)))
                logger.info("SeeSR ran out of memory in %s with %s (%s); %s", where, label, rung_plan.describe(), error)
                del error
                free_memory()
                continue
            attempts.append(Attempt("seesr", rung_plan.describe(), "ok", _since(start)))
            return LadderResult(output.images[0], "seesr", attempts, seesr_output=output)
        if not allow_fallback:
            raise OutOfMemoryError(
                f"SeeSR ran out of memory in {where} ({plan.describe()}). Use the 'memory' "
                "preset, a smaller scale, smaller tiles, or allow the fallback chain (drop no_fallback)."
            )
        skip_reason = f"SeeSR ran out of memory on every rung ({'; '.join(failed_in)})"
    elif not allow_fallback:
        raise WeightsError(skip_reason or "SeeSR cannot run and the fallback is off")

    engine = load_realesrgan()
    pad = {} if realesrgan_tile_pad is None else {"tile_pad": realesrgan_tile_pad}
    for tile in engine.tile_rungs(image.height, image.width, realesrgan_tile, **pad):
        start = time.perf_counter()
        described = f"tile {tile}" if tile else "untiled"
        try:
            with stage_hook("realesrgan") if stage_hook is not None else nullcontext():
                result = engine.upscale(image, scale=scale, tile=tile, **pad)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            attempts.append(Attempt("realesrgan", described, f"out of memory: {error}", _since(start)))
            del error
            free_memory()
            continue
        attempts.append(Attempt("realesrgan", described, "ok", _since(start)))
        if skip_reason is not None:
            logger.info("upscaled with Real-ESRGAN instead of SeeSR: %s", skip_reason)
        return LadderResult(result, "realesrgan", attempts, reason=skip_reason)
    raise OutOfMemoryError(
        "out of memory on every rung, Real-ESRGAN with 64 px tiles included: free memory (close other "
        "programs or GPU jobs), or use a smaller scale or a smaller input"
    )


def _since(start: float) -> float:
    return time.perf_counter() - start
