"""Command line: ``seesr upscale INPUT... -o OUT``, ``seesr weights download|verify|list``, ``seesr train``,
``seesr evaluate`` and ``seesr ui``.

A thin adapter over :class:`seesr.api.Upscaler` and :mod:`seesr.weights`: it parses flags, finds
the files, shows progress (one updating line on a terminal), writes outputs atomically and reports
one line (or one JSON object) per file.

Under ``accelerate launch -m seesr.cli upscale ...`` each process takes its share of the inputs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import seesr
from seesr.batch import BatchReport, Job
from seesr.errors import SeesrError
from seesr.inputs import IMAGE_SUFFIXES, find_inputs
from seesr.progress import RECORD_FIELDS, StageProgress, TerminalProgress
from seesr.training.settings import add_train_parser, train_command

if TYPE_CHECKING:
    from seesr.api import DryRun, Result, Upscaler
    from seesr.presets import Settings

REPORT_FLAGS: dict[str, str] = {
    "quiet": "print errors only: no progress, no result lines, no notes (the exit code says how it went)",
    "verbose": "debug logging from seesr on stderr (engine, plan, retries, fallbacks)",
    "json": "one JSON object per input on stdout instead of the result lines: input, output, status "
    f"(done, skipped, failed, planned) and, for a file done, {', '.join(RECORD_FIELDS)}",
}
"""Flags that change what seesr prints, not what it computes (so they are not settings);
``quiet`` and ``verbose`` exclude each other."""
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


def add_setting_flags(parser: argparse.ArgumentParser, leave_out: frozenset[str] = frozenset()) -> None:
    """One flag per :class:`~seesr.presets.Settings` field (but ``leave_out``), grouped by the
    engines it applies to; values stay text (None when not given):
    :func:`~seesr.presets.resolve_settings` converts and validates them, reporting every problem at once."""
    from seesr.presets import DECLARED, ENGINES, describe, flag_name, setting_info, value_kind

    groups: dict[tuple[str, ...], Any] = {}
    for name in (n for n in DECLARED if n not in leave_out):
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
            group.add_argument(*info.extra_flags, flag, dest=name, default=None, metavar=metavar, help=help_text)


def setting_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, by name (the rest is left to the environment, file and preset)."""
    from seesr.presets import DECLARED

    return {name: getattr(args, name) for name in DECLARED if getattr(args, name, None) is not None}


def add_report_flags(parser: argparse.ArgumentParser) -> None:
    """The :data:`REPORT_FLAGS`, in a group of their own."""
    group = parser.add_argument_group("what is printed")
    exclusive = group.add_mutually_exclusive_group()
    for name, help_text in REPORT_FLAGS.items():
        (exclusive if name in ("quiet", "verbose") else group).add_argument(
            f"--{name}", action="store_true", help=help_text
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seesr", description="Semantics-aware diffusion super-resolution (SeeSR-Turbo).", allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=f"seesr {seesr.__version__}")
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
    add_report_flags(up)
    add_setting_flags(up)

    weights = commands.add_parser(
        "weights", help="download, verify or list the model weights (list: a table with sizes and totals)",
        allow_abbrev=False,
    )  # fmt: skip
    weights.add_argument("action", choices=["download", "verify", "list"])
    weights.add_argument("names", nargs="*", help="files or groups (sd-turbo, sd2-base, seesr, ram, realesrgan, all)")
    weights.add_argument("--weights", type=Path, help="weights directory")
    weights.add_argument("--force", action="store_true", help="download again even if present")
    weights.add_argument("--trust-unverified", action="store_true",
                         help="accept files without a published sha256 from mirrors (marked 'unverified' in list)")
    add_train_parser(commands)
    add_evaluate_parser(commands)
    add_ui_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(getattr(args, "quiet", False), getattr(args, "verbose", False))
    try:
        if args.command == "weights":
            return weights_command(args)
        if args.command == "train":
            return train_command(args)
        if args.command == "evaluate":
            return evaluate_command(args)
        if args.command == "ui":
            return ui_command(args)
        return upscale_command(args)
    except SeesrError as error:
        _error(f"seesr: {error}")
        return 2
    except OSError as error:  # the file system refused something the checks above could not foresee
        _error(f"seesr: {failure_text(error)}")
        return 2
    except KeyboardInterrupt as error:
        _error(f"seesr: {failure_text(error)}")
        return 130
    except Exception as error:  # noqa: BLE001 - a bug: one line; --verbose logs the traceback
        logging.getLogger("seesr").debug("the traceback of the unexpected error:", exc_info=True)
        _error(f"seesr: {failure_text(error)}")
        return 1


def failure_text(error: BaseException) -> str:
    """What a run-level failure says (its first line): on stderr, and in the JSON line of each
    input it left unfinished."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted; finished outputs are kept, run the same command again to do the rest"
    if isinstance(error, SeesrError):
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror or error}{where}"
    return (f"unexpected error: {type(error).__name__}: {' '.join(str(error).split())} "
            "(a bug in seesr; --verbose shows the traceback)")  # fmt: skip


def printable(text: str) -> str:
    """``text`` with what a terminal would not show as written escaped (a newline or an escape
    sequence in a file name, an undecodable byte): one result stays one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _error(line: str) -> None:
    """One line on stderr, below an erased progress line."""
    if LOG_HANDLER.display is not None:
        LOG_HANDLER.display.clear()
    print("\n".join(printable(part) for part in line.splitlines()), file=sys.stderr)


class _ClearingHandler(logging.StreamHandler):
    """Log lines on stderr that first erase the progress line (if one is drawn)."""

    display: TerminalProgress | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.display is not None:
            self.display.clear()
        super().emit(record)


LOG_HANDLER = _ClearingHandler(sys.stderr)
LOG_HANDLER.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))


