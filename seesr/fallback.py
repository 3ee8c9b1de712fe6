"""The out-of-memory ladder: when memory runs out, degrade and say so, never crash.

Rungs, in order: SeeSR with the planned tiles -> SeeSR with half the tiles and one tile at a time
-> the same with the networks offloaded to the CPU between stages -> Real-ESRGAN x4plus (itself
retried with smaller tiles). Between rungs, references are dropped and caches emptied. Each
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
from seesr.planner import RunPlan

logger = logging.getLogger(__name__)

REALESRGAN_TILES = (256, 128, 64)
"""Real-ESRGAN tile sizes tried in turn (input pixels)."""


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
    are those of :data:`seesr.pipeline.STAGES` plus ``"realesrgan"``."""

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
    """The SeeSR rungs: the plan, a smaller plan, the smaller plan with CPU offload."""
    smaller = plan.smaller()
    return [plan, smaller, dataclasses.replace(smaller, offload=True)]


def run_ladder(
    image: Image.Image,
    *,
    scale: float,
    plan: RunPlan,
    run_seesr: Callable[[RunPlan], object] | None,
    load_realesrgan: Callable[[], object],
    allow_fallback: bool = True,
    skip_reason: str | None = None,
    stage_hook: Callable[[str], AbstractContextManager[object]] | None = None,
) -> LadderResult:
    """Upscale ``image``, going down the ladder on out-of-memory errors.

    ``run_seesr(plan)`` returns a pipeline output (``images[0]`` is the result); None means SeeSR
    cannot run (``skip_reason`` says why, e.g. missing weights). ``load_realesrgan()`` returns an
    engine with ``upscale(image, scale=, tile=)``. With ``allow_fallback=False`` only the first
    rung runs and an out-of-memory error is raised as :class:`OutOfMemoryError` with advice.
    """
    attempts: list[Attempt] = []
    if run_seesr is not None:
        for rung_plan in seesr_rungs(plan) if allow_fallback else [plan]:
            start = time.perf_counter()
            try:
                output = run_seesr(rung_plan)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                attempts.append(Attempt("seesr", rung_plan.describe(), f"out of memory: {error}", _since(start)))
                logger.warning("SeeSR ran out of memory (%s); %s", rung_plan.describe(), error)
                del error
                free_memory()
                continue
            attempts.append(Attempt("seesr", rung_plan.describe(), "ok", _since(start)))
            return LadderResult(output.images[0], "seesr", attempts, seesr_output=output)
        if not allow_fallback:
            raise OutOfMemoryError(
                f"SeeSR ran out of memory ({plan.describe()}). Use the 'memory' preset, a smaller scale, "
                "smaller tiles, or allow the fallback chain (drop no_fallback)."
            )
        skip_reason = "SeeSR ran out of memory on every rung"
    elif not allow_fallback:
        raise WeightsError(skip_reason or "SeeSR cannot run and the fallback is off")

    engine = load_realesrgan()
    for tile in REALESRGAN_TILES:
        start = time.perf_counter()
        try:
            with stage_hook("realesrgan") if stage_hook is not None else nullcontext():
                result = engine.upscale(image, scale=scale, tile=tile)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            attempts.append(Attempt("realesrgan", f"tile {tile}", f"out of memory: {error}", _since(start)))
            del error
            free_memory()
            continue
        attempts.append(Attempt("realesrgan", f"tile {tile}", "ok", _since(start)))
        logger.warning("upscaled with Real-ESRGAN instead of SeeSR: %s", skip_reason)
        return LadderResult(result, "realesrgan", attempts, reason=skip_reason)
    raise OutOfMemoryError(
        "out of memory on every rung, Real-ESRGAN with 64 px tiles included: free memory (close other "
        "programs or GPU jobs), or use a smaller scale or a smaller input"
    )


def _since(start: float) -> float:
    return time.perf_counter() - start
