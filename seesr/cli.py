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
from typing import TYPE_CHECKING, Any

from seesr.errors import SeesrError

if TYPE_CHECKING:
    from seesr.api import Upscaler
    from seesr.batch import Job
    from seesr.presets import Settings

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("SEESR_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "weights":
            return weights_command(args)
        return upscale_command(args)
    except SeesrError as error:
        print(f"seesr: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the file system refused something the checks above could not foresee
        where = f" ({error.filename})" if error.filename else ""
        print(f"seesr: {error.strerror or error}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seesr: interrupted; finished outputs are kept, run the same command again to do the rest",
              file=sys.stderr)  # fmt: skip
        return 130


def find_inputs(patterns: list[str]) -> tuple[list[Path], list[Path]]:
    """(images, skipped): files named, images inside folders (sorted), and glob matches, without
    duplicates; ``skipped`` are the files in those folders that are not images seesr reads (by
    suffix; hidden files are not counted)."""
    found: list[Path] = []
    skipped: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            found += [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            skipped += [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        elif any(ch in pattern for ch in "*?["):
            found += sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        else:
            found.append(path)
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path, None)
    return list(unique), skipped


def upscale_command(args: argparse.Namespace) -> int:
    """Check everything (settings, device, inputs, outputs, output folders), then run."""
    from seesr.api import Upscaler
    from seesr.devices import resolve_device
    from seesr.outputs import plan_outputs, prepare_folder
    from seesr.presets import config_file_settings, environment_settings

    arguments: dict[str, Any] = {name: getattr(args, name) for name in SETTING_FLAGS if getattr(args, name) is not None}
    for flag in ("no_fallback", "compile"):
        if getattr(args, flag):
            arguments[flag] = True
    upscaler = Upscaler(args.weights, download=args.download, config_file=args.config, progress=sys.stderr.isatty())
    settings = upscaler.settings(arguments)
    if settings.device is not None:
        resolve_device(settings.device)
    inputs, skipped = find_inputs(args.inputs)
    if skipped:
        names = ", ".join(p.name for p in skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        print(f"seesr: skipped {len(skipped)} file(s) that are not images seesr reads "
              f"({', '.join(sorted(IMAGE_SUFFIXES))}): {names}", file=sys.stderr)  # fmt: skip
    format_asked = "output_format" in arguments or "output_format" in environment_settings() or (
        "output_format" in config_file_settings(args.config)
    )
    jobs, folder = plan_outputs(
        inputs,
        args.output,
        folder_input=any(Path(pattern).is_dir() for pattern in args.inputs),
        requested_format=settings.output_format if format_asked else None,
        default_format=settings.output_format,
        compare=args.compare,
        overwrite=args.overwrite,
    )
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
    for parent in dict.fromkeys(job.target.parent for job in jobs):
        prepare_folder(parent)
    return _run_jobs(upscaler, jobs, folder, settings, arguments, args)


def _run_jobs(
    upscaler: Upscaler, jobs: list[Job], folder: Path | None, settings: Settings, arguments: dict[str, Any],
    args: argparse.Namespace,
) -> int:
    """Run the planned jobs (split between processes under ``accelerate launch``)."""
    import torch
    from accelerate import PartialState
    from tqdm import tqdm

    from seesr.batch import BatchState, run_jobs, settings_hash
    from seesr.fidelity import side_by_side
    from seesr.io import save_image
    from seesr.outputs import format_of

    distributed = PartialState(cpu=not torch.cuda.is_available())
    if distributed.num_processes > 1 and settings.device is None:
        arguments["device"] = str(distributed.device)
    progress = tqdm(total=len(jobs), unit="image", disable=len(jobs) < 2 or not sys.stderr.isatty())

    def process(job: Job) -> str:
        result = upscaler.upscale(job.source, **arguments)
        result.save(job.target, format=format_of(job.target), overwrite=args.overwrite)
        if job.compare is not None:
            pair = side_by_side(result.source.rgb.resize(result.image.size), result.image.convert("RGB"))
            save_image(pair, job.compare, overwrite=args.overwrite)
        progress.update()
        return result.summary()

    state = BatchState(folder, distributed.process_index) if folder is not None else None
    with distributed.split_between_processes(jobs) as my_jobs:
        _, _, failed = run_jobs(
            my_jobs, process, settings=settings_hash(settings), state=state, overwrite=args.overwrite
        )
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
