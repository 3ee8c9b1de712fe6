"""``seesr ui``: serve the page on this machine until Ctrl-C (or SIGTERM), then remove its files.

Defaults keep it private: it listens on 127.0.0.1 (``--host`` opens it to others), makes no public
share link unless ``--share``, sends no analytics, and serves no file but its own. Every file it
holds (uploads, results, Gradio's cache) lives in one temporary folder that is removed when it stops.
Uploads are refused over the input file limit (:func:`seesr.load.input_file_limit`) before they
are stored; pixels are checked from the header before decoding, as for every input.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

from seesr.errors import ConfigError
from seesr.ui import DEFAULT_QUEUE_SIZE

logger = logging.getLogger(__name__)

GRADIO_FOLDERS = {"GRADIO_TEMP_DIR": "uploads", "GRADIO_EXAMPLES_CACHE": "examples"}
"""Gradio's file folders (environment variable -> subfolder of the server's temporary folder)."""


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    weights: str | Path | None = None,
    download: bool = False,
    config_file: str | Path | None = None,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    share: bool = False,
    **settings: Any,
) -> int:
    """Serve the page over one Upscaler (``weights``, ``download``, ``config_file`` and the
    process settings ``settings``, e.g. ``device``) until interrupted; returns the exit code."""
    try:
        import gradio  # noqa: F401 - only to say what is missing
    except ImportError:
        raise ConfigError(
            "the web page needs Gradio: run `./start_seesr.sh setup` (or `pip install 'seesr[ui]'`)"
        ) from None
    if queue_size < 1:
        raise ConfigError(f"--queue-size must be 1 or more, got {queue_size}")
    from seesr.api import Upscaler
    from seesr.io.read import input_file_limit
    from seesr.runtime.devices import resolve_device
    from seesr.ui import build_app

    upscaler = Upscaler(weights, download=download, config_file=config_file, **settings)
    resolve_device(upscaler.settings({}).device)  # a device this machine lacks fails now, not per request
    workdir = Path(tempfile.mkdtemp(prefix="seesr-ui-"))
    for variable, folder in GRADIO_FOLDERS.items():
        os.environ[variable] = str(workdir / folder)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as Ctrl-C does: files removed
    app = None
    try:
        # results inside Gradio's upload folder: it serves them from there without copying them
        app = build_app(upscaler, workdir=workdir / GRADIO_FOLDERS["GRADIO_TEMP_DIR"] / "seesr", queue_size=queue_size)
        if not _loopback(host):
            logger.warning("the page listens on %s: anyone who reaches this machine can use it (it has no login)", host)
        logger.warning("temporary files in %s (removed when the server stops)", workdir)
        app.launch(
            server_name=host, server_port=port, share=share, max_file_size=input_file_limit(), allowed_paths=[],
            show_error=False, ssr_mode=False, pwa=False, mcp_server=False, run_history=False, inbrowser=False,
        )  # fmt: skip
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if app is not None:
            app.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
