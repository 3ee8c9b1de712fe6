"""Speed of the whole SeeSR-Turbo pipeline at full size: per stage, end to end, peak memory.

    python -m benchmarks.pipeline [--sizes 128 256] [--device cpu|cuda]
        [--dtype float32|bfloat16|float16] [--steps 1 2 4] [--repeats N] [--warmup N]
        [--json out.json] [--naive] [--threads N] [--against-official REF] [--attention auto|sdpa]
    python -m benchmarks.pipeline --presets speed balanced quality memory [--sizes ...]
    python -m benchmarks.pipeline --smoke --weights DIR     # tiny weights, seconds (CI)

The networks are built at their real sizes with random weights (``benchmarks.fullsize``:
speed and memory do not depend on weight values; nothing is downloaded). For every LR size
(x4 output) and step count it times each stage of ``SeesrPipeline.__call__`` (tagging, text
encoding, VAE encode, every denoising step, decode, colour fix, and ``other``: bicubic upscale,
noising, final resize) and the whole call, after warm-up runs, over repeats (min and median),
with the peak memory of the call (CPU: sampled process RSS above the RSS before the call, and
that plus the RSS before it; CUDA: ``max_memory_allocated``) and the process's peak RSS, build
included. End-to-end time (and each stage's) is fitted linearly against output megapixels.

Paths, measured in the same run:

* ``default``: the library's defaults: the networks in ``--dtype`` (float16 on CUDA, bfloat16 on
  a CPU with native bf16, else float32; the VAE as ``SeesrPipeline.to`` puts it) and the
  planner's plan (tiles, tile batch) for the size and free memory;
* ``naive`` (``--naive``): our float32 parity path: float32 everywhere, the official defaults
  (latent tile 96, overlap 32, one tile at a time), the VAE untiled where its working memory fits.

``--against-official REF`` also times the official pipeline (float32, its own environment in
``REF``; see ``benchmarks.official``) at the first size and step count, before ours, and
prints our time and peak RSS as fractions of its, against the targets (default path <= 0.33x the
time and <= 0.5x the peak RSS; the float32 parity path no slower). It implies ``--naive``.

``--presets`` measures the default path once per preset instead of per ``--steps`` (the preset's
steps, fixed tiles, KDS particles, offload and dtype; the planner for the rest, as the API runs
it). Each path runs in its own subprocess (so two sets of weights are never resident together).
On a shared CPU, use ``--threads 1`` (or ``OMP_WAIT_POLICY=PASSIVE``): OpenMP threads spin-wait
for each other. Records carry the machine (CPU model and flags): ``python -m
benchmarks.report`` prints them and compares two only when they come from one machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import psutil
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from benchmarks.common import (
    SCALE,
    attention_processors,
    log,
    machine_info,
    process_peak_rss_bytes,
    random_image,
    release_memory,
    summarize,
    synchronize,
    versions,
)
from benchmarks.report import compare, fits, latent_differences, official_ratios, print_report
from seesr.engines.seesr.engine import kds_config
from seesr.runtime.devices import default_dtype, dtype_name
from seesr.runtime.memory import PeakMemory, free_memory_bytes
from seesr.settings.declare import ATTENTIONS
from seesr.engines.seesr.planner import (
    DEFAULT_LATENT_OVERLAP,
    MEMORY_HEADROOM,
    RunPlan,
    decode_bytes,
    encode_bytes,
)

CPU_SIZES = (128, 256)
CUDA_SIZES = (128, 256, 512, 1024)
SMOKE_SIZES = (16, 32)
OFFICIAL_LATENT_TILE = 96
"""Official turbo-script defaults: latent tile 96 with overlap 32, VAE encoder 1024 px, decoder 224."""
OFFICIAL_VAE_ENCODER_TILE = 1024
OFFICIAL_VAE_DECODER_TILE = 224


# --------------------------------------------------------------------------- what is measured


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
    attention: str = "auto"
    """The ``attention`` setting (:meth:`SeesrPipeline.use_attention`)."""

    def describe(self) -> str:
        extras = [f"VAE {self.vae_dtype}" if self.vae_dtype else "VAE library default"]
        extras += [f"channels_last {self.channels_last}"] * (self.channels_last != "none")
        extras += [f"attention {self.attention}"] * (self.attention != "auto")
        extras += ["torch.compile"] * self.compile
        if self.tile_batch_size:
            extras.append(f"tile batch {self.tile_batch_size}")
        return f"{self.name}: {self.dtype}, {self.plan} plan, " + ", ".join(extras)


@dataclass
class HarnessSettings:
    sizes: list[int]
    steps: list[int]
    device: str = "cpu"
    repeats: int = 2
    warmup: int = 1
    seed: int = 0
    threads: int | None = None
    presets: list[str] | None = None
    """Measure these presets (their steps, tiles, KDS, offload) instead of ``steps``."""
    smoke: bool = False
    """Tiny models at tiny sizes: the naive path's latent tile scaled down so that it still tiles."""
    weights: str | None = None
    """A weights folder (standard layout) to load instead of building full-size random networks
    (``--smoke``: the tiny fixtures, laid out by the caller)."""


