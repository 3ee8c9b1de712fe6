"""Command line: ``seesr upscale INPUT... -o OUT`` and ``seesr weights download|verify|list``.

A thin adapter over :class:`seesr.api.Upscaler` and :mod:`seesr.weights`: it parses flags, finds
the files, shows progress, writes outputs atomically and reports one line per failed file.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
from pathlib import Path
from typing import Any

from seesr.errors import SeesrError
from seesr.training.settings import add_train_parser, train_command

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
SETTING_FLAGS = (
    "preset", "engine", "scale", "steps", "seed", "prompt", "negative_prompt", "guidance_scale", "color_fix",
    "device", "dtype", "latent_tile", "latent_overlap", "tile_batch_size", "vae_encoder_tile", "vae_decoder_tile",
    "kds_particles", "kds_bandwidth", "kds_patch", "kds_strength", "denoise", "output_format",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seesr", description="Semantics-aware diffusion super-resolution (SeeSR-Turbo).")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("upscale", help="upscale images (files, folders, globs)")
    up.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    up.add_argument(
        "-o", "--output", type=Path, help="output file (one input) or folder (default: NAME_seesr.png beside the input, or upscaled/)"
    )
    up.add_argument("--preset", help="speed | balanced (default) | quality | memory")
    up.add_argument("--engine", help="seesr (default) | realesrgan")
    up.add_argument("--scale", type=float)
    up.add_argument("--steps", type=int)
    up.add_argument("--seed", type=int)
    up.add_argument("--prompt")
    up.add_argument("--negative-prompt", dest="negative_prompt")
    up.add_argument("--guidance-scale", dest="guidance_scale", type=float)
    up.add_argument("--color-fix", dest="color_fix", help="wavelet (default) | adain | none")
    up.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    up.add_argument("--dtype", help="auto | float32 | float16 | bfloat16")
    for flag in ("latent-tile", "latent-overlap", "tile-batch-size", "vae-encoder-tile", "vae-decoder-tile"):
        up.add_argument(f"--{flag}", dest=flag.replace("-", "_"), type=int)
    up.add_argument("--kds-particles", dest="kds_particles", type=int)
    up.add_argument("--kds-bandwidth", dest="kds_bandwidth", type=float)
    up.add_argument("--kds-patch", dest="kds_patch", type=int)
    up.add_argument("--kds-strength", dest="kds_strength", type=float)
    up.add_argument("--denoise", type=float, help="non-local-means strength before upscaling (0 = off)")
    up.add_argument("--output-format", dest="output_format", help="png (default) | jpg | webp")
    up.add_argument("--no-fallback", dest="no_fallback", action="store_true", default=None)
    up.add_argument(
        "--compile", action="store_true", default=None,
        help="torch.compile ControlNet + UNet (minutes on the first image; measured slower on CPU)",
    )
    up.add_argument("--weights", type=Path, help="weights directory (default: weights/ or $SEESR_WEIGHTS)")
    up.add_argument("--download", action="store_true", help="download missing weights first")
    up.add_argument("--config", type=Path, help="YAML file of settings")
    up.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    up.add_argument("--dry-run", action="store_true", help="print the plan and estimated memory, run nothing")
    up.add_argument("--compare", action="store_true", help="also write NAME_compare.png (input | output)")

    weights = commands.add_parser("weights", help="download, verify or list the model weights")
    weights.add_argument("action", choices=["download", "verify", "list"])
    weights.add_argument("names", nargs="*", help="files or groups (sd-turbo, seesr, ram, realesrgan, all)")
    weights.add_argument("--weights", type=Path, help="weights directory")
    weights.add_argument("--force", action="store_true", help="download again even if present")
    add_train_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("SEESR_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "weights":
            return weights_command(args)
        if args.command == "train":
            return train_command(args)
        return upscale_command(args)
    except SeesrError as error:
        print(f"seesr: {error}", file=sys.stderr)
        return 2


def find_inputs(patterns: list[str]) -> list[Path]:
    """Files named, images inside folders (sorted), and glob matches, without duplicates."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif any(ch in pattern for ch in "*?["):
            found += sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        else:
            found.append(path)
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path, None)
    return list(unique)


