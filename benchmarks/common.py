"""What every benchmark program shares: the machine record, versions, timing and memory helpers.

A record's ``machine`` (CPU model, its vector/matrix flags, threads, memory, load, GPU) travels with
its numbers: :func:`same_machine` says whether two records may be compared.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import psutil
import torch
from PIL import Image

from seesr.runtime.memory import trim_host_heap

REPO_ROOT = Path(__file__).resolve().parents[1]
SCALE = 4
"""Every benchmark upscales x4 (the official turbo script's default)."""
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")
"""CPU flags that change which kernels run (and so the numbers)."""


def cpu_description() -> tuple[str, list[str]]:
    """(CPU model name, the :data:`SPEED_FLAGS` it has) from ``/proc/cpuinfo`` (else ``platform``)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return model, [flag for flag in SPEED_FLAGS if flag in flags]


def machine_info(device: str) -> dict:
    """What the numbers were measured on (CPU model and flags, threads, memory, load, GPU)."""
    model, flags = cpu_description()
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": model,
        "cpu_flags": flags,
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


def machine_line(machine: dict) -> str:
    """One printed line naming the machine of a record (model, flags, CPUs, threads, GPU)."""
    flags = " ".join(machine.get("cpu_flags", [])) or "no avx2"
    gpu = f", {machine['gpu']}" if "gpu" in machine else ""
    return (f"{machine['cpu']} [{flags}] ({machine['logical_cpus']} CPUs, {machine['torch_threads']} torch threads{gpu}), "
            f"load average at start {machine['load_average'][0]:.1f}")  # fmt: skip


def same_machine(a: dict, b: dict) -> bool:
    """Whether two records' machines may be compared: same CPU model and flags, same GPU."""
    keys = ("cpu", "cpu_flags", "gpu")
    return all(a.get(key) == b.get(key) for key in keys)


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
    """Progress on stderr (stdout carries the report)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so RSS baselines mean something."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    trim_host_heap()


def process_peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux ``ru_maxrss``, KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def summarize(samples: Sequence[float]) -> dict:
    return {"min": min(samples), "median": statistics.median(samples), "mean": statistics.fmean(samples),
            "max": max(samples), "samples": list(samples)}  # fmt: skip


def timed(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> dict:
    """``warmup`` untimed calls, then the :func:`summarize` of ``repeats`` timed ones."""
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


def timed_alternating(fns: dict[str, Callable[[], object]], device: torch.device, warmup: int,
                      repeats: int) -> dict[str, dict]:  # fmt: skip
    """Each of ``fns`` timed ``repeats`` times in alternation (A B, then B A, ...) after ``warmup``
    calls of each, so that a shared machine's changing load falls on all of them alike: the
    :func:`summarize` of each, with the 1-minute load average of each round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    loads = []
    for round_ in range(repeats):
        for name in list(fns) if round_ % 2 == 0 else list(fns)[::-1]:
            synchronize(device)
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
        loads.append(os.getloadavg()[0])
    return {name: {**summarize(times), "load_average_1m": loads} for name, times in samples.items()}


def random_image(size: int, seed: int) -> Image.Image:
    """A deterministic RGB test image: smooth colour fields plus noise (speed does not depend on it)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, size // 16), max(2, size // 16), generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    pixels = (smooth[0] + 0.1 * torch.randn(3, size, size, generator=generator)).clamp(0, 1)
    return Image.fromarray((pixels.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy(), "RGB")


def attention_processors(pipe) -> dict[str, list[str]]:
    """Attention processor classes in use per network (diffusers' default is SDPA: AttnProcessor2_0)."""
    return {
        name: sorted({type(p).__name__ for p in getattr(pipe, name).attn_processors.values()})
        for name in ("unet", "controlnet", "vae")
    }


def fmt_bytes(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"