@dataclass(frozen=True)
class RunSpec:
    """One measured configuration: a step count, or a preset (which also fixes tiles, KDS, offload)."""

    steps: int
    preset: str | None = None

    @property
    def label(self) -> str:
        return f"preset {self.preset} ({self.steps} steps)" if self.preset else f"steps {self.steps}"


def run_specs(settings: HarnessSettings) -> list[RunSpec]:
    if settings.presets:
        return [RunSpec(preset_settings(p).steps, p) for p in settings.presets]
    return [RunSpec(steps) for steps in settings.steps]


def default_sizes(device: str, smoke: bool) -> list[int]:
    if smoke:
        return list(SMOKE_SIZES)
    return list(CUDA_SIZES if device.startswith("cuda") else CPU_SIZES)


def preset_settings(name: str):
    """The library's settings for preset ``name`` (nothing from the environment)."""
    from seesr.settings.resolve import resolve_settings

    return resolve_settings({"preset": name}, environ={})


# --------------------------------------------------------------------------- building


def build_pipeline(variant: Variant, settings: HarnessSettings):
    """The pipeline for ``variant``: full size with random weights, or the weights in ``settings.weights``."""
    from seesr.engines.seesr.pipeline import SeesrPipeline

    device = torch.device(settings.device)
    dtype = getattr(torch, variant.dtype)
    if settings.weights:
        from seesr.weights import WeightPaths

        pipe = SeesrPipeline.from_pretrained(WeightPaths.from_dir(settings.weights), device=device, torch_dtype=dtype)
    else:
        from benchmarks.fullsize import build_full_size_pipeline

        pipe = build_full_size_pipeline(device, dtype)
    apply_options(pipe, variant)
    return pipe


def apply_options(pipe, variant: Variant) -> None:
    """VAE dtype, memory format, attention and compilation of a built pipeline (nothing: the
    library's choices). Giving ``vae_dtype`` also sets the VAE's memory format: channels_last only
    when asked for."""
    pipe.use_attention(variant.attention)
    if variant.vae_dtype:
        torch.nn.Module.to(pipe.vae, getattr(torch, variant.vae_dtype))  # diffusers .to warns spuriously
    if variant.channels_last == "all":
        for model in (pipe.unet, pipe.controlnet):
            model.to(memory_format=torch.channels_last)
    if variant.vae_dtype or variant.channels_last != "none":
        vae_cl = variant.channels_last in ("vae", "all")
        pipe.vae.to(memory_format=torch.channels_last if vae_cl else torch.contiguous_format)
    if variant.compile:
        pipe.compile()


def naive_plan(work_w: int, work_h: int, device: torch.device, *, smoke: bool = False) -> RunPlan:
    """Official defaults: latent tile 96 / overlap 32, one tile at a time; the VAE untiled when its
    estimated working memory (float32) fits in the free memory, else the official VAE tiles.
    Smoke runs (tiny sizes) scale the latent tile down to 8 / 4 so the tiled path is exercised."""
    latent_tile, overlap = (8, 4) if smoke else (OFFICIAL_LATENT_TILE, DEFAULT_LATENT_OVERLAP)
    budget = free_memory_bytes(device) * MEMORY_HEADROOM
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


def plan_for(variant: Variant, pipe, work_w: int, work_h: int, settings: HarnessSettings, preset: str | None = None) -> RunPlan | None:
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
    """A stage hook (``SeesrPipeline.stage_hook``) with the step callback: the start of the
    ``denoise`` stage and the end of every step, hence each step's time (step 1 from the stage
    hook's entry, so it also counts the stage's setup: the steps may sum a little above the
    stage's own time); on the CPU also each stage's peak RSS (which stage sets the call's peak)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.denoise_start: float | None = None
        self.step_ends: list[float] = []
        self.stage_peak_bytes: dict[str, int] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        # CUDA peak statistics are global: only the call's own PeakMemory reads them
        with PeakMemory(self.device) if self.device.type == "cpu" else nullcontext() as peak:
            if stage == "denoise":
                self.denoise_start = time.perf_counter()
            yield
        if peak is not None:
            self.stage_peak_bytes[stage] = max(self.stage_peak_bytes.get(stage, 0), peak.base + peak.peak)

    def callback(self, i: int, t: int, latents: torch.Tensor) -> None:
        synchronize(self.device)
        self.step_ends.append(time.perf_counter())

    def step_times(self) -> list[float]:
        if self.denoise_start is None:
            return []
        starts = [self.denoise_start] + self.step_ends[:-1]
        return [end - start for start, end in zip(starts, self.step_ends)]


@contextmanager
def stage_hook(pipe, hook) -> Iterator[None]:
    """``hook`` as the pipeline's stage hook for a block of work."""
    previous, pipe.stage_hook = pipe.stage_hook, hook
    try:
        yield
    finally:
        pipe.stage_hook = previous


