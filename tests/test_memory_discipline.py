"""A service that serves many predictions must not creep up in memory."""

from __future__ import annotations

import gc
import sys
import weakref

import psutil
import pytest
import torch
from PIL import Image

from seesr.api import Upscaler
from seesr.runtime.memory import keep_heap_within_stage, trim_host_heap

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



def test_half_precision_weights_are_read_straight_into_their_dtype(tiny_weights, tiny_pipe, monkeypatch):
    """bfloat16 loading reads each network in its dtype (the tagger and nothing else in float32), with
    the values of the float32 load rounded once; no network is ever cast after loading."""
    import torch

    from seesr.engines.seesr.pipeline import SeesrPipeline
    from seesr.weights import checkpoints

    read_dtypes = []
    read = checkpoints.read_checkpoint

    def spy(*args, **kwargs):
        state = read(*args, **kwargs)
        read_dtypes.extend({v.dtype for v in state.values() if hasattr(v, "is_floating_point") and v.is_floating_point()})
        return state

    monkeypatch.setattr("seesr.engines.seesr.models.unet.read_checkpoint", spy)
    casts = []
    module_to = torch.nn.Module.to

    def to(self, *args, **kwargs):
        if kwargs.get("dtype") is not None or any(isinstance(arg, torch.dtype) for arg in args):
            casts.append(type(self).__name__)
        return module_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", to)
    pipe = SeesrPipeline.from_pretrained(tiny_weights, device="cpu", torch_dtype=torch.bfloat16)
    monkeypatch.undo()
    assert set(read_dtypes) == {torch.bfloat16}  # the UNet's checkpoint tensors, cast as read
    assert not {"SeesrUNet2DConditionModel", "SeesrControlNetModel", "AutoencoderKL", "CLIPTextModel"} & set(casts)
    for name in ("unet", "controlnet", "vae", "text_encoder"):
        ours, reference = getattr(pipe, name).state_dict(), getattr(tiny_pipe, name).state_dict()
        assert all(t.dtype == torch.bfloat16 for t in ours.values() if t.is_floating_point()), name
        assert all(torch.equal(ours[k], v.to(torch.bfloat16)) for k, v in reference.items() if v.is_floating_point()), name
    assert next(pipe.tagger.parameters()).dtype == torch.float32


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_activations_stay_for_reuse_until_the_stage_ends():
    """Within a stage, a freed tensor's pages stay in the heap for the next one (no fresh page
    faults); at the stage's end they go back to the OS."""
    keep_heap_within_stage()
    process = psutil.Process()
    trim_host_heap()
    before = process.memory_info().rss
    block = torch.ones(16 << 20, dtype=torch.uint8)  # 16 MiB: under the mapping threshold, in the heap
    del block
    kept = process.memory_info().rss
    trim_host_heap()
    after = process.memory_info().rss
    assert kept - before > 12 << 20, (before, kept)
    assert kept - after > 12 << 20, (kept, after)
