"""Candidate speed-ups, each measured against its own baseline in one process (full-size networks).

    python -m benchmarks.candidates quality precision sdpa unet threads vae tile_batch compile profile
        [--device cpu|cuda] [--latent 64] [--warmup 1] [--repeats 2] [--threads N] [--json out.json]
        [--weights DIR]     # measure a weights folder's networks instead of full-size random ones

See ``CANDIDATES``: bf16 vs float32 and channels_last for ControlNet + UNet and for the VAE, thread
count, tile batching, ``torch.compile``, the attention processor in use, the numerical cost of bf16
(final latents, and one epsilon prediction in bf16 and fp16 vs fp32), and ``profile``: the top
operators (share of time) of one ControlNet + UNet forward in float32 and in the device's default
dtype, and of one VAE decode.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from benchmarks.common import (
    SCALE,
    attention_processors,
    log,
    machine_info,
    random_image,
    release_memory,
    timed,
    versions,
)
from seesr.runtime.devices import default_dtype
from seesr.engines.seesr.planner import DEFAULT_LATENT_OVERLAP


@dataclass
class CandidateSettings:
    device: str = "cpu"
    warmup: int = 1
    repeats: int = 2
    threads: int | None = None
    weights: str | None = None
    """A weights folder to measure instead of full-size random networks (tests: the tiny fixtures)."""


def _predict_inputs(pipe, latent: int, batch: int = 1) -> tuple:
    g = torch.Generator().manual_seed(0)
    device, dtype = pipe.device, pipe.dtype
    latents = torch.randn(batch, 4, latent, latent, generator=g).to(device)
    condition = torch.rand(batch, 3, latent * 8, latent * 8, generator=g).to(device)
    text = torch.randn(1, 77, pipe.unet.config.cross_attention_dim, generator=g).to(device, dtype)
    ram = torch.randn(1, 145, 512, generator=g).to(device, dtype)
    return latents, condition, text, ram


def candidate_unet(pipe, device, latent: int, warmup: int, repeats: int) -> list[dict]:
    """ControlNet + UNet forward at ``latent`` x ``latent``: float32 vs bfloat16, NCHW vs channels_last."""
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for channels_last in (False, True):
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            for model in (pipe.unet, pipe.controlnet):
                torch.nn.Module.to(model, dtype=dtype, memory_format=fmt)
            latents, condition, text, ram = _predict_inputs(pipe, latent)
            stats = timed(lambda: pipe.predict_noise(latents, 999, text, ram, condition, 1.0, 1.0), device, warmup, repeats)
            rows.append({"what": "controlnet+unet forward", "latent": latent, "dtype": str(dtype)[6:],
                         "channels_last": channels_last, **stats})  # fmt: skip
            log(f"unet+controlnet {latent}^2 {dtype} channels_last={channels_last}: median {stats['median']:.2f} s "
                f"min {stats['min']:.2f} s")  # fmt: skip
    for model in (pipe.unet, pipe.controlnet):
        model.to(memory_format=torch.contiguous_format)
    return rows


def candidate_threads(pipe, device, latent: int, warmup: int, repeats: int) -> list[dict]:
    """ControlNet + UNet forward (pipeline dtype) with 1 thread and with torch's default thread count:
    on a shared, oversubscribed CPU the OpenMP threads of one op wait for each other."""
    latents, condition, text, ram = _predict_inputs(pipe, latent)
    default_threads = torch.get_num_threads()
    rows = []
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        stats = timed(lambda: pipe.predict_noise(latents, 999, text, ram, condition, 1.0, 1.0), device, warmup, repeats)
        rows.append({"what": "controlnet+unet forward", "latent": latent, "dtype": str(pipe.dtype)[6:],
                     "threads": threads, "load_average_1m": os.getloadavg()[0], **stats})  # fmt: skip
        log(f"unet+controlnet {latent}^2 {pipe.dtype} threads={threads}: median {stats['median']:.2f} s")
    torch.set_num_threads(default_threads)
    return rows


def candidate_vae(pipe, device, latent: int, warmup: int, repeats: int) -> list[dict]:
    """VAE decode of a ``latent`` latent and encode of its 8x image: float32 vs bfloat16, channels_last,
    and the decoded image's difference between bfloat16 and float32."""
    rows = []
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, latent, latent, generator=g).to(device)
    image = torch.rand(1, 3, latent * 8, latent * 8, generator=g).to(device)
    decoded = {}
    for dtype in (torch.float32, torch.bfloat16):
        for channels_last in (False, True):
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            torch.nn.Module.to(pipe.vae, dtype=dtype, memory_format=fmt)
            dec = timed(lambda: decoded.__setitem__(dtype, pipe.decode(z)), device, warmup, repeats)
            enc = timed(lambda: pipe.encode_image(image, torch.Generator().manual_seed(0), "mean"), device, warmup, repeats)
            for what, stats in (("vae decode", dec), ("vae encode", enc)):
                rows.append({"what": what, "latent": latent, "dtype": str(dtype)[6:], "channels_last": channels_last,
                             **stats})  # fmt: skip
                log(f"{what} {latent}^2 latent {dtype} channels_last={channels_last}: median {stats['median']:.2f} s "
                    f"min {stats['min']:.2f} s")  # fmt: skip
    torch.nn.Module.to(pipe.vae, dtype=torch.float32, memory_format=torch.contiguous_format)
    a, b = ((decoded[t].float() / 2 + 0.5).clamp(0, 1) for t in (torch.bfloat16, torch.float32))
    rows.append({"what": "vae decode bf16 vs fp32, image in [0,1]", "latent": latent,
                 "max_abs": float((a - b).abs().max()), "mean_abs": float((a - b).abs().mean())})  # fmt: skip
    return rows


