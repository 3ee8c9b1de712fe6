"""Kernel Density Steering: mean shift on patches of the particles' predicted clean latents."""

from __future__ import annotations

import math

import pytest
import torch

from seesr.errors import ConfigError
from seesr.engines.seesr.kds import (
    KdsConfig,
    kds_noise_pred,
    mean_shift_vectors,
    median_bandwidth,
    particle_noise,
    patch_sq_distances,
    select_particle,
    steer,
    steered_noise,
    step_size,
)
from seesr.engines.seesr.sampling import NoiseSchedule, ddim_step, predict_clean, previous_timestep, trailing_timesteps


def patch_bandwidth(x0: torch.Tensor, patch: int) -> torch.Tensor:
    """(nh, nw) median-heuristic bandwidth of every patch position of the ensemble ``x0``."""
    return median_bandwidth(patch_sq_distances(x0, patch))


def mean_shift_patches(x0: torch.Tensor, patch: int, bandwidth: float | None = None) -> torch.Tensor:
    """The mean-shift targets ``m_i = sum_j k_ij x0_j / sum_j k_ij`` (what ``steer`` moves towards)."""
    return x0 + mean_shift_vectors(x0, patch, bandwidth)


def three_particles() -> torch.Tensor:
    """3 particles, one 1x2x2 patch: per-element RMS distances d12 = 1, d13 = sqrt(18), d23 = sqrt(11)."""
    x1 = [[0.0, 0.0], [0.0, 0.0]]
    x2 = [[1.0, 1.0], [1.0, 1.0]]
    x3 = [[2.0, 6.0], [4.0, 4.0]]
    return torch.tensor([[x1], [x2], [x3]], dtype=torch.float64)


def test_median_bandwidth_three_particles_by_hand():
    # distances 1, sqrt(11) ~ 3.317, sqrt(18) ~ 4.243: the median is sqrt(11)
    h = patch_bandwidth(three_particles(), patch=2)
    assert h.shape == (1, 1)
    assert h.item() == pytest.approx(math.sqrt(11.0), abs=1e-12)


def test_median_bandwidth_even_number_of_pairs_by_hand():
    # 4 particles of one element: 0, 1, 3, 7 -> |differences| 1, 3, 7, 2, 6, 4 -> sorted 1 2 3 4 6 7
    x = torch.tensor([0.0, 1.0, 3.0, 7.0], dtype=torch.float64).view(4, 1, 1, 1)
    assert patch_bandwidth(x, patch=1).item() == pytest.approx(3.5, abs=1e-12)


