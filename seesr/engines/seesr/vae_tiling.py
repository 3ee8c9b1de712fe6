"""Tiled VAE encode/decode whose GroupNorms use statistics of the whole image.

A plain VAE call on a 4k image needs tens of GB for the activations of its full-resolution
stages. Tiles bound the working set to one window, but a tile normalised with *its own*
GroupNorm statistics shows seams and colour shifts. Here, as in the official SeeSR tiled VAE
(``utils/vaehook.py``), every GroupNorm is a synchronisation point:

* the input is cut into windows (a core tile plus ``pad`` pixels of context on every side that is
  not an image border); the cores partition the input, every window runs the encoder/decoder
  on its own, and only its core is written to the output;
* the forward pass of each window is a Python generator over the diffusers modules (weights are
  shared, nothing is copied). At a GroupNorm it yields the float32 (mean, var, count) of its
  *core* per (sample, group) and gets back the statistics pooled over all windows, which are
  exactly the statistics of the whole image (see :func:`pool_group_stats`);
* a driver advances all windows in lock-step, one window at a time between two synchronisation
  points. A paused window holds only its activation and a pending residual, and after the last
  attention these are cut down to what its core still depends on (the remaining receptive
  field, a few pixels at the decoder's full-resolution stages), so all paused windows together
  hold about two full-image activations at the largest stage. With ``offload=True`` they wait
  on the CPU and the device only holds one window's working set and the output;
* the self-attention of the mid block attends within the window (as officially).

Differences from the official hook, which make the result closer to the untiled VAE:
statistics come from the cores (which partition the image, so overlaps are not counted twice)
and are pooled exactly (the official code averages the per-tile variances and so drops the
spread of the per-tile means); statistics are always float32 (fp16 weights are fine). The grid
is the shared one (:func:`seesr.imaging.tiling.axis_starts` per axis, as :func:`seesr.imaging.tiling.plan_tiles`
places tiles) with windows of ``tile + 2 * pad``, so it has the official number of tiles and
window size (the official code spreads the windows evenly; the shared grid snaps the last one to
the edge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generator, Sequence

import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import nn

from seesr.engines.seesr.planner import VAE_SCALE
from seesr.errors import ConfigError, InputError
from seesr.engines.seesr.models.attention import sdpa_for
from seesr.imaging.tiling import Tile, axis_starts

__all__ = ["tiled_decode", "tiled_encode", "group_stats", "pool_group_stats", "plan_windows", "Window"]

# (mean, var, count): per (sample, group) float32 mean and biased variance over ``count`` values.
GroupStats = tuple[torch.Tensor, torch.Tensor, int]
# A window's forward pass: yields its local statistics, receives (mean, var), returns its output.
_Steps = Generator[GroupStats, tuple[torch.Tensor, torch.Tensor], torch.Tensor]

TRIM_WHEN = 0.8  # cut a paused window's activations when that keeps at most this share of them


# ---------------------------------------------------------------------------------------------
# grid
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """What one tile runs on (``window``) and what of its output is kept (``core``), in input pixels.

    The cores of a grid partition the input; ``core`` lies inside ``window``."""

    window: Tile
    core: Tile

    def local_core(self) -> tuple[int, int, int, int]:
        """The core as (top, left, bottom, right) inside the window."""
        top, left = self.core.top - self.window.top, self.core.left - self.window.left
        return top, left, top + self.core.height, left + self.core.width


def _axis_windows(starts: Sequence[int], length: int, size: int, align: int) -> list[tuple[int, int, int, int]]:
    """(window start, window end, core start, core end) along one axis.

    Window starts are moved down to a multiple of ``align`` (only the last, edge-snapped one can be
    off the grid); the core boundary between two windows is the aligned middle of their overlap."""
    spans = []
    for index, start in enumerate(starts):
        end = start + length if index < len(starts) - 1 else size
        spans.append(((start // align) * align, end))
    cuts = [0]
    for (_, end), (next_start, _) in zip(spans, spans[1:]):
        overlap = end - next_start
        cuts.append(next_start + (overlap // (2 * align)) * align)
    cuts.append(size)
    return [(start, end, cuts[i], cuts[i + 1]) for i, (start, end) in enumerate(spans)]


def plan_windows(height: int, width: int, tile: int, pad: int, *, align: int = 1) -> list[Window]:
    """Windows of ``tile + 2 * pad`` on the shared grid (:func:`seesr.imaging.tiling.axis_starts`, overlap
    ``2 * pad``, as :func:`seesr.imaging.tiling.plan_tiles` places them), with their cores.

    Consecutive windows overlap by at least ``2 * pad``; each core keeps at least ``pad`` pixels of
    context inside its window on every side that is not an image border. With ``align`` > 1 (the
    encoder), ``tile`` and ``pad`` must be multiples of it and all window starts and core
    boundaries are too (so strided downsampling sees the same pixel grid as the whole image)."""
    if tile < 1 or pad < 0:
        raise ConfigError(f"VAE tile size must be >= 1 and pad >= 0, got tile {tile}, pad {pad}")
    if tile % align or pad % align:
        raise ConfigError(f"VAE tile {tile} and pad {pad} must be multiples of {align}")
    size = tile + 2 * pad
    rows = _axis_windows(axis_starts(height, size, 2 * pad), min(size, height), height, align)
    cols = _axis_windows(axis_starts(width, size, 2 * pad), min(size, width), width, align)
    return [
        Window(Tile(top, left, bottom - top, right - left), Tile(c_top, c_left, c_bottom - c_top, c_right - c_left))
        for top, bottom, c_top, c_bottom in rows
        for left, right, c_left, c_right in cols
    ]


# ---------------------------------------------------------------------------------------------
# GroupNorm statistics
# ---------------------------------------------------------------------------------------------


def group_stats(x: torch.Tensor, num_groups: int) -> GroupStats:
    """Float32 mean and biased variance per (sample, group) of ``x`` (B, C, H, W), and the count."""
    c = x.shape[1]
    grouped = x.unflatten(1, (num_groups, c // num_groups)).float()
    var, mean = torch.var_mean(grouped, dim=(2, 3, 4), unbiased=False)
    return mean, var, grouped[0, 0].numel()


def pool_group_stats(parts: Sequence[GroupStats]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of the union of disjoint regions from their own (mean, var, count).

    Count-weighted: mean = sum n_i m_i / N, var = sum n_i (v_i + (m_i - mean)^2) / N (float64 inside)."""
    counts = [float(n) for _, _, n in parts]
    total = sum(counts)
    if total <= 0:
        raise ConfigError("no values to pool GroupNorm statistics over")
    mean = sum(n * m.double() for (m, _, _), n in zip(parts, counts)) / total
    var = sum(n * (v.double() + (m.double() - mean) ** 2) for (m, v, _), n in zip(parts, counts)) / total
    return mean.float(), var.float()


