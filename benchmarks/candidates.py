"""Candidate speed-ups, each measured against its own baseline in one process (full-size networks).

    python -m benchmarks.candidates quality precision attention sdpa unet threads vae tile_batch compile profile
        [--device cpu|cuda] [--latent 64] [--warmup 1] [--repeats 2] [--threads N] [--json out.json]
        [--weights DIR]     # measure a weights folder's networks instead of full-size random ones

See ``CANDIDATES``: bf16 vs float32 and channels_last for ControlNet + UNet and for the VAE, thread
count, tile batching, ``torch.compile``, the attention processor in use, torch's SDPA against
seesr's AVX512-BF16 attention kernel (timed alternately, with errors), the numerical cost of bf16
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
    timed_alternating,
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


class _AttentionShapes(torch.overrides.TorchFunctionMode):
    """Records the (batch, heads, length, head_dim) shapes of query and key of every SDPA call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[tuple, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.scaled_dot_product_attention:
            shapes = (tuple(args[0].shape), tuple(args[1].shape))
            self.calls[shapes] = self.calls.get(shapes, 0) + 1
        return func(*args, **(kwargs or {}))


def _relative_errors(got: torch.Tensor, want: torch.Tensor) -> dict:
    diff = got.double() - want.double()
    return {"max_abs": float(diff.abs().max()), "relative_l2": float(diff.norm() / want.double().norm())}


def _heads(shape: tuple, seed: int) -> torch.Tensor:
    """A bf16 (batch, heads, length, head_dim) tensor laid out as diffusers' processors make it."""
    batch, heads, length, head_dim = shape
    x = torch.randn(batch, length, heads * head_dim, generator=torch.Generator().manual_seed(seed))
    return x.to(torch.bfloat16).view(batch, length, heads, head_dim).transpose(1, 2)


def candidate_attention(pipe, device, latent: int, warmup: int, repeats: int) -> list[dict]:
    """torch's SDPA against seesr's AVX512-BF16 kernel (``attention="auto"`` where the rule picks
    it), timed alternately in this process: every distinct attention call of a ControlNet + UNet
    forward and a VAE decode at ``latent`` (error of each against float32 SDPA and of the kernel
    against torch's bf16), the whole forward (epsilon against float32) and the VAE decode."""
    from seesr.engines.seesr.models.attention import attention_kernel, scaled_dot_product_attention

    if attention_kernel(device, torch.bfloat16) == "sdpa":
        log("attention: the rule keeps torch's SDPA on this machine; nothing to compare")
        return [{"what": "attention", "kernel": "sdpa", "note": "the rule keeps torch's SDPA here"}]
    latents, condition, text, ram = _predict_inputs(pipe, latent)
    z = torch.randn(1, 4, latent, latent, generator=torch.Generator().manual_seed(0)).to(device)
    forward = lambda: pipe.predict_noise(latents, 999, text.to(pipe.dtype), ram.to(pipe.dtype), condition, 1.0, 1.0)
    pipe.to(device, torch.float32)
    reference = forward().float()
    pipe.to(device, torch.bfloat16)
    pipe.use_attention("sdpa")
    shapes = _AttentionShapes()
    with shapes:
        forward()
        pipe.decode(z)
    rows = []
    for (q_shape, k_shape), calls in sorted(shapes.calls.items(), key=lambda item: -item[0][0][2] * item[0][1][2]):
        q, k, v = _heads(q_shape, 0), _heads(k_shape, 1), _heads(k_shape, 2)
        outputs = {}
        fns = {"sdpa": lambda: outputs.__setitem__("sdpa", torch.nn.functional.scaled_dot_product_attention(q, k, v)),
               "kernel": lambda: outputs.__setitem__("kernel", scaled_dot_product_attention(q, k, v))}  # fmt: skip
        stats = timed_alternating(fns, device, warmup, max(repeats, 5))
        exact = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
        gflop = 2 * q_shape[0] * q_shape[1] * q_shape[2] * k_shape[2] * (q_shape[3] + k_shape[3]) / 1e9
        rows.append({"what": "attention call", "query": list(q_shape), "key": list(k_shape), "calls_per_forward": calls,
                     "gflop": gflop, **{name: stats[name] for name in fns},
                     "speedup_median": stats["sdpa"]["median"] / stats["kernel"]["median"],
                     "sdpa_vs_float32": _relative_errors(outputs["sdpa"], exact),
                     "kernel_vs_float32": _relative_errors(outputs["kernel"], exact),
                     "kernel_vs_sdpa": _relative_errors(outputs["kernel"], outputs["sdpa"])})  # fmt: skip
        log(f"attention q{q_shape} k{k_shape}: sdpa {stats['sdpa']['median'] * 1e3:.1f} ms, kernel "
            f"{stats['kernel']['median'] * 1e3:.1f} ms ({rows[-1]['speedup_median']:.2f}x), relative L2 vs float32 "
            f"{rows[-1]['sdpa_vs_float32']['relative_l2']:.5f} / {rows[-1]['kernel_vs_float32']['relative_l2']:.5f}")  # fmt: skip
    for what, call in (("controlnet+unet forward", forward), ("vae decode", lambda: pipe.decode(z))):
        outputs = {}

        def run(choice: str, call=call, outputs=outputs) -> None:
            pipe.use_attention(choice)
            outputs[choice] = call().float()

        stats = timed_alternating({"sdpa": lambda: run("sdpa"), "auto": lambda: run("auto")}, device, warmup, repeats)
        row = {"what": what, "latent": latent, "dtype": "bfloat16", **stats,
               "speedup_median": stats["sdpa"]["median"] / stats["auto"]["median"],
               "kernel_vs_sdpa": _relative_errors(outputs["auto"], outputs["sdpa"])}  # fmt: skip
        if what.startswith("controlnet"):
            row.update(sdpa_vs_float32=_relative_errors(outputs["sdpa"], reference),
                       kernel_vs_float32=_relative_errors(outputs["auto"], reference))  # fmt: skip
        rows.append(row)
        log(f"{what} {latent}^2 bf16: sdpa {stats['sdpa']['median']:.2f} s, kernel {stats['auto']['median']:.2f} s "
            f"({row['speedup_median']:.3f}x)")  # fmt: skip
    pipe.use_attention("auto")
    return rows


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


CANDIDATES = ("quality", "precision", "attention", "sdpa", "profile", "unet", "threads", "vae", "tile_batch", "compile")
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
    if name == "attention":
        return candidate_attention(pipe, device, latent, w, r)
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



ATTENTION_OPS = ("aten::_scaled_dot_product_flash_attention_for_cpu", "seesr::attention_avx512bf16")
"""Attention operators whose FLOPs the profile counts from their input shapes (the profiler does not)."""
MATRIX_OPS = ("aten::conv2d", "aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", *ATTENTION_OPS)
"""The operators whose FLOPs the profile counts (each FLOP once: the profiler counts ``conv2d``, not
the ``convolution`` it calls)."""


def _event_flops(event) -> int:
    """FLOPs of one profiled operator call: the profiler's count (matrix products, convolutions)
    or, for :data:`ATTENTION_OPS`, 2 x multiply-adds of Q K^T and P V from the input shapes."""
    if event.name in ATTENTION_OPS and len(event.input_shapes) >= 2 and len(event.input_shapes[0]) == 4:
        (batch, heads, q_len, dim), key = event.input_shapes[0], event.input_shapes[1]
        return 2 * batch * heads * q_len * key[2] * (dim + key[3])
    return event.flops or 0


def profile_rows(fn, device: torch.device, top: int = 15) -> tuple[list[dict], list[dict]]:
    """One call of ``fn`` (after a warm-up), profiled: the ``top`` operators by self time (name,
    calls, self time, share of the total), and the operators that do the counted FLOPs (convolutions,
    matrix products, attention) with their time including callees, share, GFLOP and GFLOP/s."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * (device.type == "cuda")
    with profile(activities=activities, record_shapes=True, with_flops=True) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0 or getattr(e, "self_device_time_total", 0) > 0]
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events) or 1
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    ops = [{"op": e.key, "calls": e.count, "self_s": getattr(e, attr) / 1e6, "share": getattr(e, attr) / total}
           for e in events[:top]]  # fmt: skip
    matrix: dict[str, dict] = {}
    for event in prof.events():
        flops = _event_flops(event) if event.name in MATRIX_OPS else 0
        if flops:
            row = matrix.setdefault(event.name, {"op": event.name, "calls": 0, "total_s": 0.0, "gflop": 0.0})
            row["calls"] += 1
            row["total_s"] += (event.device_time_total if device.type == "cuda" else event.cpu_time_total) / 1e6
            row["gflop"] += flops / 1e9
    flop_ops = sorted(matrix.values(), key=lambda r: -r["total_s"])
    for row in flop_ops:
        row.update(share=row["total_s"] * 1e6 / total, gflops=row["gflop"] / row["total_s"] if row["total_s"] else None)
    return ops, flop_ops


def candidate_profile(pipe, device: torch.device, latent: int) -> list[dict]:
    """Top operators of one ControlNet + UNet forward at ``latent`` in float32 and in the device's
    default dtype (there with each attention the rule offers: torch's SDPA, and the AVX512-BF16
    kernel where it picks it), and of one VAE decode of that latent as the library runs it
    (``SeesrPipeline.to``): share of time, and GFLOP/s of the matrix work."""
    from seesr.engines.seesr.models.attention import attention_kernel

    rows = []
    for dtype in dict.fromkeys((torch.float32, default_dtype(device))):
        pipe.to(device, dtype)
        choices = ("sdpa", "auto") if attention_kernel(device, dtype) != "sdpa" else ("auto",)
        for choice in choices:
            pipe.use_attention(choice)
            latents, condition, text, ram = _predict_inputs(pipe, latent)
            z = torch.randn(1, 4, latent, latent, generator=torch.Generator().manual_seed(0)).to(device)
            calls = (("controlnet+unet forward", lambda: pipe.predict_noise(latents, 999, text, ram, condition, 1.0, 1.0)),
                     ("vae decode", lambda: pipe.decode(z)))  # fmt: skip
            for what, call in calls:
                ops, flop_ops = profile_rows(call, device)
                network = pipe.unet if what.startswith("controlnet") else pipe.vae
                rows.append({"what": what, "latent": latent, "dtype": str(next(network.parameters()).dtype)[6:],
                             "attention": choice, "top_ops": ops, "flop_ops": flop_ops})  # fmt: skip
                log(f"{what} {rows[-1]['dtype']} attention={choice}: "
                    + ", ".join(f"{o['op']} {o['share']:.0%}" for o in ops[:5]))  # fmt: skip
    pipe.use_attention("auto")
    return rows


def profile_table(rows: list[dict]) -> str:
    """The profile rows as Markdown tables (one per measured call): top operators by self time,
    then the operators that do the counted FLOPs."""
    lines = []
    for row in rows:
        lines += [f"\n{row['what']}, {row['latent']}x{row['latent']} latent, {row['dtype']}, attention "
                  f"{row.get('attention', 'auto')}:\n", "| op | calls | self s | share |", "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {o['op']} | {o['calls']} | {o['self_s']:.3f} | {o['share']:.1%} |" for o in row["top_ops"]]
        if row.get("flop_ops"):
            lines += ["", "| op (with callees) | calls | s | share | GFLOP | GFLOP/s |", "|---|---|---|---|---|---|"]
            lines += [f"| {o['op']} | {o['calls']} | {o['total_s']:.3f} | {o['share']:.1%} | {o['gflop']:.1f} | "
                      f"{o['gflops']:.0f} |" for o in row["flop_ops"] if o["gflops"]]  # fmt: skip
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
