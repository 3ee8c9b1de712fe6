"""The Real-ESRGAN degradation: each stage's statistics pinned against the official parameters."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from seesr.errors import ConfigError
from seesr.training.degradation import (
    KERNEL_SIZES,
    DegradationConfig,
    blur_kernel,
    degrade,
    final_sinc,
    jpeg,
    mixed_kernel,
    sinc_kernel,
)

CONFIG = DegradationConfig.load()


@pytest.fixture(scope="module")
def runs() -> list:
    """40 degradations of one 128x96 image, seeds (0, i)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 128), torch.linspace(0, 1, 96), indexing="ij")
    hr = torch.stack([xx, yy, (xx * 7).sin() * 0.5 + 0.5]).unsqueeze(0)
    return [degrade(hr, CONFIG, np.random.default_rng([0, i])) for i in range(40)]


def test_defaults_are_the_official_values():
    assert CONFIG.noise_range == (1, 15) and CONFIG.noise_range2 == (1, 12)
    assert CONFIG.jpeg_range == (60, 95) and CONFIG.jpeg_range2 == (60, 100)
    assert CONFIG.resize_range == (0.3, 1.5) and CONFIG.resize_prob2 == (0.3, 0.4, 0.3)
    assert CONFIG.kernel_info["kernel_prob"] == [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]
    assert CONFIG.kernel_info["blur_sigma2"] == [0.2, 1.5] and CONFIG.kernel_info["final_sinc_prob"] == 0.8


def test_kernels_are_normalised_centred_and_sized(runs):
    for run in runs:
        for kernel, info in zip(run.trace["kernels"], (run.trace["kernel1"], run.trace["kernel2"], run.trace["sinc"])):
            assert kernel.shape == (21, 21)
            assert kernel.sum().item() == pytest.approx(1.0, abs=1e-5)
            assert info["size"] == 1 or info["size"] in KERNEL_SIZES
            pad = (21 - info["size"]) // 2
            outside = kernel.clone()
            outside[pad : 21 - pad, pad : 21 - pad] = 0
            assert not outside.any()  # zero-padded around the drawn size
            assert torch.allclose(kernel, kernel.flip(0, 1), atol=1e-6)  # centred (point-symmetric)


def test_gaussian_kernels_match_their_sigma():
    rng = np.random.default_rng(0)
    kernel, info = mixed_kernel(rng, "iso", 21, (2.0, 2.0), (0.5, 4), (1, 2))
    grid = np.arange(-10, 11)
    variance = (kernel.sum(0) * grid**2).sum()
    assert variance == pytest.approx(4.0, rel=0.02) and info["sigma"] == (2.0, 2.0)
    aniso, info = mixed_kernel(np.random.default_rng(1), "aniso", 21, (0.2, 3), (0.5, 4), (1, 2))
    assert np.allclose(aniso, aniso[::-1, ::-1])  # point-symmetric about the centre
    sinc = sinc_kernel(math.pi / 2, 13)
    assert sinc.sum() == pytest.approx(1.0) and sinc[6, 6] == sinc.max()


def test_kernel_families_follow_the_official_probabilities():
    rng = np.random.default_rng(5)
    kinds = Counter(blur_kernel(rng, CONFIG, second=False)[1]["kind"] for _ in range(2000))
    assert kinds["sinc"] / 2000 == pytest.approx(0.1, abs=0.03)
    assert kinds["iso"] / 2000 == pytest.approx(0.9 * 0.45, abs=0.04)
    assert kinds["aniso"] / 2000 == pytest.approx(0.9 * 0.25, abs=0.04)
    finals = Counter(final_sinc(rng, CONFIG)[1]["kind"] for _ in range(1000))
    assert finals["sinc"] / 1000 == pytest.approx(0.8, abs=0.05)


def test_noise_levels_and_jpeg_qualities_stay_in_range(runs):
    for run in runs:
        for noise, gauss, poisson in (("noise1", CONFIG.noise_range, CONFIG.poisson_scale_range),
                                      ("noise2", CONFIG.noise_range2, CONFIG.poisson_scale_range2)):  # fmt: skip
            info = run.trace[noise]
            low, high = gauss if info["kind"] == "gaussian" else poisson
            assert low <= info["level"] <= high
        assert 60 <= run.trace["jpeg1"]["quality"] <= 95 and 60 <= run.trace["jpeg2"]["quality"] <= 100
    kinds = Counter(run.trace["noise1"]["kind"] for run in runs)
    assert kinds["gaussian"] > 5 and kinds["poisson"] > 5


def test_jpeg_stage_is_a_real_jpeg_round_trip():
    image = torch.rand(1, 3, 32, 32)
    low, _ = jpeg(np.random.default_rng(0), image, (10, 10))
    high, info = jpeg(np.random.default_rng(0), image, (95, 95))
    assert info["quality"] == 95
    assert (low - image).abs().mean() > (high - image).abs().mean() > 0


def test_output_size_range_and_quantisation(runs):
    for run in runs:
        assert run.hr.shape == (1, 3, 128, 96) and run.lr.shape == (1, 3, 32, 24)
        assert run.lr.min() >= 0 and run.lr.max() <= 1
        assert torch.allclose(run.lr * 255, (run.lr * 255).round(), atol=1e-4)
    assert len({run.trace["flipped"] for run in runs}) == 2


def test_reproducible_per_seed_and_index(runs):
    hr = runs[0].hr if not runs[0].trace["flipped"] else runs[0].hr.flip(-1)
    again = degrade(hr, CONFIG, np.random.default_rng([0, 0]))
    other = degrade(hr, CONFIG, np.random.default_rng([0, 1]))
    assert torch.equal(again.lr, runs[0].lr) and not torch.equal(other.lr, runs[0].lr)


def test_yaml_overrides_and_rejects_unknown_keys(tmp_path):
    custom = tmp_path / "d.yml"
    custom.write_text("noise_range: [2, 3]\nkernel_info:\n  sinc_prob: 0.0\n")
    config = DegradationConfig.load(custom)
    assert config.noise_range == (2, 3) and config.kernel_info["sinc_prob"] == 0.0
    assert config.kernel_info["blur_sigma"] == [0.2, 3]
    custom.write_text("noise_rnage: [2, 3]\n")
    with pytest.raises(ConfigError, match="noise_rnage"):
        DegradationConfig.load(custom)
