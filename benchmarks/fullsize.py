"""Full-size SeeSR-Turbo architectures with random weights, for speed and memory measurements.

Speed and memory do not depend on weight values, so the benchmarks build the real shapes
(sd-turbo UNet + SeeSR image attention, SeeSR ControlNet, SD VAE, OpenCLIP ViT-H text encoder,
RAM Swin-L) without downloading anything. Weights are drawn N(0, 1/fan_in) so activations stay
in a normal range (no overflow, no denormals that would slow the CPU down).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Callable

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from benchmarks.common import release_memory
from seesr.engines.seesr.models.controlnet import SeesrControlNetModel
from seesr.engines.seesr.models.tagger import RAM_NUM_CLASSES, RamConfig, RamTagger
from seesr.engines.seesr.models.unet import SeesrUNet2DConditionModel
from seesr.engines.seesr.pipeline import SeesrPipeline, network_dtypes
from seesr.engines.seesr.sampling import NoiseSchedule

SD_TURBO_UNET_CONFIG = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    attention_head_dim=(5, 10, 20, 20),
    cross_attention_dim=1024,
    use_linear_projection=True,
    flip_sin_to_cos=True,
    freq_shift=0,
    norm_num_groups=32,
)
"""stabilityai/sd-turbo ``unet/config.json`` (the SD 2.1-base UNet)."""

SD_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=768,
    scaling_factor=0.18215,
)
"""stabilityai/sd-turbo ``vae/config.json``."""

OPENCLIP_VIT_H_TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=1024,
)
"""stabilityai/sd-turbo ``text_encoder/config.json`` (OpenCLIP ViT-H/14 text tower, 23 layers)."""


def randomized(build: Callable[[], torch.nn.Module], seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Build a model with its parameters on the meta device (skipping the slow default init), then
    give each one real values in ``dtype``: weights N(0, 1/fan_in), norm scales 1, biases 0 (drawn
    in float32 one parameter at a time, so the values do not depend on ``dtype`` beyond its
    rounding and no float32 copy of the model is ever whole). Buffers are built normally."""
    generator = torch.Generator().manual_seed(seed)
    with init_empty_weights(include_buffers=False):
        model = build()
    for module_name, module in model.named_modules():
        for name, param in list(module.named_parameters(recurse=False)):
            # the kept tensor first, the float32 draw after it: freeing the draw leaves no hole
            # below the weights in the heap (else the build's RSS stays ~30 % above the weights)
            values = torch.empty(param.shape, dtype=dtype)
            if param.dim() > 1:
                values.copy_(torch.randn(param.shape, generator=generator).div_(math.sqrt(math.prod(param.shape[1:]))))
            else:
                values.fill_(0.0 if name.endswith("bias") else 1.0)
            setattr(module, name, torch.nn.Parameter(values, requires_grad=False))
    if hasattr(model, "reset_buffers"):
        model.reset_buffers()
    meta = [name for name, buffer in model.named_buffers() if buffer.is_meta]
    if meta:
        raise RuntimeError(f"buffers left on the meta device: {meta[:5]}")
    release_memory()  # the draws' heap back to the OS before the next network is built
    return model


def _tiny_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer (no merges): token ids do not affect speed."""
    symbols = [chr(c) for c in range(33, 127)]
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    with tempfile.TemporaryDirectory(prefix="seesr-tok-") as name:
        folder = Path(name)
        (folder / "vocab.json").write_text(json.dumps(vocab))
        (folder / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!", model_max_length=77)


def build_full_size_pipeline(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, *, with_tagger: bool = True
) -> SeesrPipeline:
    """SeesrPipeline with every network at its real size and random weights, each built straight
    in its dtype for ``dtype`` (:func:`seesr.engines.seesr.pipeline.network_dtypes`), as loading real weights does."""
    dtypes = network_dtypes(torch.device(device), dtype)
    unet = randomized(lambda: SeesrUNet2DConditionModel(**SD_TURBO_UNET_CONFIG), seed=1, dtype=dtypes["unet"])
    controlnet = randomized(lambda: SeesrControlNetModel.from_unet(unet, load_weights_from_unet=False), seed=2,
                            dtype=dtypes["controlnet"])  # fmt: skip
    vae = randomized(lambda: AutoencoderKL(**SD_VAE_CONFIG), seed=3, dtype=dtypes["vae"])
    text_encoder = randomized(lambda: CLIPTextModel(CLIPTextConfig(**OPENCLIP_VIT_H_TEXT_CONFIG)), seed=4,
                              dtype=dtypes["text_encoder"])  # fmt: skip
    tagger = None
    if with_tagger:
        tag_names = [f"tag{i}" for i in range(RAM_NUM_CLASSES)]
        tagger = randomized(lambda: RamTagger(RamConfig(), tag_list=tag_names), seed=5, dtype=dtypes["tagger"])
    schedule = NoiseSchedule.from_config({"timestep_spacing": "trailing"})  # sd-turbo's
    pipe = SeesrPipeline(vae, text_encoder, _tiny_clip_tokenizer(), unet, controlnet, tagger, schedule)
    return pipe.to(device, dtype)