def configure_logging(quiet: bool, verbose: bool) -> None:
    """Warnings by default (``SEESR_LOG_LEVEL`` changes it); ``--quiet``: errors only (Python
    warnings included); ``--verbose``: seesr's debug messages, other libraries' warnings."""
    root = logging.getLogger()
    if LOG_HANDLER not in root.handlers:
        root.addHandler(LOG_HANDLER)
    LOG_HANDLER.stream, LOG_HANDLER.display = sys.stderr, None
    root.setLevel("ERROR" if quiet else "WARNING" if verbose else os.environ.get("SEESR_LOG_LEVEL", "WARNING"))
    logging.getLogger("seesr").setLevel("DEBUG" if verbose else logging.NOTSET)
    logging.captureWarnings(quiet)


class _Report(BatchReport["Result"]):
    """Result lines (or JSON objects) on stdout, skips and failures on stderr, as the flags say."""

    def __init__(self, args: argparse.Namespace, display: TerminalProgress | None) -> None:
        self.quiet, self.json, self.display = args.quiet, args.json, display
        self.unreported: dict[str, str | None] = {pattern: None for pattern in args.inputs}
        """Input -> output of each input without its line yet: the arguments until the jobs are planned."""

    def expect(self, jobs: list[Job]) -> None:
        """From now on the inputs are these jobs'."""
        self.unreported = {str(job.source): str(job.target) for job in jobs}

    def abandon(self, error: BaseException) -> None:
        """Under ``--json``, a failed line for each input the run stopped before (whatever stopped it)."""
        if self.json:
            for source, target in self.unreported.items():
                print(json.dumps({"input": source, "output": target, "status": "failed", "error": failure_text(error)}),
                      flush=True)  # fmt: skip
        self.unreported = {}

    def _say(self, job: Job, status: str, line: str, fields: dict[str, Any]) -> None:
        if self.display is not None:
            self.display.clear()
        self.unreported.pop(str(job.source), None)
        if self.json:
            print(json.dumps({"input": str(job.source), "output": str(job.target), "status": status, **fields}), flush=True)
        result_line = status in ("done", "planned")  # stdout; the JSON object stands for it
        if status == "failed" or not (self.quiet or self.json and result_line):
            print(printable(line), file=sys.stdout if result_line else sys.stderr, flush=True)

    def done(self, job: Job, outcome: Result) -> None:
        self._say(job, "done", f"{job.target}: {outcome.summary()}", outcome.record())

    def planned(self, job: Job, plan: DryRun) -> None:
        start, (width, height) = plan.start, plan.output_size
        fields = {"size": [width, height], "engine": start.engine, "model": start.model, "device": start.device,
                  "dtype": start.dtype, "steps": start.steps, "tiles": start.tiles,
                  "estimated_peak_bytes": plan.estimated_peak_bytes, "fallback_reason": plan.fallback_reason}  # fmt: skip
        self._say(job, "planned", f"{job.source} -> {job.target} ({width}x{height}): {plan.describe()}", fields)

    def skipped(self, job: Job, reason: str) -> None:
        self._say(job, "skipped", f"{job.source}: skipped, {reason}", {"reason": reason})

    def failed(self, job: Job, error: str) -> None:
        self._say(job, "failed", f"{job.source}: failed: {error}", {"error": error})


