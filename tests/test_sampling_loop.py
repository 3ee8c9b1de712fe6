"""The sampling loop and its denoiser wrappers (latent tiling, KDS) on toy denoisers."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from seesr.engines.seesr.kds import KdsConfig, kds_noise_pred, steered_denoiser
from seesr.engines.seesr.planner import RunPlan
from seesr.engines.seesr.sampling import (
    NoiseSchedule,
    ddim_step,
    denoise_step,
    predict_clean,
    previous_timestep,
    sample,
    tiled_denoiser,
    trailing_timesteps,
)
from seesr.imaging.tiling import plan_tiles

SCHEDULE = NoiseSchedule.from_config({"timestep_spacing": "trailing"})


def toy_model(latents: torch.Tensor, timestep: int, condition: torch.Tensor) -> torch.Tensor:
    """Pointwise in space: each latent pixel's prediction depends on it and on its 8x8 condition block."""
    pooled = F.avg_pool2d(condition, 8)[:, :1]
    return torch.tanh(latents * 0.3 + pooled * 2 - timestep / 1000)


def test_sample_is_the_written_out_loop_and_reports_every_step():
    latents = torch.randn(2, 4, 6, 5, generator=torch.Generator().manual_seed(0))
    timesteps = trailing_timesteps(4)
    denoise = lambda x, t, i: torch.sin(x * (i + 1)) + t / 1000  # noqa: E731
    seen = []
    ours = sample(denoise, latents, SCHEDULE, timesteps, partial(denoise_step, "ddim"),
                  callback=lambda i, t, x: seen.append((i, t, x.clone())))  # fmt: skip

    expected = latents
    for i, t in enumerate(timesteps):
        noise_pred = denoise(expected, t, i)
        if i == len(timesteps) - 1:
            expected = predict_clean(expected, noise_pred, SCHEDULE.alpha(t))
        else:
            expected = ddim_step(expected, noise_pred, SCHEDULE, t, previous_timestep(t, 4))
        assert seen[i][:2] == (i, t) and torch.equal(seen[i][2], expected)
    assert len(seen) == 4 and torch.equal(ours, expected)


def test_sample_passes_the_schedule_step_and_last_flag_to_the_step_function():
    calls = []

    def step(sample_, noise_pred, schedule, timestep, prev_timestep, *, last):
        calls.append((schedule, timestep, prev_timestep, last))
        return sample_

    sample(lambda x, t, i: x, torch.zeros(1, 4, 2, 2), SCHEDULE, [999, 666, 332], step)
    assert calls == [(SCHEDULE, 999, 666, False), (SCHEDULE, 666, 333, False), (SCHEDULE, 332, -1, True)]


@pytest.mark.parametrize("particles", [1, 3])
@pytest.mark.parametrize("tile,overlap,batch_size", [(4, 2, 1), (4, 2, 3), (5, 1, 2)])
def test_tiled_denoiser_gives_each_tile_its_condition_crop(particles, tile, overlap, batch_size):
    """A spatially pointwise model gives the same prediction tiled and whole: every latent crop was
    paired with the condition crop under it, once per particle."""
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(particles, 4, 11, 9, generator=gen)
    condition = torch.rand(1, 3, 88, 72, generator=gen)
    tiles = plan_tiles(11, 9, tile, overlap)
    assert len(tiles) > 1
    done = []
    tiled = tiled_denoiser(toy_model, condition, tiles, scale=8, batch_size=batch_size, on_tiles=done.append)
    whole = tiled_denoiser(toy_model, condition, plan_tiles(11, 9, 16, 0), scale=8)
    torch.testing.assert_close(tiled(latents, 500, 0), whole(latents, 500, 0), atol=1e-6, rtol=0)
    assert sum(done) == len(tiles) and max(done) <= batch_size
    expected = toy_model(latents, 500, condition.repeat_interleave(particles, dim=0))
    assert torch.equal(whole(latents, 500, 0), expected)  # one tile: the model on the whole latent


def test_steered_denoiser_is_kds_on_the_wrapped_prediction():
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    inner = lambda x, t, i: torch.cos(x) * (i + 1)  # noqa: E731
    config = KdsConfig(particles=4, strength=0.7)
    steered = steered_denoiser(inner, SCHEDULE, config, 2)
    for i, t in enumerate(trailing_timesteps(2)):
        expected = kds_noise_pred(latents, inner(latents, t, i), SCHEDULE.alpha(t), config, i, 2)
        assert torch.equal(steered(latents, t, i), expected)
    assert not torch.equal(steered(latents, 999, 0), inner(latents, 999, 0))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_the_loop_with_steering_pulls_particles_together(sampler):
    """sample() over steered_denoiser, as the pipeline runs it, on a toy denoiser whose x0 is half
    the particle's latent: the particles end closer together; strength 0 is the plain loop bit for bit."""
    noise = torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(6))
    start = (1 - SCHEDULE.alphas_cumprod[999]).sqrt() * noise
    timesteps = trailing_timesteps(3)

    def toy(latents: torch.Tensor, timestep: int, step_index: int) -> torch.Tensor:
        alpha = SCHEDULE.alpha(timestep)
        return (latents - alpha**0.5 * 0.5 * latents) / (1 - alpha) ** 0.5

    def run(config: KdsConfig | None) -> torch.Tensor:
        denoise = toy if config is None else steered_denoiser(toy, SCHEDULE, config, len(timesteps))
        step = partial(denoise_step, sampler, generator=torch.Generator().manual_seed(1))
        return sample(denoise, start, SCHEDULE, timesteps, step)

    def spread(x: torch.Tensor) -> float:
        return (x - x.mean(0)).square().mean().item()

    plain = run(None)
    assert spread(run(KdsConfig(particles=4))) < 0.8 * spread(plain)
    assert torch.equal(run(KdsConfig(particles=4, strength=0.0)), plain)


def test_progress_counts_steps_times_tiles(tiny, tiny_pipe):
    """``progress``: the denoise stage counts steps x latent tiles, advanced per tile batch."""
    lr = Image.open(tiny / "inputs" / "pipeline_input.png")
    plan = RunPlan(latent_tile=8, latent_overlap=4, tile_batch_size=3)  # 12x18 latent: 8 tiles
    events = []
    tiny_pipe.progress = events.append
    try:
        tiny_pipe(lr, scale=1, process_size=0, num_inference_steps=2, seed=0, plan=plan, color_fix="none")
    finally:
        tiny_pipe.progress = None
    denoise = [(event.done, event.total) for event in events if getattr(event, "stage", None) == "denoise"]
    assert denoise[-1] == (16, 16)
    assert [done for done, total in denoise if total == 16] == [0, 3, 6, 8, 11, 14, 16]
