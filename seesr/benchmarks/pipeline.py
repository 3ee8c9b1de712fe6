"""Speed of the whole SeeSR-Turbo pipeline at full size: per stage, end to end, peak memory.

    python -m seesr.benchmarks.pipeline [--sizes 128 256] [--device cpu|cuda]
        [--dtype float32|bfloat16|float16] [--steps 1 2 4] [--repeats N] [--warmup N]
        [--json out.json] [--naive] [--tuned] [--smoke] [--threads N]
    python -m seesr.benchmarks.pipeline --presets speed balanced quality memory [--sizes ...]
    python -m seesr.benchmarks.pipeline --candidates quality precision sdpa unet threads vae tile_batch compile

The networks are built at their real sizes with random weights (``seesr.benchmarks.fullsize``:
speed and memory do not depend on weight values; nothing is downloaded). For every LR size
(x4 output) and step count it times each stage of ``SeesrPipeline.__call__`` (tagging, text
encoding, VAE encode, every denoising step, decode, colour fix, and ``other``: bicubic upscale,
noising, final resize) and the whole call, after warm-up runs, over repeats (min and median),
with the peak memory of the call (CPU: sampled process RSS above the RSS before the call, and
that plus the RSS before it; CUDA: ``max_memory_allocated``). End-to-end time (and each stage's)
is fitted linearly against output megapixels (least squares over the sizes).

Paths, measured in the same run (speed-ups printed per size):

* ``default``: the library's defaults: the networks in ``--dtype`` (float16 on CUDA, bfloat16 on
  a CPU with native bf16, else float32; the VAE as ``SeesrPipeline.to`` puts it) and the
  planner's plan (tiles, tile batch) for the size and free memory;
* ``naive`` (``--naive``): the same models run the straightforward way: float32 everywhere,
  the official defaults (latent tile 96, overlap 32, one tile at a time), the VAE untiled where
  its working memory fits;
* ``tuned`` (``--tuned``): the default path with, on a CPU with bfloat16 networks, the VAE forced
  to bfloat16 with channels_last weights (measured 4-5x faster VAE; the library does the same
  since this was adopted, so on such CPUs ``tuned`` now equals ``default``: run the default path
  with ``--vae-dtype float32`` to see the former behaviour).

``--presets`` measures the default path once per preset instead of per ``--steps``: the preset's
step count, fixed tiles, KDS particles, offload and dtype, the planner for the rest (as the API
runs it). On a GPU: ``--device cuda --sizes 512 1024 --presets speed balanced quality memory``.

Each path runs in its own subprocess (so two sets of weights are never resident together and
one path's allocator caches do not hide another's peak memory). ``--smoke`` runs the tiny official
fixtures (``$SEESR_SHARED/fixtures/seesr_tiny``) in-process at tiny sizes, in a few seconds, for CI.

On a shared CPU, use ``--threads 1`` (or ``OMP_WAIT_POLICY=PASSIVE``): OpenMP threads spin-wait
for each other, and with other processes on the cores a 2-thread forward was measured 3x slower
than a 1-thread one.

``--candidates`` measures speed-ups one by one, each against its own baseline in the same
process (see ``CANDIDATES``): bf16 vs float32 and channels_last for ControlNet + UNet and for the
VAE, thread count, tile batching, ``torch.compile``, the attention processor in use, and the
numerical cost of bf16 (final latents, and one epsilon prediction in bf16 and fp16 vs fp32).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import psutil
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from seesr.memory import PeakMemory
from seesr.planner import (
    DEFAULT_LATENT_OVERLAP,
    MEMORY_HEADROOM,
    RunPlan,
    available_memory,
    decode_bytes,
    encode_bytes,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SCALE = 4
CPU_SIZES = (128, 256)
CUDA_SIZES = (128, 256, 512, 1024)
SMOKE_SIZES = (16, 32)
OFFICIAL_LATENT_TILE = 96
"""Official turbo-script defaults: latent tile 96 with overlap 32, VAE encoder 1024 px, decoder 224."""
OFFICIAL_VAE_ENCODER_TILE = 1024
OFFICIAL_VAE_DECODER_TILE = 224


# --------------------------------------------------------------------------- settings


@dataclass
class Variant:
    """One way of running the pipeline.

    ``plan``: ``"planner"`` (``plan_run`` for the size and free memory) or ``"naive"`` (official
    defaults, one tile at a time, VAE untiled where it fits). ``vae_dtype`` None: the library's
    choice (see ``SeesrPipeline.to``). ``channels_last``: ``"none"`` (the library's choice when
    ``vae_dtype`` is None), ``"vae"`` or ``"all"`` (VAE, ControlNet and UNet)."""

    name: str
    dtype: str
    plan: str = "planner"
    vae_dtype: str | None = None
    channels_last: str = "none"
    compile: bool = False
    tile_batch_size: int | None = None

    def describe(self) -> str:
        extras = [f"VAE {self.vae_dtype}" if self.vae_dtype else "VAE library default"]
        extras += [f"channels_last {self.channels_last}"] * (self.channels_last != "none")
        extras += ["torch.compile"] * self.compile
        if self.tile_batch_size:
            extras.append(f"tile batch {self.tile_batch_size}")
        return f"{self.name}: {self.dtype}, {self.plan} plan, " + ", ".join(extras)


@dataclass
class Settings:
    sizes: list[int]
    steps: list[int]
    device: str = "cpu"
    repeats: int = 2
    warmup: int = 1
    seed: int = 0
    smoke: bool = False
    threads: int | None = None
    presets: list[str] | None = None
    """Measure these presets (their steps, tiles, KDS, offload) instead of ``steps``."""


@dataclass(frozen=True)
class RunSpec:
    """One measured configuration: a step count, or a preset (which also fixes tiles, KDS, offload)."""

    steps: int
    preset: str | None = None

    @property
    def label(self) -> str:
        return f"preset {self.preset} ({self.steps} steps)" if self.preset else f"steps {self.steps}"


def run_specs(settings: Settings) -> list[RunSpec]:
    from seesr.presets import resolve_settings

    if settings.presets:
        return [RunSpec(resolve_settings({"preset": p}, environ={}).steps, p) for p in settings.presets]
    return [RunSpec(steps) for steps in settings.steps]


def default_dtype(device: str) -> str:
    """The library's default network dtype for ``device`` (float16 on CUDA, bfloat16 on a CPU with
    native bf16, else float32), as a name."""
    from seesr.devices import default_dtype as library_default

    return str(library_default(device)).removeprefix("torch.")


def default_sizes(device: str, smoke: bool) -> list[int]:
    if smoke:
        return list(SMOKE_SIZES)
    return list(CUDA_SIZES if device.startswith("cuda") else CPU_SIZES)


# --------------------------------------------------------------------------- environment


def tiny_fixture_dir() -> Path:
    """``$SEESR_SHARED/fixtures/seesr_tiny`` (default shared folder: next to the repository)."""
    return Path(os.environ.get("SEESR_SHARED", REPO_ROOT.parent / "shared")) / "fixtures" / "seesr_tiny"


def tiny_fixture_weights(tiny: Path | None = None):
    """The tiny official fixtures (default :func:`tiny_fixture_dir`) as a
    :class:`seesr.weights.WeightPaths`: their folders and files in the official layout."""
    from seesr.weights import WeightPaths

    tiny = tiny or tiny_fixture_dir()
    data = tiny / "ram" / "data"
    return WeightPaths(
        sd_turbo=tiny / "sd_turbo",
        seesr=tiny / "seesr",
        ram_checkpoint=tiny / "ram" / "ram_swin_large_14m_tiny.pth",
        dape_checkpoint=tiny / "ram" / "DAPE_tiny.pth",
        ram_tag_list=data / "ram_tag_list.txt",
        ram_tag_list_chinese=data / "ram_tag_list_chinese.txt",
        ram_thresholds=data / "ram_tag_list_threshold.txt",
        ram_configs=tiny / "ram" / "configs",
    )


def machine_info(device: str) -> dict:
    """What the numbers were measured on (CPU model and flags, threads, memory, load, GPU)."""
    flags: set[str] = set()
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", "x86_64"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": model,
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile"}),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_total_bytes": psutil.virtual_memory().total,
        "ram_available_bytes": psutil.virtual_memory().available,
        "load_average": list(os.getloadavg()),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu=props.name, gpu_memory_bytes=props.total_memory, cuda=torch.version.cuda)
    return info


def versions() -> dict:
    import diffusers
    import transformers

    commit = None
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "seesr_commit": commit}  # fmt: skip


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so RSS baselines mean something."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# --------------------------------------------------------------------------- building


def tuned_variant(default: Variant, device: str) -> Variant:
    """On a CPU with bfloat16 networks, the VAE in bfloat16 too, with channels_last weights (oneDNN
    NHWC convolutions: no layout reorders); elsewhere the same as ``default``. Measured 4-5x faster
    VAE on a Sapphire Rapids CPU; the library's CPU default since."""
    tuned = dataclasses.replace(default, name="tuned")
    if torch.device(device).type == "cpu" and default.dtype == "bfloat16":
        tuned.vae_dtype = "bfloat16"
        tuned.channels_last = "vae" if default.channels_last == "none" else default.channels_last
    return tuned