def candidate_tile_batch(pipe, device, latent: int, tile: int, batches: Sequence[int], warmup: int, repeats: int) -> list[dict]:
    """One denoising step over a ``latent`` latent in ``tile`` tiles, batched 1, 2, 4 ... at a time,
    and untiled for reference (the pipeline's tiled predict, in the pipeline's dtype)."""
    from seesr.imaging.tiling import plan_tiles, tiled_apply

    latents, condition, text, ram = _predict_inputs(pipe, latent)
    tiles = plan_tiles(latent, latent, tile, min(DEFAULT_LATENT_OVERLAP, tile // 3))

    def predict(crops: torch.Tensor, crop_tiles) -> torch.Tensor:
        cond = torch.cat([condition[(..., *t.scaled(8).slices())] for t in crop_tiles])
        return pipe.predict_noise(crops, 999, text, ram, cond, 1.0, 1.0)

    rows = []
    for batch in batches:
        stats = timed(lambda: tiled_apply(predict, latents, tiles, batch_size=batch), device, warmup, repeats)
        rows.append({"what": "denoise step, tiled", "latent": latent, "tile": tile, "tiles": len(tiles),
                     "tile_batch_size": batch, "dtype": str(pipe.dtype)[6:], **stats})  # fmt: skip
        log(f"step at {latent}^2 latent, {len(tiles)} tiles of {tile}, batch {batch}: median {stats['median']:.2f} s")
    stats = timed(lambda: predict(latents, plan_tiles(latent, latent, latent, 0)), device, warmup, repeats)
    rows.append({"what": "denoise step, untiled", "latent": latent, "tiles": 1, "dtype": str(pipe.dtype)[6:], **stats})
    log(f"step at {latent}^2 latent untiled: median {stats['median']:.2f} s")
    return rows


def candidate_quality(pipe, lr_size: int, steps: int) -> list[dict]:
    """Final latents of the whole pipeline in bfloat16 vs float32 (same seed, same tags and RAM
    embeddings so that only the numerics differ): max / mean absolute difference."""
    image = random_image(lr_size, 0)
    ram = torch.randn(1, 145, 512, generator=torch.Generator().manual_seed(1))
    finals = {}
    for dtype in (torch.float32, torch.bfloat16):
        pipe.to(pipe.device, dtype)
        out = pipe(image, scale=SCALE, num_inference_steps=steps, seed=0, process_size=0, tags="tag1, tag2",
                   ram_embeds=ram, output_type="pt")  # fmt: skip
        finals[dtype] = (out.latents.float().cpu(), out.images.float().cpu())
        log(f"quality run {dtype} done ({out.timings})")
    (la, ia), (lb, ib) = finals[torch.bfloat16], finals[torch.float32]
    return [{"what": "bf16 vs fp32 (text encoder, ControlNet, UNet; VAE fp32), final latents", "lr_size": lr_size,
             "steps": steps, "max_abs": float((la - lb).abs().max()), "mean_abs": float((la - lb).abs().mean()),
             "reference_mean_abs": float(lb.abs().mean()),
             "image_max_abs": float((ia - ib).abs().max()), "image_mean_abs": float((ia - ib).abs().mean())}]  # fmt: skip


def _rebuild_denoiser(pipe) -> None:
    """Fresh float32 UNet + ControlNet with the same random weights as ``build_full_size_pipeline``
    (after a round trip through 16 bits the float32 weights are no longer the original ones)."""
    from benchmarks.fullsize import SD_TURBO_UNET_CONFIG, randomized
    from seesr.engines.seesr.models.controlnet import SeesrControlNetModel
    from seesr.engines.seesr.models.unet import SeesrUNet2DConditionModel

    device = pipe.device
    pipe.unet = pipe.controlnet = None
    release_memory()
    unet = randomized(lambda: SeesrUNet2DConditionModel(**SD_TURBO_UNET_CONFIG), seed=1)
    controlnet = randomized(lambda: SeesrControlNetModel.from_unet(unet, load_weights_from_unet=False), seed=2)
    pipe.unet, pipe.controlnet = unet.to(device).eval(), controlnet.to(device).eval()


def candidate_precision(pipe, device, latent: int) -> list[dict]:
    """One ControlNet + UNet noise prediction at t=999 in float16 and bfloat16 against float32 (same
    weights and inputs): relative error of epsilon. At t=999 the DDIM x0 estimate divides epsilon's
    error by sqrt(alpha_bar_999) (about 0.068), which is why final latents differ more than epsilon."""
    latents, condition, text, ram = _predict_inputs(pipe, latent)
    text, ram = text.float(), ram.float()
    for model in (pipe.unet, pipe.controlnet):
        model.to(torch.float32)
    reference = pipe.predict_noise(latents, 999, text, ram, condition, 1.0, 1.0).float()
    rows = []
    for dtype in (torch.float16, torch.bfloat16):
        for model in (pipe.unet, pipe.controlnet):
            model.to(dtype)
        start = time.perf_counter()
        eps = pipe.predict_noise(latents, 999, text.to(dtype), ram.to(dtype), condition, 1.0, 1.0).float()
        seconds = time.perf_counter() - start
        diff = eps - reference
        rows.append({"what": "epsilon vs float32, one ControlNet+UNet forward at t=999", "latent": latent,
                     "dtype": str(dtype)[6:], "relative_l2": float(diff.norm() / reference.norm()),
                     "max_abs": float(diff.abs().max()), "mean_abs": float(diff.abs().mean()),
                     "reference_std": float(reference.std()), "seconds": seconds,
                     "finite": bool(torch.isfinite(eps).all())})  # fmt: skip
        log(f"precision {dtype}: relative L2 {rows[-1]['relative_l2']:.4f} ({seconds:.1f} s)")
        _rebuild_denoiser(pipe)
    return rows


def candidate_compile(pipe, device, latent: int, repeats: int) -> list[dict]:
    """``torch.compile`` of ControlNet + UNet (in the pipeline's dtype): first-call (compile) time and
    steady state against eager."""
    latents, condition, text, ram = _predict_inputs(pipe, latent)
    call = lambda: pipe.predict_noise(latents, 999, text, ram, condition, 1.0, 1.0)
    eager = timed(call, device, 1, repeats)
    log(f"eager {latent}^2 {pipe.dtype}: median {eager['median']:.2f} s")
    pipe.unet.compile()
    pipe.controlnet.compile()
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    log(f"compiled: first call (compile + run) {first:.1f} s")
    compiled = timed(call, device, 1, repeats)
    log(f"compiled {latent}^2: median {compiled['median']:.2f} s")
    return [{"what": "torch.compile controlnet+unet", "latent": latent, "dtype": str(pipe.dtype)[6:],
             "eager": eager, "first_call_s": first, "compiled": compiled,
             "speedup_median": eager["median"] / compiled["median"]}]  # fmt: skip


CANDIDATES = ("quality", "precision", "sdpa", "profile", "unet", "threads", "vae", "tile_batch", "compile")
"""In the order they run: ``quality`` first (the others round the float32 weights through bf16),
``compile`` last (it changes the modules)."""


def run_candidates(names: Sequence[str], settings: CandidateSettings, latent: int = 64) -> dict:
    """Measure the named candidates in this process (full-size networks without the tagger, or the
    networks of ``settings.weights``)."""
    device = torch.device(settings.device)
    if settings.weights:
        from seesr.engines.seesr.pipeline import SeesrPipeline
        from seesr.weights import WeightPaths

        pipe = SeesrPipeline.from_pretrained(WeightPaths.from_dir(settings.weights), device=device, torch_dtype=torch.float32)
    else:
        from benchmarks.fullsize import build_full_size_pipeline

        pipe = build_full_size_pipeline(device, torch.float32, with_tagger=False)
    results: dict[str, list[dict] | dict] = {}
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        raise SystemExit(f"unknown candidate(s) {unknown}; choose from {', '.join(CANDIDATES)}")
    for name in sorted(set(names), key=CANDIDATES.index):
        log(f"candidate {name}")
        results[name] = _run_candidate(name, pipe, device, settings, latent)
    return results


@torch.no_grad()
def _run_candidate(name: str, pipe, device: torch.device, settings: CandidateSettings, latent: int) -> list[dict] | dict:
    w, r = settings.warmup, settings.repeats
    fast = default_dtype(settings.device)
    if name == "sdpa":
        return {**attention_processors(pipe),
                "note": "AttnProcessor2_0 calls torch.nn.functional.scaled_dot_product_attention"}  # fmt: skip
    if name == "quality":
        return candidate_quality(pipe, latent * 8 // SCALE, 2)
    if name == "precision":
        return candidate_precision(pipe, device, latent)
    if name == "profile":
        return candidate_profile(pipe, device, latent)
    if name == "unet":
        return candidate_unet(pipe, device, latent, w, r)
    if name == "vae":
        return candidate_vae(pipe, device, latent, w, r)
    pipe.to(device, fast)
    if name == "threads":
        return candidate_threads(pipe, device, latent, w, r)
    if name == "tile_batch":
        return candidate_tile_batch(pipe, device, latent * 2, 64, (1, 2, 4), w, r)
    return candidate_compile(pipe, device, latent, r)



def profile_rows(fn, device: torch.device, top: int = 15) -> list[dict]:
    """The ``top`` operators of one call of ``fn`` (after a warm-up) by self time: name, calls,
    self time and share of the total."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * (device.type == "cuda")
    with profile(activities=activities) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0 or getattr(e, "self_device_time_total", 0) > 0]
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events) or 1
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [{"op": e.key, "calls": e.count, "self_s": getattr(e, attr) / 1e6, "share": getattr(e, attr) / total}
            for e in events[:top]]  # fmt: skip


def candidate_profile(pipe, device: torch.device, latent: int) -> list[dict]:
    """Top operators of one ControlNet + UNet forward at ``latent`` in float32 and in the device's
    default dtype, and of one VAE decode of that latent as the library runs it (``SeesrPipeline.to``)."""
    rows = []
    for dtype in dict.fromkeys((torch.float32, default_dtype(device))):
        pipe.to(device, dtype)
        latents, condition, text, ram = _predict_inputs(pipe, latent)
        ops = profile_rows(lambda: pipe.predict_noise(latents, 999, text, ram, condition, 1.0, 1.0), device)
        rows.append({"what": "controlnet+unet forward", "latent": latent, "dtype": str(dtype)[6:], "top_ops": ops})
        z = torch.randn(1, 4, latent, latent, generator=torch.Generator().manual_seed(0)).to(device)
        ops = profile_rows(lambda: pipe.decode(z), device)
        rows.append({"what": "vae decode", "latent": latent, "dtype": str(pipe.vae.dtype)[6:], "top_ops": ops})
        for row in rows[-2:]:
            log(f"{row['what']} {row['dtype']}: " + ", ".join(f"{o['op']} {o['share']:.0%}" for o in row["top_ops"][:5]))
    return rows


def profile_table(rows: list[dict]) -> str:
    """The profile rows as Markdown tables (one per measured call)."""
    lines = []
    for row in rows:
        lines += [f"\n{row['what']}, {row['latent']}x{row['latent']} latent, {row['dtype']}:\n",
                  "| op | calls | self s | share |", "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {o['op']} | {o['calls']} | {o['self_s']:.3f} | {o['share']:.1%} |" for o in row["top_ops"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.candidates", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("names", nargs="+", choices=CANDIDATES, metavar="NAME", help=" ".join(CANDIDATES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--latent", type=int, default=64, help="latent side (x8 pixels)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="write the record here")
    parser.add_argument("--weights", type=Path, help="a weights folder to measure instead of full-size random networks")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        settings = CandidateSettings(args.device, args.warmup, args.repeats, args.threads,
                                     str(args.weights) if args.weights else None)
        record = {"benchmark": "benchmarks.candidates", "machine": machine_info(args.device),
                  "versions": versions(), "settings": asdict(settings)}  # fmt: skip
        record["candidates"] = run_candidates(args.names, settings, args.latent)
        record["machine"]["load_average_end"] = list(os.getloadavg())
    finally:
        torch.set_num_threads(threads)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1))
    if "profile" in record["candidates"]:
        print(profile_table(record["candidates"]["profile"]))
    print(json.dumps({k: v for k, v in record["candidates"].items() if k != "profile"}, indent=1))
    return record


if __name__ == "__main__":
    main()
