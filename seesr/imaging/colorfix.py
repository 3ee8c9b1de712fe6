"""Colour correction of the diffusion output against the (bicubic-upscaled) input.

Diffusion decoders drift in colour; SeeSR keeps the output's detail and takes the colour from
the input. ``wavelet`` swaps the lowest frequency band (5-level "a trous" decomposition with the
[1 2 1]/4 kernel, replicate borders, as the official ``wavelet_color_fix``); ``adain`` matches
per-channel mean and standard deviation.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from PIL import Image

from seesr.settings.declare import COLOR_FIX_METHODS
from seesr.errors import ConfigError
from seesr.imaging.convert import tensor_to_pil

ColorFix = Literal["wavelet", "adain", "none"]
WAVELET_LEVELS = 5
ADAIN_EPS = 1e-5


def _blur(image: torch.Tensor, dilation: int) -> torch.Tensor:
    """3x3 binomial blur with holes (dilation), replicate-padded so the size is kept."""
    kernel_1d = torch.tensor([0.25, 0.5, 0.25], dtype=image.dtype, device=image.device)
    kernel = (kernel_1d[:, None] * kernel_1d[None, :]).expand(image.shape[1], 1, 3, 3)
    padded = F.pad(image, (dilation,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=image.shape[1], dilation=dilation)


def wavelet_lowpass(image: torch.Tensor, levels: int = WAVELET_LEVELS) -> torch.Tensor:
    """The coarsest band of the stationary decomposition (blurs with dilation 1, 2, 4, ...)."""
    for level in range(levels):
        image = _blur(image, 2**level)
    return image


def wavelet_color_fix(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Detail of ``target`` + low frequencies (colour) of ``source``; (B,3,H,W), same size."""
    return target - wavelet_lowpass(target) + wavelet_lowpass(source)


def adain_color_fix(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Per-channel mean/std of ``target`` set to those of ``source`` (unbiased variance)."""

    def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.flatten(2)
        return flat.mean(2)[..., None, None], (flat.var(2) + ADAIN_EPS).sqrt()[..., None, None]

    target_mean, target_std = stats(target)
    source_mean, source_std = stats(source)
    return (target - target_mean) / target_std * source_std + source_mean


def apply_color_fix(target: torch.Tensor, source: torch.Tensor, method: str) -> torch.Tensor:
    """Dispatch on the method name; images in [0, 1], result not clamped."""
    if target.shape != source.shape:
        raise ConfigError(f"colour fix needs equal sizes, got {tuple(target.shape)} and {tuple(source.shape)}")
    if method == "wavelet":
        return wavelet_color_fix(target, source)
    if method == "adain":
        return adain_color_fix(target, source)
    if method == "none":
        return target
    raise ConfigError(f"color_fix must be one of {', '.join(COLOR_FIX_METHODS)}; got {method!r}")


def fix_colours(pixels: torch.Tensor, reference: torch.Tensor, method: str) -> Image.Image:
    """``pixels`` (1, 3, H, W) in [0, 1] with the colours of ``reference`` (the same size) by ``method``,
    clamped and rounded to 8 bits: the colour fix after any engine (``none`` only quantises)."""
    return tensor_to_pil(apply_color_fix(pixels.float(), reference.float(), method).clamp(0, 1))
