"""``seesr upscale INPUT... -o OUT``: check everything (settings, device, inputs, outputs, output
folders), then upscale each file through :class:`seesr.api.Upscaler` and report one line (or one
JSON object) per file. With ``--shard K/N`` this worker takes shard K of the inputs
(:mod:`seesr.io.shards`); under ``accelerate launch -m seesr.cli upscale ...`` each process takes its
share of those."""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seesr.cli.console import LOG_HANDLER, failure_text, printable
from seesr.cli.flags import SETTINGS_EPILOG, add_report_flags, add_setting_flags, setting_arguments
from seesr.errors import SeesrError
from seesr.io.batch import BatchReport, Job, input_groups
from seesr.io.inputs import IMAGE_SUFFIXES, find_inputs
from seesr.io.shards import Shard, parse_shard
from seesr.progress import StageProgress, TerminalProgress

if TYPE_CHECKING:
    from seesr.api import DryRun, Result, Upscaler
    from seesr.settings.declare import Settings


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``upscale`` subcommand: inputs, output, files and run flags, then one flag per setting."""
    up = commands.add_parser(
        "upscale", help="upscale images (files, folders, globs)", epilog=SETTINGS_EPILOG, allow_abbrev=False
    )
    up.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    up.add_argument(
        "-r", "--recursive", action="store_true",
        help="also upscale the images in the folders' sub-folders; the output folder mirrors the tree",
    )  # fmt: skip
    up.add_argument(
        "-o", "--output", type=Path, help="output file (one input) or folder (default: NAME_seesr.png beside the input, or upscaled/)"
    )
    up.add_argument("--weights", type=Path, help="weights directory (default: weights/ or $SEESR_WEIGHTS)")
    up.add_argument("--download", action="store_true", help="download missing weights first")
    up.add_argument("--config", type=Path, help="YAML file of settings (keys: the setting names below, with underscores)")
    up.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    up.add_argument("--dry-run", action="store_true", help="print the plan and estimated memory, run nothing")
    up.add_argument("--compare", action="store_true", help="also write NAME_compare.png (input | output)")
    up.add_argument(
        "--shard", metavar="K/N",
        help="do only shard K (0 to N-1) of N: the inputs whose relative path hashes to K, the same split on every "
        "machine; auto/N or auto: K (and N) from JOB_COMPLETION_INDEX (Kubernetes) or SLURM_ARRAY_TASK_ID (Slurm)",
    )  # fmt: skip
    add_report_flags(up)
    add_setting_flags(up)


class _Report(BatchReport["Result"]):
    """Result lines (or JSON objects) on stdout, skips and failures on stderr, as the flags say."""

    def __init__(self, args: argparse.Namespace, display: TerminalProgress | None) -> None:
        self.quiet, self.json, self.display = args.quiet, args.json, display
        self.unreported: dict[str, tuple[str, str | None]] = {pattern: (pattern, None) for pattern in args.inputs}
        """(input, output) of each output without its line yet, by output: the arguments until the
        jobs are planned."""

    def expect(self, jobs: list[Job]) -> None:
        """From now on the outputs are these jobs'."""
        self.unreported = {str(job.target): (str(job.source), str(job.target)) for job in jobs}

    def abandon(self, error: BaseException) -> None:
        """Under ``--json``, a failed line for each output the run stopped before (whatever stopped it)."""
        if self.json:
            for source, target in self.unreported.values():
                print(json.dumps({"input": source, "output": target, "status": "failed", "error": failure_text(error)}),
                      flush=True)  # fmt: skip
        self.unreported = {}

    def _say(self, job: Job, status: str, line: str, fields: dict[str, Any]) -> None:
        if self.display is not None:
            self.display.clear()
        self.unreported.pop(str(job.target), None)
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
        self._say(job, "skipped", f"{job.relative}: skipped, {reason}", {"reason": reason})

    def failed(self, job: Job, error: str) -> None:
        self._say(job, "failed", f"{job.relative}: failed: {error}", {"error": error})


def run(args: argparse.Namespace) -> int:
    """Check everything (settings, device, inputs, outputs, output folders), then run; under
    ``--json`` every input gets its line, even when the run stops on an error."""
    display = TerminalProgress(sys.stderr) if sys.stderr.isatty() and not args.quiet else None
    LOG_HANDLER.display = display
    report = _Report(args, display)
    try:
        shard = parse_shard(args.shard) if args.shard is not None else None
        return _upscale(args, report, display, shard)
    except BaseException as error:
        report.abandon(error)
        raise


