"""Colour fix against the official wavelet / AdaIN references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from seesr.imaging.colorfix import adain_color_fix, apply_color_fix, wavelet_color_fix, wavelet_lowpass
from seesr.errors import ConfigError
from seesr.imaging.convert import pil_to_tensor, tensor_to_pil


@pytest.fixture(scope="module")
def pair(tiny):
    target = pil_to_tensor(Image.open(tiny / "inputs" / "colorfix_target.png"))
    source = pil_to_tensor(Image.open(tiny / "inputs" / "colorfix_source.png"))
    return target, source


@pytest.mark.parametrize("method,fix", [("wavelet", wavelet_color_fix), ("adain", adain_color_fix)])
def test_float_result_matches_official(pair, refs, method, fix):
    target, source = pair
    torch.testing.assert_close(fix(target, source)[0], refs("colorfix")[f"{method}_float"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["wavelet", "adain"])
def test_png_within_one_level(pair, refs, tiny, method):
    """The official code truncates to uint8; we round, so we differ by at most 1 level."""
    target, source = pair
    ours = np.asarray(tensor_to_pil(apply_color_fix(target, source, method))).astype(int)
    official = refs("colorfix")[f"{method}_uint8"].numpy().astype(int)
    png = np.asarray(Image.open(tiny / "refs" / "colorfix" / f"{method}.png").convert("RGB")).astype(int)
    assert np.array_equal(png, official)
    assert np.abs(ours - official).max() <= 1
    truncated = (apply_color_fix(target, source, method).clamp(0, 1) * 255).to(torch.uint8)[0].permute(1, 2, 0)
    assert np.array_equal(truncated.numpy().astype(int), official)


def test_pipeline_output_wavelet_png(tiny):
    """Official wavelet_color_fix applied to the official 2-step output PNG."""
    output = pil_to_tensor(Image.open(tiny / "refs" / "pipeline" / "steps2_untiled.png"))
    source = pil_to_tensor(Image.open(tiny / "inputs" / "pipeline_input.png"))
    ours = np.asarray(tensor_to_pil(wavelet_color_fix(output, source))).astype(int)
    official = np.asarray(Image.open(tiny / "refs" / "pipeline" / "steps2_untiled_wavelet.png").convert("RGB"))
    assert np.abs(ours - official.astype(int)).max() <= 1


def test_wavelet_keeps_detail_and_takes_colour():
    torch.manual_seed(0)
    detail = torch.rand(1, 3, 96, 96) * 0.2
    colour = torch.full((1, 3, 96, 96), 0.5)
    fixed = wavelet_color_fix(detail + 0.3, colour)
    assert abs(fixed.mean().item() - 0.5) < 0.01
    torch.testing.assert_close(fixed, detail - wavelet_lowpass(detail) + 0.5, atol=1e-5, rtol=0)


def test_unknown_method_and_size_mismatch_refused(pair):
    target, source = pair
    with pytest.raises(ConfigError, match="color_fix"):
        apply_color_fix(target, source, "sepia")
    with pytest.raises(ConfigError, match="equal sizes"):
        apply_color_fix(target, source[..., :32], "wavelet")
    assert apply_color_fix(target, source, "none") is target
