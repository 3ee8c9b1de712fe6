"""Command line: ``seesr upscale INPUT -o OUTPUT``. A thin adapter over :class:`SeesrPipeline`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from seesr.colorfix import COLOR_FIX_METHODS
from seesr.errors import SeesrError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seesr", description="Semantics-aware diffusion super-resolution (SeeSR-Turbo).")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upscale", help="upscale one image")
    up.add_argument("input", type=Path)
    up.add_argument("-o", "--output", type=Path, required=True)
    up.add_argument("--scale", type=float, default=4)
    up.add_argument("--steps", type=int, default=2)
    up.add_argument("--seed", type=int, default=None)
    up.add_argument("--prompt", default="")
    up.add_argument("--color-fix", choices=COLOR_FIX_METHODS, default="wavelet")
    up.add_argument("--device", default=None)
    up.add_argument("--weights", type=Path, default=None, help="weights directory (default: weights/ or $SEESR_WEIGHTS)")
    up.add_argument("--overwrite", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("SEESR_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    try:
        return upscale(args)
    except SeesrError as err:
        print(f"seesr: {err}", file=sys.stderr)
        return 1


def upscale(args: argparse.Namespace) -> int:
    from seesr.errors import InputError
    from seesr.pipeline import SeesrPipeline

    if args.output.exists() and not args.overwrite:
        raise InputError(f"{args.output} exists; pass --overwrite to replace it")
    try:
        image = Image.open(args.input)
        image.load()
    except (OSError, UnidentifiedImageError) as err:
        raise InputError(f"cannot read {args.input} as an image: {err}") from err
    pipe = SeesrPipeline.from_pretrained(args.weights, device=args.device)
    result = pipe(
        image, scale=args.scale, num_inference_steps=args.steps, seed=args.seed, prompt=args.prompt, color_fix=args.color_fix
    )
    tmp = args.output.with_name(f".{args.output.name}.partial")
    result.images[0].save(tmp, format=Image.registered_extensions().get(args.output.suffix.lower(), "PNG"))
    os.replace(tmp, args.output)
    print(f"{args.output}  tags: {result.tags}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
