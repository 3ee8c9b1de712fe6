"""The one tiler: grid planning, tile extraction, blend weights and weighted accumulation.

Used by latent diffusion (noise predictions per latent tile), and by any image-to-image network
that works on crops (Real-ESRGAN). A tile is a window of the input; its result may be ``scale``
times larger (x4 for Real-ESRGAN); overlapping results are blended with smooth, symmetric
weights that are normalised so they sum to one at every pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from seesr.errors import ConfigError


@dataclass(frozen=True)
class Tile:
    """A window ``[top:top+height, left:left+width]`` of the input."""

    top: int
    left: int
    height: int
    width: int

    def scaled(self, factor: int) -> "Tile":
        return Tile(self.top * factor, self.left * factor, self.height * factor, self.width * factor)

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def axis_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: stride ``tile - overlap``, the last one snapped to the edge."""
    if tile >= size:
        return [0]
    stride = tile - overlap
    count = math.ceil((size - tile) / stride) + 1
    return [min(i * stride, size - tile) for i in range(count)]


def plan_tiles(height: int, width: int, tile: int | tuple[int, int], overlap: int) -> list[Tile]:
    """Tiles covering a ``height x width`` input; no tile is larger than the input.

    Every pixel is covered; consecutive tiles overlap by at least ``overlap``; row-major order.
    An axis no longer than the tile is one tile wide and needs no overlap, so a thin input (a side
    at or below the overlap) always works; only an axis that is split needs ``overlap < tile``.
    """
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    if min(tile_h, tile_w) < 1 or overlap < 0:
        raise ConfigError(f"tile size must be >= 1 and overlap >= 0, got tile {tile}, overlap {overlap}")
    for size, side in ((height, tile_h), (width, tile_w)):
        if side < size and overlap >= side:
            raise ConfigError(f"overlap {overlap} must be smaller than the tile size {side}")
    tile_h, tile_w = min(tile_h, height), min(tile_w, width)
    return [
        Tile(top, left, tile_h, tile_w)
        for top in axis_starts(height, tile_h, overlap)
        for left in axis_starts(width, tile_w, overlap)
    ]


