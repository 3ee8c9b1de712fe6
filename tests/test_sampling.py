"""Samplers and timestep spacing against diffusers' schedulers (what the official scripts use)."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from seesr.errors import ConfigError
from seesr.engines.seesr.sampling import NoiseSchedule, ddim_step, ddpm_step, denoise_step, predict_clean, previous_timestep

SD2_BASE_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
"""stabilityai/stable-diffusion-2-base ``scheduler/scheduler_config.json`` (no timestep_spacing:
diffusers' "leading" default, as ``test_seesr.py``'s DDPMScheduler reads it)."""


@pytest.fixture(scope="module")
def turbo_config(tiny) -> dict:
    return json.loads((tiny / "sd_turbo" / "scheduler" / "scheduler_config.json").read_text())


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 7, 50, 100])
@pytest.mark.parametrize("which", ["turbo", "sd2_base", "linspace"])
def test_timesteps_match_diffusers_ddpm(turbo_config, which, steps):
    config = {"turbo": turbo_config, "sd2_base": SD2_BASE_SCHEDULER}.get(which) or {
        **SD2_BASE_SCHEDULER,
        "timestep_spacing": "linspace",
    }
    reference = DDPMScheduler.from_config(config)
    reference.set_timesteps(steps)
    ours = NoiseSchedule.from_config(config)
    assert ours.timesteps(steps) == reference.timesteps.tolist()


def test_previous_timestep_is_the_official_diffusers_rule():
    """diffusers 0.21 (the official pin) steps from t to t - T // N; newer diffusers step to the
    next listed timestep instead, which differs when N does not divide 1000."""
    assert [previous_timestep(t, 4) for t in (999, 749, 499, 249)] == [749, 499, 249, -1]
    assert [previous_timestep(t, 3) for t in (999, 666, 332)] == [666, 333, -1]
    assert previous_timestep(981, 50) == 961 and previous_timestep(1, 50) == -19


def test_sd2_base_takes_the_leading_spacing():
    assert NoiseSchedule.from_config(SD2_BASE_SCHEDULER).timesteps(50)[:3] == [981, 961, 941]
    assert NoiseSchedule.from_config(SD2_BASE_SCHEDULER).timesteps(50)[-1] == 1


@pytest.mark.parametrize("steps", [2, 4, 50])
def test_ddpm_step_matches_diffusers_with_the_same_generator(turbo_config, steps):
    reference = DDPMScheduler.from_config(turbo_config)
    reference.set_timesteps(steps)
    schedule = NoiseSchedule.from_config(turbo_config)
    sample = torch.randn(1, 4, 6, 5, generator=torch.Generator().manual_seed(0)) * 3
    noise_pred = torch.randn(1, 4, 6, 5, generator=torch.Generator().manual_seed(1))
    for t in schedule.timesteps(steps)[:-1]:
        expected = reference.step(noise_pred, t, sample, generator=torch.Generator().manual_seed(t)).prev_sample
        ours = ddpm_step(sample, noise_pred, schedule, t, previous_timestep(t, steps), torch.Generator().manual_seed(t))
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_ddim_step_matches_diffusers(turbo_config):
    reference = DDIMScheduler.from_config(turbo_config)
    reference.set_timesteps(4)
    schedule = NoiseSchedule.from_config(turbo_config)
    sample = torch.randn(1, 4, 6, 5, generator=torch.Generator().manual_seed(0)) * 3
    noise_pred = torch.randn(1, 4, 6, 5, generator=torch.Generator().manual_seed(1))
    for t in schedule.timesteps(4):
        expected = reference.step(noise_pred, t, sample, eta=0.0).prev_sample
        torch.testing.assert_close(ddim_step(sample, noise_pred, schedule, t, previous_timestep(t, 4)), expected)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_last_step_is_the_clean_estimate(turbo_config, sampler):
    """sd-turbo's ``set_alpha_to_one: false`` makes DDIM's last step land on alphas_cumprod[0]
    (0.99915): ~0.029 x the predicted noise would stay in the output. The last step returns x0."""
    schedule = NoiseSchedule.from_config(turbo_config)
    sample = torch.randn(1, 4, 6, 5, generator=torch.Generator().manual_seed(0))
    noise_pred = torch.randn(1, 4, 6, 5, generator=torch.Generator().manual_seed(1))
    last = denoise_step(sampler, sample, noise_pred, schedule, 499, -1, last=True, generator=torch.Generator())
    clean = predict_clean(sample, noise_pred, schedule.alpha(499))
    assert torch.equal(last, clean)
    ddim_last = ddim_step(sample, noise_pred, schedule, 499, -1)
    torch.testing.assert_close(ddim_last - schedule.alpha(-1) ** 0.5 * clean, (1 - 0.99915) ** 0.5 * noise_pred, atol=1e-4, rtol=0)
    middle = denoise_step(sampler, sample, noise_pred, schedule, 999, 499, last=False, generator=torch.Generator().manual_seed(3))
    step = {"ddim": ddim_step, "ddpm": ddpm_step}[sampler]
    assert torch.equal(middle, step(sample, noise_pred, schedule, 999, 499, torch.Generator().manual_seed(3)))


def test_unsupported_scheduler_configs_are_refused():
    with pytest.raises(ConfigError, match="clip_sample"):
        NoiseSchedule.from_config({"clip_sample": True})
    with pytest.raises(ConfigError, match="timestep_spacing"):
        NoiseSchedule.from_config({"timestep_spacing": "karras"})
