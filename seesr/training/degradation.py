"""The Real-ESRGAN second-order degradation (Wang et al. 2021) that makes SeeSR's training LR images.

Written on torch + OpenCV after the official ``utils_data/make_paired_data.py`` (basicsr): the HR
image USM-sharpened (basicsr ``USMSharp``), then blur (isotropic, anisotropic, generalized and
plateau Gaussians, or a sinc), random resize, Gaussian or Poisson noise, JPEG; twice; then resize to
HR/scale with a final sinc filter before or after the last JPEG. The parameters are data
(:class:`DegradationConfig`, a YAML in the official ``params_realesrgan.yml`` layout): the default
file holds ``make_paired_data.py``'s values, ``realesrgan`` names ``params_realesrgan.yml``'s. Every
random draw comes from one ``numpy.random.Generator``, so an LR image is a pure function of (HR
image, config, seed, index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from seesr.errors import ConfigError
from seesr.settings.config_file import config_file_settings
from seesr.settings.fields import parse_value

DEFAULT_CONFIG_FILE = Path(__file__).with_name("degradation.yml")
"""``make_paired_data.py``'s values (lines 43-96), with which SeeSR's training pairs were made."""
NAMED_CONFIGS = {"realesrgan": Path(__file__).with_name("degradation_realesrgan.yml")}
"""Shipped alternatives to the default, by name (``--degradation realesrgan``): the Real-ESRGAN
values of the official ``dataloaders/params_realesrgan.yml``, without USM sharpening."""
KERNEL_SIZES = tuple(2 * v + 1 for v in range(3, 11))
"""Blur kernel sizes drawn uniformly (7..21), as in the official ``kernel_range``."""
PADDED_KERNEL_SIZE = 21
"""Every kernel is zero-padded to 21x21 (official ``pulse_tensor`` / ``pad_to=21``)."""
LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
"""ITU-R 601 luma weights (torchvision ``rgb_to_grayscale``)."""
RESIZE_MODES = ("area", "bilinear", "bicubic")
KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
USM_KERNEL_SIZE = 51
"""basicsr ``USMSharp(radius=50, sigma=0)``: a 51x51 Gaussian (the radius made odd) whose sigma
OpenCV derives from the size: 0.3 * ((51 - 1) / 2 - 1) + 0.8 = 8.0."""
USM_WEIGHT, USM_THRESHOLD = 0.5, 10
"""``USMSharp.forward`` defaults (``make_paired_data.py`` line 111 calls it with them): half the
residual added, where it exceeds 10 levels of 255."""


@dataclass(frozen=True)
class DegradationConfig:
    """The degradation parameters (keys of ``degradation.yml``); ``*2`` keys are the second pass's."""

    scale: int
    color_jitter_prob: float
    gray_prob: float
    use_usm: bool
    resize_prob: tuple[float, float, float]
    resize_range: tuple[float, float]
    gaussian_noise_prob: float
    noise_range: tuple[float, float]
    poisson_scale_range: tuple[float, float]
    gray_noise_prob: float
    jpeg_range: tuple[float, float]
    second_blur_prob: float
    resize_prob2: tuple[float, float, float]
    resize_range2: tuple[float, float]
    gaussian_noise_prob2: float
    noise_range2: tuple[float, float]
    poisson_scale_range2: tuple[float, float]
    gray_noise_prob2: float
    jpeg_range2: tuple[float, float]
    kernel_info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "DegradationConfig":
        """The defaults (``degradation.yml``), overridden by the keys of ``path`` when given; every
        value is held to :data:`RULES` / :data:`KERNEL_RULES` and all problems are one ConfigError."""
        defaults = config_file_settings(DEFAULT_CONFIG_FILE)
        given = config_file_settings(NAMED_CONFIGS.get(str(path), path)) if path is not None else {}
        kernel_given = given.get("kernel_info", {})
        problems = []
        if not isinstance(kernel_given, dict):
            problems.append(f"kernel_info={kernel_given!r} (a mapping of blur kernel settings)")
            kernel_given = {}
        top = {k: v for k, v in {**defaults, **given}.items() if k != "kernel_info"}
        values, top_problems = check_values(RULES, top)
        kernel = {**defaults["kernel_info"], **kernel_given}
        kernel_info, kernel_problems = check_values(KERNEL_RULES, kernel, "kernel_info.")
        problems += top_problems + kernel_problems
        if problems:
            raise ConfigError(f"invalid degradation settings in {path or DEFAULT_CONFIG_FILE}: {'; '.join(problems)} "
                              f"(see {DEFAULT_CONFIG_FILE})")  # fmt: skip
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}, kernel_info=kernel_info)

    def kernel(self, key: str, second: bool) -> Any:
        return self.kernel_info[f"{key}2" if second else key]