def one_run(pipe, image: Image.Image, steps: int, plan: RunPlan | None, seed: int, kds=None) -> dict:
    """One timed, memory-sampled call of the pipeline."""
    device = pipe.device
    clock = StageClock(device)
    release_memory()
    rss_before = psutil.Process().memory_info().rss
    load = os.getloadavg()[0]
    synchronize(device)
    with stage_hook(pipe, clock), PeakMemory(device) as peak:
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
    memory["stage_peak_bytes"] = clock.stage_peak_bytes
    return {"times": times, "cpu_s": cpu, "memory": memory, "load_average_1m": load, "output": output}


def stage_names(steps: int) -> list[str]:
    """Timed stages: the pipeline's, ``step_i`` (1-based) inside ``denoise``, ``other`` (what the
    pipeline's stages do not cover: bicubic upscale, noising, final resize) and ``end_to_end``."""
    names = ["tag", "text", "encode"] + [f"step_{i}" for i in range(1, steps + 1)]
    return names + ["denoise", "decode", "colorfix", "other", "end_to_end"]


def measure_size(pipe, variant: Variant, settings: HarnessSettings, lr_size: int, spec: RunSpec) -> tuple[dict, torch.Tensor]:
    """Warm-up runs, then ``repeats`` timed runs of one LR size: per-stage stats, memory, plan."""
    image = random_image(lr_size, settings.seed)
    work = lr_size * SCALE
    steps = spec.steps
    plan = plan_for(variant, pipe, work, work, settings, spec.preset)
    kds = kds_config(preset_settings(spec.preset)) if spec.preset else None
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
            "stage_peak_bytes": {name: max(r["memory"]["stage_peak_bytes"].get(name, 0) for r in warmups + runs)
                                 for name in runs[0]["memory"]["stage_peak_bytes"]},  # fmt: skip
        },
        "load_average_1m": [r["load_average_1m"] for r in warmups + runs],
    }
    return record, output.latents.detach().float().cpu()


def _tile_count(plan: RunPlan, work: int) -> int:
    from seesr.imaging.tiling import plan_tiles

    latent = work // 8
    overlap = min(plan.latent_overlap, max(0, min(plan.latent_tile, latent) - 1))
    return len(plan_tiles(latent, latent, plan.latent_tile, overlap))


