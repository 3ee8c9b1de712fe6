"""Real-ESRGAN: our PyTorch engine against the ncnn runtime, for quality, colour fix and speed.

    python -m benchmarks.realesrgan [--limit N] [--color-fix none wavelet adain] [--json out.json]
    python -m benchmarks.realesrgan --speed [--size 256] [--strip 1000x20] [--tiles 0 256 128 64]

Quality (default): both engines run the same bundled weights on the RealSR x4 split, one image at
a time; PSNR / SSIM on the BT.601 Y channel (``seesr evaluate``'s code: BasicSR's convention, no
border crop) of the uint8 outputs against the 512x512 HR images, for our output with each ``--color-fix`` method
(against the bicubic-upscaled input, as the API applies it) and for ncnn's. Speed (``--speed``):
one real image and a strip, untiled and at each tile size, ours (batched tiles with
``tile_pad`` context) against ncnn with its own tiling (the realesrgan-ncnn-vulkan scheme: tiles
cut with ``tile_pad`` context, run one by one, pasted), alternating A and B in the same run;
prints the time ratios and records the machine's CPU flags.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.pipeline import machine_info
from seesr.imaging.colorfix import COLOR_FIX_METHODS
from seesr.imaging.metrics import load_metric, score_pair
from seesr.engines.realesrgan.sources import load_realesrgan
from seesr.imaging.colorfix import fix_colours
from seesr.imaging.convert import pil_to_tensor
from seesr.settings.models import DEFAULT_MODEL, DEFAULT_TILE_PAD, REALESRGAN_MODELS
from seesr.weights.realesrgan import bundled_ncnn_files
from seesr.imaging.tiling import plan_tiles

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    """``$SEESR_SHARED/data/realsr`` (default shared folder: next to the repository)."""
    return Path(os.environ.get("SEESR_SHARED", REPO_ROOT.parent / "shared")) / "data" / "realsr"


# --------------------------------------------------------------------------- ncnn reference


class NcnnRealEsrgan:
    """A bundled model on the ncnn CPU runtime, in float32, with the ncnn tool's own tiling."""

    def __init__(self, model: str = DEFAULT_MODEL, threads: int | None = None) -> None:
        import ncnn

        self._ncnn = ncnn
        self.scale = REALESRGAN_MODELS[model].scale
        param, binary = bundled_ncnn_files(model)
        self.net = ncnn.Net()
        opt = self.net.opt
        opt.num_threads = threads or torch.get_num_threads()
        opt.use_vulkan_compute = False
        opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = False
        opt.use_bf16_storage = False
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(binary)) != 0:
            raise RuntimeError(f"ncnn could not load {param}")

    def _extract(self, chw: np.ndarray) -> np.ndarray:
        chw = np.ascontiguousarray(chw, dtype=np.float32)
        mat = self._ncnn.Mat(chw)  # wraps chw's memory: keep both alive until extraction ends
        extractor = self.net.create_extractor()
        extractor.input("data", mat)
        ret, out = extractor.extract("output")
        if ret != 0:
            raise RuntimeError(f"ncnn extraction failed ({ret})")
        result = np.array(out)
        del mat, chw
        return result

    def upscale_array(self, rgb: np.ndarray, pre_pad: int = 0, tile: int = 0, tile_pad: int = DEFAULT_TILE_PAD) -> np.ndarray:
        """(H, W, 3) uint8 -> (sH, sW, 3) uint8, with the same reflect pre-padding as our engine;
        ``tile`` > 0: tiles with ``tile_pad`` context, one network call each, pasted."""
        h, w, _ = rgb.shape
        s = self.scale
        chw = rgb.transpose(2, 0, 1).astype(np.float32) / 255.0
        pad = min(pre_pad, h - 1, w - 1)
        if pad > 0:
            chw = np.pad(chw, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
        ph, pw = chw.shape[1:]
        if tile == 0:
            result = self._extract(chw)
        else:
            result = np.empty((3, ph * s, pw * s), dtype=np.float32)
            for t in plan_tiles(ph, pw, tile, 0):
                top, left = max(t.top - tile_pad, 0), max(t.left - tile_pad, 0)
                bottom, right = min(t.top + t.height + tile_pad, ph), min(t.left + t.width + tile_pad, pw)
                out = self._extract(chw[:, top:bottom, left:right])
                rows = slice((t.top - top) * s, (t.top - top + t.height) * s)
                cols = slice((t.left - left) * s, (t.left - left + t.width) * s)
                result[:, t.top * s : (t.top + t.height) * s, t.left * s : (t.left + t.width) * s] = out[:, rows, cols]
        result = result[:, pad * s : pad * s + h * s, pad * s : pad * s + w * s]
        return (np.clip(result, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)


# --------------------------------------------------------------------------- quality


@dataclass
class EngineResult:
    """Aggregate scores of one engine (or one colour fix of ours)."""

    psnr_y: float = 0.0
    ssim_y: float = 0.0
    seconds: float = 0.0
    images_per_s: float = 0.0
    per_image: dict[str, tuple[float, float]] = field(default_factory=dict)


def _finish(result: EngineResult) -> None:
    scores = list(result.per_image.values())
    result.psnr_y = statistics.fmean(s[0] for s in scores)
    result.ssim_y = statistics.fmean(s[1] for s in scores)
    result.images_per_s = len(scores) / result.seconds if result.seconds else 0.0


def _scores(sr: Image.Image, hr: Image.Image) -> tuple[float, float]:
    """Y-PSNR and Y-SSIM of one output, as ``seesr evaluate`` computes them."""
    scores = score_pair(sr, hr, {name: load_metric(name) for name in ("psnr", "ssim")})
    return scores["psnr"], scores["ssim"]


def run(
    data_dir: Path,
    limit: int | None = None,
    tile: int = 0,
    pre_pad: int = 0,
    with_ncnn: bool = True,
    fp32: bool = True,
    weights_dir: Path | None = None,
    color_fixes: tuple[str, ...] = ("none",),
    model: str = DEFAULT_MODEL,
) -> dict:
    """Score our engine (with each colour fix) and ncnn over ``data_dir/lr`` vs ``data_dir/hr``."""
    names = sorted(p.name for p in (data_dir / "lr").glob("*.png"))[:limit]
    if not names:
        raise SystemExit(f"no LR images under {data_dir / 'lr'}")
    ours_engine = load_realesrgan(weights_dir, device="cpu", model=model, fp32=fp32)
    ncnn_engine = NcnnRealEsrgan(model) if with_ncnn else None
    ours = {method: EngineResult() for method in color_fixes}
    ref = EngineResult()
    for index, name in enumerate(names):
        lr = Image.open(data_dir / "lr" / name).convert("RGB")
        hr = Image.open(data_dir / "hr" / name).convert("RGB")
        start = time.perf_counter()
        sr = ours_engine.upscale(lr, scale=hr.width / lr.width, tile=tile, pre_pad=pre_pad)
        seconds = time.perf_counter() - start
        bicubic = lr.resize(sr.size, Image.Resampling.BICUBIC)
        line = f"[{index + 1}/{len(names)}] {name}:"
        for method in color_fixes:
            ours[method].seconds += seconds
            ours[method].per_image[name] = _scores(fix_colours(pil_to_tensor(sr), pil_to_tensor(bicubic), method), hr)
            line += f" {method} {ours[method].per_image[name][0]:.3f} dB"
        if ncnn_engine is not None:
            start = time.perf_counter()
            ref_sr = ncnn_engine.upscale_array(np.asarray(lr), pre_pad=pre_pad)
            ref.seconds += time.perf_counter() - start
            ref.per_image[name] = _scores(Image.fromarray(ref_sr), hr)
            line += f", ncnn {ref.per_image[name][0]:.3f} dB, ours-vs-ncnn {_scores(sr, Image.fromarray(ref_sr))[0]:.1f} dB"
        print(line, flush=True)
    for result in ours.values():
        _finish(result)
    summary: dict = {
        "images": len(names),
        "data": str(data_dir),
        "model": model,
        "tile": tile,
        "pre_pad": pre_pad,
        "dtype": str(ours_engine.dtype).removeprefix("torch."),
        "machine": machine_info("cpu"),
        "ours": {method: {k: v for k, v in asdict(r).items() if k != "per_image"} for method, r in ours.items()},
    }
    if ncnn_engine is not None:
        _finish(ref)
        summary["ncnn"] = {k: v for k, v in asdict(ref).items() if k != "per_image"}
    summary["per_image"] = {
        name: {**{m: r.per_image[name] for m, r in ours.items()}, **({"ncnn": ref.per_image[name]} if ref.per_image else {})}
        for name in names
    }
    return summary


# --------------------------------------------------------------------------- speed


def _input_image(data_dir: Path, width: int, height: int) -> np.ndarray:
    """A real photo of ``width x height`` (the RealSR HR images, tiled side by side when wider)."""
    sources = [Image.open(p).convert("RGB") for p in sorted((data_dir / "hr").glob("*.png"))[:8]]
    canvas = Image.new("RGB", (width, height))
    left = 0
    for index in range(-(-width // sources[0].width)):
        canvas.paste(sources[index % len(sources)], (left, 0))
        left += sources[0].width
    return np.asarray(canvas)


def speed(
    data_dir: Path,
    size: int = 256,
    strip: tuple[int, int] = (1000, 20),
    tiles: tuple[int, ...] = (0, 256, 128, 64),
    strip_tiles: tuple[int, ...] = (0, 64),
    repeats: int = 2,
    fp32: bool = False,
    tile_pad: int = DEFAULT_TILE_PAD,
    model: str = DEFAULT_MODEL,
    weights_dir: Path | None = None,
) -> dict:
    """Seconds per image (median of ``repeats``, after a warm-up), ours and ncnn alternating."""
    ours = load_realesrgan(weights_dir, device="cpu", model=model, fp32=fp32)
    ncnn_engine = NcnnRealEsrgan(model)
    cases = [(f"{size}x{size}", _input_image(data_dir, size, size), t) for t in tiles]
    cases += [(f"{strip[0]}x{strip[1]} strip", _input_image(data_dir, *strip), t) for t in strip_tiles]
    rows = []
    for label, rgb, tile in cases:
        image = Image.fromarray(rgb)
        runs: dict[str, list[float]] = {"ours": [], "ncnn": []}
        calls = {}
        for attempt in range(repeats + 1):  # the first round warms both up
            for engine in ("ours", "ncnn"):
                before = ours.forward_calls
                start = time.perf_counter()
                if engine == "ours":
                    ours.upscale(image, scale=ours.scale, tile=tile, tile_pad=tile_pad)
                    calls = ours.forward_calls - before
                else:
                    ncnn_engine.upscale_array(rgb, tile=tile, tile_pad=tile_pad)
                if attempt:
                    runs[engine].append(time.perf_counter() - start)
        row = {
            "input": label,
            "tile": tile,
            "ours_s": statistics.median(runs["ours"]),
            "ncnn_s": statistics.median(runs["ncnn"]),
            "ours_forward_calls": calls,
        }
        row["ours_over_ncnn_throughput"] = row["ncnn_s"] / row["ours_s"]
        rows.append(row)
        print(f"{label:16s} tile {tile or 'none':>4}: ours {row['ours_s']:7.2f} s ({calls} calls), "
              f"ncnn {row['ncnn_s']:7.2f} s, ours/ncnn throughput {row['ours_over_ncnn_throughput']:.2f}x", flush=True)  # fmt: skip
    for row in rows:
        untiled = next(r for r in rows if r["input"] == row["input"] and r["tile"] == 0)
        row["ours_tiled_over_untiled_time"] = row["ours_s"] / untiled["ours_s"]
        row["ncnn_tiled_over_untiled_time"] = row["ncnn_s"] / untiled["ncnn_s"]
    return {
        "model": model,
        "dtype": str(ours.dtype).removeprefix("torch."),
        "tile_pad": tile_pad,
        "repeats": repeats,
        "machine": machine_info("cpu"),
        "rows": rows,
    }


def print_speed_table(summary: dict) -> None:
    print(f"\n{summary['model']} ({summary['dtype']}), tile_pad {summary['tile_pad']}, median of {summary['repeats']}")
    print(f"{'input':16s} {'tile':>5s} {'ours s':>8s} {'ncnn s':>8s} {'ours/ncnn thr.':>15s} {'ours tiled/untiled':>19s}")
    for row in summary["rows"]:
        print(f"{row['input']:16s} {row['tile'] or 'none':>5} {row['ours_s']:8.2f} {row['ncnn_s']:8.2f} "
              f"{row['ours_over_ncnn_throughput']:14.2f}x {row['ours_tiled_over_untiled_time']:18.2f}x")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.realesrgan", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=tuple(REALESRGAN_MODELS), help="bundled model")
    parser.add_argument("--limit", type=int, default=None, help="quality: only the first N pairs (sorted by name)")
    parser.add_argument("--json", type=Path, default=None, help="write the summary (and per-image scores) here")
    parser.add_argument("--data", type=Path, default=None, help="RealSR folder with lr/ and hr/ (default: shared)")
    parser.add_argument("--tile", type=int, default=0, help="quality: tile size of our engine (0: no tiling)")
    parser.add_argument("--pre-pad", type=int, default=0, help="quality: reflect padding before the net, both engines")
    parser.add_argument("--color-fix", nargs="+", default=["none"], choices=COLOR_FIX_METHODS,
                        help="quality: colour fixes of our output to score")  # fmt: skip
    parser.add_argument("--weights-dir", type=Path, default=None, help="seesr weights folder (default: $SEESR_WEIGHTS)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both engines")
    parser.add_argument("--bf16", action="store_true", help="our engine in bfloat16 (quality default: float32)")
    parser.add_argument("--no-ncnn", action="store_true", help="quality: skip the ncnn reference")
    parser.add_argument("--speed", action="store_true", help="measure speed (tiles, strip) instead of quality")
    parser.add_argument("--size", type=int, default=256, help="speed: side of the square input")
    parser.add_argument("--strip", default="1000x20", help="speed: WIDTHxHEIGHT of the strip input")
    parser.add_argument("--tiles", type=int, nargs="+", default=[0, 256, 128, 64], help="speed: tile sizes (0: untiled)")
    parser.add_argument("--tile-pad", type=int, default=DEFAULT_TILE_PAD, help="speed: context around each tile")
    parser.add_argument("--repeats", type=int, default=2, help="speed: timed runs per case after a warm-up")
    parser.add_argument("--fp32", action="store_true", help="speed: our engine in float32 (default: the engine's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = args.data or default_data_dir()
    if args.speed:
        width, height = (int(v) for v in args.strip.lower().split("x"))
        summary = speed(
            data, size=args.size, strip=(width, height), tiles=tuple(args.tiles), repeats=args.repeats,
            fp32=args.fp32, tile_pad=args.tile_pad, model=args.model, weights_dir=args.weights_dir,
        )  # fmt: skip
        print_speed_table(summary)
    else:
        summary = run(
            data, limit=args.limit, tile=args.tile, pre_pad=args.pre_pad, with_ncnn=not args.no_ncnn,
            fp32=not args.bf16, weights_dir=args.weights_dir, color_fixes=tuple(args.color_fix), model=args.model,
        )  # fmt: skip
        print(f"\n{'':10s} {'PSNR-Y':>8s} {'SSIM-Y':>7s}   ({summary['images']} RealSR pairs, {summary['dtype']})")
        for method, scores in summary["ours"].items():
            print(f"{'ours ' + method:10s} {scores['psnr_y']:8.4f} {scores['ssim_y']:7.4f}")
        if "ncnn" in summary:
            print(f"{'ncnn':10s} {summary['ncnn']['psnr_y']:8.4f} {summary['ncnn']['ssim_y']:7.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
