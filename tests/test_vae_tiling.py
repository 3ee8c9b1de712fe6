"""Tiled VAE with whole-image GroupNorm statistics (seesr.engines.seesr.vae_tiling) against the official tiled VAE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

from official_vae_tiling import OFFICIAL_RULES
from seesr.errors import InputError
from seesr.imaging.tiling import Tile
from seesr.engines.seesr.vae_tiling import (
    Window,
    _run_windows,
    group_stats,
    plan_windows,
    pool_group_stats,
    tiled_decode,
    tiled_encode,
)


@pytest.fixture(scope="module")
def vae(tiny) -> AutoencoderKL:
    return AutoencoderKL.from_pretrained(tiny / "sd_turbo" / "vae").eval()


@pytest.fixture(scope="module")
def encode_input(tiny) -> torch.Tensor:
    pixels = np.array(Image.open(tiny / "inputs" / "vae_encode_input_160.png").convert("RGB"))
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float().div(255) * 2 - 1


def _diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a.float() - b.float()).abs()
    return d.max().item(), d.mean().item()


def _grid(rows, cols) -> list[Window]:
    """Windows from per-axis ((window start, end), (core start, end)) pairs, row-major."""
    return [
        Window(Tile(wy[0], wx[0], wy[1] - wy[0], wx[1] - wx[0]), Tile(cy[0], cx[0], cy[1] - cy[0], cx[1] - cx[0]))
        for wy, cy in rows
        for wx, cx in cols
    ]


# --- GroupNorm statistics ---------------------------------------------------------------------


def test_pooled_stats_equal_stats_of_the_concatenated_regions():
    g = torch.Generator().manual_seed(0)
    # different sizes and offsets per region, so an unweighted or mean-of-variances pooling fails
    shapes = [(3, 5, 1, 0), (7, 2, 3, 2), (1, 1, 0.5, -4)]  # (h, w, std, offset)
    regions = [torch.randn(2, 8, h, w, generator=g) * s + o for (h, w, s, o) in shapes]
    pooled_mean, pooled_var = pool_group_stats([group_stats(r, 4) for r in regions])
    flat = torch.cat([r.flatten(2)[..., None] for r in regions], dim=2)  # (2, 8, sum hw, 1)
    mean, var, count = group_stats(flat, 4)
    assert count == 2 * sum(r.shape[2] * r.shape[3] for r in regions)
    torch.testing.assert_close(pooled_mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled_var, var, rtol=1e-5, atol=1e-5)
    # and normalising with them is torch's GroupNorm of the whole
    torch.testing.assert_close(var, flat.unflatten(1, (4, 2)).var(dim=(2, 3, 4), unbiased=False))


# --- grid ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "height,width,tile,pad,align",
    [(25, 26, 2, 11, 1), (13, 21, 6, 3, 1), (160, 160, 64, 32, 8), (100, 150, 32, 16, 8), (40, 300, 16, 8, 8)]
    + [(5, 9, 1, 0, 1)],
)
def test_windows_cover_with_cores_that_partition_and_keep_context(height, width, tile, pad, align):
    windows = plan_windows(height, width, tile, pad, align=align)
    cover = torch.zeros(height, width, dtype=torch.int32)
    for win in windows:
        w, c = win.window, win.core
        cover[c.slices()] += 1
        assert c.height > 0 and c.width > 0
        assert w.top <= c.top and c.top + c.height <= w.top + w.height <= height
        assert w.left <= c.left and c.left + c.width <= w.left + w.width <= width
        assert w.height <= tile + 2 * pad + align - 1 and w.width <= tile + 2 * pad + align - 1
        # at least `pad` pixels of context on every side that is not an image border
        if c.top > 0:
            assert c.top - w.top >= pad
        if c.left > 0:
            assert c.left - w.left >= pad
        if c.top + c.height < height:
            assert w.top + w.height - (c.top + c.height) >= pad
        if c.left + c.width < width:
            assert w.left + w.width - (c.left + c.width) >= pad
        if align > 1:  # the encoder's downsampling grid is the whole image's
            assert w.top % align == w.left % align == c.top % align == c.left % align == 0
    assert (cover == 1).all()


def test_official_fixture_grids_have_the_official_tile_count():
    assert len(plan_windows(25, 26, 2, 11)) == 4  # decoder_tile_size=2, pad 11 -> 2x2
    assert len(plan_windows(160, 160, 64, 32, align=8)) == 4  # encoder_tile_size=64, pad 32 -> 2x2
    assert [w.window for w in plan_windows(25, 26, 100, 11)] == [Tile(0, 0, 25, 26)]


# --- the machinery is exact where tiling is: windows that see the whole image --------------------


def test_whole_image_windows_reproduce_the_plain_vae(vae, refs):
    """Each window = the whole image, cores partition it: pooled core statistics are the whole
    image's and attention sees everything, so only float noise may differ (checks core tracking
    through up/downsampling, cropping, and trimming parked activations)."""
    z = refs("tiled_vae")["decode.latent_input"][..., :9, :11]
    with torch.no_grad():
        plain = vae.decode(z).sample
        whole = Tile(0, 0, 9, 11)
        windows = [Window(whole, Tile(0, 0, 4, 5)), Window(whole, Tile(0, 5, 4, 6)), Window(whole, Tile(4, 0, 5, 11))]
        out = torch.full_like(plain, torch.nan)
        _run_windows(vae, vae.post_quant_conv(z), windows, decoder=True, out=out, scale=8)
    assert _diff(out, plain)[0] < 2e-5

    x = torch.rand(1, 3, 52, 70, generator=torch.Generator().manual_seed(1)) * 2 - 1  # not a multiple of 8
    with torch.no_grad():
        plain = vae.encode(x).latent_dist.parameters
        whole = Tile(0, 0, 52, 70)
        cores = [Tile(0, 0, 24, 32), Tile(0, 32, 24, 38), Tile(24, 0, 28, 70)]  # 8-aligned boundaries
        out = torch.full_like(plain, torch.nan)
        _run_windows(vae, x, [Window(whole, c) for c in cores], decoder=False, out=out, scale=8)
    assert plain.shape == (1, 8, 6, 8)
    assert _diff(out, plain)[0] < 2e-5


# --- against the official tiled VAE -------------------------------------------------------------

# The official split_tiles grids of the fixture runs: (window, core) per axis.
OFFICIAL_DECODE_GRID = ([((0, 24), (0, 13)), ((2, 25), (13, 25))], [((0, 24), (0, 13)), ((2, 26), (13, 26))])
OFFICIAL_ENCODE_GRID = ([((0, 128), (0, 96)), ((64, 160), (96, 160))],) * 2


def test_official_grid_and_statistics_reproduce_the_official_tiled_vae(vae, refs, encode_input):
    """With the official grid and the official statistics (whole padded window, mean of the
    per-tile variances) the lock-step machinery gives the official tiled results."""
    r = refs("tiled_vae")
    with torch.no_grad():
        z = vae.post_quant_conv(r["decode.latent_input"])
        out = torch.empty_like(r["decode.tiled"])
        _run_windows(vae, z, _grid(*OFFICIAL_DECODE_GRID), decoder=True, out=out, scale=8, **OFFICIAL_RULES)
        assert _diff(out, r["decode.tiled"])[0] < 1e-4
        moments = torch.empty(1, 8, 20, 20)
        windows = _grid(*OFFICIAL_ENCODE_GRID)
        _run_windows(vae, encode_input, windows, decoder=False, out=moments, scale=8, **OFFICIAL_RULES)
    mean, logvar = moments.chunk(2, dim=1)
    assert _diff(mean, r["encode.tiled.mean"])[0] < 1e-4
    assert _diff(logvar.clamp(-30, 20), r["encode.tiled.logvar"])[0] < 1e-4


def test_tiled_decode_is_at_least_as_close_to_plain_as_the_official(vae, refs):
    r = refs("tiled_vae")
    ours = tiled_decode(vae, r["decode.latent_input"], 2)
    assert ours.shape == r["decode.plain"].shape == (1, 3, 200, 208)
    ours_max, ours_mean = _diff(ours, r["decode.plain"])
    official_max, official_mean = _diff(r["decode.tiled"], r["decode.plain"])
    print(
        f"\ndecode vs plain: ours max {ours_max:.4g} mean {ours_mean:.4g}; "
        f"official max {official_max:.4g} mean {official_mean:.4g}"
    )
    assert ours_max <= official_max + 1e-6
    assert ours_mean <= official_mean + 1e-6


def test_tiled_encode_is_at_least_as_close_to_plain_as_the_official(vae, refs, encode_input):
    r = refs("tiled_vae")
    posterior = tiled_encode(vae, encode_input, 64)
    for name, ours in (("mean", posterior.mean), ("logvar", posterior.logvar)):
        assert ours.shape == (1, 4, 20, 20)
        ours_max, ours_mean = _diff(ours, r[f"encode.plain.{name}"])
        official_max, official_mean = _diff(r[f"encode.tiled.{name}"], r[f"encode.plain.{name}"])
        print(f"\nencode {name} vs plain: ours max {ours_max:.4g} mean {ours_mean:.4g}; "
              f"official max {official_max:.4g} mean {official_mean:.4g}")
        assert ours_max <= official_max + 1e-6
        assert ours_mean <= official_mean + 1e-6


# --- sizes ----------------------------------------------------------------------------------------


def test_one_window_is_the_plain_vae_call_bitwise(vae, refs, encode_input):
    z = refs("tiled_vae")["decode.latent_input"][..., :13, :21]
    x = encode_input[..., :64, :96]
    with torch.no_grad():
        plain_image = vae.decode(z).sample
        plain_posterior = vae.encode(x).latent_dist
    assert torch.equal(tiled_decode(vae, z, 64), plain_image)
    assert torch.equal(tiled_decode(vae, z, 1, pad=11), plain_image)  # 1 + 2 * 11 >= 21
    posterior = tiled_encode(vae, x, 512)
    assert torch.equal(posterior.mean, plain_posterior.mean) and torch.equal(posterior.logvar, plain_posterior.logvar)


def test_uneven_decode_has_the_exact_size_and_stays_close(vae, refs):
    z = refs("tiled_vae")["decode.latent_input"][..., :13, :21]
    assert len(plan_windows(13, 21, 6, 3)) == 6  # 2 x 3 windows, the last ones snapped to the edge
    with torch.no_grad():
        plain = vae.decode(z).sample
    ours = tiled_decode(vae, z, 6, pad=3)
    assert ours.shape == plain.shape == (1, 3, 104, 168)
    max_diff, mean_diff = _diff(ours, plain)
    assert max_diff < 0.08 * plain.abs().max().item() and mean_diff < 0.02  # tiny 3-latent-pixel context


def test_uneven_encode_has_the_plain_size(vae, encode_input):
    x = encode_input[..., :100, :150]  # not a multiple of 8: the plain VAE gives 12 x 18
    with torch.no_grad():
        plain = vae.encode(x).latent_dist
    ours = tiled_encode(vae, x, 48, pad=32)
    assert ours.mean.shape == plain.mean.shape == (1, 4, 12, 18)
    assert torch.isfinite(ours.parameters).all()
    assert _diff(ours.mean, plain.mean)[1] < 0.15


def test_batch_samples_are_normalised_separately(vae, refs):
    z = refs("tiled_vae")["decode.latent_input"][..., :9, :13]
    assert len(plan_windows(9, 13, 4, 3)) == 2
    together = tiled_decode(vae, torch.cat([z, z.flip(-1) * 2]), 4, pad=3)
    assert _diff(together[:1], tiled_decode(vae, z, 4, pad=3))[0] < 1e-5
    assert _diff(together[1:], tiled_decode(vae, z.flip(-1) * 2, 4, pad=3))[0] < 1e-5


def test_half_precision_stays_finite_and_keeps_the_dtype(vae, tiny, refs):
    vae16 = AutoencoderKL.from_pretrained(tiny / "sd_turbo" / "vae", torch_dtype=torch.float16).eval()
    z = refs("tiled_vae")["decode.latent_input"][..., :9, :13]
    ours = tiled_decode(vae16, z, 4, pad=3)
    assert ours.dtype == torch.float16 and torch.isfinite(ours).all()
    with torch.no_grad():
        reference = tiled_decode(vae, z, 4, pad=3)
    assert _diff(ours, reference)[1] < 0.01


def test_bad_inputs_are_rejected(vae):
    with pytest.raises(InputError):
        tiled_decode(vae, torch.zeros(1, 3, 8, 8), 4)
    with pytest.raises(InputError):
        tiled_encode(vae, torch.zeros(1, 4, 64, 64), 32)
