"""SeesrPipeline: SeeSR-Turbo super-resolution, read top to bottom in ``__call__``.

tag (RAM + DAPE) -> prompt -> CLIP text encoding -> bicubic upscale -> VAE encode -> noise the
LR latent to ``start_steps`` (t=999) -> DDIM or DDPM steps at the timesteps up to ``start_steps``
with ControlNet + UNet, the last one returning the clean estimate -> VAE decode -> colour fix -> resize.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from diffusers import AutoencoderKL
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer

from seesr.engines.seesr.kds import KdsConfig, particle_noise, select_particle, steered_denoiser
from seesr.engines.seesr.models.attention import set_attention
from seesr.engines.seesr.models.controlnet import SeesrControlNetModel
from seesr.engines.seesr.models.tagger import RamConfig, RamTagger
from seesr.engines.seesr.models.unet import SeesrUNet2DConditionModel
from seesr.engines.seesr.planner import VAE_SCALE, RunPlan, WorkingSize, plan_run, plan_working_size
from seesr.engines.seesr.sampling import (
    ConditionedDenoiser, NoiseSchedule, StepCallback, add_noise, denoise_step, sample, tiled_denoiser,
)  # fmt: skip
from seesr.engines.seesr.vae_tiling import tiled_decode, tiled_encode
from seesr.errors import ConfigError, InputError
from seesr.imaging.colorfix import apply_color_fix
from seesr.imaging.convert import output_size, pil_to_tensor, resize, tensor_to_pil
from seesr.progress import ProgressCallback, StageCounter, StageHook
from seesr.runtime.devices import Precision, default_device, default_dtype, network_dtype
from seesr.runtime.memory import keep_heap_within_stage, trim_host_heap
from seesr.settings.declare import COLOR_FIX_METHODS, START_POINTS, Settings
from seesr.settings.models import MODELS, SAMPLERS
from seesr.weights import WeightPaths
from seesr.weights.checkpoints import load_pretrained

logger = logging.getLogger(__name__)


@dataclass
class SeesrPipelineOutput:
    """What one call produced, with what it was conditioned on."""

    images: list[Image.Image] | torch.Tensor
    tags: str
    prompt: str
    timesteps: list[int]
    plan: RunPlan
    timings: dict[str, float]
    latents: torch.Tensor = field(repr=False)
    condition: torch.Tensor | None = field(default=None, repr=False)
    """The LR image upscaled to the working size (1, 3, H, W): what the colour fix takes colours from."""


NETWORK_PRECISION: dict[str, Precision] = {
    "text_encoder": Precision(),
    "unet": Precision(),
    "controlnet": Precision(),
    "tagger": Precision(fixed=torch.float32),
    "vae": Precision(float16_on=frozenset({"cuda"})),
}
"""What each network runs in (the data of :func:`~seesr.runtime.devices.network_dtype`). The VAE
takes float16 on CUDA only (float16 is slow on CPUs; bfloat16 has oneDNN kernels and float32's range,
see :meth:`SeesrPipeline.decode`). The tagger stays float32 whatever is asked (as officially): its
tags are thresholded logits, and a tag near its threshold would flip in half precision."""


def network_dtypes(device: torch.device, dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The dtype of each network when the pipeline runs in ``dtype`` on ``device``."""
    return {name: network_dtype(device, dtype, precision) for name, precision in NETWORK_PRECISION.items()}


def build_prompt(tags: str, user_prompt: str = Settings.prompt, positive_prompt: str = Settings.positive_prompt) -> str:
    """The official prompt: ``f"{tags}, {user_prompt},"`` followed by the positive prompt."""
    return f"{tags}, {user_prompt}," + positive_prompt


