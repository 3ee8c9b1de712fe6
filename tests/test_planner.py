"""Automatic planning: tiles only when the memory budget needs them; user values win."""

from __future__ import annotations

import pytest
import torch

from seesr.errors import ConfigError
from seesr.planner import RunPlan, estimate_peak_bytes, plan_run

GiB = 2**30
CUDA = torch.device("cuda")
CPU = torch.device("cpu")


def test_large_budget_runs_untiled():
    plan = plan_run(1024, 1024, device=CUDA, dtype=torch.float16, weights_bytes=5 * GiB, budget_bytes=80 * GiB)
    assert plan.latent_tile >= 128 and plan.vae_decoder_tile >= 128 and plan.vae_encoder_tile >= 1024
    assert not plan.offload and plan.estimated_peak_bytes <= 80 * GiB


def test_small_budget_tiles_and_fits():
    big = plan_run(4096, 4096, device=CUDA, dtype=torch.float16, weights_bytes=5 * GiB, budget_bytes=80 * GiB)
    small = plan_run(4096, 4096, device=CUDA, dtype=torch.float16, weights_bytes=5 * GiB, budget_bytes=8 * GiB)
    assert small.latent_tile < 512 and small.vae_decoder_tile < 512 and small.vae_encoder_tile < 4096
    assert small.estimated_peak_bytes <= 8 * GiB < big.estimated_peak_bytes
    assert not small.offload


def test_tiny_budget_offloads_on_cuda():
    plan = plan_run(4096, 4096, device=CUDA, dtype=torch.float16, weights_bytes=5 * GiB, budget_bytes=3 * GiB)
    assert plan.offload and plan.estimated_peak_bytes <= 3 * GiB


def test_weights_already_loaded_are_not_counted_twice(monkeypatch):
    """Free memory read after loading no longer includes the weights: with 3 GiB free and the
    5 GiB of weights already on the GPU the plan must equal an 8 GiB budget before loading."""
    import seesr.planner as planner

    monkeypatch.setattr(planner, "available_memory", lambda device: int(3 * GiB / planner.MEMORY_HEADROOM))
    args = dict(device=CUDA, dtype=torch.float16, weights_bytes=5 * GiB)
    loaded = plan_run(4096, 4096, loaded_bytes=5 * GiB, **args)
    assert loaded == plan_run(4096, 4096, budget_bytes=8 * GiB, **args) and not loaded.offload
    assert plan_run(4096, 4096, **args).offload


def test_user_values_override_the_planner():
    plan = plan_run(
        2048, 2048, device=CPU, weights_bytes=GiB, budget_bytes=100 * GiB, overrides={"latent_tile": 40, "offload": False}
    )
    assert plan.latent_tile == 40 and plan.latent_overlap == 13 and not plan.offload


def test_estimate_grows_with_tiles_and_guidance():
    plan = RunPlan(latent_tile=64, vae_encoder_tile=128, vae_decoder_tile=16)  # small VAE tiles: denoising dominates
    one = estimate_peak_bytes(2048, 2048, plan)
    assert estimate_peak_bytes(2048, 2048, plan, batch_multiplier=2) > one
    assert estimate_peak_bytes(2048, 2048, RunPlan(latent_tile=128, vae_decoder_tile=16, vae_encoder_tile=128)) > one
    assert estimate_peak_bytes(2048, 2048, plan, weights_bytes=GiB) == one + GiB


def test_smaller_plan_halves_tiles():
    plan = RunPlan(latent_tile=96, tile_batch_size=4, vae_encoder_tile=1024, vae_decoder_tile=224)
    smaller = plan.smaller()
    assert (smaller.latent_tile, smaller.tile_batch_size, smaller.vae_encoder_tile, smaller.vae_decoder_tile) == (48, 1, 512, 112)
    assert smaller.latent_overlap < smaller.latent_tile


def test_bad_plan_refused():
    with pytest.raises(ConfigError, match="latent_overlap"):
        RunPlan(latent_tile=16, latent_overlap=16)
    with pytest.raises(ConfigError, match="tile_batch_size"):
        RunPlan(tile_batch_size=0)
