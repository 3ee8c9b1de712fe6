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
from seesr.training.settings import add_train_parser, train_command

if TYPE_CHECKING:
    from seesr.api import Upscaler
    from seesr.batch import Job
    from seesr.presets import Settings

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
SETTINGS_EPILOG = (
    "Every setting flag --NAME is also the environment variable SEESR_NAME (upper case, underscores) and the key "
    "NAME (underscores) of a --config YAML file. Precedence: flags > environment > config file > the model's "
    "defaults > the preset > defaults; only the winning value is checked."
)


class _Switch(argparse.Action):
    """``--flag`` / ``--no-flag`` (or ``--no-flag`` / ``--flag`` for a setting named ``no_*``) for a
    boolean setting; not given: None, so the environment, config file or preset decide."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        setattr(namespace, self.dest, option_string == self.option_strings[0])


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`~seesr.presets.Settings` field, grouped by the engines it applies to;
    values stay text (None when not given): :func:`~seesr.presets.resolve_settings` converts and
    validates them, reporting every problem at once."""
    from seesr.presets import DECLARED, ENGINES, describe, flag_name, setting_info, value_kind

    groups: dict[tuple[str, ...], Any] = {}
    for name in DECLARED:
        info, (kind, _) = setting_info(name), value_kind(name)
        flag, help_text = flag_name(name), describe(name).replace("%", "%%")
        if info.engines not in groups:
            every = info.engines == ENGINES
            groups[info.engines] = parser.add_argument_group("settings, every engine" if every else f"settings, {' and '.join(info.engines)}")
        group = groups[info.engines]
        if kind is bool:
            opposite = "--" + name.removeprefix("no_").replace("_", "-") if name.startswith("no_") else f"--no-{flag[2:]}"
            group.add_argument(flag, opposite, dest=name, action=_Switch, default=None, help=help_text)
        else:
            metavar = "{" + ",".join(info.choices) + "}" if info.choices else {int: "N", float: "X"}.get(kind, "TEXT")
            metavar = "NAME|FILE" if info.file_suffixes else metavar
            shorts = [info.short] if info.short else []
            group.add_argument(*shorts, flag, dest=name, default=None, metavar=metavar, help=help_text)


def setting_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, by name (the rest is left to the environment, file and preset)."""
    from seesr.presets import DECLARED

    return {name: getattr(args, name) for name in DECLARED if getattr(args, name) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seesr", description="Semantics-aware diffusion super-resolution (SeeSR-Turbo).", allow_abbrev=False
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "upscale", help="upscale images (files, folders, globs)", epilog=SETTINGS_EPILOG, allow_abbrev=False
    )
    up.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    up.add_argument(
        "-o", "--output", type=Path, help="output file (one input) or folder (default: NAME_seesr.png beside the input, or upscaled/)"
    )
    up.add_argument("--weights", type=Path, help="weights directory (default: weights/ or $SEESR_WEIGHTS)")
    up.add_argument("--download", action="store_true", help="download missing weights first")
    up.add_argument("--config", type=Path, help="YAML file of settings (keys: the setting names below, with underscores)")
    up.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    up.add_argument("--dry-run", action="store_true", help="print the plan and estimated memory, run nothing")
    up.add_argument("--compare", action="store_true", help="also write NAME_compare.png (input | output)")
    add_setting_flags(up)

    weights = commands.add_parser("weights", help="download, verify or list the model weights", allow_abbrev=False)
    weights.add_argument("action", choices=["download", "verify", "list"])
    weights.add_argument("names", nargs="*", help="files or groups (sd-turbo, sd2-base, seesr, ram, realesrgan, all)")
    weights.add_argument("--weights", type=Path, help="weights directory")
    weights.add_argument("--force", action="store_true", help="download again even if present")
    weights.add_argument("--trust-unverified", action="store_true",
                         help="accept files without a published sha256 from mirrors (marked 'unverified' in list)")
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

    arguments = setting_arguments(args)
    upscaler = Upscaler(
        args.weights, download=args.download, config_file=args.config, progress=sys.stderr.isatty(), **arguments
    )
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
        statuses = weights.download(names, args.weights, force=args.force, trust_unverified=args.trust_unverified)
    elif args.action == "verify":
        statuses = weights.verify(args.weights, names=names)
    else:
        statuses = weights.list_weights(args.weights)
    for status in statuses:
        size = f"{status.size / 2**20:9.1f} MiB" if status.size is not None else " " * 13
        where = status.path if status.path is not None else "-"
        trust = "unverified" if status.unverified else "sha256"
        print(f"{status.name:50s} {status.location:12s} {status.checksum:13s} {trust:10s} {size}  {where}")
        for note in status.passed_over:
            print(f"    not from {note}")
    if any(s.unverified for s in statuses):
        print("unverified: no published sha256; mirrors are used for these only with --trust-unverified")
    failed = [s for s in statuses if s.failed]
    return 1 if failed and args.action != "list" else 0


if __name__ == "__main__":
    raise SystemExit(main())
