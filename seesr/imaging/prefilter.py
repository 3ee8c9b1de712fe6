"""The optional pre-filter before upscaling: OpenCV non-local means, for inputs too noisy for the
model (the ``denoise`` setting; the diffusion's own denoising is the SeeSR engine's)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from seesr.errors import ConfigError
from seesr.settings.declare import setting_info

MAX_DENOISE_STRENGTH = setting_info("denoise").range[1]
"""Strongest non-local-means pre-filter (the ``denoise`` setting's range); beyond it flat areas are painted."""


def nl_means(image: Image.Image, strength: float) -> Image.Image:
    """The pre-filter of the ``denoise`` setting: OpenCV non-local means
    (``fastNlMeansDenoisingColored``, h = hColor = ``strength``, template 7, search 21) for inputs
    too noisy for the model.

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