def _upscale(args: argparse.Namespace, report: _Report, display: TerminalProgress | None, shard: Shard | None) -> int:
    if display is not None:  # something to see while torch is imported
        display.image(1, 1, "seesr")
        display(StageProgress("start", 0, 0))
    from seesr.api import Upscaler
    from seesr.runtime.devices import resolve_device
    from seesr.io.naming import DEFAULT_FOLDER, plan_outputs, prepare_folder
    from seesr.settings.config_file import config_file_settings
    from seesr.settings.resolve import environment_settings

    arguments = setting_arguments(args)
    upscaler = Upscaler(args.weights, download=args.download, config_file=args.config, progress=display, **arguments)
    settings = upscaler.settings(arguments)
    if settings.device is not None:
        resolve_device(settings.device)
    seeds = None
    if settings.num_samples > 1:  # the seeds name the outputs, so they are known before any work
        if settings.seed is None:
            arguments["seed"] = random.randrange(2**32)
            settings = upscaler.settings(arguments)
            if not args.quiet:
                print(f"seesr: {settings.num_samples} samples per input with the seeds {settings.seed} to "
                      f"{settings.seed + settings.num_samples - 1} (random; --seed {settings.seed} repeats them)",
                      file=sys.stderr)  # fmt: skip
        seeds = range(settings.seed, settings.seed + settings.num_samples)
    inputs, skipped = find_inputs(args.inputs, recursive=args.recursive, exclude=[args.output or DEFAULT_FOLDER])
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
        seeds=seeds,
    )
    if shard is not None:  # every input was planned (names are decided over all of them): keep this shard's
        everything, jobs = jobs, shard.select(jobs)
        if not args.quiet:
            print(f"seesr: {shard.describe()}: {len(jobs)} of {len(everything)} outputs", file=sys.stderr)
    report.expect(jobs)
    if args.dry_run:
        failed = 0
        for group in input_groups(jobs):
            try:
                plan = upscaler.dry_run(group[0].source, **arguments)
            except SeesrError as error:
                failed += len(group)
                for job in group:
                    report.failed(job, str(error).splitlines()[0])
                continue
            for job in group:
                report.planned(job, plan)
        return 1 if failed else 0
    # Each output folder and its files: a shard clears the leftovers of those only (another
    # machine's writer of a neighbouring file may be alive); other runs, those of any dead writer
    folders: dict[Path, set[str]] = {}
    for job in jobs:
        for path in (job.target, job.compare):
            if path is not None:
                folders.setdefault(path.parent, set()).add(path.name)
    for parent, names in folders.items():
        prepare_folder(parent, names if shard else None)
    return _run_jobs(upscaler, jobs, folder, settings, arguments, args, report, display, shard)


def _run_jobs(
    upscaler: Upscaler, jobs: list[Job], folder: Path | None, settings: Settings, arguments: dict[str, Any],
    args: argparse.Namespace, report: _Report, display: TerminalProgress | None, shard: Shard | None,
) -> int:
    """Run the planned jobs (split between processes under ``accelerate launch``), recording them in
    this shard's and process's own run log."""
    import torch
    from accelerate import PartialState

    from seesr.io.batch import BatchState, run_jobs, settings_hash
    from seesr.io.write import save_image
    from seesr.io.naming import format_of

    distributed = PartialState(cpu=not torch.cuda.is_available())
    if distributed.num_processes > 1 and settings.device is None:
        arguments["device"] = str(distributed.device)

    groups = input_groups(jobs)
    sources = [group[0].source for group in groups]

    def process(todo: list[Job]) -> list[Result]:
        """One input's outputs to do: its samples made together, each written (with its comparison)."""
        if display is not None:
            display.image(sources.index(todo[0].source) + 1, len(sources), todo[0].relative.name)
        results = upscaler.upscale_samples(todo[0].source, **arguments)
        written = []
        for job in todo:
            result = results[0 if job.seed is None else job.seed - settings.seed]
            result.save(job.target, format=format_of(job.target), overwrite=args.overwrite)
            if job.compare is not None:
                save_image(result.comparison(), job.compare, overwrite=args.overwrite)
            written.append(result)
        return written

    state = BatchState(folder, distributed.process_index, shard.name if shard else None) if folder is not None else None
    with distributed.split_between_processes(groups) as my_groups:
        my_jobs = [job for group in my_groups for job in group]
        report.expect(my_jobs)
        _, _, failed = run_jobs(
            my_jobs, process, settings=settings_hash(settings), state=state, overwrite=args.overwrite, report=report
        )
    if display is not None:
        display.clear()
    return 1 if failed else 0
