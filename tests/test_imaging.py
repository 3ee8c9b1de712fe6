"""seesr.imaging: the denoise pre-stage and comparison images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from seesr.errors import ConfigError
from seesr.imaging import denoise

# --------------------------------------------------------------------------------------------
# denoise


def _noisy_flat(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    flat = np.full((64, 64, 3), 128.0) + rng.normal(0, 12, (64, 64, 3))
    return Image.fromarray(np.clip(np.rint(flat), 0, 255).astype(np.uint8), "RGB")


def test_denoise_reduces_noise():
    noisy = _noisy_flat()
    before = np.asarray(noisy, dtype=np.float64).std()
    after = np.asarray(denoise(noisy, 10), dtype=np.float64).std()
    assert after < before / 2
    gray = noisy.convert("L")
    assert np.asarray(denoise(gray, 10), dtype=np.float64).std() < np.asarray(gray, dtype=np.float64).std() / 2
    rgba = noisy.copy()
    rgba.putalpha(77)
    out = denoise(rgba, 5)
    assert out.mode == "RGBA" and (np.asarray(out)[..., 3] == 77).all()


def test_denoise_strength_zero_is_identity():
    noisy = _noisy_flat(1)
    out = denoise(noisy, 0)
    assert out is not noisy and np.array_equal(np.asarray(out), np.asarray(noisy))


@pytest.mark.parametrize("strength", [-1, 30.5, float("nan"), float("inf"), "5", True])
def test_denoise_strength_validated(strength):
    with pytest.raises(ConfigError):
        denoise(_noisy_flat(), strength)
