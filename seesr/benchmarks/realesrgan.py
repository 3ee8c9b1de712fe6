"""Real-ESRGAN x4plus on the RealSR x4 split: our PyTorch engine against the ncnn runtime.

    python -m seesr.benchmarks.realesrgan [--limit N] [--json out.json]

Both engines run the same bundled weights on the same input (optionally reflect-padded), one image at a time,
on the same threads. Quality is PSNR / SSIM on the BT.601 Y channel (BasicSR / pyiqa convention,
no border crop) of the uint8 outputs against the 512x512 HR images; speed is images per second
of the network calls (I/O and metrics excluded), measured alternately in the same run.
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
import torch.nn.functional as F
from PIL import Image

from seesr.realesrgan import bundled_ncnn_files, load_realesrgan

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """``$SEESR_SHARED/data/realsr`` (default shared folder: next to the repository)."""
    return Path(os.environ.get("SEESR_SHARED", REPO_ROOT.parent / "shared")) / "data" / "realsr"


# --------------------------------------------------------------------------- metrics


def y_channel(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> float64 BT.601 Y on the [16, 235] scale (BasicSR ``y_only=True``)."""
    x = rgb.astype(np.float64) / 255.0
    return 16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR in dB between two float arrays on a ``data_range`` scale."""
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM of two single-channel float images (11x11 Gaussian window, sigma 1.5, 'valid')."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    window = _gaussian_window()
    x = torch.from_numpy(np.asarray(a, dtype=np.float64))[None, None]
    y = torch.from_numpy(np.asarray(b, dtype=np.float64))[None, None]
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mu_x**2
    var_y = F.conv2d(y * y, window) - mu_y**2
    cov = F.conv2d(x * y, window) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float((num / den).mean())


# --------------------------------------------------------------------------- ncnn reference


class NcnnRealEsrgan:
    """The bundled ncnn RealESRGAN_x4plus on the ncnn CPU runtime, in float32."""

    def __init__(self, threads: int | None = None) -> None:
        import ncnn

        self._ncnn = ncnn
        param, binary = bundled_ncnn_files()
        self.net = ncnn.Net()
        opt = self.net.opt
        opt.num_threads = threads or torch.get_num_threads()
        opt.use_vulkan_compute = False
        opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = False
        opt.use_bf16_storage = False
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(binary)) != 0:
            raise RuntimeError(f"ncnn could not load {param}")

    def upscale_array(self, rgb: np.ndarray, pre_pad: int = 0) -> np.ndarray:
        """(H, W, 3) uint8 -> (4H, 4W, 3) uint8, with the same reflect pre-padding as our engine."""
        h, w, _ = rgb.shape
        chw = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / 255.0
        pad = min(pre_pad, h - 1, w - 1)
        if pad > 0:
            chw = np.pad(chw, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
        chw = np.ascontiguousarray(chw)
        mat = self._ncnn.Mat(chw)  # wraps chw's memory: keep both alive until extraction ends
        extractor = self.net.create_extractor()
        extractor.input("data", mat)
        ret, out = extractor.extract("output")
        if ret != 0:
            raise RuntimeError(f"ncnn extraction failed ({ret})")
        result = np.array(out)[:, pad * 4 : pad * 4 + h * 4, pad * 4 : pad * 4 + w * 4]
        del mat, chw
        return (np.clip(result, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)


# --------------------------------------------------------------------------- benchmark


@dataclass
class EngineResult:
    """Aggregate scores of one engine."""

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


def run(
    data_dir: Path,
    limit: int | None = None,
    tile: int = 256,
    pre_pad: int = 0,
    with_ncnn: bool = True,
    dtype: torch.dtype = torch.float32,
    weights_dir: Path | None = None,
) -> dict:
    """Score both engines over ``data_dir/lr`` vs ``data_dir/hr``; returns a JSON-able summary."""
    names = sorted(p.name for p in (data_dir / "lr").glob("*.png"))[:limit]
    if not names:
        raise SystemExit(f"no LR images under {data_dir / 'lr'}")
    ours_engine = load_realesrgan(weights_dir, device="cpu", dtype=dtype)
    ncnn_engine = NcnnRealEsrgan() if with_ncnn else None
    ours, ref = EngineResult(), EngineResult()
    for index, name in enumerate(names):
        lr = Image.open(data_dir / "lr" / name).convert("RGB")
        hr_y = y_channel(np.asarray(Image.open(data_dir / "hr" / name).convert("RGB")))
        start = time.perf_counter()
        sr = np.asarray(ours_engine.upscale(lr, scale=4, tile=tile, pre_pad=pre_pad))
        ours.seconds += time.perf_counter() - start
        sr_y = y_channel(sr)
        ours.per_image[name] = (psnr(sr_y, hr_y), ssim(sr_y, hr_y))
        line = f"[{index + 1}/{len(names)}] {name}: ours {ours.per_image[name][0]:.3f} dB"
        if ncnn_engine is not None:
            start = time.perf_counter()
            ref_sr = ncnn_engine.upscale_array(np.asarray(lr), pre_pad=pre_pad)
            ref.seconds += time.perf_counter() - start
            ref_y = y_channel(ref_sr)
            ref.per_image[name] = (psnr(ref_y, hr_y), ssim(ref_y, hr_y))
            line += f", ncnn {ref.per_image[name][0]:.3f} dB, ours-vs-ncnn {psnr(sr_y, ref_y):.1f} dB"
        print(line, flush=True)
    _finish(ours)
    summary: dict = {
        "images": len(names),
        "data": str(data_dir),
        "threads": torch.get_num_threads(),
        "tile": tile,
        "pre_pad": pre_pad,
        "dtype": str(dtype).removeprefix("torch."),
        "ours": {k: v for k, v in asdict(ours).items() if k != "per_image"},
    }
    if ncnn_engine is not None:
        _finish(ref)
        summary["ncnn"] = {k: v for k, v in asdict(ref).items() if k != "per_image"}
        summary["throughput_ratio_ours_over_ncnn"] = ours.images_per_s / ref.images_per_s
    summary["per_image"] = {
        name: {"ours": ours.per_image[name], **({"ncnn": ref.per_image[name]} if ref.per_image else {})}
        for name in names
    }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seesr.benchmarks.realesrgan", description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs (sorted by name)")
    parser.add_argument("--json", type=Path, default=None, help="write the summary (and per-image scores) here")
    parser.add_argument("--data", type=Path, default=None, help="RealSR folder with lr/ and hr/ (default: shared)")
    parser.add_argument("--tile", type=int, default=256, help="LR tile size of our engine (0: no tiling)")
    parser.add_argument("--pre-pad", type=int, default=0, help="reflect padding before the net, both engines")
    parser.add_argument("--weights-dir", type=Path, default=None, help="seesr weights folder (default: $SEESR_WEIGHTS)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both engines")
    parser.add_argument("--bf16", action="store_true", help="run our engine in bfloat16 on CPU")
    parser.add_argument("--no-ncnn", action="store_true", help="skip the ncnn reference")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    summary = run(
        args.data or default_data_dir(),
        limit=args.limit,
        tile=args.tile,
        pre_pad=args.pre_pad,
        with_ncnn=not args.no_ncnn,
        dtype=torch.bfloat16 if args.bf16 else torch.float32,
        weights_dir=args.weights_dir,
    )
    print(f"ours: PSNR-Y {summary['ours']['psnr_y']:.4f} dB  SSIM-Y {summary['ours']['ssim_y']:.4f}  "
          f"{summary['ours']['images_per_s']:.3f} img/s")
    if "ncnn" in summary:
        ratio = summary["throughput_ratio_ours_over_ncnn"]
        print(f"ncnn: PSNR-Y {summary['ncnn']['psnr_y']:.4f} dB  SSIM-Y {summary['ncnn']['ssim_y']:.4f}  "
              f"{summary['ncnn']['images_per_s']:.3f} img/s  (ours/ncnn throughput {ratio:.2f}x)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
