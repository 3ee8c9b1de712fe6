"""``seesr weights download|verify|list``: a thin adapter over :mod:`seesr.weights`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``weights`` subcommand."""
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


def run(args: argparse.Namespace) -> int:
    from seesr import weights

    names = args.names or None
    if args.action == "list":
        print(weights.weights_table(args.weights, names))
        return 0
    if args.action == "download":
        statuses = weights.download(names, args.weights, force=args.force, trust_unverified=args.trust_unverified)
    else:
        statuses = weights.verify(args.weights, names=names)
    print(weights.status_table(statuses))
    if any(s.unverified for s in statuses):
        print("unverified: no published sha256; mirrors are used for these only with --trust-unverified")
    return 1 if any(s.failed for s in statuses) else 0
