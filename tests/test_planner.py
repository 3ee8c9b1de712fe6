"""Automatic planning: latent tiles capped for quality, smaller only for memory; user values win."""

from __future__ import annotations

import pytest
import torch

from seesr.errors import ConfigError
from seesr.engines.seesr.planner import RunPlan, estimate_peak_bytes, plan_run

GiB = 2**30
CUDA = torch.device("cuda")
CPU = torch.device("cpu")


def test_large_budget_keeps_the_quality_cap():
    """Memory never makes the latent tile larger than max_latent_tile (the VAE tiles may grow)."""
    plan = plan_run(1024, 1024, device=CUDA, dtype=torch.float16, weights_bytes=5 * GiB, budget_bytes=80 * GiB)
    assert plan.latent_tile == 96 and plan.latent_overlap == 32 and plan.latent_size == (128, 128)
    assert plan.vae_decoder_tile >= 128 and plan.vae_encoder_tile >= 1024
    assert not plan.offload and plan.estimated_peak_bytes <= 80 * GiB
    assert plan.tile_batch_size == 4  # the 2x2 tiles run in one batch
    assert plan.describe().startswith(
        "latent 128x128 in 2x2 tiles of 96 (overlap 32), 4 per batch: capped at max_latent_tile=96;"
    )


def test_latent_area_within_the_cap_runs_untiled():
    """The official area test: h*w <= max_latent_tile**2 runs whole, even when one side is longer."""
    for work, latent in (((768, 512), (64, 96)), ((1024, 256), (32, 128))):
        plan = plan_run(*work, device=CPU, weights_bytes=GiB, budget_bytes=100 * GiB)
        assert plan.latent_size == latent and len(plan.latent_tiles()) == 1
        assert plan.describe().startswith(f"latent {latent[1]}x{latent[0]} untiled: area within max_latent_tile^2=96^2")
    tiled = plan_run(1024, 768, device=CPU, weights_bytes=GiB, budget_bytes=100 * GiB)  # 128x96 > 96^2
    assert tiled.latent_tile == 96 and len(tiled.latent_tiles()) == 2


def test_max_latent_tile_moves_the_cap():
    args = dict(device=CUDA, dtype=torch.float16, weights_bytes=5 * GiB, budget_bytes=80 * GiB)
    assert plan_run(2048, 2048, max_latent_tile=64, **args).latent_tile == 64
    whole = plan_run(1024, 1024, max_latent_tile=128, **args)
    assert whole.latent_tile == 128 and len(whole.latent_tiles()) == 1


@pytest.mark.parametrize("device", [CPU, CUDA])
def test_1024_input_x4_tiles_at_most_96_on_any_memory(monkeypatch, device):
    """A 1024x1024 x4 job (4096x4096 working image, 512x512 latent) with a terabyte free."""
    import seesr.engines.seesr.planner as planner

    monkeypatch.setattr(planner, "free_memory_bytes", lambda device: 2**40)
    plan = plan_run(4096, 4096, device=device, dtype=torch.float16, weights_bytes=5 * GiB)
    assert plan.latent_tile == 96 and all(t.height <= 96 and t.width <= 96 for t in plan.latent_tiles())
    assert "latent 512x512 in 8x8 tiles of 96 (overlap 32)" in plan.describe()


def test_dry_run_plan_of_a_1024_x4_job_tiles_at_most_96(monkeypatch):
    """What ``seesr upscale --dry-run`` prints comes from Upscaler.plan (no networks loaded)."""
    from PIL import Image

    import seesr.engines.seesr.planner as planner
    from seesr.api import Upscaler

    monkeypatch.setattr(planner, "free_memory_bytes", lambda device: 2**40)
    upscaler = Upscaler()
    _, plan, size = upscaler.plan(Image.new("RGB", (1024, 1024)), scale=4, device="cpu")
    assert size == (4096, 4096) and plan.latent_tile == 96
    assert "in 8x8 tiles of 96" in plan.describe()
    _, plan, _ = upscaler.plan(Image.new("RGB", (1024, 1024)), scale=4, device="cpu", max_latent_tile=64)
    assert plan.latent_tile == 64 and "capped at max_latent_tile=64" in plan.describe()


def test_memory_only_makes_the_latent_tile_smaller():
    plan = plan_run(4096, 4096, device=CPU, dtype=torch.float32, weights_bytes=5 * GiB, budget_bytes=int(6.4 * GiB))
    assert plan.latent_tile < 96 and plan.estimated_peak_bytes <= 6.4 * GiB
    assert "smaller than 96 (max_latent_tile=96) to fit the memory budget" in plan.describe()


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
    import seesr.engines.seesr.planner as planner

    monkeypatch.setattr(planner, "free_memory_bytes", lambda device: int(3 * GiB / planner.MEMORY_HEADROOM))
    args = dict(device=CUDA, dtype=torch.float16, weights_bytes=5 * GiB)
    loaded = plan_run(4096, 4096, loaded_bytes=5 * GiB, **args)
    assert loaded == plan_run(4096, 4096, budget_bytes=8 * GiB, **args) and not loaded.offload
    assert plan_run(4096, 4096, **args).offload


def test_user_values_override_the_planner():
    plan = plan_run(
        2048, 2048, device=CPU, weights_bytes=GiB, budget_bytes=100 * GiB, overrides={"latent_tile": 40, "offload": False}
    )
    assert plan.latent_tile == 40 and plan.latent_overlap == 13 and not plan.offload
    assert "latent 256x256 in 9x9 tiles of 40 (overlap 13), 4 per batch: latent tile 40 as set" in plan.describe()


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
    assert "halved after running out of memory" in smaller.describe()


def test_bad_plan_refused():
    with pytest.raises(ConfigError, match="latent_overlap"):
        RunPlan(latent_tile=16, latent_overlap=16)
    with pytest.raises(ConfigError, match="tile_batch_size"):
        RunPlan(tile_batch_size=0)


def test_a_tiny_input_without_enlargement_still_gets_a_valid_plan():
    """An 8x8 input at x4 with process_size 0 (no enlargement): a 4x4 latent, tiles at their minimums."""
    plan = plan_run(32, 32, device=torch.device("cpu"), dtype=torch.float32, weights_bytes=0)
    assert plan.latent_tile >= 8 and plan.vae_encoder_tile >= 64 and plan.vae_decoder_tile >= 8
    assert len(plan.latent_tiles()) == 1
