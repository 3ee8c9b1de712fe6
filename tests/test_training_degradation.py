"""The training degradation: the shipped values against the official files (held here as literal
tables, since the official source is not part of the repository), USM sharpening against OpenCV,
and each stage's statistics pinned against the parameters."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

import yaml

from seesr.errors import ConfigError
from seesr.training.degradation import (
    DEFAULT_CONFIG_FILE,
    KERNEL_SIZES,
    NAMED_CONFIGS,
    DegradationConfig,
    blur_kernel,
    degrade,
    final_sinc,
    jpeg,
    filter2d,
    mixed_kernel,
    reflect_pad,
    sinc_kernel,
    to_8bit,
    usm_sharpen,
)

CONFIG = DegradationConfig.load()
KERNELS = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
KERNEL_PROBS = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]
MAKE_PAIRED_DATA = {  # utils_data/make_paired_data.py at cswry/SeeSR 8edecc7: key -> (value, line)
    "blur_kernel_size": (21, 43), "kernel_list": (KERNELS, 44), "kernel_prob": (KERNEL_PROBS, 45),
    "sinc_prob": (0.1, 46), "blur_sigma": ([0.2, 3], 47), "betag_range": ([0.5, 4], 48), "betap_range": ([1, 2], 49),
    "blur_kernel_size2": (11, 51), "kernel_list2": (KERNELS, 52), "kernel_prob2": (KERNEL_PROBS, 53),
    "sinc_prob2": (0.1, 54), "blur_sigma2": ([0.2, 1.5], 55), "betag_range2": ([0.5, 4.0], 56),
    "betap_range2": ([1, 2], 57), "final_sinc_prob": (0.8, 59),
    "resize_prob": ((0.2, 0.7, 0.1), 77), "resize_range": ((0.15, 1.5), 78), "gaussian_noise_prob": (0.5, 79),
    "noise_range": ((1, 30), 80), "poisson_scale_range": ((0.05, 3.0), 81), "gray_noise_prob": (0.4, 82),
    "jpeg_range": ((30, 95), 83), "second_blur_prob": (0.8, 86), "resize_prob2": ((0.3, 0.4, 0.3), 87),
    "resize_range2": ((0.3, 1.2), 88), "gaussian_noise_prob2": (0.5, 89), "noise_range2": ((1, 25), 90),
    "poisson_scale_range2": ((0.05, 2.5), 91), "gray_noise_prob2": (0.4, 92), "jpeg_range2": ((30, 95), 93),
    "use_usm": (True, 106), "scale": (4, 106),  # realesrgan_degradation(batch, ..., use_usm=True, sf=4)
    "color_jitter_prob": (0.0, None), "gray_prob": (0.0, None),  # make_paired_data.py has neither step
}  # fmt: skip
PARAMS_REALESRGAN = {  # dataloaders/params_realesrgan.yml at 8edecc7: key -> (value, line)
    "scale": (4, 1), "color_jitter_prob": (0.0, 2), "gray_prob": (0.0, 3),
    "resize_prob": ((0.2, 0.7, 0.1), 6), "resize_range": ((0.3, 1.5), 7), "gaussian_noise_prob": (0.5, 8),
    "noise_range": ((1, 15), 9), "poisson_scale_range": ((0.05, 2.0), 10), "gray_noise_prob": (0.4, 11),
    "jpeg_range": ((60, 95), 12), "second_blur_prob": (0.5, 15), "resize_prob2": ((0.3, 0.4, 0.3), 16),
    "resize_range2": ((0.6, 1.2), 17), "gaussian_noise_prob2": (0.5, 18), "noise_range2": ((1, 12), 19),
    "poisson_scale_range2": ((0.05, 1.0), 20), "gray_noise_prob2": (0.4, 21), "jpeg_range2": ((60, 100), 22),
    "blur_kernel_size": (21, 25), "kernel_list": (KERNELS, 26), "kernel_prob": (KERNEL_PROBS, 27),
    "sinc_prob": (0.1, 28), "blur_sigma": ([0.2, 3], 29), "betag_range": ([0.5, 4], 30), "betap_range": ([1, 2], 31),
    "blur_kernel_size2": (21, 33), "kernel_list2": (KERNELS, 34), "kernel_prob2": (KERNEL_PROBS, 35),
    "sinc_prob2": (0.1, 36), "blur_sigma2": ([0.2, 1.5], 37), "betag_range2": ([0.5, 4], 38),
    "betap_range2": ([1, 2], 39), "final_sinc_prob": (0.8, 41),
    "use_usm": (False, None),  # dataloaders/realesrgan.py line 195: the USM call is commented out
}  # fmt: skip


def source_image() -> torch.Tensor:
    """A 128x96 test image (1, 3, H, W) in [0, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 128), torch.linspace(0, 1, 96), indexing="ij")
    return torch.stack([xx, yy, (xx * 7).sin() * 0.5 + 0.5]).unsqueeze(0)