def build_pipeline(variant: Variant, settings: Settings):
    """The pipeline for ``variant``: full size with random weights, or the tiny fixtures (smoke)."""
    from seesr.pipeline import SeesrPipeline

    device = torch.device(settings.device)
    dtype = getattr(torch, variant.dtype)
    if settings.smoke:
        paths = tiny_fixture_weights()
        pipe = SeesrPipeline.from_pretrained(paths, device=device, torch_dtype=dtype)
    else:
        from seesr.benchmarks.fullsize import build_full_size_pipeline

        pipe = build_full_size_pipeline(device, dtype)
    apply_options(pipe, variant)
    return pipe


def apply_options(pipe, variant: Variant) -> None:
    """VAE dtype, memory format and compilation of a built pipeline (nothing: the library's choices).
    Giving ``vae_dtype`` also sets the VAE's memory format: channels_last only when asked for."""
    if variant.vae_dtype:
        torch.nn.Module.to(pipe.vae, getattr(torch, variant.vae_dtype))  # diffusers .to warns spuriously
    if variant.channels_last == "all":
        for model in (pipe.unet, pipe.controlnet):
            model.to(memory_format=torch.channels_last)
    if variant.vae_dtype or variant.channels_last != "none":
        vae_cl = variant.channels_last in ("vae", "all")
        pipe.vae.to(memory_format=torch.channels_last if vae_cl else torch.contiguous_format)
    if variant.compile:
        pipe.unet.compile()
        pipe.controlnet.compile()