class SeesrPipeline:
    """SeeSR: semantics-aware diffusion super-resolution (SeeSR-Turbo in 1-4 steps, or SeeSR on SD-2-base)."""

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: SeesrUNet2DConditionModel,
        controlnet: SeesrControlNetModel,
        tagger: RamTagger | None,
        schedule: NoiseSchedule,
    ) -> None:
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.unet = unet
        self.controlnet = controlnet
        self.tagger = tagger
        self.schedule = schedule
        self.model = "seesr-turbo"
        """Which of :data:`MODELS` the networks are (set by :meth:`from_pretrained`)."""
        self.execution_device = unet.device
        self.stage_hook: StageHook | None = None
        """Called with a stage's name as it starts; the context manager it returns is held while the
        stage runs (an out-of-memory injector raises from the call, a benchmark clock times the stage)."""
        self.progress: ProgressCallback | None = None
        """Receives a :class:`~seesr.progress.StageProgress` as each stage starts, and per batch of
        latent tiles while denoising (steps x tiles)."""
        self._offload = False
        self._timings: dict[str, float] = {}
        self.attention = Settings.attention
        """Which attention the networks run (:data:`~seesr.settings.declare.ATTENTIONS`; see :meth:`use_attention`)."""

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        weights: WeightPaths | str | Path | None = None,
        *,
        model: str = "seesr-turbo",
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        download: bool = False,
        unet: SeesrUNet2DConditionModel | None = None,
        controlnet: SeesrControlNetModel | None = None,
    ) -> "SeesrPipeline":
        """Load every component from the official on-disk layout.

        ``weights``: a :class:`WeightPaths`, or a weights directory resolved by
        :meth:`WeightPaths.resolve` (directory, then Hugging Face cache, then a download when
        ``download``).

        ``model`` (see :data:`MODELS`): ``"seesr-turbo"`` (default, the official turbo script):
        VAE, text encoder, tokenizer and scheduler from sd-turbo; UNet config and weights from
        sd-turbo with only the ``image_attentions`` weights from SeeSR. ``"seesr"`` (the official
        ``test_seesr.py``): the same components from SD-2-base (``WeightPaths.sd2_base``) and
        SeeSR's UNet whole. The ControlNet comes from SeeSR for both. ``unet``/``controlnet``:
        networks to use instead of loading SeeSR's (as diffusers pipelines take components).
        """
        if model not in MODELS:
            raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
        paths = weights if isinstance(weights, WeightPaths) else WeightPaths.resolve(weights, download=download)
        base = paths.check().base_folder(model)
        spec = MODELS[model]
        device = torch.device(device) if device is not None else default_device()
        dtype = torch_dtype or default_dtype(device, cpu_bfloat16=False)
        dtypes = network_dtypes(device, dtype)  # each network read straight into its dtype

        paths.warn_on_checksum_mismatch()
        vae, _ = load_pretrained(AutoencoderKL, base / "vae", f"{base.name} VAE", torch_dtype=dtypes["vae"])
        text_encoder, _ = load_pretrained(
            CLIPTextModel, base / "text_encoder", f"{base.name} text encoder", torch_dtype=dtypes["text_encoder"]
        )
        tokenizer = CLIPTokenizer.from_pretrained(base / "tokenizer")
        if unet is None and spec.unet_rule == "turbo":
            unet = SeesrUNet2DConditionModel.from_turbo(base, paths.seesr, torch_dtype=dtypes["unet"])
        elif unet is None:
            unet = SeesrUNet2DConditionModel.from_pretrained(paths.seesr, subfolder="unet", torch_dtype=dtypes["unet"])
        if controlnet is None:
            controlnet = SeesrControlNetModel.from_pretrained(
                paths.seesr, subfolder="controlnet", torch_dtype=dtypes["controlnet"]
            )
        tagger = RamTagger.from_pretrained(
            paths.ram_checkpoint,
            paths.dape_checkpoint,
            tag_list=paths.ram_tag_list,
            tag_list_chinese=paths.ram_tag_list_chinese,
            thresholds=paths.ram_thresholds,
            config=RamConfig.from_official_configs(paths.ram_configs) if paths.ram_configs else None,
        )
        schedule = NoiseSchedule.from_pretrained(base / "scheduler")
        pipe = cls(vae, text_encoder, tokenizer, unet, controlnet, tagger, schedule)
        pipe.model = model
        return pipe.to(device, dtype)

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> "SeesrPipeline":
        """Move the networks, each to its dtype for ``dtype`` (:func:`network_dtypes`; None: keep).
        A bfloat16 VAE on the CPU gets channels_last weights: oneDNN runs NHWC convolutions without
        layout reorders. A float32 VAE stays NCHW, which keeps its results equal to the official
        (NCHW) numbers. The attention layers get the processor of :meth:`use_attention`."""
        device = torch.device(device)
        self.execution_device = device
        if self._offload:
            device = torch.device("cpu")
        dtypes = network_dtypes(self.execution_device, dtype) if dtype is not None else {}
        for name in ("text_encoder", "unet", "controlnet", "tagger", "vae"):
            model, want = getattr(self, name), dtypes.get(name)
            if model is None:
                continue
            if want is not None and want != next(model.parameters()).dtype:
                # plain Module.to: diffusers' ModelMixin.to warns about "modules to keep in float32"
                # on every cast of the VAE, even though its list is empty
                torch.nn.Module.to(model, device=device, dtype=want)
            else:
                model.to(device=device)
            model.eval().requires_grad_(False)
        cpu_bf16 = self.execution_device.type == "cpu" and next(self.vae.parameters()).dtype == torch.bfloat16
        self.vae.to(memory_format=torch.channels_last if cpu_bf16 else torch.contiguous_format)
        for module in self.vae.modules():
            # every SiLU of the VAE acts on a fresh GroupNorm output (the VAE has no time embedding):
            # in place it computes the same values without a new image-sized activation
            if isinstance(module, torch.nn.SiLU):
                module.inplace = True
        self.use_attention(self.attention)
        return self

    def use_attention(self, choice: str) -> None:
        """``auto``: each network gets the attention :func:`~seesr.engines.seesr.models.attention.attention_kernel`
        picks for its device and dtype (the AVX512-BF16 kernel for bfloat16 on CPUs without AMX);
        ``sdpa``: torch's ``scaled_dot_product_attention`` everywhere."""
        for model in (self.unet, self.controlnet, self.vae):
            set_attention([model], self.execution_device, next(model.parameters()).dtype, choice)
        self.attention = choice

    def set_offload(self, enabled: bool) -> None:
        """Keep the networks on the CPU and move each to the execution device only for its stage."""
        if enabled == self._offload:
            return
        self._offload = enabled
        self.to(self.execution_device)

    def compile(self, **options: Any) -> None:
        """``torch.compile`` ControlNet + UNet in place (once; ``options`` go to ``torch.compile``).

        Off by default: the first call compiles for minutes and the compiled networks are not
        faster on the CPU; worth trying on a GPU serving many images of one size."""
        for model in (self.unet, self.controlnet):
            if getattr(model, "_compiled_call_impl", None) is None:
                model.compile(**options)

    @property
    def compiled(self) -> bool:
        return all(getattr(m, "_compiled_call_impl", None) is not None for m in (self.unet, self.controlnet))

    def _parameters(self) -> Iterator[torch.nn.Parameter]:
        for model in (self.vae, self.text_encoder, self.unet, self.controlnet, self.tagger):
            if model is not None:
                yield from model.parameters()

    @property
    def weights_bytes(self) -> int:
        """Bytes of all network weights (what the planner counts as resident)."""
        return sum(p.numel() * p.element_size() for p in self._parameters())

    @property
    def loaded_bytes(self) -> int:
        """Bytes of network weights on the execution device now (already out of its free memory)."""
        device = self.execution_device
        return sum(
            p.numel() * p.element_size()
            for p in self._parameters()
            if p.device.type == device.type and (device.index is None or p.device.index == device.index)
        )

    def plan_for(
        self,
        work_width: int,
        work_height: int,
        *,
        batch_multiplier: int = 1,
        max_latent_tile: int | None = None,
        overrides: dict | None = None,
    ) -> RunPlan:
        """:func:`plan_run` for a working image on this pipeline's device, dtype and weights
        (``overrides``: RunPlan fields fixed by the caller); the latent tile cap and overlap are
        the model's unless given."""
        spec = MODELS[self.model]
        if spec.latent_overlap is not None:
            overrides = {"latent_overlap": spec.latent_overlap, **(overrides or {})}
        return plan_run(
            work_width,
            work_height,
            device=self.device,
            dtype=self.dtype,
            weights_bytes=self.weights_bytes,
            loaded_bytes=self.loaded_bytes,
            batch_multiplier=batch_multiplier,
            max_latent_tile=spec.max_latent_tile if max_latent_tile is None else max_latent_tile,
            overrides=overrides,
        )

    @property
    def device(self) -> torch.device:
        return self.execution_device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    # ------------------------------------------------------------------ the flow
    @torch.no_grad()
    def __call__(
        self,
        image: Image.Image,
        *,
        scale: float = Settings.scale,
        num_inference_steps: int | None = None,
        prompt: str = Settings.prompt,
        positive_prompt: str = Settings.positive_prompt,
        negative_prompt: str = Settings.negative_prompt,
        guidance_scale: float | None = None,
        conditioning_scale: float = Settings.conditioning_scale,
        sampler: str | None = None,
        start_point: Literal["lr", "noise"] = Settings.start_point,
        start_steps: int = Settings.start_steps,
        color_fix: str | None = Settings.color_fix,
        process_size: int = Settings.process_size,
        plan: RunPlan | None = None,
        kds: KdsConfig | None = None,
        seed: int | None = None,
        num_samples: int = Settings.num_samples,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        tags: str | None = None,
        ram_embeds: torch.Tensor | None = None,
        lr_latent: Literal["sample", "mean"] = "sample",
        output_type: Literal["pil", "pt"] = "pil",
        callback: StepCallback | None = None,
    ) -> SeesrPipelineOutput:
        """Upscale one RGB image by ``scale`` (defaults: :class:`~seesr.settings.declare.Settings`'s; steps,
        guidance and sampler: the model's, :data:`MODELS`). ``sampler``: ``"ddim"`` (deterministic) or
        ``"ddpm"`` (the official scripts' stochastic step, its noise from ``generator``); either way the
        last step returns the clean estimate. ``start_point="lr"``: from the LR latent noised to
        ``start_steps`` (SeeSR's LR embedding); ``"noise"``: from pure noise. As officially, only the
        timesteps at or below ``start_steps`` run (all of them at the default 999).

        ``latents``: the initial noise (1, 4, h/8, w/8), else drawn from ``generator``/``seed`` on the
        CPU (same numbers on every device). ``num_samples``: that many results, sample k drawn as a
        call with ``seed + k`` would draw it (the tags, prompt embeddings, condition image and the LR
        image's VAE encoding are computed once; each sample draws its own noise); then ``images``
        holds them all (a list, or an (N, 3, H, W) tensor, held on the CPU when N > 1). ``tags``/``ram_embeds`` skip the tagger. ``lr_latent="mean"``
        encodes the LR image with the VAE mean. ``callback(i, t, latents)`` runs after each step.
        ``plan``: tiles, tile batch, offload and the working size it was made for (default:
        :meth:`plan_for` this size and the free memory); a latent larger than the tile is denoised in
        the plan's overlapping tiles, their predictions blended. ``output_type="pt"``: the (1, 3, H, W)
        tensor in [0, 1] before the final resize (``color_fix=None``: before any colour fix). ``kds``: Kernel Density Steering over N particles
        (:mod:`seesr.engines.seesr.kds`); the particle nearest their mean is kept.
        """
        # 0. Check the call: the model's defaults, the timesteps that run, the working size and plan
        spec = MODELS[self.model]
        num_inference_steps, guidance_scale, sampler = (
            spec.steps if num_inference_steps is None else num_inference_steps,
            spec.guidance_scale if guidance_scale is None else guidance_scale, spec.sampler if sampler is None else sampler,
        )  # fmt: skip
        self.check_inputs(
            image, num_inference_steps, guidance_scale, color_fix, lr_latent, output_type, sampler, start_point, start_steps
        )
        if num_samples > 1 and (generator is not None or latents is not None):
            raise ConfigError("several samples draw their own noise from seed, seed+1, ...: give seed, not generator or latents")
        timesteps = self.schedule.timesteps(num_inference_steps, start_steps)  # the official loop skips the others
        if generator is None and seed is None:
            seed = torch.seed()
        do_cfg = guidance_scale > 1.0
        plan = self.plan_call(image, scale, process_size, plan, (2 if do_cfg else 1) * (kds.particles if kds else 1))
        self.set_offload(plan.offload)
        self._timings = {}
        lr_image = image.convert("RGB")

        # 1-2. Tag the LR image (RAM + DAPE): the prompt and the image embeddings; encode the prompt
        tags, ram_embeds, full_prompt = self.conditioning(lr_image, tags, ram_embeds, prompt, positive_prompt)
        prompt_embeds, ram_embeds = self.prompt_embeddings(full_prompt, negative_prompt, ram_embeds, do_cfg)

        # 3. Upscale the LR image (bicubic) to the working size: the ControlNet's condition
        condition = self.condition_image(lr_image, plan.sizes)

        # 4. The LR image's VAE latent distribution (SeeSR's LR embedding), once for every sample
        lr_distribution = None
        if start_point == "lr":
            with self.stage("encode", self.vae):
                lr_distribution = self.encode_distribution(condition, tile=plan.vae_encoder_tile)

        model = self.conditioned_denoiser(prompt_embeds, ram_embeds, conditioning_scale, guidance_scale)
        images, final_latents = [], []
        for sample in range(num_samples):
            sample_generator = generator or torch.Generator("cpu").manual_seed(seed + sample)
            # 5. Initial noise, and the start point: the LR latent noised to start_steps, or pure noise
            start = self.start_latents(
                condition, latents, sample_generator, start_point, start_steps, lr_latent, lr_distribution, kds
            )

            # 6. Denoise: ControlNet + UNet on the plan's latent tiles, KDS steering the particles, the
            # sampler's update in float32; the last step returns x0
            denoised = self.denoise(
                start, model, condition, plan, timesteps, num_inference_steps, sampler, sample_generator, kds, callback
            )

            # 7. Decode, then take the colours from the upscaled input
            fixed = self.decode_and_fix(denoised, condition, plan.vae_decoder_tile, color_fix)
            images.append(fixed if num_samples == 1 else fixed.cpu())
            final_latents.append(denoised)

        # 8. Resize to exactly the requested size
        if output_type == "pt":
            result = torch.cat(images)
        else:
            result = [resize(tensor_to_pil(fixed), plan.sizes.output_size) for fixed in images]
        return SeesrPipelineOutput(
            result, tags, full_prompt, timesteps, plan, dict(self._timings), torch.cat(final_latents), condition
        )

    # ------------------------------------------------------------------ the steps
    def plan_call(
        self, image: Image.Image, scale: float, process_size: int, plan: RunPlan | None, batch_multiplier: int
    ) -> RunPlan:
        """The plan of a call with its working size: ``plan`` as given (it carries the size it was
        made for, else the official rule gives it here), or :meth:`plan_for` this size."""
        if plan is not None and plan.sizes is not None:
            if plan.sizes.output_size != output_size(image.width, image.height, scale):
                raise ConfigError(
                    f"the plan was made for a {plan.sizes.output_size[0]}x{plan.sizes.output_size[1]} output, not "
                    f"{image.width}x{image.height} at scale {scale:g}; plan again for this image"
                )
            return plan
        sizes = plan_working_size(image.width, image.height, scale, process_size)
        if plan is None:
            plan = self.plan_for(*sizes.work_size, batch_multiplier=batch_multiplier)
        return dataclasses.replace(plan, sizes=sizes)

    def decode_and_fix(
        self, latents: torch.Tensor, condition: torch.Tensor, tile: int, color_fix: str | None
    ) -> torch.Tensor:
        """7. The VAE decode in [0, 1] with the colours of ``condition`` (by ``color_fix``), float32;
        ``color_fix=None`` leaves the colours to the caller (the SeeSR engine: the API fixes every
        engine's output alike, from the output's ``condition``)."""
        with self.stage("decode", self.vae):
            decoded = (self.decode(latents, tile=tile) / 2 + 0.5).clamp(0, 1)
        if color_fix is None:
            return decoded.float()
        with self.stage("colorfix"):
            return apply_color_fix(decoded.float(), condition.float(), color_fix).clamp(0, 1)

    def conditioning(
        self, image: Image.Image, tags: str | None, ram_embeds: torch.Tensor | None, prompt: str, positive_prompt: str
    ) -> tuple[str, torch.Tensor, str]:
        """1. The tags and RAM image embeddings (the tagger's unless given) and the full prompt."""
        if tags is None or ram_embeds is None:
            with self.stage("tag", self.tagger):
                tagged = self.tag(image)
            tags = tagged.tags[0] if tags is None else tags
            ram_embeds = tagged.image_embeds if ram_embeds is None else ram_embeds
        return tags, ram_embeds, build_prompt(tags, prompt, positive_prompt)

    def prompt_embeddings(
        self, prompt: str, negative_prompt: str, ram_embeds: torch.Tensor, do_cfg: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """2. The prompt's CLIP embeddings and the RAM embeddings in the denoiser's dtype, each
        [negative, positive] with classifier-free guidance."""
        with self.stage("text", self.text_encoder):
            prompt_embeds = self.encode_prompt(prompt)
            if do_cfg:
                prompt_embeds = torch.cat([self.encode_prompt(negative_prompt), prompt_embeds])
        ram_embeds = ram_embeds.to(self.device, self.dtype)
        return prompt_embeds, torch.cat([ram_embeds, ram_embeds]) if do_cfg else ram_embeds

    def condition_image(self, image: Image.Image, sizes: WorkingSize) -> torch.Tensor:
        """3. The LR image upscaled (bicubic) to the working size, on the device, in [0, 1]."""
        upscaled = image if sizes.pre_size is None else resize(image, sizes.pre_size)
        upscaled = resize(resize(upscaled, sizes.upscaled_size), sizes.work_size)
        return pil_to_tensor(upscaled).to(self.device)

    def start_latents(
        self, condition: torch.Tensor, noise: torch.Tensor | None, generator: torch.Generator, start_point: str,
        start_steps: int, lr_latent: str, lr_distribution: Any, kds: KdsConfig | None,
    ) -> torch.Tensor:  # fmt: skip
        """5. The initial noise (``noise`` or drawn from ``generator``; one per KDS particle) and the
        start latents: the LR image's latent (drawn from ``lr_distribution`` with the same generator,
        after the noise) noised to ``start_steps``, or the noise itself."""
        height, width = condition.shape[-2:]
        latent_shape = (1, self.unet.config.in_channels, height // VAE_SCALE, width // VAE_SCALE)
        if noise is None:
            noise = torch.randn(latent_shape, generator=generator, dtype=torch.float32)
        elif tuple(noise.shape) != latent_shape:
            raise ConfigError(f"latents must have shape {latent_shape}, got {tuple(noise.shape)}")
        noise = noise.to(self.device, torch.float32)
        if start_point == "lr":
            lr_latents = self.latent_from(lr_distribution, generator, lr_latent)
        if kds is not None:
            noise = particle_noise(noise, kds.particles, generator)
        return add_noise(lr_latents, noise, self.schedule, start_steps) if start_point == "lr" else noise

    def denoise(
        self, latents: torch.Tensor, model: ConditionedDenoiser, condition: torch.Tensor, plan: RunPlan,
        timesteps: list[int], spacing: int, sampler: str, generator: torch.Generator, kds: KdsConfig | None,
        callback: StepCallback | None,
    ) -> torch.Tensor:  # fmt: skip
        """6. The sampling loop at ``timesteps`` (spaced for ``spacing`` steps) over the plan's latent
        tiles (:meth:`RunPlan.tiles_for`), steered by KDS; with several particles, the one nearest
        their mean."""
        tiles = plan.tiles_for(latents.shape[-2], latents.shape[-1])
        bar = StageCounter(self.progress, "denoise", len(timesteps) * len(tiles))
        denoiser = tiled_denoiser(
            model, condition, tiles, scale=VAE_SCALE, batch_size=plan.tile_batch_size, on_tiles=bar.update
        )
        if kds is not None:
            denoiser = steered_denoiser(denoiser, self.schedule, kds, len(timesteps))
        step = partial(denoise_step, sampler, generator=generator)
        with self.stage("denoise", self.unet, self.controlnet):
            latents = sample(
                denoiser, latents, self.schedule, timesteps, step, num_inference_steps=spacing, callback=callback
            )
        if latents.shape[0] > 1:
            best = select_particle(latents)
            latents = latents[best : best + 1]
        return latents

    def check_inputs(
        self,
        image: object,
        steps: int,
        guidance_scale: float,
        color_fix: str | None,
        lr_latent: str,
        output_type: str,
        sampler: str,
        start_point: str,
        start_steps: int,
    ) -> None:
        """Refuse bad arguments before any work is done, naming all of them at once."""
        problems = []
        if not isinstance(image, Image.Image):
            raise InputError(f"image must be a PIL image, got {type(image).__name__}")
        if not isinstance(steps, int) or steps < 1:
            problems.append(f"num_inference_steps must be an integer >= 1, got {steps!r}")
        if guidance_scale < 1.0:
            problems.append(f"guidance_scale must be >= 1.0, got {guidance_scale}")
        if color_fix is not None and color_fix not in COLOR_FIX_METHODS:
            problems.append(f"color_fix must be one of {', '.join(COLOR_FIX_METHODS)}, got {color_fix!r}")
        if lr_latent not in ("sample", "mean"):
            problems.append(f"lr_latent must be 'sample' or 'mean', got {lr_latent!r}")
        if output_type not in ("pil", "pt"):
            problems.append(f"output_type must be 'pil' or 'pt', got {output_type!r}")
        if sampler not in SAMPLERS:
            problems.append(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        if start_point not in START_POINTS:
            problems.append(f"start_point must be one of {', '.join(START_POINTS)}, got {start_point!r}")
        last_step = self.schedule.num_train_timesteps - 1
        if not isinstance(start_steps, int) or not 1 <= start_steps <= last_step:
            problems.append(f"start_steps must be an integer from 1 to {last_step}, got {start_steps!r}")
        if problems:
            raise ConfigError("; ".join(problems))

    @contextmanager
    def stage(self, name: str, *models: torch.nn.Module | None) -> Iterator[None]:
        """One stage of the flow: progress report, the stage hook, per-stage timing, and with
        offload the stage's networks on the execution device only while it runs."""
        StageCounter(self.progress, name)
        with self.stage_hook(name) if self.stage_hook is not None else nullcontext():
            moved = [m for m in models if m is not None] if self._offload else []
            if self.execution_device.type == "cpu":
                keep_heap_within_stage()
            for model in moved:
                model.to(self.execution_device)
            start = time.perf_counter()
            try:
                yield
            finally:
                if self.execution_device.type == "cuda":
                    torch.cuda.synchronize(self.execution_device)
                self._timings[name] = self._timings.get(name, 0.0) + time.perf_counter() - start
                for model in moved:
                    model.to("cpu")
                if self.execution_device.type == "cpu":
                    trim_host_heap()  # the next stage's peak starts from the weights, not this stage's leftovers

    def tag(self, image: Image.Image):
        """RAM + DAPE on the LR image, in float32: tags (prompt) and (1, 145, 512) image embeddings
        (float32; the caller casts them to the denoiser's dtype)."""
        if self.tagger is None:
            raise ConfigError("this pipeline has no tagger: pass tags= and ram_embeds=")
        pixels = pil_to_tensor(image).to(self.device, torch.float32)
        return self.tagger.tag(pixels)

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """CLIP last hidden state of the prompt, padded/truncated to the tokenizer's 77 tokens."""
        ids = self.prompt_token_ids(prompt).to(self.text_encoder.device)
        return self.text_encoder(ids)[0].to(self.dtype)

    def prompt_token_ids(self, prompt: str) -> torch.Tensor:
        """Token ids as the official pipeline makes them (pad to max length, truncate)."""
        return self.tokenizer(
            prompt, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids

    def encode_image(
        self, image: torch.Tensor, generator: torch.Generator, mode: str, *, tile: int | None = None
    ) -> torch.Tensor:
        """VAE latent of an image in [0, 1], scaled by the VAE's scaling factor (:meth:`encode_distribution`
        then :meth:`latent_from`)."""
        return self.latent_from(self.encode_distribution(image, tile=tile), generator, mode)

    def encode_distribution(self, image: torch.Tensor, *, tile: int | None = None) -> Any:
        """The VAE's latent distribution (``mean``, ``std``) of an image in [0, 1]; tiled (with
        whole-image GroupNorm statistics) when the image is larger than ``tile`` pixels."""
        pixels = (image * 2 - 1).to(self.vae.dtype)
        if tile is not None and max(image.shape[-2:]) > tile:
            return tiled_encode(self.vae, pixels, tile)
        return self.vae.encode(pixels).latent_dist

    def latent_from(self, distribution: Any, generator: torch.Generator, mode: str) -> torch.Tensor:
        """A latent of a VAE distribution, scaled by the VAE's scaling factor: its mean, or a sample
        (the noise drawn from ``generator`` on the CPU)."""
        if mode == "mean":
            latent = distribution.mean
        else:
            eps = torch.randn(distribution.mean.shape, generator=generator, dtype=torch.float32)
            latent = distribution.mean.float() + distribution.std.float() * eps.to(distribution.mean.device)
        return latent.float() * self.vae.config.scaling_factor

    def predict_noise(
        self,
        latents: torch.Tensor,
        timestep: int,
        prompt_embeds: torch.Tensor,
        ram_embeds: torch.Tensor,
        condition: torch.Tensor,
        conditioning_scale: float,
        guidance_scale: float,
    ) -> torch.Tensor:
        """Epsilon prediction of ControlNet + UNet for a batch of latents (whole image or tiles).

        ``prompt_embeds``/``ram_embeds`` hold one image's conditioning ([negative, positive] with
        classifier-free guidance above 1.0); they are repeated over the batch here."""
        do_cfg = guidance_scale > 1.0
        batch = latents.shape[0]
        model_input = torch.cat([latents] * 2) if do_cfg else latents
        model_input = model_input.to(self.dtype)
        condition = torch.cat([condition] * 2) if do_cfg else condition
        prompt_embeds = prompt_embeds.repeat_interleave(batch, dim=0)
        ram_embeds = ram_embeds.repeat_interleave(batch, dim=0)
        t = torch.tensor(timestep, device=self.device)
        down_res, mid_res = self.controlnet(
            model_input,
            t,
            encoder_hidden_states=prompt_embeds,
            controlnet_cond=condition.to(self.dtype),
            conditioning_scale=conditioning_scale,
            image_encoder_hidden_states=ram_embeds,
            return_dict=False,
        )
        noise_pred = self.unet(
            model_input,
            t,
            encoder_hidden_states=prompt_embeds,
            image_encoder_hidden_states=ram_embeds,
            down_block_additional_residuals=down_res,
            mid_block_additional_residual=mid_res,
            return_dict=False,
        )[0]
        if do_cfg:
            uncond, text = noise_pred.chunk(2)
            noise_pred = uncond + guidance_scale * (text - uncond)
        return noise_pred

    def conditioned_denoiser(
        self, prompt_embeds: torch.Tensor, ram_embeds: torch.Tensor, conditioning_scale: float, guidance_scale: float
    ) -> ConditionedDenoiser:
        """:meth:`predict_noise` with one image's prompt and RAM conditioning bound: what the
        sampler's denoisers (:func:`seesr.engines.seesr.sampling.tiled_denoiser`) call with latents and their
        control-image crops."""

        def model(latents: torch.Tensor, timestep: int, condition: torch.Tensor) -> torch.Tensor:
            return self.predict_noise(
                latents, timestep, prompt_embeds, ram_embeds, condition, conditioning_scale, guidance_scale
            )

        return model

    def decode(self, latents: torch.Tensor, *, tile: int | None = None) -> torch.Tensor:
        """VAE decode to [-1, 1] (unclamped), tiled when the latent is larger than ``tile``.
        In half precision a non-finite result is decoded again in float32."""
        scaled = latents / self.vae.config.scaling_factor

        def run() -> torch.Tensor:
            if tile is not None and max(latents.shape[-2:]) > tile:
                return tiled_decode(self.vae, scaled.to(self.vae.dtype), tile)
            return self.vae.decode(scaled.to(self.vae.dtype), return_dict=False)[0]

        image = run()
        if self.vae.dtype != torch.float32 and not torch.isfinite(image).all():
            logger.warning("half-precision VAE decode overflowed; decoding again in float32")
            half = self.vae.dtype
            torch.nn.Module.to(self.vae, torch.float32)  # see `to` on diffusers' spurious warning
            try:
                image = run()
            finally:
                torch.nn.Module.to(self.vae, half)
        return image.float()

