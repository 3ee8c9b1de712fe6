"""Training throughput and peak memory of `seesr train` at full size (random weights).

    python -m benchmarks.training [--steps 3] [--crop 256] [--json out.json]   # this CPU
    python -m benchmarks.training --device cuda --steps 20 --json train_gpu.json  # a GPU

Batch 1 of 256 px HR crops (the LR is the same crop, so the data pipeline is not measured: this is
the training step itself), float32 vs bf16 autocast, with and without gradient checkpointing. One
step = VAE encode, text encoder, RAM embeddings, ControlNet + UNet forward and backward, gradient
clipping and AdamW, exactly as :func:`seesr.training.loop.training_loss` and the loop run them.
Each variant runs in a fresh subprocess so one variant's allocator cache does not hide another's
peak. ``--weights DIR`` measures the networks of a weights folder instead, every variant in-process
(CI: the tiny fixtures).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import machine_info, machine_line, versions

VARIANTS = [("float32", False), ("float32", True), ("bfloat16", False), ("bfloat16", True)]


def build_models(weights: str | None):
    """Full-size networks with random weights (or those of the ``weights`` folder), frozen/trainable as in training."""
    from diffusers import DDPMScheduler

    from seesr.training.loop import TrainingModels

    if weights:
        from seesr.weights import WeightPaths

        models = TrainingModels.load(WeightPaths.from_dir(weights))
    else:
        from benchmarks.fullsize import build_full_size_pipeline

        pipe = build_full_size_pipeline("cpu", torch.float32)
        scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
        models = TrainingModels(pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.unet, pipe.controlnet, pipe.tagger,
                                scheduler, pipe.schedule)
    return models


def measure(device: str, dtype_name: str, checkpointing: bool, crop: int, steps: int, weights: str | None = None) -> dict:
    """Images per second over ``steps`` timed steps (after one warm-up step) and the peak memory;
    progress on stderr (networks built, each step's time)."""
    from seesr.runtime.memory import PeakMemory
    from seesr.training.data import ram_input
    from seesr.training.loop import training_loss

    dtype = getattr(torch, dtype_name)
    target = torch.device(device)
    started = time.perf_counter()
    with PeakMemory(target) as peak:
        models = build_models(weights)
        say(f"  networks built ({time.perf_counter() - started:.0f} s)")
        params = models.set_trainable()
        if checkpointing:
            models.unet.enable_gradient_checkpointing()
            models.controlnet.enable_gradient_checkpointing()
        for model in (models.unet, models.controlnet):
            model.to(target)
        for model in (models.vae, models.text_encoder, models.tagger):
            torch.nn.Module.to(model, device=target, dtype=dtype)
        optimizer = torch.optim.AdamW(params, lr=1e-5)
        hr = torch.rand(3, crop, crop)
        batch = {"hr": hr[None], "condition": hr[None], "ram": ram_input(hr)[None], "prompt": ["a photo,"],
                 "index": torch.tensor([0])}
        times = []
        for step in range(steps + 1):
            start = time.perf_counter()
            with torch.autocast(target.type, dtype=dtype, enabled=dtype != torch.float32):
                loss = training_loss(models, batch, seed=step, weight_dtype=dtype)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if target.type == "cuda":
                torch.cuda.synchronize(target)
            times.append(time.perf_counter() - start)
            say(f"  {'warm-up step' if step == 0 else f'step {step}/{steps}'}: {times[-1]:.2f} s")
    timed = times[1:]
    return {
        "device": device,
        "dtype": dtype_name,
        "gradient_checkpointing": checkpointing,
        "crop": crop,
        "batch_size": 1,
        "steps": steps,
        "images_per_s": len(timed) / sum(timed),
        "seconds_per_step": sum(timed) / len(timed),
        "peak_memory_gib": peak.total / 2**30,
        "trainable_params": sum(p.numel() for p in params),
        "loss": loss.item(),
    }


def say(line: str) -> None:
    """A progress line on stderr (the results go to stdout)."""
    print(line, file=sys.stderr, flush=True)


def table(rows: list[dict]) -> str:
    lines = ["| dtype | grad. checkpointing | images/s | s/step | peak memory (GiB) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dtype']} | {'on' if r['gradient_checkpointing'] else 'off'} | {r['images_per_s']:.3f} | "
                     f"{r['seconds_per_step']:.2f} | {r['peak_memory_gib']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.split("\n")[0],
                                     epilog="GPU: python -m benchmarks.training --device cuda --steps 20 "
                                     "--json train_gpu.json")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--crop", type=int, default=256, help="HR crop size (default 256)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant after one warm-up")
    parser.add_argument("--json", type=Path, help="write the record (machine, versions, settings, rows) here")
    parser.add_argument("--weights", help="a weights folder to measure in-process instead of full-size networks (CI: tiny)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # one variant in this process (set by the parent)
    args = parser.parse_args(argv)
    if args.variant:
        dtype_name, checkpointing = args.variant.split(":")
        print(json.dumps(measure(args.device, dtype_name, checkpointing == "1", args.crop, args.steps)))
        return 0
    rows = []
    for number, (dtype_name, checkpointing) in enumerate(VARIANTS, start=1):
        say(f"[{number}/{len(VARIANTS)}] {dtype_name}, gradient checkpointing {'on' if checkpointing else 'off'}")
        if args.weights:
            rows.append(measure(args.device, dtype_name, checkpointing, args.crop, args.steps, args.weights))
        else:  # the variant's progress lines pass through on stderr
            command = [sys.executable, "-m", "benchmarks.training", "--device", args.device, "--crop", str(args.crop),
                       "--steps", str(args.steps), "--variant", f"{dtype_name}:{int(checkpointing)}"]
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
            if done.returncode != 0:
                say(f"{dtype_name} checkpointing={checkpointing}: failed (exit code {done.returncode}; its error is above)")
                return 1
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        say(f"  {rows[-1]['seconds_per_step']:.2f} s/step, peak {rows[-1]['peak_memory_gib']:.2f} GiB")
    machine = machine_info(args.device)
    print(machine_line(machine))
    print(table(rows))
    if args.json:
        record = {"benchmark": "benchmarks.training", "machine": machine, "versions": versions(),
                  "settings": {"device": args.device, "crop": args.crop, "steps": args.steps, "weights": args.weights},
                  "rows": rows}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
