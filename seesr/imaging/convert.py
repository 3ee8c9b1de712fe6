"""PIL <-> tensor conversions, the bicubic resize and the output size (of a scale, or of a width and
height asked for): what every engine and the API use to move images between Pillow and torch."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from seesr.errors import ConfigError


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (1, 3, H, W) float32 in [0, 1] (torchvision ``ToTensor`` semantics)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) in [0, 1] -> RGB PIL, clamped and rounded to the nearest level."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ConfigError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def scaled_size(size: int, scale: float) -> int:
    """One side of the output: ``size x scale`` (exact for whole scales, else rounded, at least 1)."""
    return size * int(scale) if float(scale).is_integer() else max(1, round(size * scale))


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The size of the output for an input of ``width x height`` at ``scale`` (every engine's)."""
    return scaled_size(width, scale), scaled_size(height, scale)


def scale_for_size(size: tuple[int, int], width: int | None, height: int | None) -> float:
    """The scale that takes an input of ``size`` to ``width`` and/or ``height`` pixels: one keeps the
    aspect, both give the largest size that fits inside them. At that scale :func:`output_size` is
    the width (or height) asked for exactly and the other side rounded to the nearest pixel (a
    40x30 input at width 100: scale 2.5, 100x75)."""
    ratios = [wanted / side for wanted, side in zip((width, height), size) if wanted is not None]
    if not ratios:
        raise ConfigError("scale_for_size needs a width or a height")
    return min(ratios)


def resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Bicubic resize (PIL), a no-op copy when the size already matches, as PIL does."""
    return image.resize(size, Image.Resampling.BICUBIC)
