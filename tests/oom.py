"""Out-of-memory errors on demand, for the tests of the ladder: a stage hook
(:data:`seesr.progress.StageHook`, set as ``Upscaler.stage_hook``) that fails named stages."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


class OomInjector:
    """Raises an out-of-memory error as named stages start, a set number of times.

    ``OomInjector({"denoise": 2})`` fails the next two runs of the denoising stage. Stage names are
    those of :meth:`seesr.engines.seesr.pipeline.SeesrPipeline.stage` (``tag``, ``text``, ``encode``,
    ``denoise``, ``decode``, ``colorfix``) and ``realesrgan`` (the Real-ESRGAN engine's run)."""

    def __init__(self, failures: dict[str, int]) -> None:
        self.remaining = dict(failures)
        self.raised: list[str] = []

    def __call__(self, stage: str) -> AbstractContextManager[None]:
        if self.remaining.get(stage, 0) > 0:
            self.remaining[stage] -= 1
            self.raised.append(stage)
            raise torch.OutOfMemoryError(f"injected out-of-memory at stage {stage!r}")
        return nullcontext()