def run_variant(variant: Variant, settings: HarnessSettings, latents_path: str | None = None) -> dict:
    """Build the pipeline for ``variant`` and measure every size and step count."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    log(f"building {variant.describe()} on {settings.device}{f' from {settings.weights}' if settings.weights else ''}")
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
        "network_dtypes": {name: dtype_name(next(getattr(pipe, name).parameters()).dtype)
                           for name in ("unet", "controlnet", "text_encoder", "tagger", "vae")},  # fmt: skip
        "vae_channels_last": pipe.vae.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last),
        "attention_processors": attention_processors(pipe),
        "build_s": build_s,
        "weights_bytes": pipe.weights_bytes,
        "resident_rss_bytes": resident,
        "process_peak_rss_bytes": process_peak_rss_bytes(),
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


def run_variant_subprocess(variant: Variant, settings: HarnessSettings, workdir: Path) -> dict:
    """``run_variant`` in a fresh interpreter (progress on stderr, result through a file), so that
    its peak RSS is its own."""
    spec = {"variant": dataclasses.asdict(variant), "settings": dataclasses.asdict(settings),
            "result": str(workdir / f"{variant.name}.json"), "latents": str(workdir / f"{variant.name}.safetensors")}  # fmt: skip
    subprocess.run([sys.executable, "-m", "benchmarks.pipeline", "--worker", json.dumps(spec)], check=True)
    return json.loads(Path(spec["result"]).read_text())


# --------------------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--sizes", type=int, nargs="+", help="LR sizes (x4 output); default 128 256 (CPU), "
                        "128 256 512 1024 (CUDA), 16 32 (smoke)")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="networks' dtype on the default path")
    parser.add_argument("--vae-dtype", choices=["float32", "bfloat16", "float16"], help="VAE dtype on the default path")
    parser.add_argument("--channels-last", choices=["none", "vae", "all"], default="none",
                        help="channels_last weights on the default path")
    parser.add_argument("--compile", action="store_true", help="torch.compile ControlNet + UNet on the default path")
    parser.add_argument("--tile-batch-size", type=int, help="override the planner's tile batch on the default path")
    parser.add_argument("--attention", choices=ATTENTIONS, default="auto",
                        help="attention of the default path (sdpa: torch's everywhere; auto: the library's rule)")
    parser.add_argument("--steps", type=int, nargs="+", default=[2])
    parser.add_argument("--presets", nargs="+", choices=["speed", "balanced", "quality", "memory"],
                        help="measure these presets (steps, tiles, KDS, offload, dtype) instead of --steps")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="write the record here")
    parser.add_argument("--naive", action="store_true", help="also run the float32 parity path and print the speed-up")
    parser.add_argument("--against-official", type=Path, metavar="REF",
                        help="also time the official pipeline in REF (venv/ and src/) and print our ratios to it")
    parser.add_argument("--official-tool", type=Path, help="the official harness (default $SEESR_SHARED/tools/official_speed.py)")
    parser.add_argument("--weights", type=Path, help="a weights folder to measure instead of full-size random networks")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, in-process, with --weights (the tiny fixtures): CI")
    parser.add_argument("--in-process", action="store_true", help="run the paths in this process, one after the other")
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
        result = run_variant(Variant(**spec["variant"]), HarnessSettings(**spec["settings"]), spec["latents"])
        Path(spec["result"]).write_text(json.dumps(result))
        return result

    if args.smoke and args.weights is None:
        raise SystemExit("--smoke needs --weights DIR: a weights folder holding small models (the tiny test fixtures)")
    settings = HarnessSettings(
        sizes=args.sizes or default_sizes(args.device, args.smoke),
        steps=args.steps,
        device=args.device,
        repeats=args.repeats,
        warmup=args.warmup,
        seed=args.seed,
        threads=args.threads or (1 if args.smoke else None),  # tiny ops: a second thread only waits
        presets=args.presets,
        smoke=args.smoke,
        weights=str(args.weights) if args.weights else None,
    )
    if settings.repeats < 1 or settings.warmup < 0:
        raise SystemExit("--repeats must be >= 1 and --warmup >= 0")
    if args.presets and (args.naive or args.against_official):
        raise SystemExit("--presets measures the default path only: leave out --naive / --against-official")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    record: dict = {"benchmark": "benchmarks.pipeline", "machine": machine_info(settings.device),
                    "versions": versions(), "settings": dataclasses.asdict(settings)}  # fmt: skip
    if args.against_official:
        from benchmarks.official import run_official

        record["official"] = run_official(args.against_official, settings.sizes[0], settings.steps[0], settings.repeats,
                                          torch.get_num_threads(), args.official_tool)  # fmt: skip

    dtype = args.dtype or dtype_name(default_dtype(settings.device))
    variants = [Variant("default", dtype, "planner", args.vae_dtype, args.channels_last, args.compile, args.tile_batch_size,
                        args.attention)]  # fmt: skip
    if args.naive or args.against_official:
        variants.append(Variant("naive", "float32", "naive"))
    record["variants"] = {}
    latents = {}
    with tempfile.TemporaryDirectory(prefix="seesr-bench-") as tmp:
        for variant in variants:
            if args.in_process or args.smoke:
                path = str(Path(tmp) / f"{variant.name}.safetensors")
                record["variants"][variant.name] = run_variant(variant, settings, path)
                release_memory()
            else:
                record["variants"][variant.name] = run_variant_subprocess(variant, settings, Path(tmp))
            latents[variant.name] = load_file(Path(tmp) / f"{variant.name}.safetensors")
    record["comparisons"] = []
    record["latent_difference"] = {}
    if "naive" in latents:
        record["comparisons"].append({"reference": "naive", "test": "default",
                                      "rows": compare(record["variants"]["default"], record["variants"]["naive"])})  # fmt: skip
        runs = {(r["lr_size"], r["steps"]): r["latent_tiles"] for r in record["variants"]["naive"]["runs"]}
        tiles = {f"{r['lr_size']}_{r['steps']}": (r["latent_tiles"], runs[(r["lr_size"], r["steps"])])
                 for r in record["variants"]["default"]["runs"] if (r["lr_size"], r["steps"]) in runs}  # fmt: skip
        record["latent_difference"]["default"] = latent_differences(latents["default"], latents["naive"], tiles)
    if "official" in record:
        record["official_ratios"] = official_ratios(record)
    record["machine"]["load_average_end"] = list(os.getloadavg())
    write_record(record, args.json)
    print_report(record)
    return record


def write_record(record: dict, path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))
        log(f"wrote {path}")


if __name__ == "__main__":
    main()
