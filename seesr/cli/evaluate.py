"""``seesr evaluate SR_DIR HR_DIR`` / ``seesr evaluate --run NAMES LR_DIR HR_DIR``: a thin adapter over
:mod:`seesr.evaluate` that prints the table (or JSON) on stdout and each problem in one line on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from seesr.cli.console import error_line, printable
from seesr.cli.flags import add_setting_flags, setting_arguments
from seesr.settings.fields import flag_name

EVALUATE_EPILOG = (
    "Exit code: 0 when every pair got every metric, 1 when the evaluation is partial (a pair or a metric left "
    "out, a --run row without its weights; each said in one line on stderr), 2 when nothing could be evaluated. "
    "The setting flags apply to the --run rows (a row's own preset, model or engine wins); --device also places "
    "the learned metrics."
)


def add_parser(commands: Any) -> None:
    """``seesr evaluate SR_DIR HR_DIR`` / ``seesr evaluate --run NAMES LR_DIR HR_DIR``."""
    from seesr.evaluate import BICUBIC, REALESRGAN_ENGINE, RUN_SETTINGS_LEFT_OUT
    from seesr.imaging.metrics import METRIC_GROUPS, METRICS
    from seesr.settings.models import MODELS
    from seesr.settings.presets import PRESETS

    ev = commands.add_parser(
        "evaluate", help="quality table (PSNR, SSIM, LPIPS, ...) of SR images against HR images, or of engines run now",
        epilog=EVALUATE_EPILOG, allow_abbrev=False,
    )  # fmt: skip
    ev.add_argument("images", type=Path, metavar="SR_DIR", help="the SR images (with --run: LR_DIR, the LR images)")
    ev.add_argument("hr", type=Path, metavar="HR_DIR", help="the HR images, paired with the others by file name without suffix")
    ev.add_argument("--run", metavar="NAME[,NAME...]",
                    help=f"upscale LR_DIR with each of these first, one row each: presets ({', '.join(PRESETS)}), "
                    f"{', '.join(MODELS)}, a Real-ESRGAN model (see -n), {REALESRGAN_ENGINE}, {BICUBIC}; never a fallback")  # fmt: skip
    ev.add_argument("--lr", type=Path, metavar="LR_DIR", help=f"also score these LR images upscaled with bicubic (row '{BICUBIC}')")
    ev.add_argument("--metrics", default=",".join(METRIC_GROUPS["default"]), metavar="NAME[,NAME...]",
                    help=f"metrics: {', '.join(METRICS)}; groups: "
                    + ", ".join(f"{group} ({'every metric' if group == 'all' else ','.join(names)})"
                                for group, names in METRIC_GROUPS.items()) + " (default: %(default)s)")  # fmt: skip
    ev.add_argument("--crop-border", type=int, default=0, metavar="N",
                    help="pixels left out at every edge of both images before every metric (BasicSR's crop_border)")  # fmt: skip
    ev.add_argument("--json", action="store_true", help="print one JSON object (rows, means, per-image scores) instead of the table")
    ev.add_argument("--csv", type=Path, metavar="FILE", help="also write the per-image scores and means as CSV")
    ev.add_argument("--weights", type=Path, help="weights directory for --run (default: weights/ or $SEESR_WEIGHTS)")
    add_setting_flags(ev, leave_out=RUN_SETTINGS_LEFT_OUT)


def run(args: argparse.Namespace) -> int:
    """Score, print the table (or JSON) on stdout and each problem in one line on stderr."""
    from seesr.errors import ConfigError
    from seesr.evaluate import evaluate_folder, evaluate_runs
    from seesr.imaging.metrics import parse_metrics

    metrics = parse_metrics(args.metrics)
    if args.crop_border < 0:
        raise ConfigError(f"--crop-border must be 0 or more, got {args.crop_border}")
    arguments = setting_arguments(args)
    progress = _evaluate_progress if sys.stderr.isatty() else None
    if args.run:
        if args.lr is not None:
            raise ConfigError("--lr goes with SR_DIR HR_DIR; with --run the first folder is the LR folder (add bicubic to --run)")
        runs = [name.strip() for name in args.run.split(",") if name.strip()]
        evaluation = evaluate_runs(runs, args.images, args.hr, metrics=metrics, crop_border=args.crop_border,
                                   weights=args.weights, progress=progress, **arguments)  # fmt: skip
    else:
        unused = sorted(set(arguments) - {"device"})
        if unused:
            raise ConfigError(f"{', '.join(flag_name(n) for n in unused)} only apply with --run")
        evaluation = evaluate_folder(args.images, args.hr, lr_dir=args.lr, metrics=metrics, crop_border=args.crop_border,
                                     device=arguments.get("device"), progress=progress)  # fmt: skip
    if progress is not None:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    unavailable = [evaluation.unavailable[name] for name in evaluation.metrics if name in evaluation.unavailable]
    for line in [*unavailable, *evaluation.problems]:
        error_line(line)
    table = "\n".join(printable(line) for line in evaluation.table().splitlines())
    print(json.dumps(evaluation.record()) if args.json else table, flush=True)
    if args.csv is not None:
        from seesr.io.files import write_atomically

        write_atomically(args.csv, evaluation.csv().encode(), overwrite=True)
    return 1 if evaluation.partial else 0


def _evaluate_progress(row: str, index: int, total: int, name: str) -> None:
    print(f"\r\033[K{row}: {index}/{total} {name}", end="", file=sys.stderr, flush=True)
