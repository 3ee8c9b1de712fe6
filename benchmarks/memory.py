"""Measure working memory of each stage at full size, and check the planner's estimates.

    python -m benchmarks.memory                 # calibrate: bytes per pixel of each stage
    python -m benchmarks.memory --check 128 192 # planner estimate vs measured peak, whole run

Each measurement runs in a fresh subprocess (so allocator caches of one do not hide another),
builds the full-size networks with random weights (memory does not depend on values), and
samples the process RSS (CPU) or reads ``torch.cuda.max_memory_allocated`` (CUDA).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import psutil
import torch

from seesr.runtime.memory import PeakMemory
from seesr.engines.seesr.planner import DENOISE_BYTES_PER_LATENT_PIXEL, VAE_DECODE_BYTES_PER_PIXEL, VAE_ENCODE_BYTES_PER_PIXEL


def measure_stage(stage: str, size: int, device: torch.device, dtype: torch.dtype) -> dict:
    """Working memory of one stage at ``size`` (latent pixels for unet/decode, image pixels for encode)."""
    from benchmarks.fullsize import build_full_size_pipeline

    pipe = build_full_size_pipeline(device, dtype, with_tagger=False)
    with torch.no_grad():
        if stage == "denoise":
            latents = torch.randn(1, 4, size, size, device=device)
            condition = torch.rand(1, 3, size * 8, size * 8, device=device)
            text = torch.randn(1, 77, 1024, device=device, dtype=dtype)
            ram = torch.randn(1, 145, 512, device=device, dtype=dtype)
            with PeakMemory(device) as peak:
                pipe.predict_noise(latents, 999, text, ram, condition, 1.0, 1.0)
            pixels = size * size
        elif stage == "decode":
            latents = torch.randn(1, 4, size, size, device=device)
            with PeakMemory(device) as peak:
                pipe.decode(latents)
            pixels = size * size * 64
        elif stage == "encode":
            image = torch.rand(1, 3, size, size, device=device)
            with PeakMemory(device) as peak:
                pipe.encode_image(image, torch.Generator().manual_seed(0), "mean")
            pixels = size * size
        else:
            raise ValueError(stage)
    element = torch.finfo(dtype).bits // 8
    return {"stage": stage, "size": size, "peak_bytes": peak.peak, "bytes_per_pixel_per_element_byte": peak.peak / pixels / element}


def _subprocess(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.memory", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def calibrate(device: str, dtype: str) -> None:
    """Fit working memory = intercept + slope * pixels for each stage from two sizes, and print it
    next to the planner's constants."""
    constants = {
        "denoise": DENOISE_BYTES_PER_LATENT_PIXEL,
        "decode": VAE_DECODE_BYTES_PER_PIXEL,
        "encode": VAE_ENCODE_BYTES_PER_PIXEL,
    }
    sizes = {"denoise": (64, 96), "decode": (48, 96), "encode": (384, 768)}
    element = torch.finfo(getattr(torch, dtype)).bits // 8
    for stage, (small, large) in sizes.items():
        runs = [_subprocess(["--stage", stage, "--size", str(s), "--device", device, "--dtype", dtype]) for s in (small, large)]
        pixels = [r["peak_bytes"] / r["bytes_per_pixel_per_element_byte"] / element for r in runs]
        slope = (runs[1]["peak_bytes"] - runs[0]["peak_bytes"]) / (pixels[1] - pixels[0])
        intercept = runs[0]["peak_bytes"] - slope * pixels[0]
        for run in runs:
            print(f"{stage:8s} size {run['size']:4d}: peak {run['peak_bytes'] / 2**20:8.1f} MiB", flush=True)
        print(
            f"{stage:8s} fit: {slope / element:8.1f} B/px/elem-byte + {intercept / 2**20:7.1f} MiB "
            f"(planner: {constants[stage]:.1f} B/px/elem-byte)",
            flush=True,
        )


def measure_run(lr_size: int, plan_name: str, device: torch.device, dtype: torch.dtype) -> dict:
    """Whole pipeline (x4 of a ``lr_size`` square) at full size: planner estimate vs measured peak."""
    from PIL import Image

    from benchmarks.fullsize import build_full_size_pipeline
    from seesr.engines.seesr.planner import RunPlan, estimate_peak_bytes

    process = psutil.Process()
    baseline = process.memory_info().rss if device.type == "cpu" else 0
    pipe = build_full_size_pipeline(device, dtype)
    work = lr_size * 4
    if plan_name == "tiled":
        plan = RunPlan(latent_tile=64, vae_encoder_tile=512, vae_decoder_tile=64)
    else:
        plan = RunPlan(latent_tile=work // 8, vae_encoder_tile=work, vae_decoder_tile=work // 8)
    image = Image.fromarray((torch.rand(lr_size, lr_size, 3) * 255).to(torch.uint8).numpy())
    resident = (process.memory_info().rss - baseline) if device.type == "cpu" else torch.cuda.memory_allocated()
    with PeakMemory(device) as peak:
        pipe(image, scale=4, num_inference_steps=1, seed=0, plan=plan, process_size=0)
    estimate = estimate_peak_bytes(work, work, plan, dtype=dtype, weights_bytes=pipe.weights_bytes)
    measured = resident + peak.peak
    return {"lr_size": lr_size, "plan": plan.describe(), "estimate": estimate, "measured": measured,
            "ratio": estimate / measured}  # fmt: skip


def check(sizes: list[int], device: str, dtype: str) -> None:
    """Print the planner's estimate against the measured peak of whole runs, tiled and untiled."""
    for size in sizes:
        for plan_name in ("untiled", "tiled"):
            r = _subprocess(["--run", str(size), "--plan", plan_name, "--device", device, "--dtype", dtype])
            print(
                f"{size}->{size * 4} {plan_name:8s}: measured peak {r['measured'] / 2**30:6.2f} GiB, "
                f"estimate {r['estimate'] / 2**30:6.2f} GiB (ratio {r['ratio']:.2f}) [{r['plan']}]",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["denoise", "decode", "encode"])
    parser.add_argument("--size", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--check", type=int, nargs="+", metavar="LR_SIZE", help="whole runs x4 of these sizes")
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--plan", default="tiled", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(measure_run(args.run, args.plan, torch.device(args.device), getattr(torch, args.dtype))))
    elif args.check:
        check(args.check, args.device, args.dtype)
    elif args.stage:
        result = measure_stage(args.stage, args.size, torch.device(args.device), getattr(torch, args.dtype))
        print(json.dumps(result))
    else:
        calibrate(args.device, args.dtype)


if __name__ == "__main__":
    main()
