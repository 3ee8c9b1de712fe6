"""``seesr ui``: the web page (:mod:`seesr.ui`). Its setting flags are the process settings (device,
precision, compilation, attention kernel), the ones a request on the page cannot choose. Light: no
Gradio, no torch until it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from seesr.cli.flags import SETTINGS_EPILOG, add_setting_flags, setting_arguments
from seesr.settings.declare import DECLARED, settings_in_scope
from seesr.ui import DEFAULT_QUEUE_SIZE


def add_parser(commands: argparse._SubParsersAction) -> None:
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


def run(args: argparse.Namespace) -> int:
    from seesr.ui.server import serve

    return serve(host=args.host, port=args.port, weights=args.weights, download=args.download, config_file=args.config,
                 queue_size=args.queue_size, share=args.share, **setting_arguments(args))  # fmt: skip