def output_path(source: Path, output: Path, many: bool, output_format: str) -> Path:
    """Where one input's result goes: ``output`` itself for one input with a file suffix, else
    ``output/<name>.<format>``."""
    if not many and output.suffix and not output.is_dir():
        return output
    return output / f"{source.stem}.{output_format}"


def upscale_command(args: argparse.Namespace) -> int:
    from accelerate import PartialState
    from tqdm import tqdm

    from seesr.api import Upscaler
    from seesr.batch import BatchState, Job, run_jobs, settings_hash
    from seesr.fidelity import side_by_side
    from seesr.io import save_image

    arguments: dict[str, Any] = {name: getattr(args, name) for name in SETTING_FLAGS if getattr(args, name) is not None}
    for flag in ("no_fallback", "compile"):
        if getattr(args, flag):
            arguments[flag] = True
    upscaler = Upscaler(args.weights, download=args.download, config_file=args.config, progress=sys.stderr.isatty())
    settings = upscaler.settings(arguments)
    inputs = find_inputs(args.inputs)
    if not inputs:
        print("seesr: no input images found", file=sys.stderr)
        return 2
    if args.output is None:
        single = len(inputs) == 1 and not Path(args.inputs[0]).is_dir()
        args.output = inputs[0].with_name(f"{inputs[0].stem}_seesr.{settings.output_format}") if single else Path("upscaled")
    many = len(inputs) > 1 or args.output.is_dir() or not args.output.suffix
    jobs = [Job(source, output_path(source, args.output, many, settings.output_format)) for source in inputs]
    if args.dry_run:
        failed = 0
        for job in jobs:
            try:
                _, plan, size = upscaler.plan(job.source, **arguments)
            except SeesrError as error:
                failed += 1
                print(f"{job.source}: failed: {str(error).splitlines()[0]}", file=sys.stderr)
                continue
            print(f"{job.source} -> {job.target} ({size[0]}x{size[1]}): {plan.describe()}")
        return 1 if failed else 0
    import torch

    distributed = PartialState(cpu=not torch.cuda.is_available())
    if distributed.num_processes > 1 and settings.device is None:
        arguments["device"] = str(distributed.device)
    progress = tqdm(total=len(jobs), unit="image", disable=len(jobs) < 2 or not sys.stderr.isatty())

    def process(job: Job) -> str:
        result = upscaler.upscale(job.source, **arguments)
        job.target.parent.mkdir(parents=True, exist_ok=True)
        result.save(job.target, overwrite=args.overwrite)
        if args.compare:
            pair = side_by_side(result.source.rgb.resize(result.image.size), result.image.convert("RGB"))
            save_image(pair, job.target.with_name(f"{job.target.stem}_compare.png"), overwrite=True)
        progress.update()
        return result.summary()

    state = BatchState(args.output, distributed.process_index) if many else None
    with distributed.split_between_processes(jobs) as my_jobs:
        _, _, failed = run_jobs(my_jobs, process, settings=settings_hash(settings), state=state, overwrite=args.overwrite)
    progress.close()
    return 1 if failed else 0


def weights_command(args: argparse.Namespace) -> int:
    from seesr import weights

    names = args.names or None
    if args.action == "download":
        statuses = weights.download(names, args.weights, force=args.force)
    elif args.action == "verify":
        statuses = weights.verify(args.weights, names=names)
    else:
        statuses = weights.list_weights(args.weights)
    for status in statuses:
        size = f"{status.size / 2**20:9.1f} MiB" if status.size is not None else " " * 13
        where = status.path if status.path is not None else "-"
        print(f"{status.name:50s} {status.location:12s} {status.checksum:13s} {size}  {where}")
    failed = [s for s in statuses if s.failed]
    return 1 if failed and args.action != "list" else 0


if __name__ == "__main__":
    raise SystemExit(main())
