"""DDIM sampling as small functions (k-diffusion style): schedule, noising, one step.

SeeSR-Turbo starts from the LR latent noised to the last training step (t=999) and takes 1-4
deterministic DDIM steps (eta 0) on sd-turbo's "trailing" timestep spacing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from seesr.errors import ConfigError

START_TIMESTEP = 999
"""The official ``--start_steps`` default: the LR latent is noised to the last training step."""


@dataclass(frozen=True)
class NoiseSchedule:
    """The training noise schedule of the diffusion model (``scheduler_config.json``)."""

    alphas_cumprod: torch.Tensor
    final_alpha_cumprod: float

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    @classmethod
    def from_config(cls, config: dict) -> "NoiseSchedule":
        """Build the schedule from a diffusers scheduler config (only epsilon prediction)."""
        if config.get("prediction_type", "epsilon") != "epsilon":
            raise ConfigError(f"prediction_type {config.get('prediction_type')!r} is not supported: SeeSR uses 'epsilon'")
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
        return cls(alphas_cumprod=alphas_cumprod, final_alpha_cumprod=final)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "NoiseSchedule":
        """Read ``scheduler_config.json`` from a scheduler folder."""
        path = Path(folder) / "scheduler_config.json"
        return cls.from_config(json.loads(path.read_text()))

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
    sample: torch.Tensor, noise_pred: torch.Tensor, schedule: NoiseSchedule, timestep: int, prev_timestep: int
) -> torch.Tensor:
    """One deterministic DDIM step (eta = 0) from ``timestep`` to ``prev_timestep``."""
    alpha, alpha_prev = schedule.alpha(timestep), schedule.alpha(prev_timestep)
    clean = predict_clean(sample, noise_pred, alpha)
    return alpha_prev**0.5 * clean + (1.0 - alpha_prev) ** 0.5 * noise_pred
