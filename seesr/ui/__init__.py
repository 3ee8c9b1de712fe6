"""``seesr ui``: a web page over one :class:`~seesr.api.Upscaler` (Gradio).

``build_app(upscaler)`` returns the page as a ``gradio.Blocks`` to launch or mount in another app;
``seesr ui`` (:func:`seesr.ui.server.serve`) serves it. This module is light (no Gradio, no torch)
so that the command line can name the command without importing either.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import gradio

    from seesr.api import Upscaler

DEFAULT_QUEUE_SIZE = 16
"""Requests that may wait for the Upscaler at once; more are turned away with Gradio's "queue is full"."""


def build_app(
    upscaler: Upscaler | None = None, *, workdir: Path | None = None, queue_size: int = DEFAULT_QUEUE_SIZE
) -> gradio.Blocks:
    """The page over ``upscaler`` (default: a fresh :class:`~seesr.api.Upscaler` on the default weights),
    queue included. Its result files go into ``workdir`` (default: a temporary folder removed when
    the process exits)."""
    from seesr.api import Upscaler
    from seesr.ui.page import build_page
    from seesr.ui.service import PageService

    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="seesr-ui-results-"))
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    return build_page(PageService(upscaler if upscaler is not None else Upscaler(), workdir), queue_size)