# ------------------------------------------------------------------------------ what is allowed
@dataclass(frozen=True)
class Rule:
    """What one degradation key accepts: a value of ``kind`` (converted by the settings rule:
    finite numbers, integers without a fraction) within ``range`` or among ``choices``; with
    ``length``, a list of that many such values (a number, a (min, max) pair, or the name of the
    key whose list it pairs with)."""

    kind: type = float
    range: tuple[float, float] | None = None
    length: int | tuple[int, int] | str | None = None
    choices: tuple[str, ...] | None = None
    ordered: bool = False
    """A [low, high] pair: low <= high."""
    weights: bool = False
    """Relative probabilities: their sum must be above 0."""
    why: str = ""
    """Why the range is narrower than the name suggests."""

    def check(self, name: str, raw: Any, siblings: dict[str, Any]) -> tuple[Any, str | None]:
        """(the converted value, None) or (raw, the problem in words); ``siblings``: the other keys."""
        low, high = self._count(siblings) if self.length is not None else (0, 0)
        if self.length is None and isinstance(raw, (list, tuple, dict)):
            value, reason = raw, "a single value, not a list"
        elif self.length is None:
            value, reason = self._one(raw)
        elif not isinstance(raw, (list, tuple)) or not low <= len(raw) <= high:
            value, reason = raw, f"a list of {self._count_text(siblings)}"
        else:
            converted = [self._one(item) for item in raw]
            value, reason = [v for v, _ in converted], next((r for _, r in converted if r is not None), None)
            if reason is None and self.ordered and value[0] > value[1]:
                reason = "the first value is the lower bound: at most the second"
            if reason is None and self.weights and sum(value) <= 0:
                reason = "relative probabilities: at least one above 0"
        if reason is not None:
            shown = list(raw) if isinstance(raw, tuple) else raw
            return raw, f"{name}={shown!r} ({reason})"
        return value, None

    def _one(self, raw: Any) -> tuple[Any, str | None]:
        try:
            value = parse_value(raw, self.kind)
        except (TypeError, ValueError) as error:
            return raw, str(error)
        if self.choices is not None and value not in self.choices:
            return raw, f"allowed: {', '.join(self.choices)}"
        if self.range is not None and not self.range[0] <= value <= self.range[1]:
            return raw, f"allowed: {self.range[0]:g} to {self.range[1]:g}" + (f"; {self.why}" if self.why else "")
        return value, None

    def _count(self, siblings: dict[str, Any]) -> tuple[int, int]:
        if isinstance(self.length, str):
            paired = siblings.get(self.length)
            n = len(paired) if isinstance(paired, (list, tuple)) else 0
            return n, n
        return self.length if isinstance(self.length, tuple) else (self.length, self.length)

    def _count_text(self, siblings: dict[str, Any]) -> str:
        low, high = self._count(siblings)
        what = "names" if self.kind is str else "numbers"
        paired = f", one per {self.length}" if isinstance(self.length, str) else ""
        return f"{low} {what}{paired}" if low == high else f"{low} to {high} {what}"


PROBABILITY = Rule(float, (0.0, 1.0))


def pair(low: float, high: float) -> Rule:
    """A [min, max] range whose ends lie in [low, high]."""
    return Rule(float, (low, high), length=2, ordered=True)


