"""Automatic run planning: untiled or tiled, tile sizes and tile batch, from the image size,
the device and its free memory; with the estimated peak memory of the plan.

Quality first, then memory: the latent tile is capped at ``max_latent_tile`` (the official turbo
script's 96, overlap 32) whatever the memory, because SD-Turbo and SeeSR were trained near that
size; a latent whose area is within ``max_latent_tile**2`` runs untiled (the official area test).
Memory may only make the tiles smaller.

The memory model: peak = resident weights + the largest stage's working memory. Working memory
is linear in pixels for every stage (SDPA attention is memory-efficient), with per-pixel costs
measured on the full-size models by ``python -m benchmarks.memory`` (numbers below).
User-given values always override the planner's choices.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from seesr.errors import ConfigError, InputError
from seesr.imaging.convert import output_size, scaled_size
from seesr.imaging.tiling import Tile, plan_tiles
from seesr.runtime.memory import free_memory_bytes
from seesr.settings.models import MODELS

VAE_SCALE = 8
"""The SD VAE's spatial factor (three stride-2 stages): a latent pixel is 8x8 image pixels, so working
images are cropped to a multiple of 8 (the official rule)."""

# Working memory per pixel, in bytes per byte of element size (x4 for float32, x2 for float16),
# fitted on the full-size models (CPU, float32, two sizes each, linear fit) by
# `python -m benchmarks.memory`: denoise 64->96 latent px: 315 -> 512 MiB; decode 48->96
# latent px: 554 -> 2186 MiB; encode 384->768 px: 368 -> 1450 MiB.
DENOISE_BYTES_PER_LATENT_PIXEL = 10_100.0
"""ControlNet + UNet forward, per latent pixel per batch item (guidance doubles the batch)."""
DENOISE_FIXED_BYTES = 160 * 2**20
"""ControlNet + UNet working memory that does not grow with the tile (fit intercept)."""
VAE_DECODE_BYTES_PER_PIXEL = 970.0
"""VAE decoder, per output image pixel of the tile being decoded."""
VAE_ENCODE_BYTES_PER_PIXEL = 640.0
"""VAE encoder, per input image pixel of the tile being encoded."""
FIXED_OVERHEAD_BYTES = 300 * 2**20
"""Tagger at 384x384, text encoder, latents kept across stages, allocator slack."""

OFFICIAL = MODELS["seesr-turbo"]
"""The official turbo script's tiles (``--latent_tiled_size``, ``--vae_encoder_tiled_size``,
``--vae_decoder_tiled_size``): a plan's defaults."""
MIN_LATENT_TILE = 32
MIN_VAE_DECODER_TILE = 32
MIN_VAE_ENCODER_TILE = 256
DEFAULT_LATENT_OVERLAP = 32
"""Official turbo-script overlap (latent pixels), scaled down with the tile when the tile is small."""
MEMORY_HEADROOM = 0.85
"""Plan to use at most this fraction of the free memory."""


@dataclass(frozen=True)
class WorkingSize:
    """How an LR image becomes the image the diffusion model works on.

    ``pre_size``: enlarge tiny inputs first (official ``process_size`` rule), or None.
    ``upscaled_size``: bicubic upscale by ``scale``. ``work_size``: floored to a multiple of :data:`VAE_SCALE`.
    ``output_size``: what the user asked for (input size x scale).
    """

    pre_size: tuple[int, int] | None
    upscaled_size: tuple[int, int]
    work_size: tuple[int, int]
    output_size: tuple[int, int]