def test_mean_shift_median_bandwidth_by_hand():
    # h^2 = 11: k12 = exp(-1/22), k13 = exp(-18/22), k23 = exp(-11/22)
    # m1 = (1*x1 + k12*x2 + k13*x3) / (1 + k12 + k13), etc. (numbers worked out separately)
    expected = torch.tensor(
        [
            [[[0.766869, 1.503241], [1.135055, 1.135055]]],
            [[[0.863771, 1.810700], [1.337235, 1.337235]]],
            [[[1.272867, 3.226217], [2.249542, 2.249542]]],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(mean_shift_patches(three_particles(), 2, None), expected, atol=2e-6, rtol=0)


def test_mean_shift_fixed_bandwidth_by_hand():
    # h = 1: k12 = exp(-1/2), k13 = exp(-9), k23 = exp(-11/2)
    k12, k13 = math.exp(-0.5), math.exp(-9.0)
    x = three_particles()
    m1 = (k12 * x[1] + k13 * x[2]) / (1 + k12 + k13)
    torch.testing.assert_close(mean_shift_patches(x, 2, 1.0)[0], m1)
    expected = torch.tensor(
        [
            [[[0.377665, 0.377973], [0.377819, 0.377819]]],
            [[[0.625955, 0.636104], [0.631029, 0.631029]]],
            [[[1.995685, 5.978914], [3.987300, 3.987300]]],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(mean_shift_patches(x, 2, 1.0), expected, atol=2e-6, rtol=0)


def test_one_particle_is_unchanged_bit_for_bit():
    torch.manual_seed(0)
    x0 = torch.randn(1, 4, 9, 7)
    config = KdsConfig(particles=1)
    assert torch.equal(steer(x0, config, 0, 2), x0)
    assert torch.equal(mean_shift_patches(x0, 4), x0)
    sample, noise = torch.randn(1, 4, 9, 7), torch.randn(1, 4, 9, 7)
    assert kds_noise_pred(sample, noise, 0.3, config, 0, 2) is noise


def test_zero_step_returns_the_noise_prediction_itself():
    torch.manual_seed(0)
    sample, noise = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    config = KdsConfig(particles=4, schedule="decay")
    assert kds_noise_pred(sample, noise, 0.3, config, 1, 2) is noise  # decay: last step not steered
    assert kds_noise_pred(sample, noise, 0.3, KdsConfig(particles=4, strength=0.0), 0, 2) is noise


def test_identical_particles_are_not_moved():
    torch.manual_seed(0)
    x0 = torch.randn(1, 4, 9, 7).repeat(4, 1, 1, 1)
    assert torch.equal(steer(x0, KdsConfig(particles=4), 0, 3), x0)
    assert torch.equal(steer(x0, KdsConfig(particles=4, bandwidth=0.5), 0, 3), x0)


def test_patches_where_particles_agree_are_not_moved():
    torch.manual_seed(0)
    x0 = torch.randn(4, 4, 8, 8)
    x0[:, :, :4, :4] = x0[0, :, :4, :4]  # the top-left 4x4 patch is the same in every particle
    moved = steer(x0, KdsConfig(particles=4, patch=4), 0, 2)
    assert torch.equal(moved[:, :, :4, :4], x0[:, :, :4, :4])
    assert not torch.equal(moved[:, :, 4:, 4:], x0[:, :, 4:, 4:])


def _spread(x: torch.Tensor) -> float:
    """Mean squared distance of the particles from their mean."""
    return (x - x.mean(0)).square().mean().item()


def _reference_mean_shift(x: torch.Tensor, rows: list[slice], cols: list[slice]) -> torch.Tensor:
    """Patch by patch, element by element, written out without the module's machinery."""
    n = x.shape[0]
    out = torch.empty_like(x)
    for r in rows:
        for c in cols:
            blocks = [x[i, :, r, c].flatten().tolist() for i in range(n)]
            size = len(blocks[0])
            dist = [
                [math.sqrt(sum((a - b) ** 2 for a, b in zip(blocks[i], blocks[j])) / size) for j in range(n)]
                for i in range(n)
            ]
            pairs = sorted(dist[i][j] for i in range(n) for j in range(i + 1, n))
            h = (pairs[(len(pairs) - 1) // 2] + pairs[len(pairs) // 2]) / 2
            for i in range(n):
                k = [math.exp(-dist[i][j] ** 2 / (2 * h * h)) for j in range(n)]
                m = [sum(k[j] * blocks[j][e] for j in range(n)) / sum(k) for e in range(size)]
                out[i, :, r, c] = torch.tensor(m, dtype=x.dtype).view(x[i, :, r, c].shape)
    return out


def test_patches_not_dividing_the_size_use_smaller_last_patches():
    torch.manual_seed(1)
    x0 = torch.randn(3, 2, 5, 7, dtype=torch.float64)
    expected = _reference_mean_shift(x0, [slice(0, 4), slice(4, 5)], [slice(0, 4), slice(4, 7)])
    torch.testing.assert_close(mean_shift_patches(x0, 4, None), expected, atol=1e-10, rtol=0)
    # the 1x3 bottom-right patch alone, as a whole latent with a patch that covers it
    corner = x0[:, :, 4:5, 4:7]
    torch.testing.assert_close(mean_shift_patches(x0, 4, None)[:, :, 4:, 4:], mean_shift_patches(corner, 3, None))


def test_steer_moves_by_the_step_towards_the_targets():
    torch.manual_seed(2)
    x0 = torch.randn(4, 4, 12, 12, dtype=torch.float64)
    target = mean_shift_patches(x0, 4, None)
    config = KdsConfig(particles=4, strength=0.5, schedule="constant")
    torch.testing.assert_close(steer(x0, config, 0, 2), x0 + 0.5 * (target - x0))
    assert _spread(steer(x0, config, 0, 2)) < _spread(x0)


def test_deterministic_and_equivariant_to_particle_order():
    torch.manual_seed(3)
    x0 = torch.randn(4, 4, 10, 6)
    config = KdsConfig(particles=4, patch=3)
    first, second = steer(x0, config, 0, 4), steer(x0, config, 0, 4)
    assert torch.equal(first, second)
    order = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(steer(x0[order], config, 0, 4), first[order], atol=1e-6, rtol=0)


def test_select_particle_nearest_the_mean():
    # values 0, 10, 4, 7: mean 5.25, distances 5.25, 4.75, 1.25, 1.75
    latents = torch.tensor([0.0, 10.0, 4.0, 7.0]).view(4, 1, 1, 1)
    assert select_particle(latents) == 2
    torch.manual_seed(4)
    latents = torch.randn(5, 4, 6, 6)
    latents[3] = latents.mean(0) + 0.01
    assert select_particle(latents) == 3
    assert select_particle(latents[:1]) == 0


def test_step_size_schedules():
    decay = KdsConfig(particles=4, strength=0.9)
    assert [step_size(decay, i, 4) for i in range(4)] == pytest.approx([0.9, 0.6, 0.3, 0.0])
    assert [step_size(decay, i, 2) for i in range(2)] == pytest.approx([0.9, 0.0])
    ramp = KdsConfig(particles=4, strength=0.9, schedule="ramp")
    assert [step_size(ramp, i, 4) for i in range(4)] == pytest.approx([0.0, 0.3, 0.6, 0.9])
    constant = KdsConfig(particles=4, strength=0.9, schedule="constant")
    assert [step_size(constant, i, 3) for i in range(3)] == pytest.approx([0.9] * 3)
    for config in (decay, ramp, constant):
        assert step_size(config, 0, 1) == pytest.approx(0.9)
    with pytest.raises(ConfigError):
        step_size(decay, 2, 2)


def test_steered_noise_inverts_predict_clean():
    torch.manual_seed(5)
    sample, x0 = torch.randn(4, 4, 8, 8, dtype=torch.float64), torch.randn(4, 4, 8, 8, dtype=torch.float64)
    for alpha in (0.0047, 0.5, 0.99):
        torch.testing.assert_close(predict_clean(sample, steered_noise(sample, x0, alpha), alpha), x0)
    with pytest.raises(ConfigError):
        steered_noise(sample, x0, 1.0)


def test_loop_wiring_pulls_particles_together():
    """The per-step KDS update written out, on a toy denoiser whose x0 is the particle's noise."""
    schedule = NoiseSchedule.from_config({})
    steps = 2
    torch.manual_seed(6)
    noise = torch.randn(4, 4, 16, 16)
    clean = torch.zeros(1, 4, 16, 16)

    def run(config: KdsConfig | None) -> torch.Tensor:
        latents = schedule.alphas_cumprod[999].sqrt() * clean + (1 - schedule.alphas_cumprod[999]).sqrt() * noise
        for i, t in enumerate(trailing_timesteps(steps)):
            alpha = schedule.alpha(t)
            x0_model = 0.5 * noise  # each particle's own "prediction"
            noise_pred = (latents - alpha**0.5 * x0_model) / (1 - alpha) ** 0.5
            if config is not None:
                noise_pred = kds_noise_pred(latents, noise_pred, alpha, config, i, steps)
            latents = ddim_step(latents, noise_pred, schedule, t, previous_timestep(t, steps))
        return latents

    plain, steered = run(None), run(KdsConfig(particles=4))
    assert _spread(steered) < _spread(plain)
    assert torch.equal(run(KdsConfig(particles=4, strength=0.0)), plain)


def test_config_is_checked():
    for bad in (
        dict(particles=0),
        dict(patch=0),
        dict(strength=1.5),
        dict(strength=-0.1),
        dict(bandwidth=0.0),
        dict(bandwidth=-1.0),
        dict(schedule="cosine"),
    ):
        with pytest.raises(ConfigError):
            KdsConfig(**{"particles": 4, **bad})
    with pytest.raises(ConfigError, match="particles"):
        steer(torch.zeros(3, 4, 8, 8), KdsConfig(particles=4), 0, 2)


def test_particle_noise_keeps_the_single_run_noise_first():
    first = torch.randn(1, 4, 6, 5, generator=torch.Generator().manual_seed(0))
    assert particle_noise(first, 1, torch.Generator().manual_seed(1)) is first
    noise = particle_noise(first, 4, torch.Generator().manual_seed(1))
    assert noise.shape == (4, 4, 6, 5) and torch.equal(noise[:1], first)
    assert torch.equal(noise, particle_noise(first, 4, torch.Generator().manual_seed(1)))
    assert not torch.equal(noise[1], noise[2])