def both_passes(rules: dict[str, Rule]) -> dict[str, Rule]:
    """The same rule for a first-pass key and its second-pass twin (``noise_range``, ``noise_range2``;
    a list paired with ``kernel_list`` pairs with ``kernel_list2`` in the second pass)."""
    second = {f"{key}2": replace(rule, length=f"{rule.length}2") if isinstance(rule.length, str) else rule
              for key, rule in rules.items()}  # fmt: skip
    return {name: rule for key, rule in rules.items() for name, rule in ((key, rule), (f"{key}2", second[f"{key}2"]))}


RULES: dict[str, Rule] = {
    "scale": Rule(int, (1, 8)),
    "color_jitter_prob": Rule(float, (0.0, 0.0), why="colour jitter is off in SeeSR training and not implemented"),
    "gray_prob": PROBABILITY,
    "use_usm": Rule(bool),
    "second_blur_prob": PROBABILITY,
    **both_passes({
        "resize_prob": Rule(float, (0.0, 1.0), length=3, weights=True),  # up, down, keep
        "resize_range": pair(0.05, 4.0),
        "gaussian_noise_prob": PROBABILITY,
        "noise_range": pair(0.0, 255.0),  # sigma in 8-bit levels
        "poisson_scale_range": pair(0.0, 10.0),
        "gray_noise_prob": PROBABILITY,
        "jpeg_range": pair(0.0, 100.0),  # JPEG quality
    }),
}  # fmt: skip
"""Every top-level key of the degradation YAML and what it accepts (``kernel_info``: :data:`KERNEL_RULES`)."""
KERNEL_RULES: dict[str, Rule] = {
    **both_passes({
        "blur_kernel_size": Rule(int, (KERNEL_SIZES[0], PADDED_KERNEL_SIZE),
                                 why="read but unused: kernel sizes are drawn from 7 to 21, as in the official code"),
        "kernel_list": Rule(str, length=(1, len(KERNEL_TYPES)), choices=KERNEL_TYPES),
        "kernel_prob": Rule(float, (0.0, 1.0), length="kernel_list", weights=True),
        "sinc_prob": PROBABILITY,
        "blur_sigma": pair(0.1, 10.0),
        "betag_range": pair(0.1, 8.0),
        "betap_range": pair(0.1, 8.0),
    }),
    "final_sinc_prob": PROBABILITY,
}  # fmt: skip
"""Every key of ``kernel_info`` and what it accepts."""


