"""Running a Real-ESRGAN network: any spandrel image model plus tiles, batches and the resize to any
scale.

The network runs at its own scale; :meth:`RealEsrganUpscaler.upscale` then resizes to the
requested one (PIL bicubic). Large images are cut into tiles that run batched, each with
``tile_pad`` pixels of real neighbours around it, and pasted back without blending
(:func:`seesr.imaging.tiling.tiled_paste`). The tile and batch sizes follow the free memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from seesr.errors import ConfigError
from seesr.imaging.convert import output_size, pil_to_tensor
from seesr.imaging.tiling import plan_tiles, tiled_paste
from seesr.progress import ProgressCallback, StageCounter
from seesr.runtime.memory import free_memory_bytes
from seesr.settings.models import DEFAULT_MODEL, DEFAULT_TILE_PAD

AUTO_TILES = (256, 128, 64)
"""Tile sizes the out-of-memory ladder steps down through (input pixels)."""
ACTIVATION_VALUES_PER_OUTPUT_PIXEL = 256
"""Rough peak of activations per output pixel (x4plus: ~4 HR feature maps of 64 channels); sizes
tile batches and the automatic tile against the free memory."""
MEMORY_SHARE = 0.5
"""Share of the free memory a batch of tiles may plan to use."""

X4PLUS_PARAMETERS = 16_697_987
"""Parameters of RealESRGAN_x4plus (RRDBNet, 23 blocks), the largest bundled network: the weights
in estimates made before a model is loaded."""


def bytes_per_input_pixel(net_scale: int, dtype: torch.dtype) -> int:
    """Activation memory one input pixel costs at the network's peak
    (:data:`ACTIVATION_VALUES_PER_OUTPUT_PIXEL` values per output pixel)."""
    return ACTIVATION_VALUES_PER_OUTPUT_PIXEL * net_scale**2 * torch.finfo(dtype).bits // 8


def batch_pixels_for(free_bytes: int, net_scale: int, dtype: torch.dtype) -> int:
    """Input pixels one forward may take within :data:`MEMORY_SHARE` of ``free_bytes``."""
    return max(1, int(free_bytes * MEMORY_SHARE) // bytes_per_input_pixel(net_scale, dtype))


def auto_tile(height: int, width: int, batch_pixels: int, tile_pad: int = DEFAULT_TILE_PAD) -> int:
    """The automatic tile: 0 (untiled) when the whole input fits ``batch_pixels``, else the largest
    of :data:`AUTO_TILES` whose padded window does (the smallest when none does)."""
    if height * width <= batch_pixels:
        return 0
    return next((t for t in AUTO_TILES if (t + 2 * tile_pad) ** 2 <= batch_pixels), AUTO_TILES[-1])


def tile_rungs(first: int) -> list[int]:
    """Tiles to try in turn on out-of-memory errors: ``first`` (0: untiled), then the smaller of
    :data:`AUTO_TILES`."""
    return [first, *(t for t in AUTO_TILES if first == 0 or t < first)]


def estimated_peak_bytes(
    height: int, width: int, tile: int, net_scale: int, dtype: torch.dtype, batch_pixels: int,
    tile_pad: int = DEFAULT_TILE_PAD, parameters: int = X4PLUS_PARAMETERS,
) -> int:  # fmt: skip
    """Rough peak memory of one upscale: the weights, the activations of the largest forward (the
    whole input untiled, else as many padded tile windows as ``batch_pixels`` lets one forward
    take, as :meth:`RealEsrganUpscaler.upscale_tensor` batches them) and the float32 output."""
    if tile == 0 or (tile >= height and tile >= width):
        pixels = height * width
    else:
        window = (min(tile, height) + 2 * tile_pad) * (min(tile, width) + 2 * tile_pad)
        tiles = -(-height // tile) * -(-width // tile)
        pixels = window * max(1, min(tiles, batch_pixels // window))
    output = 3 * (net_scale * height) * (net_scale * width) * 4
    return parameters * torch.finfo(dtype).bits // 8 + pixels * bytes_per_input_pixel(net_scale, dtype) + output


class RealEsrganUpscaler:
    """A spandrel image model plus tiling, batching and resizing to any output scale.

    ``descriptor``: a spandrel ``ImageModelDescriptor`` (or a bare ``nn.Module`` and its ``scale``);
    ``scale``: the model's output scale when it is below the network's (bicubic downscale after
    the network, as the bundled x2/x3 models do); ``name`` is what reports call the model."""

    def __init__(
        self,
        descriptor: Any,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        source: Path | None = None,
        name: str = DEFAULT_MODEL,
        scale: int | None = None,
        net_scale: int = 4,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.source = source
        self.progress: ProgressCallback | None = None
        """Receives a :class:`~seesr.progress.StageProgress` ("realesrgan", tiles done, tiles)."""
        self.name = name
        if isinstance(descriptor, torch.nn.Module):
            model, self.net_scale, self._call = descriptor, net_scale, descriptor
        else:
            model, self.net_scale, self._call = descriptor.model, descriptor.scale, descriptor
        self.scale = scale or self.net_scale
        # channels-last convolutions are faster on CPU (oneDNN) and on CUDA tensor cores
        self.model = model.to(device=self.device, dtype=dtype, memory_format=torch.channels_last)
        self.model.eval().requires_grad_(False)
        self.forward_calls = 0

    def _run(self, crops: torch.Tensor) -> torch.Tensor:
        """The model on a batch of crops (already on the device, in its dtype), at the model's scale."""
        self.forward_calls += 1
        out = self._call(crops.contiguous(memory_format=torch.channels_last))
        if self.scale != self.net_scale:  # the ncnn graphs' bicubic resize (no antialias)
            size = (crops.shape[-2] * self.scale, crops.shape[-1] * self.scale)
            out = F.interpolate(out, size=size, mode="bicubic", align_corners=False)
        return out

    def batch_pixels(self) -> int:
        """Input pixels one forward may take, from the free memory of the device."""
        return batch_pixels_for(free_memory_bytes(self.device), self.net_scale, self.dtype)

    def plan_tile(self, height: int, width: int, tile_pad: int = DEFAULT_TILE_PAD) -> int:
        """The automatic tile (:func:`auto_tile`) for this model and the device's free memory now."""
        return auto_tile(height, width, self.batch_pixels(), tile_pad)

    def tile_rungs(self, height: int, width: int, tile: int = 0, tile_pad: int = DEFAULT_TILE_PAD) -> list[int]:
        """Tiles to try in turn on out-of-memory errors: ``tile`` (0: :meth:`plan_tile`), then the
        smaller of :data:`AUTO_TILES`."""
        return tile_rungs(tile or self.plan_tile(height, width, tile_pad))

    @torch.inference_mode()
    def upscale_tensor(
        self, x: torch.Tensor, *, tile: int = 0, tile_pad: int = DEFAULT_TILE_PAD, pre_pad: int = 0
    ) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 3, sH, sW) float32 on the model's device, in [0, 1]
        (s: the model's scale).

        ``tile`` > 0 cuts the input into tiles of that many pixels, each run with ``tile_pad``
        pixels of its neighbours (cut off again, the official ``tile_pad``), batched as far as the
        free memory allows and pasted without blending; ``tile`` 0 runs the whole image.
        ``pre_pad`` > 0 reflect-pads the input first and crops the result (the ncnn tool uses 10;
        0, the official inference default, scores higher on RealSR at less cost).
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ConfigError(f"expected a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        if min(pre_pad, tile, tile_pad) < 0:
            raise ConfigError(f"pre_pad, tile and tile_pad must be >= 0, got {pre_pad}, {tile}, {tile_pad}")
        _, _, height, width = x.shape
        x = x.to(device=self.device, dtype=self.dtype)  # the one transfer in
        pad = min(pre_pad, height - 1, width - 1)  # reflect padding needs pad < size
        if pad > 0:
            x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        padded_h, padded_w = x.shape[-2:]
        if tile == 0 or (tile >= padded_h and tile >= padded_w):
            counter = StageCounter(self.progress, "realesrgan", 1)
            out = self._run(x)
            counter.update()
        else:
            tiles = plan_tiles(padded_h, padded_w, tile, 0)
            counter = StageCounter(self.progress, "realesrgan", len(tiles))

            def run(crops: torch.Tensor) -> torch.Tensor:
                out = self._run(crops)
                counter.update(crops.shape[0])
                return out

            out = tiled_paste(run, x, tiles, scale=self.scale, context=tile_pad, batch_pixels=self.batch_pixels())
        if pad > 0:
            crop = pad * self.scale
            out = out[..., crop : crop + height * self.scale, crop : crop + width * self.scale]
        return out.float().clamp_(0, 1)

    def upscale(
        self, image: Image.Image, scale: float = 4, tile: int = 0, tile_pad: int = DEFAULT_TILE_PAD, pre_pad: int = 0
    ) -> Image.Image:
        """Upscale a PIL image to ``round(w*scale) x round(h*scale)``.

        The model runs at its own scale; another ``scale`` resizes its result (PIL bicubic).
        Expects an 8-bit image (as :mod:`seesr.io.read` loads them). Grayscale inputs come back
        grayscale; an alpha channel (or palette transparency) is resized bicubically and kept.
        """
        if scale <= 0:
            raise ConfigError(f"scale must be positive, got {scale}")
        if image.mode in ("P", "PA") or (image.mode != "RGBA" and "transparency" in image.info):
            image = image.convert("RGBA")
        width, height = image.size
        size = output_size(width, height, scale)
        alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
        gray = image.mode in ("L", "LA", "1")
        out = self.upscale_tensor(pil_to_tensor(image), tile=tile, tile_pad=tile_pad, pre_pad=pre_pad)
        array = out[0].mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()  # the one transfer out
        result = Image.fromarray(array, "RGB")
        if result.size != size:
            result = result.resize(size, Image.Resampling.BICUBIC)
        if gray:
            result = result.convert("L")
        if alpha is not None:
            result.putalpha(alpha.resize(size, Image.Resampling.BICUBIC))
        return result
