"""The out-of-memory ladder: when memory runs out, degrade and say so, never crash.

The ladder steps through engines in turn (SeeSR, then Real-ESRGAN standing in for it), each down its
own rungs (:meth:`~seesr.engines.base.Engine.rungs`: SeeSR's planned tiles, smaller tiles, smaller
tiles with CPU offload; Real-ESRGAN's planned tile, then 256, 128, 64 px). Between rungs references
are dropped and caches emptied. Each attempt is recorded; the result names the engine that made the
image and, when an engine stood in for the first, why. It never calls back into the API: the
engines are all it needs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from seesr.engines.base import Engine, EngineOutput, Plan
from seesr.errors import MissingWeightsError
from seesr.progress import StageTracker
from seesr.runtime.memory import is_out_of_memory, release_memory
from seesr.settings.declare import Settings

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)


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
    """The output, the engine and plan that made it, every attempt, and why another engine than the
    first made it (None when the first did)."""

    output: EngineOutput
    engine: Engine
    plan: Plan
    attempts: list[Attempt] = field(default_factory=list)
    reason: str | None = None


def runnable(
    engines: Sequence[Engine], settings: Settings, download: bool, dry: bool = False
) -> tuple[list[Engine], str | None, str | None]:
    """The engines a run steps through, why the first is left out, and what must happen first: all
    of them when the first one's weights are there (:meth:`~seesr.engines.base.Engine.check`, which
    downloads them when ``download``), else the rest, with its ``missing_reason``; alone, its
    MissingWeightsError. A run and a dry run decide here, alike: a ``dry`` one downloads nothing but
    checks that the download could start (the third value says what it would fetch). Only absent
    weights are stepped over: unusable ones are the user's error to see."""
    try:
        first = engines[0].check(settings, download, dry)
    except MissingWeightsError as error:
        if len(engines) == 1:
            raise
        return list(engines[1:]), engines[0].missing_reason(error), None
    return list(engines), None, first


def run_ladder(
    image: Image.Image, settings: Settings, engines: Sequence[Engine], tracker: StageTracker, download: bool = False
) -> LadderResult:
    """Upscale ``image`` with the first of the :func:`runnable` ``engines`` that gets through one of
    its rungs; an engine whose every rung ran out of memory hands over to the next one (the reason
    says on which stage of which rung). The last engine's
    :meth:`~seesr.engines.base.Engine.out_of_memory` error when nothing is left."""
    engines, reason, _ = runnable(engines, settings, download)
    attempts: list[Attempt] = []
    for position, engine in enumerate(engines):
        engine.load(settings, tracker)
        plan = engine.plan(image, settings)
        failed: list[tuple[str, str]] = []  # (rung label, stage it ran out of memory in)
        for rung in engine.rungs(plan):
            if rung.start is not None:
                retry = f"out of memory in {failed[-1][1]}" if failed else None
                tracker(dataclasses.replace(rung.start, retry=retry))
            tracker.stage = None
            started = time.perf_counter()
            try:
                output = engine.run(image, plan, rung, tracker)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                where = tracker.stage or "setup"
                failed.append((rung.label, where))
                attempts.append(Attempt(engine.name, rung.settings, f"out of memory in {where}: {error}", _since(started)))
                logger.info("%s ran out of memory in %s with %s (%s); %s", engine.title, where, rung.label, rung.settings, error)
                del error
                release_memory()
                continue
            attempts.append(Attempt(engine.name, rung.settings, "ok", _since(started)))
            if reason is not None:
                logger.debug("upscaled with %s (%s): %s", engine.title, engine.describe(), reason)  # the result says why
            return LadderResult(output, engine, plan, attempts, reason)
        if position == len(engines) - 1:
            raise engine.out_of_memory(plan, failed[-1][1] if failed else "setup")
        reason = f"{engine.title} ran out of memory on every rung ({'; '.join(f'{label}: {where}' for label, where in failed)})"
    raise AssertionError("run_ladder needs at least one engine")


def _since(start: float) -> float:
    return time.perf_counter() - start