def blend_weights(height: int, width: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Smooth, symmetric (height, width) weights, largest at the centre, positive at the edges.

    A separable Gaussian centred at ((h-1)/2, (w-1)/2) on both axes (the official SeeSR weights
    use t/2 on one axis and (t-1)/2 on the other, which shifts every tile's peak by half a pixel).
    """

    def one_axis(n: int) -> torch.Tensor:
        x = torch.arange(n, dtype=torch.float64)
        centre = (n - 1) / 2
        return torch.exp(-((x - centre) ** 2) / (n * n) / (2 * 0.01)) / math.sqrt(2 * math.pi * 0.01)

    return (one_axis(height)[:, None] * one_axis(width)[None, :]).to(device=device, dtype=dtype)


def context_window(tile: Tile, context: int, height: int, width: int) -> Tile:
    """``tile`` grown by ``context`` pixels on each side, moved back inside the image where it
    would cross an edge (it then gets more context on the inner side instead).

    Windows of equally sized tiles are equally sized, so they still batch together.
    """
    if context < 0:
        raise ConfigError(f"tile context must be >= 0, got {context}")

    def one_axis(start: int, size: int, limit: int) -> tuple[int, int]:
        grown = min(size + 2 * context, limit)
        return min(max(start - context, 0), limit - grown), grown

    top, window_h = one_axis(tile.top, tile.height, height)
    left, window_w = one_axis(tile.left, tile.width, width)
    return Tile(top, left, window_h, window_w)


def tiled_apply(
    fn: Callable[[torch.Tensor, Sequence[Tile]], torch.Tensor],
    inputs: torch.Tensor,
    tiles: Sequence[Tile],
    *,
    scale: int = 1,
    batch_size: int = 1,
    out_channels: int | None = None,
    context: int = 0,
) -> torch.Tensor:
    """Run ``fn`` over tiles of ``inputs`` (B, C, H, W) and blend the results.

    ``fn(batch, windows)`` gets the crops stacked on the batch axis (crops of one batch have the
    same size) with the windows they were cut from, and returns results ``scale`` times larger.
    With ``context`` > 0 each crop is the tile's :func:`context_window` and only the tile's part
    of the result is kept, so a network with a wide receptive field sees real neighbours instead
    of the tile's border (the official Real-ESRGAN ``tile_pad``). Tiles are batched ``batch_size``
    at a time; results are accumulated with :func:`blend_weights` and normalised per pixel.
    """
    if batch_size < 1:
        raise ConfigError(f"tile batch size must be >= 1, got {batch_size}")
    b, _, h, w = inputs.shape
    output = None
    weight_sum = torch.zeros(1, 1, h * scale, w * scale, device=inputs.device, dtype=torch.float32)
    weights_by_size: dict[tuple[int, int], torch.Tensor] = {}  # made once per tile size, not per tile
    for start in range(0, len(tiles), batch_size):
        group = list(tiles[start : start + batch_size])
        windows = [context_window(t, context, h, w) for t in group]
        crops = torch.cat([inputs[(..., *window.slices())] for window in windows], dim=0)
        results = fn(crops, windows)
        for index, (tile, window) in enumerate(zip(group, windows)):
            out_tile = tile.scaled(scale)
            inner = Tile(tile.top - window.top, tile.left - window.left, tile.height, tile.width).scaled(scale)
            result = results[(slice(index * b, (index + 1) * b), slice(None), *inner.slices())].float()
            if output is None:
                channels = out_channels or result.shape[1]
                output = torch.zeros(b, channels, h * scale, w * scale, device=inputs.device, dtype=torch.float32)
            size = (out_tile.height, out_tile.width)
            if size not in weights_by_size:
                weights_by_size[size] = blend_weights(*size, device=inputs.device)
            weights = weights_by_size[size]
            output[(..., *out_tile.slices())] += result * weights
            weight_sum[(..., *out_tile.slices())] += weights
    if output is None:
        raise ConfigError("no tiles to run")
    return output / weight_sum


def clipped_window(tile: Tile, context: int, height: int, width: int) -> Tile:
    """``tile`` grown by ``context`` pixels on each side, cut at the image's edges (an edge tile
    sees the image border as the whole image does, and costs less)."""
    top, left = max(tile.top - context, 0), max(tile.left - context, 0)
    bottom, right = min(tile.top + tile.height + context, height), min(tile.left + tile.width + context, width)
    return Tile(top, left, bottom - top, right - left)


def tiled_paste(
    fn: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    tiles: Sequence[Tile],
    *,
    scale: int = 1,
    context: int = 0,
    batch_pixels: int | None = None,
) -> torch.Tensor:
    """Run ``fn`` over the tiles' context windows of ``inputs`` (B, C, H, W) and paste each tile's
    part of the result (``scale`` times larger) into one output, without blending.

    For networks whose output at a pixel depends on a bounded neighbourhood (Real-ESRGAN): with
    enough ``context`` the seams vanish without overlapping tiles. Windows of equal size run
    together, at most ``batch_pixels`` input pixels per call (at least one window). Crops and
    pastes stay on the inputs' device; the output has ``fn``'s dtype and device.
    """
    if context < 0:
        raise ConfigError(f"tile context must be >= 0, got {context}")
    b, _, h, w = inputs.shape
    by_size: dict[tuple[int, int], list[tuple[Tile, Tile]]] = {}
    for tile in tiles:
        window = clipped_window(tile, context, h, w)
        by_size.setdefault((window.height, window.width), []).append((tile, window))
    output = None
    for (window_h, window_w), members in by_size.items():
        per_call = len(members) if batch_pixels is None else max(1, batch_pixels // (window_h * window_w * b))
        for start in range(0, len(members), per_call):
            group = members[start : start + per_call]
            results = fn(torch.cat([inputs[(..., *window.slices())] for _, window in group]))
            if output is None:
                output = results.new_empty(b, results.shape[1], h * scale, w * scale)
            for index, (tile, window) in enumerate(group):
                inner = Tile(tile.top - window.top, tile.left - window.left, tile.height, tile.width).scaled(scale)
                output[(..., *tile.scaled(scale).slices())] = results[(slice(index * b, (index + 1) * b), slice(None), *inner.slices())]
    if output is None:
        raise ConfigError("no tiles to run")
    return output
