"""The networks of SeeSR (the SeeSR UNet, its ControlNet and the RAM + DAPE tagger, one module
each) and the released models they make up (:data:`MODELS`; light, imports no network code)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ModelSpec:
    """One released SeeSR model: how its UNet is assembled and its sampling defaults."""

    unet_rule: Literal["turbo", "plain"]
    """``turbo``: the base (sd-turbo) UNet + SeeSR's image attention; ``plain``: SeeSR's UNet whole."""
    base: str
    """The WeightPaths field of the folder with the VAE, text encoder, tokenizer and scheduler."""
    steps: int
    """Default denoising steps."""
    max_steps: int
    guidance_scale: float
    """Default classifier-free guidance (1.0: none)."""


MODELS: dict[str, ModelSpec] = {
    "seesr-turbo": ModelSpec(unet_rule="turbo", base="sd_turbo", steps=2, max_steps=8, guidance_scale=1.0),
    "seesr": ModelSpec(unet_rule="plain", base="sd2_base", steps=50, max_steps=100, guidance_scale=5.5),
}
"""The official models: SeeSR-Turbo (``test_seesr_turbo.py``) and SeeSR on SD-2-base
(``test_seesr.py``; the README's command uses 50 steps and guidance 5.5)."""
