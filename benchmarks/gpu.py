"""Everything to measure on a CUDA GPU, in one run writing one JSON record.

    python -m benchmarks.gpu --tiny-weights DIR --json gpu.json     # on a CUDA machine
    python -m benchmarks.gpu --tiny-weights DIR --json dry.json --dry-run   # anywhere, tiny

1. **Half-precision parity** on the tiny fixtures (``--tiny-weights``: a weights folder holding
   them): one ControlNet + UNet noise prediction and a whole 2-step pipeline call in float16 on the
   device against float32 on the CPU (the path the test suite holds equal to the official code);
   relative L2 of epsilon, of the final latents and the largest pixel difference, each against
   its tolerance.
2. **Full-size benchmark** of every preset at 512 and 1024 px input (x4), random weights, with
   per-stage times and peak VRAM (``python -m benchmarks.pipeline --presets ...``).
3. **Real-ESRGAN x4plus in float16** against float32 on the device: largest pixel difference,
   PSNR between the two, and the time of each, untiled and with 256 px tiles.

``--dry-run`` (and any machine without CUDA) runs all three on the CPU at tiny size (the tiny
fixtures for the benchmark too, one 16 px input), so that the script is known to work before
anyone has a GPU to spend on it. The whole GPU run is sized for under 8 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch

from benchmarks.common import log, machine_info, random_image, timed, versions

GPU_SIZES = (512, 1024)
PRESETS = ("speed", "balanced", "quality", "memory")
EPSILON_RTOL = 2e-2
"""Largest relative L2 error of a float16 noise prediction against float32."""
LATENT_RTOL = 5e-2
"""Largest relative L2 error of float16 final latents (after 2 steps) against float32."""
IMAGE_ATOL = 0.1
"""Largest pixel difference (in [0, 1]) of a float16 pipeline or Real-ESRGAN output against float32."""


def relative_l2(test: torch.Tensor, reference: torch.Tensor) -> float:
    test, reference = test.detach().double().cpu(), reference.detach().double().cpu()
    return float((test - reference).norm() / reference.norm().clamp_min(1e-12))


def half_parity(tiny_weights: Path, device: torch.device) -> dict:
    """Float16 on ``device`` against float32 on the CPU, same tiny weights and inputs."""
    from seesr.engines.seesr.pipeline import SeesrPipeline
    from seesr.weights import WeightPaths

    paths = WeightPaths.from_dir(tiny_weights)
    generator = torch.Generator().manual_seed(0)
    image = random_image(32, 0)
    results: dict[str, dict] = {}
    for name, where, dtype in (("reference", torch.device("cpu"), torch.float32), ("half", device, torch.float16)):
        pipe = SeesrPipeline.from_pretrained(paths, device=where, torch_dtype=dtype)
        width = pipe.unet.config.cross_attention_dim
        latents = torch.randn(1, pipe.unet.config.in_channels, 8, 8, generator=generator.manual_seed(1))
        condition = torch.rand(1, 3, 64, 64, generator=generator.manual_seed(2))
        text = torch.randn(1, 77, width, generator=generator.manual_seed(3))
        ram = torch.randn(1, 145, 512, generator=generator.manual_seed(4))
        with torch.no_grad():
            eps = pipe.predict_noise(latents.to(where), 999, text.to(where, dtype), ram.to(where, dtype),
                                     condition.to(where), 1.0, 1.0)  # fmt: skip
        output = pipe(image, scale=4, num_inference_steps=2, seed=0, process_size=0, output_type="pt")
        results[name] = {"epsilon": eps.float().cpu(), "latents": output.latents.float().cpu(),
                         "image": output.images.float().cpu(), "tags": output.tags}  # fmt: skip
        del pipe
    ref, half = results["reference"], results["half"]
    checks = {
        "epsilon_relative_l2": (relative_l2(half["epsilon"], ref["epsilon"]), EPSILON_RTOL),
        "latents_relative_l2": (relative_l2(half["latents"], ref["latents"]), LATENT_RTOL),
        "image_max_abs": (float((half["image"] - ref["image"]).abs().max()), IMAGE_ATOL),
    }
    record = {name: {"value": value, "tolerance": tol, "ok": value <= tol} for name, (value, tol) in checks.items()}
    record["same_tags"] = {"value": half["tags"] == ref["tags"], "ok": half["tags"] == ref["tags"]}
    record["finite"] = {"value": bool(all(torch.isfinite(half[k]).all() for k in ("epsilon", "latents", "image"))),
                        "ok": bool(all(torch.isfinite(half[k]).all() for k in ("epsilon", "latents", "image")))}  # fmt: skip
    record["ok"] = all(item["ok"] for item in record.values() if isinstance(item, dict))
    return record


def presets_benchmark(device: torch.device, sizes: Sequence[int], tiny_weights: Path | None) -> dict:
    """Every preset at ``sizes`` (x4) on ``device``: the pipeline benchmark's record (per-stage times,
    peak memory: VRAM on CUDA). ``tiny_weights``: measure those (dry run) instead of full size."""
    from benchmarks import pipeline

    with tempfile.TemporaryDirectory(prefix="seesr-gpu-") as tmp:
        argv = ["--device", str(device), "--sizes", *map(str, sizes), "--presets", *PRESETS, "--warmup", "1",
                "--repeats", "1", "--json", str(Path(tmp) / "presets.json")]  # fmt: skip
        if tiny_weights is not None:
            argv += ["--smoke", "--weights", str(tiny_weights), "--warmup", "0"]
        record = pipeline.main(argv)
    rows = [{"preset": run["preset"], "lr_size": run["lr_size"], "output_size": run["output_size"], "steps": run["steps"],
             "end_to_end_s": run["stages"]["end_to_end"]["median"], "peak_bytes": run["peak_memory"]["peak_bytes"],
             "peak_kind": run["peak_memory"]["kind"], "plan": run["plan_description"],
             "stages_s": {name: stats["median"] for name, stats in run["stages"].items()}}
            for run in record["variants"]["default"]["runs"]]  # fmt: skip
    return {"rows": rows, "record": record}


def realesrgan_half(device: torch.device, size: int, weights_dir: Path | None, repeats: int) -> dict:
    """Real-ESRGAN x4plus in float16 against float32 on ``device``: pixel difference and times."""
    from seesr.imaging.convert import pil_to_tensor
    from seesr.engines.realesrgan.sources import load_realesrgan

    x = pil_to_tensor(random_image(size, 1))
    engines = {str(dtype)[6:]: load_realesrgan(weights_dir, device=device, dtype=dtype)
               for dtype in (torch.float32, torch.float16)}  # fmt: skip
    outputs, rows = {}, []
    for tile in (0, 256):
        for name, engine in engines.items():
            stats = timed(lambda: outputs.__setitem__((name, tile), engine.upscale_tensor(x, tile=tile)), device, 1, repeats)  # noqa: B023
            rows.append({"dtype": name, "tile": tile, "size": size, **stats})
            log(f"Real-ESRGAN {name} tile {tile} at {size}px: median {stats['median']:.3f} s")
    diff = (outputs[("float16", 0)] - outputs[("float32", 0)]).abs()
    mse = float(diff.double().pow(2).mean())
    psnr = float("inf") if mse == 0 else float(10 * torch.log10(torch.tensor(1.0 / mse)))
    return {"source": str(engines["float32"].source), "times": rows, "max_abs": float(diff.max()), "psnr_db": psnr,
            "ok": float(diff.max()) <= IMAGE_ATOL and bool(torch.isfinite(outputs[("float16", 0)]).all())}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--tiny-weights", type=Path, required=True, help="a weights folder holding the tiny fixtures")
    parser.add_argument("--json", type=Path, required=True, help="write the record here")
    parser.add_argument("--dry-run", action="store_true", help="everything on the CPU at tiny size")
    parser.add_argument("--sizes", type=int, nargs="+", help=f"LR sizes of the preset benchmark (default {GPU_SIZES})")
    parser.add_argument("--realesrgan-weights", type=Path, help="weights folder for Real-ESRGAN (default: seesr's)")
    args = parser.parse_args(argv)
    dry = args.dry_run or not torch.cuda.is_available()
    device = torch.device("cpu" if dry else "cuda")
    start = time.perf_counter()
    record: dict = {"benchmark": "benchmarks.gpu", "dry_run": dry, "machine": machine_info(str(device)),
                    "versions": versions(), "timings_s": {}}  # fmt: skip
    steps = (
        ("half_parity", lambda: half_parity(args.tiny_weights, device)),
        ("presets", lambda: presets_benchmark(device, args.sizes or ((16,) if dry else GPU_SIZES),
                                              args.tiny_weights if dry else None)),
        ("realesrgan_half", lambda: realesrgan_half(device, 32 if dry else 512, args.realesrgan_weights, 1 if dry else 3)),
    )  # fmt: skip
    for name, run in steps:
        log(f"{name} on {device}{' (dry run)' if dry else ''}")
        began = time.perf_counter()
        record[name] = run()
        record["timings_s"][name] = time.perf_counter() - began
        if device.type == "cuda":
            record.setdefault("cuda_max_allocated_bytes", {})[name] = torch.cuda.max_memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
    record["timings_s"]["total"] = time.perf_counter() - start
    record["ok"] = bool(record["half_parity"]["ok"] and record["realesrgan_half"]["ok"])
    record["machine"]["load_average_end"] = list(os.getloadavg())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1, default=str))
    parity = record["half_parity"]
    print(f"half parity: {'ok' if parity['ok'] else 'FAILED'} (" + ", ".join(
        f"{k} {v['value']:.3g} <= {v['tolerance']}" for k, v in parity.items() if isinstance(v, dict) and "tolerance" in v) + ")")
    for row in record["presets"]["rows"]:
        print(f"preset {row['preset']:8s} {row['lr_size']}->{row['output_size']}: {row['end_to_end_s']:.2f} s, "
              f"peak {row['peak_bytes'] / 2**30:.2f} GiB ({row['peak_kind']})")  # fmt: skip
    esr = record["realesrgan_half"]
    print(f"Real-ESRGAN float16: {'ok' if esr['ok'] else 'FAILED'} (max |d| {esr['max_abs']:.4f}, PSNR {esr['psnr_db']:.1f} dB "
          f"vs float32); whole run {record['timings_s']['total']:.0f} s -> {args.json}")  # fmt: skip
    return record


if __name__ == "__main__":
    main()
