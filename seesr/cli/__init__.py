"""Command line: ``seesr upscale INPUT... -o OUT``, ``seesr weights download|verify|list``, ``seesr train``,
``seesr evaluate`` and ``seesr ui``: one module per command (``add_parser`` and ``run``), each a thin adapter over
the library; this module builds the parser and turns every failure into one line and an exit code.
Light: ``seesr --help`` and ``--version`` import no torch.
"""

from __future__ import annotations

import argparse
import logging

import seesr
from seesr.cli import evaluate, train, ui, upscale, weights
from seesr.cli.console import configure_logging, error_line, failure_text
from seesr.errors import SeesrError

COMMANDS = {"upscale": upscale, "weights": weights, "train": train, "evaluate": evaluate, "ui": ui}
"""Each command's module: ``add_parser(commands)`` adds its flags, ``run(args)`` returns the exit code."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seesr", description="Semantics-aware diffusion super-resolution (SeeSR-Turbo).", allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=f"seesr {seesr.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_parser(commands)
    return parser


def command_lines() -> str:
    """One line per command and its help, in the order of :data:`COMMANDS` (``./start_seesr.sh help``)."""
    choices = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))._choices_actions
    width = max(len(choice.dest) for choice in choices) + 2
    return "\n".join(f"  {choice.dest:<{width}}{choice.help}" for choice in choices)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(getattr(args, "quiet", False), getattr(args, "verbose", False))
    try:
        return COMMANDS[args.command].run(args)
    except SeesrError as error:
        error_line(f"seesr: {error}")
        return 2
    except OSError as error:  # the file system refused something the checks above could not foresee
        error_line(f"seesr: {failure_text(error)}")
        return 2
    except KeyboardInterrupt as error:
        error_line(f"seesr: {failure_text(error)}")
        return 130
    except Exception as error:  # noqa: BLE001 - a bug: one line; --verbose logs the traceback
        logging.getLogger("seesr").debug("the traceback of the unexpected error:", exc_info=True)
        error_line(f"seesr: {failure_text(error)}")
        return 1