@pytest.fixture(scope="module")
def runs() -> list:
    """40 degradations of the source image, seeds (0, i)."""
    return [degrade(source_image(), CONFIG, np.random.default_rng([0, i])) for i in range(40)]


@pytest.mark.parametrize("name,official", [(None, MAKE_PAIRED_DATA), ("realesrgan", PARAMS_REALESRGAN)])
def test_shipped_files_hold_the_official_values(name, official):
    """The default file is make_paired_data.py's (SeeSR's training pairs); `realesrgan` is
    params_realesrgan.yml's. Every key of each file is checked; both files have the same keys."""
    config = DegradationConfig.load(name)
    for key, (value, line) in official.items():
        ours = config.kernel_info[key] if key in config.kernel_info else getattr(config, key)
        assert ours == value, f"{key}: ours {ours!r}, official {value!r} (line {line})"
    keys = {k for k in vars(config) if k != "kernel_info"} | set(config.kernel_info)
    assert keys == set(official)
    default, named = yaml.safe_load(DEFAULT_CONFIG_FILE.read_text()), yaml.safe_load(NAMED_CONFIGS["realesrgan"].read_text())
    assert default.keys() == named.keys() and default["kernel_info"].keys() == named["kernel_info"].keys()


def test_usm_sharpening_is_basicsr_usmsharp():
    """basicsr USMSharp (radius 50 -> 51x51 Gaussian, sigma from OpenCV's rule; weight 0.5,
    threshold 10), computed independently with cv2.GaussianBlur on a real photo."""
    import cv2
    from conftest import shared_input
    from PIL import Image

    image = np.asarray(Image.open(shared_input("00003.png")).convert("RGB").crop((0, 0, 160, 120)), np.float32) / 255
    blur = cv2.GaussianBlur(image, (51, 51), 0)
    residual = image - blur
    soft_mask = cv2.GaussianBlur((np.abs(residual) * 255 > 10).astype(np.float32), (51, 51), 0)
    expected = soft_mask * np.clip(image + 0.5 * residual, 0, 1) + (1 - soft_mask) * image
    ours = usm_sharpen(torch.from_numpy(image).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - expected).max() < 1e-5
    assert np.abs(expected - image).max() > 0.1  # a real sharpening, not the identity


def test_the_training_target_is_the_sharpened_hr():
    """use_usm: the HR target is the flipped crop USM-sharpened, rounded to 8 bits (the official gt/
    PNG); the realesrgan values leave it as it was."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    hr = to_8bit(torch.stack([xx, yy, (xx * 9).sin() * 0.5 + 0.5]).unsqueeze(0))
    sharpened = degrade(hr, CONFIG, np.random.default_rng(3))
    source = hr.flip(-1) if sharpened.trace["flipped"] else hr
    assert torch.equal(sharpened.hr, to_8bit(usm_sharpen(source))) and not torch.equal(sharpened.hr, source)
    plain = degrade(hr, DegradationConfig.load("realesrgan"), np.random.default_rng(3))
    assert torch.equal(plain.hr, hr.flip(-1) if plain.trace["flipped"] else hr)


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
        assert CONFIG.jpeg_range[0] <= run.trace["jpeg1"]["quality"] <= CONFIG.jpeg_range[1]
        assert CONFIG.jpeg_range2[0] <= run.trace["jpeg2"]["quality"] <= CONFIG.jpeg_range2[1]
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
    again = degrade(source_image(), CONFIG, np.random.default_rng([0, 0]))
    other = degrade(source_image(), CONFIG, np.random.default_rng([0, 1]))
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


def test_reflect_padding_of_any_width_is_numpys():
    """Pads wider than the image (a 64 px crop shrunk to 9 px by make_paired_data.py's 0.15 resize,
    then blurred with a 21x21 kernel) mirror again, as numpy's reflect mode does."""
    image = torch.rand(1, 3, 9, 5, generator=torch.Generator().manual_seed(0))
    ours = reflect_pad(image, 12, 3, 10, 0)
    expected = np.pad(image.numpy(), ((0, 0), (0, 0), (10, 0), (12, 3)), mode="reflect")
    assert torch.equal(ours, torch.from_numpy(expected))
    assert filter2d(image, torch.ones(21, 21) / 441).shape == image.shape
    assert torch.equal(reflect_pad(image[..., :1], 2, 2, 0, 0), image[..., :1].expand(1, 3, 9, 5))
    small = degrade(source_image()[..., :32, :32], CONFIG, np.random.default_rng(0))  # the smallest --crop-size
    assert small.lr.shape == (1, 3, 8, 8)
