"""``seesr train HR_DIR -o OUT``: one flag per :class:`~seesr.training.settings.TrainSettings` field,
then :func:`seesr.training.loop.train`; Ctrl-C prints the command that continues the run."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from dataclasses import fields
from pathlib import Path

from seesr.settings.fields import field_kind, flag_name, setting_of
from seesr.training.run_folder import complete_checkpoints
from seesr.training.settings import ENV_PREFIX, TrainSettings

def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``seesr train HR_DIR -o OUT`` subcommand, one flag per :class:`TrainSettings` field."""
    parser = commands.add_parser(
        "train",
        help="fine-tune SeeSR on a folder of HR images (or ready LR/HR pairs)",
        description="Fine-tune SeeSR's ControlNet and image attention. Several processes: "
        "`accelerate launch -m seesr.cli train ...`.",
        epilog=f"Every flag --NAME is also the environment variable {ENV_PREFIX}NAME (upper case, underscores) and "
        "the key NAME of a --config YAML file. Precedence: flags > environment > YAML > defaults.",
        allow_abbrev=False,
    )
    parser.add_argument("data", type=Path, help="folder of HR images, or of pairs (hr/ or gt/ + lr/ or sr_bicubic/)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="run folder (weights in OUT/seesr/)")
    parser.add_argument("--config", type=Path, help="YAML file of training settings")
    for f in fields(TrainSettings):
        text = flag_help(f)
        if field_kind(f)[0] is bool:
            switch = argparse.BooleanOptionalAction
            parser.add_argument(flag_name(f.name), dest=f.name, action=switch, default=None, help=text)
        else:  # text: TrainSettings converts and checks every value, reporting all problems at once
            parser.add_argument(flag_name(f.name), dest=f.name, default=None, help=text)


def flag_help(declared: dataclasses.Field) -> str:
    """A training flag's help: the declared text, then its default and what is allowed, each left out
    where the text already says it (a default it names, choices it lists) or there is none."""
    info, (kind, _) = setting_of(declared), field_kind(declared)
    notes = []
    if declared.default is not None and "default" not in info.help:
        notes.append(f"default: {('on' if declared.default else 'off') if kind is bool else declared.default}")
    if info.choices and not all(choice in info.help for choice in info.choices):
        notes.append(f"one of {', '.join(info.choices)}")
    elif info.range:
        notes.append(" to ".join(f"{int(end)}" if kind is int and abs(end) < 1e12 else f"{end:g}" for end in info.range))
    return f"{info.help} ({'; '.join(notes)})" if notes else info.help


def run(args: argparse.Namespace) -> int:
    """Run ``seesr train`` from parsed flags; prints one summary line. On Ctrl-C: the command that
    continues the run from its newest complete checkpoint (exit code 130)."""
    from seesr.training.loop import train

    from seesr.progress import TrainingLines, training_every

    flags = {f.name: getattr(args, f.name) for f in fields(TrainSettings)}
    settings = TrainSettings.from_sources(flags, args.config)
    # a bar on a terminal; else a line every few steps (a log file, CI)
    progress = True if sys.stderr.isatty() else TrainingLines(sys.stderr, training_every(settings.max_steps))
    try:
        result = train(args.data, args.output, settings=settings, progress=progress)
    except KeyboardInterrupt:
        print(f"seesr: {interrupted_line(args, settings)}", file=sys.stderr)
        return 130
    if result.is_main_process:
        print(f"trained {result.steps} steps, final loss {result.final_loss:.4f}: weights in {result.weights_dir}")
    return 0


def interrupted_line(args: argparse.Namespace, settings: TrainSettings) -> str:
    """What to do after Ctrl-C: resume from the newest complete checkpoint (the command, quoted
    for the shell, with the flags that were given), or start again when there is none yet."""
    words = ["seesr", "train", str(args.data), "-o", str(args.output)]
    words += ["--config", str(args.config)] if args.config is not None else []
    for f in fields(TrainSettings):
        value = getattr(args, f.name)
        if value is None or f.name == "resume":
            continue
        if isinstance(value, bool):
            words.append(flag_name(f.name) if value else "--no-" + flag_name(f.name)[2:])
        else:
            words += [flag_name(f.name), str(value)]
    checkpoints = complete_checkpoints(Path(args.output))
    if not checkpoints:
        return (f"interrupted before the first checkpoint (every {settings.checkpoint_every} steps); nothing to "
                f"resume, start again with: {shlex.join(words)}")  # fmt: skip
    return f"interrupted; continue from {checkpoints[-1].name} with: {shlex.join([*words, '--resume', 'latest'])}"
