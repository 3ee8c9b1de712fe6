"""A service that serves many predictions must not creep up in memory."""

from __future__ import annotations

import gc
import weakref

import psutil
import pytest
from PIL import Image

from seesr.api import Upscaler

REQUESTS = 100
WARMUP = 10


@pytest.mark.slow
def test_resident_memory_stays_flat_over_100_predictions(tiny, tiny_weights):
    upscaler = Upscaler(tiny_weights, device="cpu")
    lr = Image.open(tiny / "inputs" / "pipeline_lr_crop.png").convert("RGB")
    process = psutil.Process()
    samples = []
    for index in range(REQUESTS):
        upscaler.upscale(lr, scale=2, steps=1, process_size=0, seed=index)
        gc.collect()
        samples.append(process.memory_info().rss)
    after_warmup, last = samples[WARMUP - 1], samples[-1]
    assert max(samples[WARMUP:]) <= after_warmup * 1.05, (after_warmup / 2**20, max(samples) / 2**20)
    assert last <= after_warmup * 1.05


def test_models_load_lazily_and_unload(tiny, tiny_weights):
    upscaler = Upscaler(tiny_weights, device="cpu")
    assert upscaler.loaded is None
    with pytest.raises(AttributeError):
        upscaler.loaded = None  # read-only: loading is the Upscaler's business
    upscaler.upscale(Image.open(tiny / "inputs" / "pipeline_lr_crop.png"), scale=2, steps=1, process_size=0, seed=0)
    assert upscaler.loaded is not None
    pipe = weakref.ref(upscaler.loaded)
    upscaler.unload()
    gc.collect()
    assert upscaler.loaded is None and pipe() is None  # nothing else keeps the networks alive
