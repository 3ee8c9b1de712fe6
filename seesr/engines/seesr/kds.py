"""Kernel Density Steering (KDS) as small functions (k-diffusion style).

KDS (Hu et al., "Kernel Density Steering: Inference-Time Scaling via Mode Seeking for Image
Restoration", arXiv 2507.05604, NeurIPS 2025) denoises an ensemble of N particles (the same
conditioning, independent initial noise) side by side. At each step every particle's predicted
clean latent x0_i is cut into patches; for each patch position a Gaussian-kernel mean shift
across the N particles moves the patch towards the ensemble's local density mode; the noise
estimate is recomputed from the moved x0 and the sampler takes its usual step. At the end the
particle nearest the ensemble mean is kept.

Choices made here (the paper's method section was not available to check them against; see the
notes on each function):

- **Patches**: non-overlapping ``patch x patch`` latent pixels (all channels), on a grid anchored
  at the top-left corner of the whole latent. When ``patch`` does not divide H or W, the last
  row/column of patches is smaller (it holds the remaining pixels only). This is implemented by
  zero-padding every particle identically, which adds nothing to any distance, and cropping.
- **Distance**: per-element RMS over the patch, ``d_ij = ||x_i - x_j|| / sqrt(D)`` with D the
  number of (valid) elements of that patch, so a fixed ``bandwidth`` means the same thing for
  every patch size, for the smaller border patches, and is in latent units.
- **Kernel**: ``k(d) = exp(-d^2 / (2 h^2))``; the mean includes the particle itself (standard
  mean shift): ``m_i = sum_j k_ij x_j / sum_j k_ij``.
- **Bandwidth** ``h``: a fixed value, or (``None``, default) the median heuristic per patch
  position: h = the median of the N(N-1)/2 pairwise distances at that patch (Gretton et al. 2012,
  "A Kernel Two-Sample Test"; the usual default of kernel methods). With that h a neighbour at
  the median distance weighs exp(-1/2) ~ 0.61 against the particle's own weight 1. Where all
  particles agree (h = 0) nothing moves.
- **Update**: ``x0_i <- x0_i + s_t (m_i - x0_i)``: ``s_t = 1`` is one full mean-shift
  iteration. Written as a step along the KDE gradient (the paper's abstract speaks of
  "patch-wise kernel density estimation gradients"), x <- x + delta_t grad log p_h(x) with
  grad log p_h(x) = (m(x) - x) / h^2, this is ``delta_t = s_t h^2`` (h^2 per element here).
- **Step-size schedule** ``s_t`` (``KdsConfig.schedule``): ``"decay"`` (default) steers most at
  the noisiest step and not at all at the last one, ``s_i = strength * (1 - i / (n - 1))``, the
  rule of the public SeeSR + KDS integration (Hugging Face space ``alexnasa/SuperResolution``,
  ``delta_t = gamma_0 * (1 - i / (len(timesteps) - 1))``). In SeeSR-Turbo the first step
  (t=999) decides the structure, which is what steering should agree on, while the model's
  last step still adds the detail; mean-shifting the final x0 would average the particles'
  details (blur). ``"constant"``: s_i = strength. ``"ramp"``: s_i = strength * i / (n - 1), zero
  at the noisiest step. With a single step every schedule gives ``strength``; that step's x0
  is the output, so there steering blends the particles' results directly (consider a lower
  strength for 1-step runs).

Tiling: steer the **stitched** x0 of the whole latent. :func:`steered_denoiser` wraps the tiled
denoiser (:func:`seesr.engines.seesr.sampling.tiled_denoiser`), whose prediction is already blended over the
whole latent, so x0 is computed once for the whole latent and steered on one global patch grid;
tile seams play no part and no region is steered twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from seesr.errors import ConfigError
from seesr.settings.declare import Settings
from seesr.engines.seesr.sampling import Denoiser, NoiseSchedule, predict_clean

KdsSchedule = Literal["decay", "constant", "ramp"]
KDS_SCHEDULES: tuple[str, ...] = ("decay", "constant", "ramp")


@dataclass(frozen=True)
class KdsConfig:
    """Settings of Kernel Density Steering (defaults: the ``kds_*`` settings' declaration).

    ``particles``: ensemble size N (1 turns steering off; required: a run steers only when asked). ``bandwidth``: kernel width h as a
    per-element RMS distance in latent units, or None for the per-patch median heuristic.
    ``patch``: patch side in latent pixels (8 image pixels each). ``strength``: the largest step
    towards the mean-shift target, in [0, 1]. ``schedule``: how the step changes over the steps
    (see the module notes).
    """

    particles: int
    bandwidth: float | None = Settings.kds_bandwidth
    patch: int = Settings.kds_patch
    strength: float = Settings.kds_strength
    schedule: KdsSchedule = "decay"

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.particles, int) or isinstance(self.particles, bool) or self.particles < 1:
            problems.append(f"particles must be an integer >= 1, got {self.particles!r}")
        if not isinstance(self.patch, int) or isinstance(self.patch, bool) or self.patch < 1:
            problems.append(f"patch must be an integer >= 1 latent pixel, got {self.patch!r}")
        if self.bandwidth is not None and not (math.isfinite(self.bandwidth) and self.bandwidth > 0):
            problems.append(f"bandwidth must be > 0 or None (median heuristic), got {self.bandwidth!r}")
        if not (math.isfinite(self.strength) and 0.0 <= self.strength <= 1.0):
            problems.append(f"strength must be between 0 and 1, got {self.strength!r}")
        if self.schedule not in KDS_SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(KDS_SCHEDULES)}, got {self.schedule!r}")
        if problems:
            raise ConfigError("; ".join(problems))


def step_size(config: KdsConfig, step_index: int, num_steps: int) -> float:
    """The step ``s_t`` towards the mean-shift target at step ``step_index`` (0 = noisiest) of ``num_steps``."""
    if num_steps < 1 or not 0 <= step_index < num_steps:
        raise ConfigError(f"step_index must be in [0, {num_steps}), got {step_index} of {num_steps}")
    if num_steps == 1 or config.schedule == "constant":
        return float(config.strength)
    progress = step_index / (num_steps - 1)
    if config.schedule == "decay":
        return float(config.strength * (1.0 - progress))
    return float(config.strength * progress)


# ---------------------------------------------------------------------------- patch geometry
def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _to_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, nh, patch, nw, patch), zero-padded at the bottom/right."""
    n, c, h, w = x.shape
    nh, nw = -(-h // patch), -(-w // patch)
    padded = F.pad(x, (0, nw * patch - w, 0, nh * patch - h))
    return padded.reshape(n, c, nh, patch, nw, patch)


def _from_patches(patches: torch.Tensor, height: int, width: int) -> torch.Tensor:
    n, c, nh, p, nw, _ = patches.shape
    return patches.reshape(n, c, nh * p, nw * p)[..., :height, :width]


def _patch_sizes(channels: int, height: int, width: int, patch: int, device, dtype) -> torch.Tensor:
    """(nh, nw) number of valid elements of every patch (border patches can be smaller)."""

    def one_axis(size: int) -> torch.Tensor:
        count = -(-size // patch)
        return torch.tensor([min(patch, size - i * patch) for i in range(count)], device=device, dtype=dtype)

    return channels * one_axis(height)[:, None] * one_axis(width)[None, :]


def patch_sq_distances(x0: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, N, nh, nw): squared per-element RMS distance between particles at every patch position."""
    _check_latents(x0, patch)
    n, c, h, w = x0.shape
    dtype = _compute_dtype(x0)
    patches = _to_patches(x0.to(dtype), patch)
    sizes = _patch_sizes(c, h, w, patch, x0.device, dtype)
    sq = torch.zeros(n, n, *sizes.shape, device=x0.device, dtype=dtype)
    for i in range(n):
        for j in range(i + 1, n):
            value = (patches[i] - patches[j]).square().sum(dim=(0, 2, 4)) / sizes
            sq[i, j] = value
            sq[j, i] = value
    return sq


def median_bandwidth(sq_distances: torch.Tensor) -> torch.Tensor:
    """(nh, nw) median heuristic: the median of the N(N-1)/2 pairwise distances at each patch.

    The median of an even number of values is the mean of the two middle ones. N = 1 has no
    pairs: the bandwidth is 0 (nothing to move towards).
    """
    n = sq_distances.shape[0]
    if n < 2:
        return torch.zeros(sq_distances.shape[2:], device=sq_distances.device, dtype=sq_distances.dtype)
    rows, cols = torch.triu_indices(n, n, offset=1, device=sq_distances.device)
    pairs = sq_distances[rows, cols].sqrt().sort(dim=0).values  # (K, nh, nw)
    k = pairs.shape[0]
    return (pairs[(k - 1) // 2] + pairs[k // 2]) / 2


def kernel_weights(sq_distances: torch.Tensor, bandwidth: float | torch.Tensor | None) -> torch.Tensor:
    """(N, N, nh, nw) Gaussian weights ``exp(-d^2 / (2 h^2))``; h = 0 keeps only exact equals."""
    h = median_bandwidth(sq_distances) if bandwidth is None else bandwidth
    h = torch.as_tensor(h, device=sq_distances.device, dtype=sq_distances.dtype)
    two_h2 = (2 * h.square()).clamp_min(torch.finfo(sq_distances.dtype).tiny)
    return torch.exp(-sq_distances / two_h2)


# ---------------------------------------------------------------------------- mean shift
def mean_shift_vectors(x0: torch.Tensor, patch: int, bandwidth: float | None = None) -> torch.Tensor:
    """(N, C, H, W) mean-shift vectors ``m_i - x0_i``, one kernel weight per particle pair and patch.

    Computed from differences, ``sum_j k_ij (x_j - x_i) / sum_j k_ij``, so particles equal to each
    other get an exact zero. Returned in x0's dtype (computed in at least float32).
    """
    _check_latents(x0, patch)
    n, _, h, w = x0.shape
    dtype = _compute_dtype(x0)
    if n == 1:
        return torch.zeros_like(x0)
    weights = kernel_weights(patch_sq_distances(x0, patch), bandwidth)  # (N, N, nh, nw)
    patches = _to_patches(x0.to(dtype), patch)  # (N, C, nh, p, nw, p)
    numerator = torch.zeros_like(patches)
    for j in range(n):
        w_j = weights[:, j, None, :, None, :, None]  # (N, 1, nh, 1, nw, 1)
        numerator += w_j * (patches[j : j + 1] - patches)
    denominator = weights.sum(dim=1)[:, None, :, None, :, None]  # >= 1: the particle's own weight
    return _from_patches(numerator / denominator, h, w).to(x0.dtype)


def steer(x0: torch.Tensor, config: KdsConfig, step_index: int, num_steps: int) -> torch.Tensor:
    """The moved clean latents ``x0 + s_t (m - x0)`` of the N particles (x0 itself when s_t = 0 or N = 1)."""
    if x0.dim() != 4 or x0.shape[0] != config.particles:
        raise ConfigError(
            f"KDS expects the {config.particles} particles on the batch axis, got x0 of shape {tuple(x0.shape)}: "
            "denoise all particles as one batch (see particle_noise)"
        )
    s = step_size(config, step_index, num_steps)
    if s == 0 or config.particles == 1:
        return x0
    return x0 + s * mean_shift_vectors(x0, config.patch, config.bandwidth)


def steered_noise(sample: torch.Tensor, x0_moved: torch.Tensor, alpha: float) -> torch.Tensor:
    """The epsilon consistent with ``sample`` and a moved x0: ``(x_t - sqrt(a) x0) / sqrt(1 - a)``.

    The inverse of :func:`seesr.engines.seesr.sampling.predict_clean`; ``alpha`` is alphas_cumprod at the
    current timestep (``schedule.alpha(t)``).
    """
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be in (0, 1) to recover the noise, got {alpha}")
    return (sample - alpha**0.5 * x0_moved) / (1.0 - alpha) ** 0.5


def kds_noise_pred(
    sample: torch.Tensor,
    noise_pred: torch.Tensor,
    alpha: float,
    config: KdsConfig,
    step_index: int,
    num_steps: int,
) -> torch.Tensor:
    """One KDS step on an epsilon prediction: x0 -> steer -> epsilon, for the sampler's own step.

    Returns ``noise_pred`` itself (the same tensor) when nothing is steered at this step, so
    KDS with one particle or strength 0 is bit for bit the plain sampler.
    """
    x0 = predict_clean(sample, noise_pred, alpha)
    moved = steer(x0, config, step_index, num_steps)
    if moved is x0:
        return noise_pred
    return steered_noise(sample, moved, alpha)


def steered_denoiser(denoise: Denoiser, schedule: NoiseSchedule, config: KdsConfig, num_steps: int) -> Denoiser:
    """``denoise`` (over the N particles as one batch) with its prediction steered at every step of
    ``num_steps`` (:func:`kds_noise_pred`)."""

    def steered(latents: torch.Tensor, timestep: int, step_index: int) -> torch.Tensor:
        noise_pred = denoise(latents, timestep, step_index).float()
        return kds_noise_pred(latents, noise_pred, schedule.alpha(timestep), config, step_index, num_steps)

    return steered


def particle_noise(first: torch.Tensor, particles: int, generator: torch.Generator) -> torch.Tensor:
    """(N, C, H, W) initial noise: ``first`` (the single-run noise) then N - 1 draws from ``generator``.

    Particle 0 keeps the noise a run without KDS would use; draw the others after everything
    else that uses the generator (the VAE sample) so that nothing else changes either. The extra
    draws are made on the generator's device (CPU for the pipeline) and moved to ``first``'s.
    """
    if particles < 1:
        raise ConfigError(f"particles must be >= 1, got {particles}")
    if first.dim() != 4 or first.shape[0] != 1:
        raise ConfigError(f"first must be one (1, C, H, W) noise tensor, got shape {tuple(first.shape)}")
    if particles == 1:
        return first
    shape = (particles - 1, *first.shape[1:])
    extra = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return torch.cat([first, extra.to(device=first.device, dtype=first.dtype)])


def select_particle(latents: torch.Tensor) -> int:
    """Index of the particle nearest (L2 over the whole latent) the ensemble mean; ties -> lowest index."""
    if latents.dim() < 2 or latents.shape[0] < 1:
        raise ConfigError(f"expected particles on the batch axis, got shape {tuple(latents.shape)}")
    flat = latents.to(_compute_dtype(latents)).flatten(1)
    distances = (flat - flat.mean(dim=0, keepdim=True)).square().sum(dim=1)
    return int(torch.argmin(distances).item())


def _check_latents(x0: torch.Tensor, patch: int) -> None:
    if x0.dim() != 4:
        raise ConfigError(f"expected (N, C, H, W) latents, got shape {tuple(x0.shape)}")
    if patch < 1:
        raise ConfigError(f"patch must be >= 1, got {patch}")
