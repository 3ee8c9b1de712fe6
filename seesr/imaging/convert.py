"""Pure image operations: PIL <-> tensor conversions, the official working-size rule, the optional
denoise pre-stage, and side-by-side comparison images."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, features

from seesr.settings.defaults import MAX_DENOISE_STRENGTH
from seesr.errors import ConfigError, InputError

LATENT_FACTOR = 8
"""The SD VAE downsamples by 8: working images are cropped to a multiple of 8 (official rule)."""
DIVIDER_COLOUR = (128, 128, 128)
"""Mid grey between the halves of a side-by-side image."""
COMPARE_DIVIDER = 4
"""Width in pixels of the divider of a ``--compare`` image."""
INPUT_LABEL = "input (bicubic)"


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


@dataclass(frozen=True)
class WorkingSize:
    """How an LR image becomes the image the diffusion model works on.

    ``pre_size``: enlarge tiny inputs first (official ``process_size`` rule), or None.
    ``upscaled_size``: bicubic upscale by ``scale``. ``work_size``: floored to a multiple of 8.
    ``output_size``: what the user asked for (input size x scale).
    """

    pre_size: tuple[int, int] | None
    upscaled_size: tuple[int, int]
    work_size: tuple[int, int]
    output_size: tuple[int, int]


def plan_working_size(width: int, height: int, scale: float, process_size: int) -> WorkingSize:
    """Official SeeSR sizing: tiny inputs are first enlarged so the short side reaches
    ``process_size / scale``, then upscaled by ``scale`` and floored to a multiple of 8."""
    if scale <= 0:
        raise ConfigError(f"scale must be positive, got {scale}")
    min_side = int(process_size // scale) if process_size > 0 else 0
    pre_size = None
    if width < min_side or height < min_side:
        factor = min_side / min(width, height)
        pre_size = (int(factor * width), int(factor * height))
    base_w, base_h = pre_size or (width, height)
    upscaled = (_scaled(base_w, scale), _scaled(base_h, scale))
    work = (upscaled[0] // LATENT_FACTOR * LATENT_FACTOR, upscaled[1] // LATENT_FACTOR * LATENT_FACTOR)
    if work[0] < LATENT_FACTOR or work[1] < LATENT_FACTOR:
        raise InputError(
            f"a {width}x{height} image at scale {scale} is smaller than 8 px on a side; use a larger scale"
        )
    return WorkingSize(pre_size, upscaled, work, (_scaled(width, scale), _scaled(height, scale)))


def _scaled(size: int, scale: float) -> int:
    return size * int(scale) if float(scale).is_integer() else max(1, round(size * scale))


def resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Bicubic resize (PIL), a no-op copy when the size already matches, as PIL does."""
    return image.resize(size, Image.Resampling.BICUBIC)


def denoise(image: Image.Image, strength: float) -> Image.Image:
    """Optional pre-stage: OpenCV non-local means (``fastNlMeansDenoisingColored``, h = hColor =
    ``strength``, template 7, search 21) for inputs too noisy for the model.

    ``strength`` in 0..30 (0 returns an unchanged copy; 3-10 is typical). "L" images use the
    gray variant; alpha of "RGBA" / "LA" images is kept untouched. Cost is roughly linear in
    pixels (about a second per megapixel on one core).
    """
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise ConfigError(f"denoise strength must be a number in 0..{MAX_DENOISE_STRENGTH:g}, got {strength!r}")
    if not 0 <= strength <= MAX_DENOISE_STRENGTH:
        raise ConfigError(
            f"denoise strength must be in 0..{MAX_DENOISE_STRENGTH:g} (0 = off, 3-10 typical), got {strength}"
        )
    if image.mode not in ("RGB", "L", "RGBA", "LA"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    if strength == 0:
        return image.copy()
    import cv2

    alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
    h = float(strength)
    if image.mode in ("L", "LA"):
        gray = np.ascontiguousarray(np.asarray(image.getchannel("L")))
        out = Image.fromarray(cv2.fastNlMeansDenoising(gray, None, h, 7, 21), "L")
    else:
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1])
        result = cv2.fastNlMeansDenoisingColored(bgr, None, h, h, 7, 21)
        out = Image.fromarray(np.ascontiguousarray(result[..., ::-1]), "RGB")
    if alpha is not None:
        out.putalpha(alpha)
    out.info.update({k: v for k, v in image.info.items() if k == "icc_profile"})
    return out


def side_by_side(left: Image.Image, right: Image.Image, gap: int = 0) -> Image.Image:
    """``left | right`` on one RGB canvas; ``left`` is bicubic-resized to ``right``'s height;
    ``gap`` pixels of :data:`DIVIDER_COLOUR` separate them."""
    if gap < 0:
        raise ConfigError(f"gap must be >= 0, got {gap}")
    right = right.convert("RGB")
    left = left.convert("RGB")
    if left.height != right.height:
        width = max(1, round(left.width * right.height / left.height))
        left = left.resize((width, right.height), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (left.width + gap + right.width, right.height), DIVIDER_COLOUR)
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + gap, 0))
    return canvas


def compare_image(source: Image.Image, output: Image.Image, output_label: str) -> Image.Image:
    """The ``--compare`` picture: ``source`` bicubic-upscaled to the output's size | ``output``, a
    :data:`COMPARE_DIVIDER` px divider between them, and a black strip above each half naming it
    (:data:`INPUT_LABEL`, ``output_label``) in Pillow's built-in font, clipped to its half."""
    halves = side_by_side(resize(source.convert("RGB"), output.size), output, gap=COMPARE_DIVIDER)
    font = _label_font(max(10, min(48, output.height // 40)))
    left, top, _, bottom = font.getbbox(INPUT_LABEL + output_label)
    pad = max(2, (bottom - top) // 3)
    strip = bottom - top + 2 * pad
    canvas = Image.new("RGB", (halves.width, halves.height + strip), DIVIDER_COLOUR)
    canvas.paste(halves, (0, strip))
    for x, text in ((0, INPUT_LABEL), (output.width + COMPARE_DIVIDER, output_label)):
        label = Image.new("RGB", (output.width, strip), (0, 0, 0))
        ImageDraw.Draw(label).text((pad - left, pad - top), text, fill=(255, 255, 255), font=font)
        canvas.paste(label, (x, 0))
    return canvas


def _label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` px (its fixed bitmap font without FreeType)."""
    return ImageFont.load_default(size) if features.check_module("freetype2") else ImageFont.load_default()