def _apply_group_norm(x: torch.Tensor, norm: nn.GroupNorm, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` with given (B, groups) statistics; computed in float32, returned in x's dtype."""
    per_channel = x.shape[1] // norm.num_groups
    mean = mean.to(x.device).repeat_interleave(per_channel, dim=1)
    scale = torch.rsqrt(var.to(x.device) + norm.eps).repeat_interleave(per_channel, dim=1)
    if norm.affine:
        scale = scale * norm.weight.float()
    shift = -mean * scale
    if norm.affine:
        shift = shift + norm.bias.float()
    # x * scale + shift in one pass, as torch's own GroupNorm kernels compute it
    return torch.addcmul(shift[:, :, None, None], x.float(), scale[:, :, None, None]).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# one window's forward pass, as a generator that stops at every GroupNorm
# ---------------------------------------------------------------------------------------------


def _conv_radius(conv: nn.Module | None) -> int | None:
    """How far (pixels) a stride-1 'same' convolution looks; None when unknown."""
    if conv is None:
        return 0
    if isinstance(conv, nn.Conv2d) and conv.stride == (1, 1):
        radius = [d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation)]
        if conv.padding == tuple(radius):
            return max(radius)
    return None


def _add(margin: int | None, radius: int | None) -> int | None:
    return None if margin is None or radius is None else margin + radius


def _trim_margins(events: Sequence[tuple]) -> list[int | None]:
    """For every GroupNorm of a forward pass (in order), how many pixels around the core its
    parked activations still need so that the core's output does not change; None = all of it.

    ``events`` is the pass in forward order: ("conv", module), ("norm",), ("resnet", block),
    ("attn",) (attends within the whole window: nothing before it may be trimmed), ("up", module)
    (nearest x2 then its conv), ("down", module). Walks backwards from a margin of 0 at the output."""
    margins: list[int | None] = []
    margin: int | None = 0
    for event in reversed(events):
        kind = event[0]
        if kind == "conv":
            margin = _add(margin, _conv_radius(event[1]))
        elif kind == "norm":
            margins.append(margin)
        elif kind == "resnet":
            block = event[1]
            r1, r2, rs = _conv_radius(block.conv1), _conv_radius(block.conv2), _conv_radius(block.conv_shortcut)
            if None in (r1, r2, rs):
                margin = None
            margins.append(_add(margin, max(r2, rs)))  # type: ignore[type-var]
            margin = _add(margin, max(r1 + r2, rs))  # type: ignore[operator,type-var]
            margins.append(margin)
        elif kind == "attn":
            margins.append(None)
            margin = None
        elif kind == "up":
            up = event[1]
            conv = getattr(up, "conv", None) if getattr(up, "name", "conv") == "conv" else getattr(up, "Conv2d_0", None)
            if getattr(up, "use_conv_transpose", False) or not getattr(up, "interpolate", False):
                margin = None
            margin = _add(margin, _conv_radius(conv) if getattr(up, "use_conv", False) else 0)
            margin = None if margin is None else -(-margin // 2)
        else:  # "down" and anything unknown
            margin = None
    return margins[::-1]


def _mid_events(mid: nn.Module) -> list[tuple]:
    events: list[tuple] = [("resnet", mid.resnets[0])]
    for attn, resnet in zip(mid.attentions, mid.resnets[1:]):
        if attn is not None:
            events.append(("attn",))
        events.append(("resnet", resnet))
    return events


def _encoder_events(vae: AutoencoderKL) -> list[tuple]:
    enc = vae.encoder
    events: list[tuple] = [("conv", enc.conv_in)]
    for block in enc.down_blocks:
        events += [("resnet", r) for r in block.resnets] + [("down", d) for d in block.downsamplers or ()]
    return events + _mid_events(enc.mid_block) + [("norm",), ("conv", enc.conv_out), ("conv", vae.quant_conv)]


def _decoder_events(vae: AutoencoderKL) -> list[tuple]:
    dec = vae.decoder
    events: list[tuple] = [("conv", dec.conv_in)] + _mid_events(dec.mid_block)
    for block in dec.up_blocks:
        events += [("resnet", r) for r in block.resnets] + [("up", u) for u in block.upsamplers or ()]
    return events + [("norm",), ("conv", dec.conv_out)]


class _WindowPass:
    """Encoder/decoder forward of one window over the diffusers modules, pausing at GroupNorms.

    The activation (``self.h``) and a pending residual (``self.res``) live on the object, never in
    generator locals across a pause, so that what a paused window holds is exactly these two
    tensors (trimmed, and on the CPU with ``offload``)."""

    def __init__(
        self,
        core: tuple[int, int, int, int],
        *,
        margins: Sequence[int | None] | None = None,
        offload: bool = False,
    ):
        self.core = core  # (top, left, bottom, right) at the current resolution, window-local
        self.margins = margins  # per GroupNorm: context still needed around the core (None: all)
        self.syncs = 0
        self.offload = offload
        self.h: torch.Tensor | None = None
        self.res: torch.Tensor | None = None

    # -- core bookkeeping -------------------------------------------------------------------
    def _downsampled(self) -> None:
        top, left, bottom, right = self.core
        self.core = (top // 2, left // 2, bottom // 2, right // 2)  # Downsample2D: n -> n // 2

    def _upsampled(self) -> None:
        self.core = tuple(2 * v for v in self.core)  # type: ignore[assignment]

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        top, left, bottom, right = self.core
        return x[:, :, top:bottom, left:right]

    def _move(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Apply ``fn`` to ``h`` and ``res`` (which may be the same tensor, and stay so)."""
        same = self.res is self.h
        self.h = fn(self.h)  # type: ignore[arg-type]
        self.res = self.h if same else (fn(self.res) if self.res is not None else None)

    def _trim(self, margin: int) -> None:
        """Cut ``h`` and ``res`` to the core plus ``margin`` pixels and move the core accordingly."""
        top, left, bottom, right = self.core
        height, width = self.h.shape[2:]  # type: ignore[union-attr]
        y0, x0 = max(0, top - margin), max(0, left - margin)
        y1, x1 = min(height, bottom + margin), min(width, right + margin)
        if (y1 - y0) * (x1 - x0) <= TRIM_WHEN * height * width:  # else not worth a copy
            self._move(lambda t: t[:, :, y0:y1, x0:x1].contiguous())
            self.core = (top - y0, left - x0, bottom - y0, right - x0)

    # -- synchronisation point ----------------------------------------------------------------
    def local_stats(self, norm: nn.GroupNorm) -> GroupStats:
        """This window's share of the whole image's statistics: those of its core (cores partition the image)."""
        return group_stats(self.crop(self.h), norm.num_groups)

    def norm(self, norm: nn.Module):
        """``self.h = norm(self.h)`` with statistics pooled over all windows (a pause)."""
        if not isinstance(norm, nn.GroupNorm):
            raise ConfigError(f"tiled VAE supports GroupNorm only, found {type(norm).__name__}")
        stats = self.local_stats(norm)
        margin = self.margins[self.syncs] if self.margins is not None else None
        self.syncs += 1
        if margin is not None:
            self._trim(margin)
        device = self.h.device
        parked = self.offload and device.type != "cpu"
        if parked:
            self._move(lambda t: t.to("cpu"))
        mean, var = yield stats
        if parked:
            self._move(lambda t: t.to(device))
        self.h = _apply_group_norm(self.h, norm, mean, var)

    # -- blocks (each maps self.h to its output) -------------------------------------------------
    def resnet(self, block: nn.Module):
        if getattr(block, "upsample", None) is not None or getattr(block, "downsample", None) is not None:
            raise ConfigError("tiled VAE: resnets with built-in up/downsampling are not supported")
        if getattr(block, "time_emb_proj", None) is not None:
            raise ConfigError("tiled VAE: resnets with a time embedding are not supported")
        self.res = self.h
        yield from self.norm(block.norm1)
        self.h = block.conv1(block.nonlinearity(self.h))
        yield from self.norm(block.norm2)
        self.h = block.conv2(block.dropout(block.nonlinearity(self.h)))
        residual = block.conv_shortcut(self.res) if block.conv_shortcut is not None else self.res
        self.h, self.res = residual + self.h, None
        if block.output_scale_factor != 1:
            self.h = self.h / block.output_scale_factor

    def attention(self, attn: nn.Module):
        """Self-attention within the window (the official tiled VAE does the same)."""
        if attn.spatial_norm is not None or attn.norm_q is not None or attn.norm_k is not None:
            raise ConfigError("tiled VAE: attention with spatial/q/k norms is not supported")
        self.res = self.h
        yield from self.norm(attn.group_norm)
        b, c, height, width = self.h.shape
        h = self.h.reshape(b, c, height * width).transpose(1, 2)
        query, key, value = attn.to_q(h), attn.to_k(h), attn.to_v(h)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(b, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        h = sdpa_for(attn)(query, key, value)
        h = h.transpose(1, 2).reshape(b, -1, attn.heads * head_dim).to(query.dtype)
        h = attn.to_out[1](attn.to_out[0](h))
        h = h.transpose(-1, -2).reshape(b, c, height, width)
        if attn.residual_connection:
            h = h + self.res
        self.h, self.res = (h / attn.rescale_output_factor if attn.rescale_output_factor != 1 else h), None

    def mid_block(self, mid: nn.Module):
        yield from self.resnet(mid.resnets[0])
        for attn, resnet in zip(mid.attentions, mid.resnets[1:]):
            if attn is not None:
                yield from self.attention(attn)
            yield from self.resnet(resnet)

    # -- whole networks -------------------------------------------------------------------------
    def encoder(self, vae: AutoencoderKL, x: torch.Tensor):
        """Image window -> cropped moments (quant_conv applied)."""
        enc = vae.encoder
        self.h = enc.conv_in(x)
        del x
        for block in enc.down_blocks:
            for resnet in block.resnets:
                yield from self.resnet(resnet)
            for down in block.downsamplers or ():
                self.h = down(self.h)
                self._downsampled()
        yield from self.mid_block(enc.mid_block)
        yield from self.norm(enc.conv_norm_out)
        h, self.h = enc.conv_out(enc.conv_act(self.h)), None
        if vae.quant_conv is not None:
            h = vae.quant_conv(h)
        return self.crop(h)

    def decoder(self, vae: AutoencoderKL, z: torch.Tensor):
        """Latent window (post_quant_conv applied) -> cropped image."""
        dec = vae.decoder
        upscale_dtype = next(iter(dec.up_blocks.parameters())).dtype
        self.h = dec.conv_in(z)
        del z
        yield from self.mid_block(dec.mid_block)
        self.h = self.h.to(upscale_dtype)
        for block in dec.up_blocks:
            for resnet in block.resnets:
                yield from self.resnet(resnet)
            for up in block.upsamplers or ():
                self.h = up(self.h)
                self._upsampled()
        yield from self.norm(dec.conv_norm_out)
        h, self.h = dec.conv_out(dec.conv_act(self.h)), None
        return self.crop(h)


def _lockstep(
    passes: Sequence[_Steps],
    finish: Callable[[int, torch.Tensor], None],
    pool: Callable[[Sequence[GroupStats]], tuple[torch.Tensor, torch.Tensor]] = pool_group_stats,
) -> None:
    """Advance all window passes to their next GroupNorm, one window at a time; pool; repeat.

    ``finish(i, output)`` receives each window's result as soon as it is done."""
    waiting: list[GroupStats | None] = [None] * len(passes)
    pooled = None
    first = True
    while True:
        done = 0
        for index, steps in enumerate(passes):
            try:
                waiting[index] = next(steps) if first else steps.send(pooled)
            except StopIteration as stop:
                waiting[index] = None
                finish(index, stop.value)
                done += 1
        first = False
        if done == len(passes):
            return
        if done:
            raise RuntimeError("tiled VAE: windows reached different numbers of GroupNorms")
        pooled = pool(waiting)  # type: ignore[arg-type]


def _run_windows(
    vae: AutoencoderKL,
    x: torch.Tensor,
    windows: Sequence[Window],
    *,
    decoder: bool,
    out: torch.Tensor,
    scale: int,
    offload: bool = False,
    window_pass: type[_WindowPass] = _WindowPass,
    pool: Callable[[Sequence[GroupStats]], tuple[torch.Tensor, torch.Tensor]] = pool_group_stats,
) -> torch.Tensor:
    """Run every window through the encoder/decoder in lock-step and paste the cores into ``out``.

    ``scale`` maps input to output pixels (8 for the decoder; the encoder's output cores are the
    input cores // 8). Parked activations are cut down to what the core still depends on (after
    the last attention; same result, less memory). ``window_pass`` (what a window contributes to
    the statistics) and ``pool`` (how they are combined) can be replaced, e.g. by the official
    hook's rules to compare against it."""
    margins = _trim_margins(_decoder_events(vae) if decoder else _encoder_events(vae))
    passes = []
    for win in windows:
        crop = x[(..., *win.window.slices())]
        runner = window_pass(win.local_core(), margins=margins, offload=offload)
        passes.append(runner.decoder(vae, crop) if decoder else runner.encoder(vae, crop))

    def finish(index: int, result: torch.Tensor) -> None:
        core = windows[index].core
        top, left = (core.top * scale, core.left * scale) if decoder else (core.top // scale, core.left // scale)
        out[:, :, top : top + result.shape[2], left : left + result.shape[3]] = result

    _lockstep(passes, finish, pool)
    return out


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def tiled_decode(
    vae: AutoencoderKL, latents: torch.Tensor, tile: int, *, pad: int = 11, offload: bool = False
) -> torch.Tensor:
    """Decode ``latents`` (B, 4, h, w), already divided by the scaling factor, to (B, 3, 8h, 8w).

    ``tile`` is the latent core size (official ``decoder_tile_size``); every window adds ``pad``
    latent pixels of context per side. The output is unclamped (about [-1, 1]) in the VAE's dtype.
    When one window covers the input this is exactly ``vae.decode(latents).sample``.
    ``offload`` parks waiting activations on the CPU (useful on CUDA for very large images)."""
    if latents.ndim != 4 or latents.shape[1] != vae.config.latent_channels:
        raise InputError(f"expected latents (B, {vae.config.latent_channels}, h, w), got {tuple(latents.shape)}")
    latents = latents.to(vae.dtype)
    b, _, h, w = latents.shape
    windows = plan_windows(h, w, tile, pad)
    if len(windows) == 1:
        return vae.decode(latents).sample
    z = vae.post_quant_conv(latents) if vae.post_quant_conv is not None else latents
    size = (b, vae.config.out_channels, h * VAE_SCALE, w * VAE_SCALE)
    out = torch.empty(size, device=z.device, dtype=vae.dtype)
    return _run_windows(vae, z, windows, decoder=True, out=out, scale=VAE_SCALE, offload=offload)


@torch.no_grad()
def tiled_encode(
    vae: AutoencoderKL, image: torch.Tensor, tile: int, *, pad: int = 32, offload: bool = False
) -> DiagonalGaussianDistribution:
    """Encode ``image`` (B, 3, H, W) in [-1, 1] to the posterior over (B, 4, H // 8, W // 8) latents.

    ``tile`` is the image core size (official ``encoder_tile_size``); it is rounded down and ``pad``
    up to a multiple of 8 so that every window sees the whole image's downsampling grid. When one
    window covers the input this is exactly ``vae.encode(image).latent_dist``."""
    if image.ndim != 4 or image.shape[1] != vae.config.in_channels:
        raise InputError(f"expected an image (B, {vae.config.in_channels}, H, W), got {tuple(image.shape)}")
    if tile < 1 or pad < 0:
        raise ConfigError(f"VAE tile size must be >= 1 and pad >= 0, got tile {tile}, pad {pad}")
    image = image.to(vae.dtype)
    b, _, h, w = image.shape
    tile = max(VAE_SCALE, tile // VAE_SCALE * VAE_SCALE)
    pad = -(-pad // VAE_SCALE) * VAE_SCALE
    windows = plan_windows(h, w, tile, pad, align=VAE_SCALE)
    if len(windows) == 1:
        return vae.encode(image).latent_dist
    channels = 2 * vae.config.latent_channels
    out = torch.empty(b, channels, h // VAE_SCALE, w // VAE_SCALE, device=image.device, dtype=vae.dtype)
    moments = _run_windows(vae, image, windows, decoder=False, out=out, scale=VAE_SCALE, offload=offload)
    return DiagonalGaussianDistribution(moments)