def attention_processors(pipe) -> dict[str, list[str]]:
    """Attention processor classes in use per network (diffusers' default is SDPA: AttnProcessor2_0)."""
    return {
        name: sorted({type(p).__name__ for p in getattr(pipe, name).attn_processors.values()})
        for name in ("unet", "controlnet", "vae")
    }


def naive_plan(work_w: int, work_h: int, device: torch.device, *, smoke: bool = False) -> RunPlan:
    """Official defaults: latent tile 96 / overlap 32, one tile at a time; the VAE untiled when its
    estimated working memory (float32) fits in the free memory, else the official VAE tiles.
    Smoke runs (tiny sizes) scale the latent tile down to 8 / 4 so the tiled path is exercised."""
    latent_tile, overlap = (8, 4) if smoke else (OFFICIAL_LATENT_TILE, DEFAULT_LATENT_OVERLAP)
    budget = available_memory(device) * MEMORY_HEADROOM
    latent_px = (work_w // 8) * (work_h // 8)
    untiled_decode = decode_bytes(latent_px, 4) <= budget
    untiled_encode = encode_bytes(work_w * work_h, 4) <= budget
    return RunPlan(
        latent_tile=latent_tile,
        latent_overlap=overlap,
        tile_batch_size=1,
        vae_encoder_tile=max(work_w, work_h, 64) if untiled_encode else OFFICIAL_VAE_ENCODER_TILE,
        vae_decoder_tile=max(work_w // 8, work_h // 8, 8) if untiled_decode else OFFICIAL_VAE_DECODER_TILE,
    )


def preset_settings(name: str):
    """The library's settings for preset ``name`` (nothing from the environment)."""
    from seesr.presets import resolve_settings

    return resolve_settings({"preset": name}, environ={})


def plan_for(variant: Variant, pipe, work_w: int, work_h: int, settings: Settings, preset: str | None = None) -> RunPlan | None:
    """The plan passed to the pipeline (None: the pipeline asks the planner itself). A preset's
    plan is what the API plans for it: its fixed tiles, the planner for the rest."""
    if preset:
        chosen = preset_settings(preset)
        return pipe.plan_for(work_w, work_h, batch_multiplier=chosen.batch_multiplier(), overrides=chosen.plan_overrides())
    if variant.plan == "naive":
        return naive_plan(work_w, work_h, pipe.device, smoke=settings.smoke)
    if variant.tile_batch_size:
        return pipe.plan_for(work_w, work_h, overrides={"tile_batch_size": variant.tile_batch_size})
    return None


# --------------------------------------------------------------------------- measuring


class StageClock:
    """Per-step times inside the pipeline's ``denoise`` stage: the start of the stage (wrapping
    ``pipe.stage``) and the end of every step (the step callback)."""

    def __init__(self, pipe) -> None:
        self.pipe = pipe
        self.device = pipe.device
        self.denoise_start: float | None = None
        self.step_ends: list[float] = []

    @contextmanager
    def installed(self) -> Iterator["StageClock"]:
        original = self.pipe.stage

        @contextmanager
        def stage(name: str, *models):
            with original(name, *models):
                if name == "denoise":
                    self.denoise_start = time.perf_counter()
                yield

        self.pipe.stage = stage
        try:
            yield self
        finally:
            del self.pipe.stage

    def callback(self, i: int, t: int, latents: torch.Tensor) -> None:
        synchronize(self.device)
        self.step_ends.append(time.perf_counter())

    def step_times(self) -> list[float]:
        if self.denoise_start is None:
            return []
        starts = [self.denoise_start] + self.step_ends[:-1]
        return [end - start for start, end in zip(starts, self.step_ends)]


def random_image(size: int, seed: int) -> Image.Image:
    """A deterministic RGB test image: smooth colour fields plus noise (speed does not depend on it)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, size // 16), max(2, size // 16), generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    pixels = (smooth[0] + 0.1 * torch.randn(3, size, size, generator=generator)).clamp(0, 1)
    return Image.fromarray((pixels.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy(), "RGB")


def one_run(pipe, image: Image.Image, steps: int, plan: RunPlan | None, seed: int, kds=None) -> dict:
    """One timed, memory-sampled call of the pipeline."""
    device = pipe.device
    clock = StageClock(pipe)
    release_memory()
    rss_before = psutil.Process().memory_info().rss
    load = os.getloadavg()[0]
    synchronize(device)
    with clock.installed(), PeakMemory(device) as peak:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        output = pipe(image, scale=SCALE, num_inference_steps=steps, seed=seed, plan=plan, process_size=0,
                      kds=kds, callback=clock.callback)  # fmt: skip
        synchronize(device)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    times = dict(output.timings)
    for i, step in enumerate(clock.step_times(), start=1):
        times[f"step_{i}"] = step
    times["other"] = max(0.0, wall - sum(output.timings.values()))
    times["end_to_end"] = wall
    if device.type == "cuda":
        memory = {"kind": "cuda_max_allocated", "working_bytes": peak.peak,
                  "peak_bytes": peak.peak + peak.base}  # fmt: skip
    else:
        memory = {"kind": "cpu_rss", "working_bytes": peak.peak, "peak_bytes": peak.peak + rss_before}
    return {"times": times, "cpu_s": cpu, "memory": memory, "load_average_1m": load, "output": output}


def summarize(samples: Sequence[float]) -> dict:
    return {"min": min(samples), "median": statistics.median(samples), "mean": statistics.fmean(samples),
            "max": max(samples), "samples": list(samples)}  # fmt: skip


def stage_names(steps: int) -> list[str]:
    """Timed stages: the pipeline's, ``step_i`` (1-based) inside ``denoise``, ``other`` (what the
    pipeline's stages do not cover: bicubic upscale, noising, final resize) and ``end_to_end``."""
    names = ["tag", "text", "encode"] + [f"step_{i}" for i in range(1, steps + 1)]
    return names + ["denoise", "decode", "colorfix", "other", "end_to_end"]


def measure_size(pipe, variant: Variant, settings: Settings, lr_size: int, spec: RunSpec) -> tuple[dict, torch.Tensor]:
    """Warm-up runs, then ``repeats`` timed runs of one LR size: per-stage stats, memory, plan."""
    image = random_image(lr_size, settings.seed)
    work = lr_size * SCALE
    steps = spec.steps
    plan = plan_for(variant, pipe, work, work, settings, spec.preset)
    kds = preset_settings(spec.preset).kds_config() if spec.preset else None
    warmups, runs = [], []
    for index in range(settings.warmup + settings.repeats):
        run = one_run(pipe, image, steps, plan, settings.seed, kds)
        kind = "warm-up" if index < settings.warmup else "run"
        (warmups if index < settings.warmup else runs).append(run)
        log(f"{variant.name} {lr_size}->{work} {spec.label} {kind} {index + 1}: "
            f"{run['times']['end_to_end']:.2f} s (" + ", ".join(f"{k} {v:.2f}" for k, v in run["times"].items()
            if k != "end_to_end") + f"), load {run['load_average_1m']:.1f}")  # fmt: skip
    output = runs[-1]["output"]
    stages = {name: summarize([r["times"].get(name, 0.0) for r in runs]) for name in stage_names(steps)}
    record = {
        "lr_size": lr_size,
        "output_size": work,
        "output_megapixels": work * work / 1e6,
        "steps": steps,
        "preset": spec.preset,
        "kds_particles": kds.particles if kds else 1,
        "plan": dataclasses.asdict(output.plan),
        "plan_description": output.plan.describe(),
        "latent_tiles": _tile_count(output.plan, work),
        "tags": len([t for t in output.tags.split(",") if t.strip()]),
        "stages": stages,
        "end_to_end_cpu_s": summarize([r["cpu_s"] for r in runs]),
        "warmup_end_to_end_s": [r["times"]["end_to_end"] for r in warmups],
        "peak_memory": {
            "kind": runs[0]["memory"]["kind"],
            "working_bytes": max(r["memory"]["working_bytes"] for r in warmups + runs),
            "peak_bytes": max(r["memory"]["peak_bytes"] for r in warmups + runs),
        },
        "load_average_1m": [r["load_average_1m"] for r in warmups + runs],
    }
    return record, output.latents.detach().float().cpu()


def _tile_count(plan: RunPlan, work: int) -> int:
    from seesr.tiling import plan_tiles

    latent = work // 8
    overlap = min(plan.latent_overlap, max(0, min(plan.latent_tile, latent) - 1))
    return len(plan_tiles(latent, latent, plan.latent_tile, overlap))


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict:
    """Least-squares line y = slope * x + intercept (slope None with fewer than two distinct x)."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if n < 2 or sxx == 0:
        return {"slope": None, "intercept": None, "r2": None}
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx
    intercept = mean_y - slope * mean_x
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    ss_res = sum((y - slope * x - intercept) ** 2 for x, y in zip(xs, ys))
    return {"slope": slope, "intercept": intercept, "r2": 1.0 - ss_res / ss_tot if ss_tot else 1.0}


def fits(runs: list[dict]) -> list[dict]:
    """Per step count (or preset): end-to-end time (median and min) and each stage's median vs
    output megapixels."""
    result = []
    groups = list(dict.fromkeys((r.get("preset"), r["steps"]) for r in runs))
    for preset, steps in groups:
        chosen = sorted((r for r in runs if (r.get("preset"), r["steps"]) == (preset, steps)),
                        key=lambda r: r["output_megapixels"])  # fmt: skip
        xs = [r["output_megapixels"] for r in chosen]
        median = linear_fit(xs, [r["stages"]["end_to_end"]["median"] for r in chosen])
        minimum = linear_fit(xs, [r["stages"]["end_to_end"]["min"] for r in chosen])
        per_stage = {}
        for name in chosen[0]["stages"]:
            fit = linear_fit(xs, [r["stages"][name]["median"] for r in chosen])
            per_stage[name] = {"slope_s_per_mp": fit["slope"], "intercept_s": fit["intercept"]}
        result.append({
            "steps": steps,
            "preset": preset,
            "x": "output_megapixels",
            "points": [[x, r["stages"]["end_to_end"]["median"]] for x, r in zip(xs, chosen)],
            "slope_s_per_mp": median["slope"],
            "intercept_s": median["intercept"],
            "r2": median["r2"],
            "min_slope_s_per_mp": minimum["slope"],
            "min_intercept_s": minimum["intercept"],
            "stages": per_stage,
        })  # fmt: skip
    return result


def run_variant(variant: Variant, settings: Settings, latents_path: str | None = None) -> dict:
    """Build the pipeline for ``variant`` and measure every size and step count."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    log(f"building {variant.describe()} on {settings.device}{' (smoke: tiny fixtures)' if settings.smoke else ''}")
    release_memory()
    rss0 = psutil.Process().memory_info().rss
    start = time.perf_counter()
    pipe = build_pipeline(variant, settings)
    build_s = time.perf_counter() - start
    resident = psutil.Process().memory_info().rss - rss0
    log(f"built in {build_s:.1f} s; weights {pipe.weights_bytes / 2**30:.2f} GiB, RSS +{resident / 2**30:.2f} GiB")
    runs, latents = [], {}
    for spec in run_specs(settings):
        with preset_dtype(pipe, spec.preset):
            for lr_size in settings.sizes:
                record, final = measure_size(pipe, variant, settings, lr_size, spec)
                runs.append(record)
                if spec.preset is None:
                    latents[f"{lr_size}_{spec.steps}"] = final
    if latents_path:
        save_file({key: value.contiguous() for key, value in latents.items()}, latents_path)
    return {
        "variant": dataclasses.asdict(variant),
        "description": variant.describe(),
        "network_dtypes": {name: str(next(getattr(pipe, name).parameters()).dtype).removeprefix("torch.")
                           for name in ("unet", "controlnet", "text_encoder", "tagger", "vae")},  # fmt: skip
        "vae_channels_last": pipe.vae.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last),
        "attention_processors": attention_processors(pipe),
        "build_s": build_s,
        "weights_bytes": pipe.weights_bytes,
        "resident_rss_bytes": resident,
        "torch_threads": torch.get_num_threads(),
        "load_average_end": list(os.getloadavg()),
        "runs": runs,
        "fits": fits(runs),
    }


@contextmanager
def preset_dtype(pipe, preset: str | None) -> Iterator[None]:
    """The networks in the preset's dtype while it is measured (``memory`` asks for half precision,
    which is the default dtype on CUDA and on CPUs with native bf16, and float32's half elsewhere)."""
    dtype = preset_settings(preset).torch_dtype(pipe.device) if preset else pipe.dtype
    if dtype == pipe.dtype:
        yield
        return
    previous = pipe.dtype
    pipe.to(pipe.device, dtype)
    try:
        yield
    finally:
        pipe.to(pipe.device, previous)


def run_variant_subprocess(variant: Variant, settings: Settings, workdir: Path) -> dict:
    """``run_variant`` in a fresh interpreter (progress on stderr, result through a file)."""
    spec = {"variant": dataclasses.asdict(variant), "settings": dataclasses.asdict(settings),
            "result": str(workdir / f"{variant.name}.json"), "latents": str(workdir / f"{variant.name}.safetensors")}  # fmt: skip
    subprocess.run([sys.executable, "-m", "seesr.benchmarks.pipeline", "--worker", json.dumps(spec)], check=True)
    return json.loads(Path(spec["result"]).read_text())


# --------------------------------------------------------------------------- comparing


def compare(test: dict, reference: dict) -> list[dict]:
    """Speed-up of ``test`` over ``reference`` per (size, steps): ratios of medians and of minima,
    end to end and per stage (reference time / test time: above 1 means ``test`` is faster)."""
    rows = []
    baseline = {(r["lr_size"], r["steps"]): r for r in reference["runs"]}
    for run in test["runs"]:
        ref = baseline.get((run["lr_size"], run["steps"]))
        if ref is None:
            continue
        ours, theirs = run["stages"]["end_to_end"], ref["stages"]["end_to_end"]
        per_stage = {name: ref["stages"][name]["median"] / run["stages"][name]["median"]
                     for name in run["stages"] if name in ref["stages"] and run["stages"][name]["median"] > 0}  # fmt: skip
        rows.append({
            "lr_size": run["lr_size"],
            "output_size": run["output_size"],
            "steps": run["steps"],
            "reference_median_s": theirs["median"],
            "test_median_s": ours["median"],
            "speedup_median": theirs["median"] / ours["median"],
            "speedup_min": theirs["min"] / ours["min"],
            "reference_peak_bytes": ref["peak_memory"]["peak_bytes"],
            "test_peak_bytes": run["peak_memory"]["peak_bytes"],
            "stage_speedups_median": per_stage,
        })  # fmt: skip
    return rows


def latent_differences(test: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                       tiles: dict[str, tuple[int, int]] | None = None) -> list[dict]:
    """Max / mean absolute difference of the final latents of two paths (same seed and input).
    ``tiles``: (test, reference) latent tile counts per key; with different tilings the difference
    is not only numerical."""
    rows = []
    for key in sorted(set(test) & set(reference), key=lambda k: tuple(int(p) for p in k.split("_"))):
        lr_size, steps = (int(p) for p in key.split("_"))
        diff = (test[key] - reference[key]).abs()
        rows.append({"lr_size": lr_size, "steps": steps, "max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                     "reference_mean_abs": float(reference[key].abs().mean())})  # fmt: skip
        if tiles and key in tiles:
            rows[-1].update(latent_tiles=list(tiles[key]), same_tiling=tiles[key][0] == tiles[key][1])
    return rows


# --------------------------------------------------------------------------- reporting


def _fmt_bytes(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def print_report(record: dict) -> None:
    out = sys.stdout
    m = record["machine"]
    print(f"\n{m['cpu']} ({m['logical_cpus']} CPUs, {m['torch_threads']} torch threads"
          f"{', ' + m['gpu'] if 'gpu' in m else ''}), torch {record['versions']['torch']}, "
          f"load average at start {m['load_average'][0]:.1f}", file=out)  # fmt: skip
    for name, result in record["variants"].items():
        print(f"\n== {result['description']}  (built in {result['build_s']:.0f} s, weights "
              f"{_fmt_bytes(result['weights_bytes'])}; attention {result['attention_processors']['unet']})", file=out)  # fmt: skip
        for run in result["runs"]:
            stages = run["stages"]
            what = f"preset {run['preset']}, " if run.get("preset") else ""
            print(f"  {run['lr_size']}->{run['output_size']} {what}steps {run['steps']}  [{run['plan_description']}; "
                  f"{run['latent_tiles']} latent tile(s)]  peak {_fmt_bytes(run['peak_memory']['peak_bytes'])} "
                  f"(working {_fmt_bytes(run['peak_memory']['working_bytes'])})", file=out)  # fmt: skip
            print("    " + "  ".join(f"{k:>10s}" for k in ("stage", "min s", "median s")), file=out)
            for stage, stats in stages.items():
                print(f"    {stage:>10s}  {stats['min']:10.3f}  {stats['median']:10.3f}", file=out)
        for fit in result["fits"]:
            if fit["slope_s_per_mp"] is not None:
                what = f"preset {fit['preset']}, " if fit.get("preset") else ""
                print(f"  fit ({what}steps {fit['steps']}): end-to-end median = {fit['slope_s_per_mp']:.2f} s/MP x output MP "
                      f"+ {fit['intercept_s']:.2f} s  (r2 {fit['r2']:.3f}; on minima {fit['min_slope_s_per_mp']:.2f} "
                      f"s/MP + {fit['min_intercept_s']:.2f} s)", file=out)  # fmt: skip
    if record.get("comparisons"):
        print("", file=out)
    for comparison in record.get("comparisons", []):
        test, ref = comparison["test"], comparison["reference"]
        for row in comparison["rows"]:
            print(f"speed-up {ref} -> {test}, {row['lr_size']}->{row['output_size']} steps {row['steps']}: "
                  f"{row['reference_median_s']:.2f} s / {row['test_median_s']:.2f} s = x{row['speedup_median']:.2f} "
                  f"(minima x{row['speedup_min']:.2f}); peak {_fmt_bytes(row['reference_peak_bytes'])} -> "
                  f"{_fmt_bytes(row['test_peak_bytes'])}", file=out)  # fmt: skip
    for name, rows in record.get("latent_difference", {}).items():
        for row in rows:
            print(f"final latents {name} vs naive float32, {row['lr_size']}->{row['lr_size'] * SCALE} steps "
                  f"{row['steps']}: max |d| {row['max_abs']:.4f}, mean |d| {row['mean_abs']:.4f} "
                  f"(mean |latent| {row['reference_mean_abs']:.3f})"
                  f"{'' if row.get('same_tiling', True) else ' [different tilings: not only numerics]'}", file=out)  # fmt: skip


# --------------------------------------------------------------------------- candidates


def _timed(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> dict:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    return summarize(samples)


def _predict_inputs(pipe, latent: int, batch: int = 1) -> tuple:
    g = torch.Generator().manual_seed(0)
    device, dtype = pipe.device, pipe.dtype
    latents = torch.randn(batch, 4, latent, latent, generator=g).to(device)
    condition = torch.rand(batch, 3, latent * 8, latent * 8, generator=g).to(device)
    text = torch.randn(1, 77, 1024, generator=g).to(device, dtype)
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
            stats = _timed(lambda: pipe.predict_noise(latents, 999, text, ram, condition, 1.0, 1.0), device, warmup, repeats)
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
        stats = _timed(lambda: pipe.predict_noise(latents, 999, text, ram, condition, 1.0, 1.0), device, warmup, repeats)
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
            dec = _timed(lambda: decoded.__setitem__(dtype, pipe.decode(z)), device, warmup, repeats)
            enc = _timed(lambda: pipe.encode_image(image, torch.Generator().manual_seed(0), "mean"), device, warmup, repeats)
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
    from seesr.tiling import plan_tiles, tiled_apply

    latents, condition, text, ram = _predict_inputs(pipe, latent)
    tiles = plan_tiles(latent, latent, tile, min(DEFAULT_LATENT_OVERLAP, tile // 3))

    def predict(crops: torch.Tensor, crop_tiles) -> torch.Tensor:
        cond = torch.cat([condition[(..., *t.scaled(8).slices())] for t in crop_tiles])
        return pipe.predict_noise(crops, 999, text, ram, cond, 1.0, 1.0)

    rows = []
    for batch in batches:
        stats = _timed(lambda: tiled_apply(predict, latents, tiles, batch_size=batch), device, warmup, repeats)
        rows.append({"what": "denoise step, tiled", "latent": latent, "tile": tile, "tiles": len(tiles),
                     "tile_batch_size": batch, "dtype": str(pipe.dtype)[6:], **stats})  # fmt: skip
        log(f"step at {latent}^2 latent, {len(tiles)} tiles of {tile}, batch {batch}: median {stats['median']:.2f} s")
    stats = _timed(lambda: predict(latents, plan_tiles(latent, latent, latent, 0)), device, warmup, repeats)
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
    from seesr.benchmarks.fullsize import SD_TURBO_UNET_CONFIG, randomized
    from seesr.models.controlnet import SeesrControlNetModel
    from seesr.models.unet import SeesrUNet2DConditionModel

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
    call = lambda: pipe.predict_noise(latents, 999, text, ram, condition, 1.0, 1.0)  # noqa: E731
    eager = _timed(call, device, 1, repeats)
    log(f"eager {latent}^2 {pipe.dtype}: median {eager['median']:.2f} s")
    pipe.unet.compile()
    pipe.controlnet.compile()
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    log(f"compiled: first call (compile + run) {first:.1f} s")
    compiled = _timed(call, device, 1, repeats)
    log(f"compiled {latent}^2: median {compiled['median']:.2f} s")
    return [{"what": "torch.compile controlnet+unet", "latent": latent, "dtype": str(pipe.dtype)[6:],
             "eager": eager, "first_call_s": first, "compiled": compiled,
             "speedup_median": eager["median"] / compiled["median"]}]  # fmt: skip


CANDIDATES = ("quality", "precision", "sdpa", "unet", "threads", "vae", "tile_batch", "compile")
"""In the order they run: ``quality`` first (the others round the float32 weights through bf16),
``compile`` last (it changes the modules)."""


def run_candidates(names: Sequence[str], settings: Settings, latent: int = 64) -> dict:
    """Measure the named candidates in this process (full-size networks without the tagger)."""
    from seesr.benchmarks.fullsize import build_full_size_pipeline

    device = torch.device(settings.device)
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
def _run_candidate(name: str, pipe, device: torch.device, settings: Settings, latent: int) -> list[dict] | dict:
    w, r = settings.warmup, settings.repeats
    fast = getattr(torch, default_dtype(settings.device))
    if name == "sdpa":
        return {**attention_processors(pipe),
                "note": "AttnProcessor2_0 calls torch.nn.functional.scaled_dot_product_attention"}  # fmt: skip
    if name == "quality":
        return candidate_quality(pipe, latent * 8 // SCALE, 2)
    if name == "precision":
        return candidate_precision(pipe, device, latent)
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


# --------------------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", help="LR sizes (x4 output); default 128 256 (CPU), "
                        "128 256 512 1024 (CUDA), 16 32 (smoke)")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="networks' dtype on the default path")
    parser.add_argument("--vae-dtype", choices=["float32", "bfloat16", "float16"], help="VAE dtype on the default path")
    parser.add_argument("--channels-last", choices=["none", "vae", "all"], default="none",
                        help="channels_last weights on the default path")
    parser.add_argument("--compile", action="store_true", help="torch.compile ControlNet + UNet on the default path")
    parser.add_argument("--tile-batch-size", type=int, help="override the planner's tile batch on the default path")
    parser.add_argument("--steps", type=int, nargs="+", default=[2])
    parser.add_argument("--presets", nargs="+", choices=["speed", "balanced", "quality", "memory"],
                        help="measure these presets (steps, tiles, KDS, offload, dtype) instead of --steps")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="write the record here")
    parser.add_argument("--naive", action="store_true", help="also run the naive path and print the speed-up")
    parser.add_argument("--tuned", action="store_true", help="also run the tuned path: on a CPU with bfloat16 "
                        "networks, the VAE in bfloat16 and channels_last too (the proposed CPU default)")
    parser.add_argument("--only", nargs="+", choices=["default", "naive", "tuned"], help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="tiny fixture models at tiny sizes, in-process (CI)")
    parser.add_argument("--in-process", action="store_true", help="run the paths in this process, one after the other")
    parser.add_argument("--candidates", nargs="+", metavar="NAME", help=f"measure candidate speed-ups: {' '.join(CANDIDATES)}")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; returns the record (also written to ``--json``). Restores torch's thread count."""
    threads = torch.get_num_threads()
    try:
        return _main(parse_args(argv))
    finally:
        torch.set_num_threads(threads)


def _main(args: argparse.Namespace) -> dict:
    if args.worker:
        spec = json.loads(args.worker)
        result = run_variant(Variant(**spec["variant"]), Settings(**spec["settings"]), spec["latents"])
        Path(spec["result"]).write_text(json.dumps(result))
        return result

    settings = Settings(
        sizes=args.sizes or default_sizes(args.device, args.smoke),
        steps=args.steps,
        device=args.device,
        repeats=args.repeats,
        warmup=args.warmup,
        seed=args.seed,
        smoke=args.smoke,
        threads=args.threads,
        presets=args.presets,
    )
    if settings.repeats < 1 or settings.warmup < 0:
        raise SystemExit("--repeats must be >= 1 and --warmup >= 0")
    if args.presets and (args.naive or args.tuned or args.only):
        raise SystemExit("--presets measures the default path only: leave out --naive / --tuned")
    if settings.smoke and not settings.threads:
        settings.threads = 1  # tiny ops: a second OpenMP thread only adds waiting (badly so on a loaded CPU)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    record: dict = {"benchmark": "seesr.benchmarks.pipeline", "machine": machine_info(settings.device),
                    "versions": versions(), "settings": dataclasses.asdict(settings)}  # fmt: skip

    if args.candidates:
        record["candidates"] = run_candidates(args.candidates, settings)
        record["machine"]["load_average_end"] = list(os.getloadavg())
        _write(record, args.json)
        print(json.dumps(record["candidates"], indent=1))
        return record

    dtype = args.dtype or default_dtype(settings.device)
    default = Variant("default", dtype, "planner", args.vae_dtype, args.channels_last, args.compile, args.tile_batch_size)
    candidates = {
        "default": default,
        "naive": Variant("naive", "float32", "naive"),
        "tuned": tuned_variant(default, settings.device),
    }
    names = args.only or ["default"] + ["naive"] * args.naive + ["tuned"] * args.tuned
    variants = [candidates[name] for name in names]
    record["variants"] = {}
    latents = {}
    in_process = args.in_process or settings.smoke
    with tempfile.TemporaryDirectory(prefix="seesr-bench-") as tmp:
        for variant in variants:
            if in_process:
                path = str(Path(tmp) / f"{variant.name}.safetensors")
                record["variants"][variant.name] = run_variant(variant, settings, path)
                release_memory()
            else:
                record["variants"][variant.name] = run_variant_subprocess(variant, settings, Path(tmp))
            latents[variant.name] = load_file(Path(tmp) / f"{variant.name}.safetensors")
    pairs = [("naive", "default"), ("naive", "tuned"), ("default", "tuned")]
    record["comparisons"] = [
        {"reference": ref, "test": test, "rows": compare(record["variants"][test], record["variants"][ref])}
        for ref, test in pairs if ref in latents and test in latents
    ]  # fmt: skip
    record["latent_difference"] = {}
    for name in sorted(latents.keys() - {"naive"}) if "naive" in latents else ():
        runs = {(r["lr_size"], r["steps"]): r["latent_tiles"] for r in record["variants"]["naive"]["runs"]}
        tiles = {f"{r['lr_size']}_{r['steps']}": (r["latent_tiles"], runs[(r["lr_size"], r["steps"])])
                 for r in record["variants"][name]["runs"] if (r["lr_size"], r["steps"]) in runs}  # fmt: skip
        record["latent_difference"][name] = latent_differences(latents[name], latents["naive"], tiles)
    record["machine"]["load_average_end"] = list(os.getloadavg())
    _write(record, args.json)
    print_report(record)
    return record


def _write(record: dict, path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))
        log(f"wrote {path}")


if __name__ == "__main__":
    main()
