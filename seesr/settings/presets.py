"""Presets, and what each model and engine changes, as data: the layers between the declared
defaults and what a user gives (:func:`seesr.settings.resolve.resolve_settings` merges them)."""

from __future__ import annotations

from typing import Any

from seesr.settings.models import MODELS, REALESRGAN_MODELS

PRESETS: dict[str, dict[str, Any]] = {
    "speed": {"steps": 1},
    "balanced": {"steps": 2},
    "quality": {"steps": 4, "latent_tile": 64, "latent_overlap": 16, "kds_particles": 4},
    "memory": {
        "steps": 2,
        "latent_tile": 48,
        "latent_overlap": 16,
        "tile_batch_size": 1,
        "vae_encoder_tile": 512,
        "vae_decoder_tile": 64,
        "dtype": "float16",
        "offload": True,
    },
}
"""What each preset changes from the defaults. The tile sizes are in latent pixels (denoiser, VAE
decoder) and image pixels (VAE encoder); the official latent tiles are 96 with overlap 32 (turbo
script) or 4 (``test_seesr.py``)."""

DEFAULT_SCALE = 4.0
"""The declared scale (``Settings.scale``): SeeSR's x4, and the scale of every model not named for another."""
TURBO = MODELS["seesr-turbo"]
"""The default model, whose official defaults are the declared defaults of its settings."""
MODEL_SETTINGS = ("steps", "guidance_scale", "sampler", "max_latent_tile", "latent_overlap")
"""The settings a model brings (:class:`~seesr.settings.models.ModelSpec` fields of the same names)."""
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    **{
        name: {key: getattr(spec, key) for key in MODEL_SETTINGS if getattr(spec, key) != getattr(TURBO, key)}
        for name, spec in MODELS.items()
    },
    **{name: {"scale": float(spec.scale)} for name, spec in REALESRGAN_MODELS.items() if spec.scale != DEFAULT_SCALE},
}
"""What each model changes from the defaults, over the preset: a SeeSR model its official script's
settings (SeeSR-Turbo's are the defaults; a preset's latent tiles keep the model's overlap: ``--model
seesr --preset quality``, tiles 64 with overlap 4); a bundled Real-ESRGAN model named for a scale
(``realesr-animevideov3-x2``) that scale. An explicit setting (``-s``) wins over both."""
MODEL_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    name: {"steps": (1, spec.max_steps)} for name, spec in MODELS.items() if spec.max_steps != TURBO.max_steps
}
"""Ranges that differ per model (everything else: the declared range)."""
ENGINE_DEFAULTS: dict[str, dict[str, Any]] = {"realesrgan": {"color_fix": "adain"}}
"""What each engine changes from the defaults, under the model's defaults (Real-ESRGAN: AdaIN,
which raised Y-PSNR and SSIM on RealSR; docs/evaluation.md has the numbers)."""
