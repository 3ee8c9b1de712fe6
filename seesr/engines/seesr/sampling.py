"""Sampling as small functions (k-diffusion style): schedule, timesteps, noising, one step, the loop.

SeeSR starts from the LR latent noised to ``start_steps`` (the last training step, t=999, by
default) and runs the timesteps at or below it: SeeSR-Turbo 1-4 steps on sd-turbo's "trailing"
spacing, SeeSR 50 on SD-2-base's "leading" one; deterministic DDIM (eta 0, the turbo model's
default) or the stochastic DDPM step of the official scripts (the non-turbo model's default). The
last step returns the clean estimate x0 (what DDPM does when it steps past t=0).

The loop (:func:`sample`) sees the networks only as a :data:`Denoiser`, a function from latents to
their epsilon prediction. Tiling (:func:`tiled_denoiser`) and Kernel Density Steering
(:func:`seesr.engines.seesr.kds.steered_denoiser`) wrap that function, so the loop is the same for all of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from seesr.errors import ConfigError
from seesr.imaging.tiling import Tile, tiled_apply

TIMESTEP_SPACINGS = ("trailing", "leading", "linspace")


@dataclass(frozen=True)
class NoiseSchedule:
    """The training noise schedule of the diffusion model (``scheduler_config.json``)."""

    alphas_cumprod: torch.Tensor
    final_alpha_cumprod: float
    timestep_spacing: str = "trailing"
    steps_offset: int = 0

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    @classmethod
    def from_config(cls, config: dict) -> "NoiseSchedule":
        """Build the schedule from a diffusers scheduler config (only epsilon prediction)."""
        if config.get("prediction_type", "epsilon") != "epsilon":
            raise ConfigError(f"prediction_type {config.get('prediction_type')!r} is not supported: SeeSR uses 'epsilon'")
        if config.get("clip_sample") or config.get("thresholding"):
            raise ConfigError("clip_sample/thresholding are not supported: the SeeSR schedulers use neither")
        steps = int(config.get("num_train_timesteps", 1000))
        start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
        kind = config.get("beta_schedule", "scaled_linear")
        if config.get("trained_betas") is not None:
            betas = torch.tensor(config["trained_betas"], dtype=torch.float32)
        elif kind == "scaled_linear":
            betas = torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float32) ** 2
        elif kind == "linear":
            betas = torch.linspace(start, end, steps, dtype=torch.float32)
        else:
            raise ConfigError(f"beta_schedule {kind!r} is not supported; use 'scaled_linear' or 'linear'")
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        final = 1.0 if config.get("set_alpha_to_one", False) else float(alphas_cumprod[0])
        spacing = config.get("timestep_spacing", "leading")  # diffusers' default when absent (SD-2-base)
        if spacing not in TIMESTEP_SPACINGS:
            raise ConfigError(f"timestep_spacing {spacing!r} is not supported; use one of {', '.join(TIMESTEP_SPACINGS)}")
        return cls(
            alphas_cumprod=alphas_cumprod,
            final_alpha_cumprod=final,
            timestep_spacing=spacing,
            steps_offset=int(config.get("steps_offset", 0)),
        )

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "NoiseSchedule":
        """Read ``scheduler_config.json`` from a scheduler folder."""
        path = Path(folder) / "scheduler_config.json"
        return cls.from_config(json.loads(path.read_text()))

    def timesteps(self, num_inference_steps: int, start_steps: int | None = None) -> list[int]:
        """The sampling timesteps, spaced for ``num_inference_steps`` as the scheduler config says
        (diffusers' DDPM/DDIM rules). With ``start_steps``, only those at or below it: the official
        loop skips every timestep above it (``pipelines/pipeline_seesr.py`` line 1012), so fewer
        steps run; a ConfigError when none is left (officially the noised start latent would be
        decoded as it is)."""
        steps, n = self.num_train_timesteps, num_inference_steps
        if n < 1 or n > steps:
            raise ConfigError(f"steps must be between 1 and {steps}, got {n}")
        if self.timestep_spacing == "trailing":
            values = trailing_timesteps(n, steps)
        elif self.timestep_spacing == "leading":
            spaced = (torch.arange(n, dtype=torch.float64) * (steps // n)).round().flip(0) + self.steps_offset
            values = [int(v) for v in spaced]
        else:  # linspace
            values = [int(v) for v in torch.linspace(0, steps - 1, n, dtype=torch.float64).round().flip(0)]
        if start_steps is None:
            return values
        running = [t for t in values if t <= start_steps]
        if not running:
            raise ConfigError(
                f"start_steps={start_steps} is below every timestep of {n} step{'s' if n != 1 else ''} (the lowest "
                f"is {values[-1]}), so no step would run: raise start_steps to {values[-1]} or more, or take more steps"
            )
        return running

    def alpha(self, timestep: int) -> float:
        """alphas_cumprod at ``timestep``; negative timesteps mean 'fully denoised'."""
        return float(self.alphas_cumprod[timestep]) if timestep >= 0 else self.final_alpha_cumprod


def trailing_timesteps(num_inference_steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """Timesteps with "trailing" spacing: always starts at the last training step (999)."""
    if num_inference_steps < 1 or num_inference_steps > num_train_timesteps:
        raise ConfigError(f"steps must be between 1 and {num_train_timesteps}, got {num_inference_steps}")
    stride = num_train_timesteps / num_inference_steps
    values = torch.arange(num_train_timesteps, 0, -stride).round().to(torch.int64) - 1
    return [int(v) for v in values]


def previous_timestep(timestep: int, num_inference_steps: int, num_train_timesteps: int = 1000) -> int:
    """The timestep a DDIM step lands on (diffusers' rule: ``t - T // N``)."""
    return timestep - num_train_timesteps // num_inference_steps


def add_noise(clean: torch.Tensor, noise: torch.Tensor, schedule: NoiseSchedule, timestep: int) -> torch.Tensor:
    """Forward diffusion q(x_t | x_0): ``sqrt(a) x0 + sqrt(1 - a) noise``."""
    alpha = schedule.alphas_cumprod[timestep]
    return alpha.sqrt() * clean + (1.0 - alpha).sqrt() * noise


def predict_clean(sample: torch.Tensor, noise_pred: torch.Tensor, alpha: float) -> torch.Tensor:
    """x0 estimate from an epsilon prediction."""
    return (sample - (1.0 - alpha) ** 0.5 * noise_pred) / alpha**0.5


def ddim_step(
    sample: torch.Tensor,
    noise_pred: torch.Tensor,
    schedule: NoiseSchedule,
    timestep: int,
    prev_timestep: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One deterministic DDIM step (eta = 0) from ``timestep`` to ``prev_timestep`` (``generator``
    unused: the signature every sampler shares)."""
    alpha, alpha_prev = schedule.alpha(timestep), schedule.alpha(prev_timestep)
    clean = predict_clean(sample, noise_pred, alpha)
    return alpha_prev**0.5 * clean + (1.0 - alpha_prev) ** 0.5 * noise_pred


def ddpm_step(
    sample: torch.Tensor,
    noise_pred: torch.Tensor,
    schedule: NoiseSchedule,
    timestep: int,
    prev_timestep: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One stochastic DDPM step (the official scripts' scheduler): the posterior mean of
    x_prev given x_t and the x0 estimate, plus its "fixed_small" standard deviation times noise
    drawn from ``generator`` on the CPU (the same numbers on every device)."""
    alpha = schedule.alpha(timestep)
    alpha_prev = float(schedule.alphas_cumprod[prev_timestep]) if prev_timestep >= 0 else 1.0
    step_alpha = alpha / alpha_prev
    step_beta = 1.0 - step_alpha
    clean = predict_clean(sample, noise_pred, alpha)
    mean = (alpha_prev**0.5 * step_beta / (1.0 - alpha)) * clean + (
        step_alpha**0.5 * (1.0 - alpha_prev) / (1.0 - alpha)
    ) * sample
    variance = max((1.0 - alpha_prev) / (1.0 - alpha) * step_beta, 1e-20)
    noise = torch.randn(sample.shape, generator=generator, dtype=torch.float32).to(sample.device)
    return mean + variance**0.5 * noise


SamplerStep = Callable[[torch.Tensor, torch.Tensor, NoiseSchedule, int, int, "torch.Generator | None"], torch.Tensor]
SAMPLER_STEPS: dict[str, SamplerStep] = {"ddim": ddim_step, "ddpm": ddpm_step}
"""The step function of each sampler the ``sampler`` setting names (:data:`seesr.settings.models.SAMPLERS`)."""


def denoise_step(
    sampler: str,
    sample: torch.Tensor,
    noise_pred: torch.Tensor,
    schedule: NoiseSchedule,
    timestep: int,
    prev_timestep: int,
    *,
    last: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One sampling step; the ``last`` one returns the clean estimate x0, with no noise left in it."""
    if last:
        return predict_clean(sample, noise_pred, schedule.alpha(timestep))
    return SAMPLER_STEPS[sampler](sample, noise_pred, schedule, timestep, prev_timestep, generator)


Denoiser = Callable[[torch.Tensor, int, int], torch.Tensor]
"""``denoise(latents, timestep, step_index)``: the epsilon prediction for every latent of the batch."""
ConditionedDenoiser = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]
"""``model(latents, timestep, condition)``: a denoiser given the control image of exactly these latents
(one per latent of the batch, ``scale`` times their size)."""
StepFunction = Callable[..., torch.Tensor]
"""``step(sample, noise_pred, schedule, timestep, prev_timestep, last=...)``: one sampler update,
as :func:`denoise_step` with its sampler (and generator) bound."""
StepCallback = Callable[[int, int, torch.Tensor], None]
"""``callback(step_index, timestep, latents)`` after each step."""


def sample(
    denoise: Denoiser,
    latents: torch.Tensor,
    schedule: NoiseSchedule,
    timesteps: Sequence[int],
    step: StepFunction,
    *,
    num_inference_steps: int | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Denoise ``latents`` over ``timesteps``: the denoiser's prediction (float32), then one
    ``step`` to the previous timestep; the last step is told so (it returns the clean estimate).

    ``num_inference_steps``: the count the timesteps were spaced for (default: all of them run),
    which sets where each step lands; ``start_steps`` leaves out the first ones, not the spacing."""
    count = len(timesteps)
    spacing = count if num_inference_steps is None else num_inference_steps
    for index, timestep in enumerate(timesteps):
        noise_pred = denoise(latents, timestep, index).float()
        prev_timestep = previous_timestep(timestep, spacing, schedule.num_train_timesteps)
        latents = step(latents, noise_pred, schedule, timestep, prev_timestep, last=index == count - 1)
        if callback is not None:
            callback(index, timestep, latents)
    return latents


def tiled_denoiser(
    model: ConditionedDenoiser,
    condition: torch.Tensor,
    tiles: Sequence[Tile],
    *,
    scale: int,
    batch_size: int = 1,
    on_tiles: Callable[[int], None] | None = None,
) -> Denoiser:
    """A :data:`Denoiser` over latent ``tiles`` (run ``batch_size`` at a time, predictions blended by
    :func:`seesr.imaging.tiling.tiled_apply`); each tile is given its crop of ``condition`` (1, C, H, W),
    ``scale`` times the latent. One tile covering the latent is the model called on the whole.

    The crops are views, cut once. A batch's crops are stacked, and repeated for every latent of
    the batch (the KDS particles), only while that batch runs: no per-particle copy of the whole
    condition is kept. ``on_tiles(n)`` is told after each batch of ``n`` tiles (a progress bar
    over steps x tiles)."""
    crops = {tile: condition[(..., *tile.scaled(scale).slices())] for tile in tiles}

    def stacked(windows: Sequence[Tile], latents_per_tile: int) -> torch.Tensor:
        return torch.cat([crops[tile] for tile in windows]).repeat_interleave(latents_per_tile, dim=0)

    def denoise(latents: torch.Tensor, timestep: int, step_index: int) -> torch.Tensor:
        def run(batch: torch.Tensor, windows: Sequence[Tile]) -> torch.Tensor:
            noise_pred = model(batch, timestep, stacked(windows, latents.shape[0]))
            if on_tiles is not None:
                on_tiles(len(windows))
            return noise_pred

        if len(tiles) == 1:
            return run(latents, tiles)
        return tiled_apply(run, latents, tiles, batch_size=batch_size)

    return denoise