def upscale_command(args: argparse.Namespace) -> int:
    """Check everything (settings, device, inputs, outputs, output folders), then run; under
    ``--json`` every input gets its line, even when the run stops on an error."""
    display = TerminalProgress(sys.stderr) if sys.stderr.isatty() and not args.quiet else None
    LOG_HANDLER.display = display
    report = _Report(args, display)
    try:
        return _upscale(args, report, display)
    except BaseException as error:
        report.abandon(error)
        raise


def _upscale(args: argparse.Namespace, report: _Report, display: TerminalProgress | None) -> int:
    if display is not None:  # something to see while torch is imported
        display.image(1, 1, "seesr")
        display(StageProgress("start", 0, 0))
    from seesr.api import Upscaler
    from seesr.devices import resolve_device
    from seesr.outputs import plan_outputs, prepare_folder
    from seesr.presets import config_file_settings, environment_settings

    arguments = setting_arguments(args)
    upscaler = Upscaler(args.weights, download=args.download, config_file=args.config, progress=display, **arguments)
    settings = upscaler.settings(arguments)
    if settings.device is not None:
        resolve_device(settings.device)
    inputs, skipped = find_inputs(args.inputs)
    if skipped and not args.quiet:
        names = ", ".join(p.name for p in skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        print(printable(f"seesr: skipped {len(skipped)} file(s) that are not images seesr reads "
                        f"({', '.join(sorted(IMAGE_SUFFIXES))}): {names}"), file=sys.stderr)  # fmt: skip
    format_asked = "output_format" in arguments or "output_format" in environment_settings() or (
        "output_format" in config_file_settings(args.config)
    )
    jobs, folder = plan_outputs(
        inputs,
        args.output,
        folder_input=any(Path(pattern).is_dir() for pattern in args.inputs),
        requested_format=settings.output_format if format_asked else None,
        default_format=settings.output_format,
        suffix=settings.suffix,
        compare=args.compare,
        overwrite=args.overwrite,
    )
    report.expect(jobs)
    if args.dry_run:
        failed = 0
        for job in jobs:
            try:
                report.planned(job, upscaler.dry_run(job.source, **arguments))
            except SeesrError as error:
                failed += 1
                report.failed(job, str(error).splitlines()[0])
        return 1 if failed else 0
    for parent in dict.fromkeys(job.target.parent for job in jobs):
        prepare_folder(parent)
    return _run_jobs(upscaler, jobs, folder, settings, arguments, args, report, display)


def _run_jobs(
    upscaler: Upscaler, jobs: list[Job], folder: Path | None, settings: Settings, arguments: dict[str, Any],
    args: argparse.Namespace, report: _Report, display: TerminalProgress | None,
) -> int:
    """Run the planned jobs (split between processes under ``accelerate launch``)."""
    import torch
    from accelerate import PartialState

    from seesr.batch import BatchState, run_jobs, settings_hash
    from seesr.save import save_image
    from seesr.outputs import format_of

    distributed = PartialState(cpu=not torch.cuda.is_available())
    if distributed.num_processes > 1 and settings.device is None:
        arguments["device"] = str(distributed.device)

    def process(job: Job) -> Result:
        if display is not None:
            display.image(jobs.index(job) + 1, len(jobs), job.source.name)
        result = upscaler.upscale(job.source, **arguments)
        result.save(job.target, format=format_of(job.target), overwrite=args.overwrite)
        if job.compare is not None:
            save_image(result.comparison(), job.compare, overwrite=args.overwrite)
        return result

    state = BatchState(folder, distributed.process_index) if folder is not None else None
    with distributed.split_between_processes(jobs) as my_jobs:
        report.expect(my_jobs)
        _, _, failed = run_jobs(
            my_jobs, process, settings=settings_hash(settings), state=state, overwrite=args.overwrite, report=report
        )
    if display is not None:
        display.clear()
    return 1 if failed else 0


def weights_command(args: argparse.Namespace) -> int:
    from seesr import weights

    names = args.names or None
    if args.action == "list":
        print(weights.weights_table(args.weights, names))
        return 0
    if args.action == "download":
        statuses = weights.download(names, args.weights, force=args.force, trust_unverified=args.trust_unverified)
    else:
        statuses = weights.verify(args.weights, names=names)
    for status in statuses:
        size = f"{status.size / 2**20:9.1f} MiB" if status.size is not None else " " * 13
        where = status.path if status.path is not None else "-"
        trust = "unverified" if status.unverified else "sha256"
        print(f"{status.name:50s} {status.location:12s} {status.checksum:13s} {trust:10s} {size}  {where}")
        for note in status.passed_over:
            print(f"    not from {note}")
    if any(s.unverified for s in statuses):
        print("unverified: no published sha256; mirrors are used for these only with --trust-unverified")
    return 1 if any(s.failed for s in statuses) else 0


EVALUATE_EPILOG = (
    "Exit code: 0 when every pair got every metric, 1 when the evaluation is partial (a pair or a metric left "
    "out, a --run row without its weights; each said in one line on stderr), 2 when nothing could be evaluated. "
    "The setting flags apply to the --run rows (a row's own preset, model or engine wins); --device also places "
    "the learned metrics."
)


def add_evaluate_parser(commands: Any) -> None:
    """``seesr evaluate SR_DIR HR_DIR`` / ``seesr evaluate --run NAMES LR_DIR HR_DIR``."""
    from seesr.evaluate import BICUBIC, REALESRGAN_ENGINE, RUN_SETTINGS_LEFT_OUT
    from seesr.metrics import METRIC_GROUPS, METRICS
    from seesr.models import MODELS
    from seesr.presets import PRESETS

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


def evaluate_command(args: argparse.Namespace) -> int:
    """Score, print the table (or JSON) on stdout and each problem in one line on stderr."""
    from seesr.errors import ConfigError
    from seesr.evaluate import evaluate_folder, evaluate_runs
    from seesr.metrics import parse_metrics

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
            raise ConfigError(f"{', '.join('--' + n.replace('_', '-') for n in unused)} only apply with --run")
        evaluation = evaluate_folder(args.images, args.hr, lr_dir=args.lr, metrics=metrics, crop_border=args.crop_border,
                                     device=arguments.get("device"), progress=progress)  # fmt: skip
    if progress is not None:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    unavailable = [evaluation.unavailable[name] for name in evaluation.metrics if name in evaluation.unavailable]
    for line in [*unavailable, *evaluation.problems]:
        _error(line)
    table = "\n".join(printable(line) for line in evaluation.table().splitlines())
    print(json.dumps(evaluation.record()) if args.json else table, flush=True)
    if args.csv is not None:
        from seesr.files import write_atomically

        write_atomically(args.csv, evaluation.csv().encode(), overwrite=True)
    return 1 if evaluation.partial else 0


def _evaluate_progress(row: str, index: int, total: int, name: str) -> None:
    print(f"\r\033[K{row}: {index}/{total} {name}", end="", file=sys.stderr, flush=True)


def add_ui_parser(commands: Any) -> None:
    """``seesr ui``: the web page; its setting flags are the process settings (device, precision),
    the ones a page request cannot choose."""
    from seesr.presets import DECLARED, settings_in_scope
    from seesr.ui import DEFAULT_QUEUE_SIZE

    ui = commands.add_parser(
        "ui", help="a web page: upload, before/after slider, every setting, progress (Gradio)",
        epilog=SETTINGS_EPILOG, allow_abbrev=False,
    )  # fmt: skip
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    ui.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    ui.add_argument("--weights", type=Path, help="weights directory (default: weights/ or $SEESR_WEIGHTS)")
    ui.add_argument("--download", action="store_true", help="download missing weights on the first request")
    ui.add_argument("--config", type=Path, help="YAML file of settings: the page's defaults")
    ui.add_argument("--queue-size", type=int, default=DEFAULT_QUEUE_SIZE, metavar="N",
                    help="requests that may wait their turn (default: %(default)s); one runs at a time")  # fmt: skip
    ui.add_argument("--share", action="store_true", help="also publish the page through a Gradio share link (off by default)")
    add_setting_flags(ui, leave_out=frozenset(DECLARED) - frozenset(settings_in_scope("process")))


def ui_command(args: argparse.Namespace) -> int:
    from seesr.ui.server import serve

    return serve(host=args.host, port=args.port, weights=args.weights, download=args.download, config_file=args.config,
                 queue_size=args.queue_size, share=args.share, **setting_arguments(args))  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