def plan_working_size(width: int, height: int, scale: float, process_size: int) -> WorkingSize:
    """Official SeeSR sizing: tiny inputs are first enlarged so the short side reaches
    ``process_size / scale``, then upscaled by ``scale`` and floored to a multiple of :data:`VAE_SCALE`."""
    if scale <= 0:
        raise ConfigError(f"scale must be positive, got {scale}")
    min_side = int(process_size // scale) if process_size > 0 else 0
    pre_size = None
    if width < min_side or height < min_side:
        factor = min_side / min(width, height)
        pre_size = (int(factor * width), int(factor * height))
    base_w, base_h = pre_size or (width, height)
    upscaled = (scaled_size(base_w, scale), scaled_size(base_h, scale))
    work = (upscaled[0] // VAE_SCALE * VAE_SCALE, upscaled[1] // VAE_SCALE * VAE_SCALE)
    if work[0] < VAE_SCALE or work[1] < VAE_SCALE:
        raise InputError(
            f"a {width}x{height} image at scale {scale} is smaller than 8 px on a side; use a larger scale"
        )
    return WorkingSize(pre_size, upscaled, work, output_size(width, height, scale))


@dataclass(frozen=True)
class RunPlan:
    """How one image is processed. Tile sizes: latent pixels for the denoiser and the VAE decoder
    (the official ``latent_tiled_size`` / ``vae_decoder_tiled_size``), image pixels for the VAE
    encoder (``vae_encoder_tiled_size``). ``offload`` keeps models on the CPU between stages."""

    latent_tile: int = OFFICIAL.max_latent_tile
    latent_overlap: int | None = None
    tile_batch_size: int = 1
    vae_encoder_tile: int = OFFICIAL.vae_encoder_tile
    vae_decoder_tile: int = OFFICIAL.vae_decoder_tile
    offload: bool = False
    estimated_peak_bytes: int | None = None
    latent_size: tuple[int, int] | None = None
    """(height, width) of the latent this plan was made for (for :meth:`describe`)."""
    latent_tile_reason: str | None = None
    """Why the latent tile has its size, in words (for :meth:`describe`)."""
    sizes: WorkingSize | None = None
    """The working size (input, upscaled, work and output sizes) this plan was made for, which the
    pipeline then uses as it is."""

    def __post_init__(self) -> None:
        if self.latent_overlap is None:  # a third of the tile, at most the official 32
            object.__setattr__(self, "latent_overlap", min(DEFAULT_LATENT_OVERLAP, self.latent_tile // 3))
        problems = []
        if self.latent_tile < 8:
            problems.append(f"latent_tile must be >= 8, got {self.latent_tile}")
        if not 0 <= self.latent_overlap < self.latent_tile:
            problems.append(f"latent_overlap must be in [0, latent_tile), got {self.latent_overlap}")
        if self.tile_batch_size < 1:
            problems.append(f"tile_batch_size must be >= 1, got {self.tile_batch_size}")
        if self.vae_encoder_tile < 64:
            problems.append(f"vae_encoder_tile must be >= 64 image pixels, got {self.vae_encoder_tile}")
        if self.vae_decoder_tile < 8:
            problems.append(f"vae_decoder_tile must be >= 8 latent pixels, got {self.vae_decoder_tile}")
        if problems:
            raise ConfigError("; ".join(problems))

    def smaller(self) -> "RunPlan":
        """Half the tiles and one tile at a time: the next rung of the out-of-memory ladder."""
        latent_tile = max(MIN_LATENT_TILE // 2, self.latent_tile // 2)
        return dataclasses.replace(
            self,
            latent_tile=latent_tile,
            latent_overlap=min(self.latent_overlap, latent_tile // 4),
            tile_batch_size=1,
            vae_encoder_tile=max(128, self.vae_encoder_tile // 2),
            vae_decoder_tile=max(16, self.vae_decoder_tile // 2),
            estimated_peak_bytes=None,
            latent_tile_reason="halved after running out of memory",
        )

    def tiles_for(self, latent_height: int, latent_width: int) -> list[Tile]:
        """The denoiser's tile grid on a latent of this size, with the overlap clamped below the
        tile's clamped side (what the pipeline runs and :meth:`describe` counts)."""
        return plan_tiles(latent_height, latent_width, self.latent_tile, _overlap(self, latent_height, latent_width))

    def latent_tiles(self) -> list[Tile]:
        """The denoiser's tile grid on :attr:`latent_size` (what the pipeline runs)."""
        if self.latent_size is None:
            raise ConfigError("this plan was made without a latent size")
        return self.tiles_for(*self.latent_size)

    def describe(self) -> str:
        """One line: the latent tile grid and why, tile batch, VAE tiles, offload, estimated peak."""
        if self.latent_size is None:
            grid = f"latent tile {self.latent_tile} (overlap {self.latent_overlap})"
        else:
            height, width = self.latent_size
            tiles = self.latent_tiles()
            if len(tiles) == 1:
                grid = f"latent {width}x{height} untiled"
            else:
                rows, cols = len({t.top for t in tiles}), len({t.left for t in tiles})
                grid = (
                    f"latent {width}x{height} in {cols}x{rows} tiles of {self.latent_tile} "
                    f"(overlap {_overlap(self, height, width)}), {self.tile_batch_size} per batch"
                )
        reason = f": {self.latent_tile_reason}" if self.latent_tile_reason else ""
        peak = f", est. peak {self.estimated_peak_bytes / 2**30:.1f} GiB" if self.estimated_peak_bytes else ""
        return (
            f"{grid}{reason}; VAE encoder tile {self.vae_encoder_tile}px, decoder tile {self.vae_decoder_tile}"
            f"{', offload' if self.offload else ''}{peak}"
        )


def denoise_bytes(latent_tile_px: int, batch: int, element: int) -> int:
    """Working memory of ControlNet + UNet on ``batch`` latent tiles of ``latent_tile_px`` pixels."""
    return int(DENOISE_FIXED_BYTES + DENOISE_BYTES_PER_LATENT_PIXEL * element * latent_tile_px * batch)


def decode_bytes(latent_tile_px: int, element: int) -> int:
    """Working memory of the VAE decoder on a tile of ``latent_tile_px`` latent pixels."""
    return int(VAE_DECODE_BYTES_PER_PIXEL * element * latent_tile_px * VAE_SCALE**2)


def encode_bytes(image_tile_px: int, element: int) -> int:
    """Working memory of the VAE encoder on a tile of ``image_tile_px`` image pixels."""
    return int(VAE_ENCODE_BYTES_PER_PIXEL * element * image_tile_px)


def estimate_peak_bytes(
    work_width: int,
    work_height: int,
    plan: RunPlan,
    *,
    dtype: torch.dtype = torch.float32,
    weights_bytes: int = 0,
    batch_multiplier: int = 1,
) -> int:
    """Estimated peak memory of processing a ``work_width x work_height`` working image.

    ``weights_bytes``: weights resident during the run; ``batch_multiplier``: 2 with
    classifier-free guidance, N with N KDS particles."""
    element = torch.finfo(dtype).bits // 8
    latent_h, latent_w = work_height // VAE_SCALE, work_width // VAE_SCALE
    tiles = len(plan.tiles_for(latent_h, latent_w))
    latent_tile_px = min(plan.latent_tile, latent_h) * min(plan.latent_tile, latent_w)
    stages = (
        denoise_bytes(latent_tile_px, min(plan.tile_batch_size, tiles) * batch_multiplier, element),
        decode_bytes(min(plan.vae_decoder_tile, latent_h) * min(plan.vae_decoder_tile, latent_w), element),
        encode_bytes(min(plan.vae_encoder_tile, work_height) * min(plan.vae_encoder_tile, work_width), element),
    )
    return int(weights_bytes + max(stages) + _fixed_bytes(work_width, work_height))


def _fixed_bytes(work_width: int, work_height: int) -> int:
    """Images kept across stages (condition, decoded, colour-fixed, output; float32) + overhead."""
    return work_width * work_height * 3 * 4 * 4 + FIXED_OVERHEAD_BYTES


def _overlap(plan: RunPlan, latent_h: int, latent_w: int) -> int:
    return min(plan.latent_overlap, max(0, min(plan.latent_tile, latent_h, latent_w) - 1))


@dataclass(frozen=True)
class _Candidates:
    """The tiles :func:`plan_run` tries for one working size, largest first (the quality tile, then
    smaller ones down to the minimums), and why the latent tile has the size it gets."""

    latent_size: tuple[int, int]
    untiled: bool
    quality_tile: int
    latent: list[int]
    decoder: list[int]
    encoder: list[int]

    @classmethod
    def for_work(cls, work_width: int, work_height: int, max_latent_tile: int) -> "_Candidates":
        latent_h, latent_w = work_height // VAE_SCALE, work_width // VAE_SCALE
        latent_side = max(latent_h, latent_w)
        untiled = latent_h * latent_w <= max_latent_tile**2  # the official area test
        quality_tile = max(latent_side, 8) if untiled else max_latent_tile  # >= RunPlan's minimum on tiny inputs
        latent = [quality_tile] + [t for t in (128, 96, 64, 48, MIN_LATENT_TILE) if t < quality_tile and t <= max_latent_tile]
        decoder = [max(latent_side, 8)] + [t for t in (256, 192, 128, 96, 64, MIN_VAE_DECODER_TILE) if t < latent_side]
        image_side = latent_side * VAE_SCALE
        encoder = [max(image_side, 64)] + [t for t in (2048, 1536, 1024, 768, 512, MIN_VAE_ENCODER_TILE) if t < image_side]
        return cls((latent_h, latent_w), untiled, quality_tile, latent, decoder, encoder)

    def reason(self, latent_tile: int, max_latent_tile: int, overrides: dict) -> str:
        if "latent_tile" in overrides:
            return f"latent tile {overrides['latent_tile']} as set"
        if latent_tile < self.quality_tile:
            return f"smaller than {self.quality_tile} (max_latent_tile={max_latent_tile}) to fit the memory budget"
        if self.untiled:
            return f"area within max_latent_tile^2={max_latent_tile}^2"
        return f"capped at max_latent_tile={max_latent_tile}"


def plan_run(
    work_width: int,
    work_height: int,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    weights_bytes: int = 0,
    loaded_bytes: int = 0,
    budget_bytes: int | None = None,
    batch_multiplier: int = 1,
    max_latent_tile: int = OFFICIAL.max_latent_tile,
    overrides: dict | None = None,
) -> RunPlan:
    """The largest tiles whose estimated peak stays within the budget; the latent tile never
    exceeds ``max_latent_tile`` (untiled when the latent's area is within its square).

    Stages run one after another, so each stage gets the whole budget left after the resident
    weights and the images. ``loaded_bytes``: the part of ``weights_bytes`` already on ``device``
    (the free-memory reading does not include it, so it is added back to the budget).
    ``overrides`` (RunPlan field -> value) are kept as given. When nothing fits even with CPU
    offload, the smallest tiles are returned (the estimate says by how much it is over; the
    out-of-memory ladder takes it from there)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if budget_bytes is not None:
        budget = budget_bytes
    else:
        budget = int(free_memory_bytes(device) * MEMORY_HEADROOM) + min(loaded_bytes, weights_bytes)
    element = torch.finfo(dtype).bits // 8
    tiles = _Candidates.for_work(work_width, work_height, max_latent_tile)
    latent_h, latent_w = tiles.latent_size

    def tile_px(tile: int) -> int:
        return min(tile, latent_h) * min(tile, latent_w)

    def plan_with(offload: bool) -> RunPlan:
        resident = 0 if offload and device.type == "cuda" else weights_bytes
        stage_budget = budget - resident - _fixed_bytes(work_width, work_height)

        def largest(candidates: list[int], cost) -> int:
            return next((c for c in candidates if cost(c) <= stage_budget), candidates[-1])

        latent_tile = largest(tiles.latent, lambda t: denoise_bytes(tile_px(t), batch_multiplier, element))
        count = len(RunPlan(latent_tile=latent_tile).tiles_for(latent_h, latent_w))  # at the default overlap
        batch = largest(
            [b for b in (4, 2) if b <= count] + [1],
            lambda b: denoise_bytes(tile_px(latent_tile), b * batch_multiplier, element),
        )
        values = dict(
            latent_tile=latent_tile,
            latent_size=(latent_h, latent_w),
            latent_tile_reason=tiles.reason(latent_tile, max_latent_tile, overrides),
            tile_batch_size=batch,
            vae_decoder_tile=largest(tiles.decoder, lambda t: decode_bytes(tile_px(t), element)),
            vae_encoder_tile=largest(
                tiles.encoder, lambda t: encode_bytes(min(t, work_height) * min(t, work_width), element)
            ),
            offload=offload,
        )
        values.update(overrides)
        plan = RunPlan(**values)
        peak = estimate_peak_bytes(
            work_width,
            work_height,
            plan,
            dtype=dtype,
            weights_bytes=0 if plan.offload and device.type == "cuda" else weights_bytes,
            batch_multiplier=batch_multiplier,
        )
        return dataclasses.replace(plan, estimated_peak_bytes=peak)

    plan = plan_with(offload=False)
    if plan.estimated_peak_bytes > budget and device.type == "cuda" and "offload" not in overrides:
        plan = plan_with(offload=True)  # offload only helps where the weights would sit in device memory
    return plan
