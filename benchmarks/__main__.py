"""``python -m benchmarks NAME [args]``: run one of the benchmarks (``--help`` lists them)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "pipeline": "speed of the whole pipeline at full size: per stage, end to end, peak memory, naive vs default, "
    "against the official pipeline",
    "roofline": "the fastest this machine allows: each stage's FLOPs at its dtype's matrix-multiply peak, "
    "against a pipeline record",
    "report": "print a pipeline record; compare two records of one machine",
    "candidates": "candidate speed-ups one by one (bf16, channels_last, threads, compile, ...) and the operator profile",
    "gpu": "everything to measure on a CUDA GPU in one run (half-precision parity, presets, Real-ESRGAN fp16)",
    "memory": "working memory of each stage at full size; the planner's estimates against measured peaks",
    "training": "training throughput and peak memory of `seesr train` (fp32/bf16, gradient checkpointing)",
    "realesrgan": "Real-ESRGAN models, our PyTorch engine against the ncnn runtime (quality, colour fix, tiles, strips)",
    "ui": "what the web page adds to an upscale: click to result in Chromium against Upscaler.upscale",
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHMARKS:
        print("usage: python -m benchmarks NAME [args]   (NAME --help for its options)\n")
        for name, what in BENCHMARKS.items():
            print(f"  {name:11s} {what}")
        raise SystemExit(0 if not argv or argv[0] in ("-h", "--help") else 2)
    module = importlib.import_module(f"benchmarks.{argv[0]}")
    sys.argv = [f"python -m benchmarks.{argv[0]}", *argv[1:]]
    result = module.main()
    if isinstance(result, int):
        raise SystemExit(result)


if __name__ == "__main__":
    main()
