"""The shared tiler: coverage, normalised blending, exactness for pointwise models."""

from __future__ import annotations

import pytest
import torch

from seesr.errors import ConfigError
from seesr.imaging.tiling import Tile, axis_starts, blend_weights, context_window, plan_tiles, tiled_apply

SIZES = [(1, 1), (7, 13), (8, 8), (12, 18), (31, 97), (64, 64), (97, 61), (128, 200)]


@pytest.mark.parametrize("height,width", SIZES)
@pytest.mark.parametrize("tile,overlap", [(8, 4), (16, 4), (32, 8), (5, 1)])
def test_tiles_cover_every_pixel_within_bounds(height, width, tile, overlap):
    tiles = plan_tiles(height, width, tile, overlap)
    cover = torch.zeros(height, width, dtype=torch.int32)
    for t in tiles:
        assert t.height == min(tile, height) and t.width == min(tile, width)
        assert 0 <= t.top and t.top + t.height <= height and 0 <= t.left and t.left + t.width <= width
        cover[t.slices()] += 1
    assert cover.min() >= 1
    tops, lefts = sorted({t.top for t in tiles}), sorted({t.left for t in tiles})
    assert tops[-1] + tiles[0].height == height and lefts[-1] + tiles[0].width == width
    for starts, size in ((tops, tiles[0].height), (lefts, tiles[0].width)):
        for a, b in zip(starts, starts[1:]):
            assert a + size - b >= min(overlap, size)


def test_axis_starts_snap_last_tile_to_edge():
    assert axis_starts(18, 8, 4) == [0, 4, 8, 10]
    assert axis_starts(12, 8, 4) == [0, 4]
    assert axis_starts(5, 8, 4) == [0]


def test_blend_weights_are_symmetric_and_positive():
    w = blend_weights(9, 12)
    assert torch.allclose(w, w.flip(0)) and torch.allclose(w, w.flip(1))
    assert w.min() > 0 and w[4, 5] == w.max()


@pytest.mark.parametrize("height,width", SIZES)
@pytest.mark.parametrize("scale", [1, 4])
def test_pointwise_model_tiled_equals_untiled(height, width, scale):
    torch.manual_seed(height * 1000 + width)
    x = torch.randn(2, 3, height, width)

    def pointwise(batch, tiles):
        y = torch.tanh(batch * 1.7) + batch**2
        return y.repeat_interleave(scale, -1).repeat_interleave(scale, -2)

    expected = pointwise(x, None)
    for batch_size in (1, 3):
        out = tiled_apply(pointwise, x, plan_tiles(height, width, 8, 3), scale=scale, batch_size=batch_size)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_blended_weights_sum_to_one():
    ones = torch.ones(1, 1, 37, 53)
    out = tiled_apply(lambda b, t: b, ones, plan_tiles(37, 53, 16, 5))
    torch.testing.assert_close(out, ones)


def test_bad_plans_refused():
    with pytest.raises(ConfigError):
        plan_tiles(64, 64, 8, 8)
    with pytest.raises(ConfigError):
        plan_tiles(64, 64, 0, 0)


@pytest.mark.parametrize("height,width", [(7, 13), (31, 97), (64, 64)])
@pytest.mark.parametrize("context", [0, 1, 3, 40])
def test_context_windows_contain_their_tile_and_stay_inside(height, width, context):
    tiles = plan_tiles(height, width, 8, 2)
    windows = [context_window(t, context, height, width) for t in tiles]
    assert len({(w.height, w.width) for w in windows}) == 1
    for tile, window in zip(tiles, windows):
        assert window.height == min(tile.height + 2 * context, height)
        assert window.width == min(tile.width + 2 * context, width)
        assert 0 <= window.top <= tile.top and tile.top + tile.height <= window.top + window.height <= height
        assert 0 <= window.left <= tile.left and tile.left + tile.width <= window.left + window.width <= width


def test_context_window_centres_interior_tiles_and_shifts_at_edges():
    assert context_window(Tile(10, 20, 8, 8), 3, 64, 64) == Tile(7, 17, 14, 14)
    assert context_window(Tile(0, 56, 8, 8), 3, 64, 64) == Tile(0, 50, 14, 14)


@pytest.mark.parametrize("scale", [1, 4])
def test_context_makes_a_local_model_tiled_equal_untiled(scale):
    """A 5x5 convolution (radius 2, zero padding) needs 2 px of context: with it, tiling is
    exact; without it, the tile borders are wrong."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 45, 38)
    kernel = torch.randn(3, 3, 5, 5)

    def conv(batch, windows):
        y = torch.nn.functional.conv2d(batch, kernel, padding=2)
        return y.repeat_interleave(scale, -1).repeat_interleave(scale, -2)

    expected = conv(x, None)
    tiles = plan_tiles(45, 38, 16, 4)
    exact = tiled_apply(conv, x, tiles, scale=scale, batch_size=2, context=2)
    torch.testing.assert_close(exact, expected, atol=1e-4, rtol=1e-4)
    without = tiled_apply(conv, x, tiles, scale=scale, batch_size=2)
    assert (without - expected).abs().max() > 0.1