def check_values(rules: dict[str, Rule], values: dict[str, Any], prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """``values`` held to ``rules``: (converted values, problems); an unknown key is a problem."""
    checked, problems = {}, []
    for key, raw in values.items():
        rule = rules.get(key)
        if rule is None:
            problems.append(f"unknown key {prefix}{key!r}")
            continue
        checked[key], problem = rule.check(prefix + str(key), raw, values)
        if problem is not None:
            problems.append(problem)
    return checked, problems


@dataclass
class Degraded:
    """One degraded pair: ``hr`` (1, 3, H, W) and ``lr`` (1, 3, H/scale, W/scale), both in [0, 1]
    (``hr`` is flipped when the augmentation flipped it); ``trace`` holds every drawn parameter."""

    hr: torch.Tensor
    lr: torch.Tensor
    trace: dict[str, Any]


# ------------------------------------------------------------------------------------ kernels
def _grid(size: int) -> np.ndarray:
    ax = np.arange(-size // 2 + 1.0, size // 2 + 1.0)
    xx, yy = np.meshgrid(ax, ax)
    return np.stack([xx, yy], axis=-1)


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """x^T Sigma^-1 x over the kernel grid, Sigma = R diag(sx^2, sy^2) R^T."""
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    sigma = rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T
    grid = _grid(size)
    return np.einsum("...i,ij,...j->...", grid, np.linalg.inv(sigma), grid)


def mixed_kernel(
    rng: np.random.Generator, kind: str, size: int, sigma_range, betag_range, betap_range
) -> tuple[np.ndarray, dict]:
    """One Gaussian-family kernel (basicsr ``random_mixed_kernels``), normalised to sum 1."""
    isotropic = kind.endswith("iso") and not kind.endswith("aniso")
    sigma_x = rng.uniform(*sigma_range)
    sigma_y, theta = (sigma_x, 0.0) if isotropic else (rng.uniform(*sigma_range), rng.uniform(-math.pi, math.pi))
    form = _quadratic_form(size, sigma_x, sigma_y, theta)
    beta = None
    if kind.startswith("generalized"):
        beta = rng.uniform(betag_range[0], 1) if rng.uniform() < 0.5 else rng.uniform(1, betag_range[1])
        kernel = np.exp(-0.5 * np.power(form, beta))
    elif kind.startswith("plateau"):
        beta = rng.uniform(betap_range[0], 1) if rng.uniform() < 0.5 else rng.uniform(1, betap_range[1])
        kernel = 1.0 / (np.power(form, beta) + 1)
    else:
        kernel = np.exp(-0.5 * form)
    return kernel / kernel.sum(), {"kind": kind, "sigma": (sigma_x, sigma_y), "theta": theta, "beta": beta}


def sinc_kernel(omega_c: float, size: int) -> np.ndarray:
    """2-D circular low-pass (sinc) kernel with cutoff ``omega_c``, normalised to sum 1."""
    r = np.hypot(*np.moveaxis(_grid(size), -1, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        bessel = torch.special.bessel_j1(torch.from_numpy(omega_c * r)).numpy()
        kernel = omega_c * bessel / (2 * np.pi * r)
    kernel[size // 2, size // 2] = omega_c**2 / (4 * np.pi)
    return kernel / kernel.sum()


def _pad_kernel(kernel: np.ndarray) -> torch.Tensor:
    pad = (PADDED_KERNEL_SIZE - kernel.shape[0]) // 2
    return torch.from_numpy(np.pad(kernel, pad)).float()


def blur_kernel(rng: np.random.Generator, config: DegradationConfig, second: bool) -> tuple[torch.Tensor, dict]:
    """A 21x21 blur kernel of one pass: a sinc with ``sinc_prob``, else a mixed Gaussian."""
    size = int(rng.choice(KERNEL_SIZES))
    if rng.uniform() < config.kernel("sinc_prob", second):
        omega_c = rng.uniform(math.pi / 3, math.pi) if size < 13 else rng.uniform(math.pi / 5, math.pi)
        return _pad_kernel(sinc_kernel(omega_c, size)), {"kind": "sinc", "size": size, "omega_c": omega_c}
    kinds, probs = config.kernel("kernel_list", second), np.asarray(config.kernel("kernel_prob", second), float)
    kind = str(rng.choice(kinds, p=probs / probs.sum()))
    kernel, info = mixed_kernel(
        rng, kind, size, config.kernel("blur_sigma", second), config.kernel("betag_range", second),
        config.kernel("betap_range", second),
    )
    return _pad_kernel(kernel), {**info, "size": size}


def final_sinc(rng: np.random.Generator, config: DegradationConfig) -> tuple[torch.Tensor, dict]:
    """The final sinc filter with ``final_sinc_prob``, else the identity (a centred pulse)."""
    if rng.uniform() < config.kernel_info["final_sinc_prob"]:
        size = int(rng.choice(KERNEL_SIZES))
        omega_c = rng.uniform(math.pi / 3, math.pi)
        return _pad_kernel(sinc_kernel(omega_c, size)), {"kind": "sinc", "size": size, "omega_c": omega_c}
    pulse = np.zeros((1, 1))
    pulse[0, 0] = 1.0
    return _pad_kernel(pulse), {"kind": "pulse", "size": 1}


# ----------------------------------------------------------------------------------- operations
def reflect_pad(image: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """Mirror padding (edge pixel not repeated, as ``F.pad(mode="reflect")``) of any width: a pad
    wider than the image mirrors the padded image again, as numpy's ``pad(mode="reflect")`` does."""
    while left or right or top or bottom:
        h, w = image.shape[-2:]
        step = [min(left, w - 1), min(right, w - 1), min(top, h - 1), min(bottom, h - 1)]
        if not any(step):  # one pixel across: its mirror is itself
            return F.pad(image, [left, right, top, bottom], mode="replicate")
        image = F.pad(image, step, mode="reflect")
        left, right, top, bottom = (p - s for p, s in zip((left, right, top, bottom), step))
    return image


def filter2d(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel with ``kernel`` (reflect padding, as basicsr's ``filter2D``; an image
    smaller than the kernel, which the official 512 px crops never give, is mirrored again)."""
    k = kernel.shape[-1]
    padded = reflect_pad(image, *(k // 2,) * 4)
    weight = kernel.to(image).expand(image.shape[1], 1, k, k)
    return F.conv2d(padded, weight, groups=image.shape[1])


def random_resize(
    rng: np.random.Generator, image: torch.Tensor, probs, scale_range, base: tuple[float, float] | None = None
) -> tuple[torch.Tensor, dict]:
    """Up, down or keep (``probs``) by a uniform scale; ``base`` sets the size the scale applies to."""
    direction = str(rng.choice(["up", "down", "keep"], p=np.asarray(probs, float) / sum(probs)))
    scale = {"up": lambda: rng.uniform(1, scale_range[1]), "down": lambda: rng.uniform(scale_range[0], 1),
             "keep": lambda: 1.0}[direction]()
    mode = str(rng.choice(RESIZE_MODES))
    h, w = base if base is not None else image.shape[-2:]
    size = (max(1, int(h * scale)), max(1, int(w * scale)))
    return _interpolate(image, size, mode), {"direction": direction, "scale": scale, "mode": mode}


def usm_sharpen(image: torch.Tensor) -> torch.Tensor:
    """Unsharp masking as basicsr's ``USMSharp``: the residual from a Gaussian blur, half of it added
    (clipped to [0, 1]), blended in by the same blur of the mask where the residual exceeds 10/255."""
    blur = filter2d(image, USM_KERNEL)
    residual = image - blur
    mask = (residual.abs() * 255 > USM_THRESHOLD).to(image.dtype)
    soft_mask = filter2d(mask, USM_KERNEL)
    sharp = (image + USM_WEIGHT * residual).clamp(0, 1)
    return soft_mask * sharp + (1 - soft_mask) * image


def _gaussian_kernel(size: int) -> torch.Tensor:
    """A normalised 2-D Gaussian of ``size`` with OpenCV's sigma for it (``getGaussianKernel(size, 0)``)."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    return torch.from_numpy(np.outer(g, g)).float()


USM_KERNEL = _gaussian_kernel(USM_KERNEL_SIZE)


def to_8bit(image: torch.Tensor) -> torch.Tensor:
    """Rounded to 8-bit levels (what the official pair files hold), still in [0, 1]."""
    return (image * 255).round().clamp(0, 255) / 255


def _interpolate(image: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    return F.interpolate(image, size=size, mode=mode, **({} if mode == "area" else {"align_corners": False}))


def add_sensor_noise(
    rng: np.random.Generator, image: torch.Tensor, gaussian_prob: float, sigma_range, poisson_range, gray_prob: float
) -> tuple[torch.Tensor, dict]:
    """The camera-noise step of the degradation: Gaussian noise (sigma in 8-bit levels) or Poisson
    noise (scaled), grey with ``gray_prob`` (the diffusion's noising is ``sampling.add_noise``)."""
    gray = rng.uniform() < gray_prob
    shape = (image.shape[0], 1 if gray else image.shape[1], *image.shape[-2:])
    if rng.uniform() < gaussian_prob:
        sigma = rng.uniform(*sigma_range)
        noise = torch.from_numpy(rng.standard_normal(shape)).to(image) * (sigma / 255.0)
        info = {"kind": "gaussian", "level": sigma, "gray": gray}
    else:
        scale = rng.uniform(*poisson_range)
        source = (image * LUMA.to(image)).sum(1, keepdim=True) if gray else image
        source = (source * 255).clamp(0, 255).round() / 255
        levels = 2 ** math.ceil(math.log2(max(len(torch.unique(source)), 2)))
        counts = torch.from_numpy(rng.poisson(source.double().numpy() * levels)).to(image)
        noise = (counts / levels - source) * scale
        info = {"kind": "poisson", "level": scale, "gray": gray}
    return (image + noise.expand_as(image)).clamp(0, 1), info


def jpeg(rng: np.random.Generator, image: torch.Tensor, quality_range) -> tuple[torch.Tensor, dict]:
    """Real JPEG round trip through OpenCV at a uniform quality in ``quality_range``."""
    quality = int(round(rng.uniform(*quality_range)))
    rgb = (image[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    ok, encoded = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1].copy()
    return torch.from_numpy(decoded).permute(2, 0, 1).unsqueeze(0).to(image) / 255.0, {"quality": quality}


# ------------------------------------------------------------------------------------ the model
def degrade(hr: torch.Tensor, config: DegradationConfig, rng: np.random.Generator) -> Degraded:
    """Random horizontal flip, USM sharpening (``use_usm``), then the official two degradation
    passes and the final resize. The sharpened HR is the training target, rounded to 8 bits as
    ``make_paired_data.py`` writes it (line 278); the LR is made from it unrounded (line 111).

    ``hr``: (1, 3, H, W) in [0, 1], H and W multiples of ``config.scale``."""
    trace: dict[str, Any] = {}
    trace["flipped"] = bool(rng.uniform() < 0.5)
    if trace["flipped"]:
        hr = hr.flip(-1)
    if config.use_usm:
        hr = usm_sharpen(hr)
    kernel1, trace["kernel1"] = blur_kernel(rng, config, second=False)
    kernel2, trace["kernel2"] = blur_kernel(rng, config, second=True)
    sinc, trace["sinc"] = final_sinc(rng, config)
    trace["kernels"] = (kernel1, kernel2, sinc)
    h, w = hr.shape[-2:]
    s = config.scale

    # 1. First pass: blur, resize, noise, JPEG
    out = filter2d(hr, kernel1)
    out, trace["resize1"] = random_resize(rng, out, config.resize_prob, config.resize_range)
    out, trace["noise1"] = add_sensor_noise(
        rng, out, config.gaussian_noise_prob, config.noise_range, config.poisson_scale_range, config.gray_noise_prob
    )
    out, trace["jpeg1"] = jpeg(rng, out, config.jpeg_range)

    # 2. Second pass: blur (sometimes), resize relative to the target size, noise
    trace["blur2"] = bool(rng.uniform() < config.second_blur_prob)
    if trace["blur2"]:
        out = filter2d(out, kernel2)
    out, trace["resize2"] = random_resize(rng, out, config.resize_prob2, config.resize_range2, base=(h / s, w / s))
    out, trace["noise2"] = add_sensor_noise(
        rng, out, config.gaussian_noise_prob2, config.noise_range2, config.poisson_scale_range2, config.gray_noise_prob2
    )

    # 3. Resize to HR/scale + final sinc, and the last JPEG, in a random order
    trace["sinc_first"] = bool(rng.uniform() < 0.5)
    mode = str(rng.choice(RESIZE_MODES))
    if trace["sinc_first"]:
        out = filter2d(_interpolate(out, (h // s, w // s), mode), sinc)
        out, trace["jpeg2"] = jpeg(rng, out, config.jpeg_range2)
    else:
        out, trace["jpeg2"] = jpeg(rng, out, config.jpeg_range2)
        out = filter2d(_interpolate(out, (h // s, w // s), mode), sinc)
    if rng.uniform() < config.gray_prob:
        out = (out * LUMA.to(out)).sum(1, keepdim=True).expand_as(out)
    return Degraded(hr=to_8bit(hr).contiguous(), lr=to_8bit(out).contiguous(), trace=trace)
