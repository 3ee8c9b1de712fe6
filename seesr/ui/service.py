"""What the web page does, without the page: one :class:`~seesr.api.Upscaler` serving every request in
turn, plans, cancellation, and the files a person downloads.

Gradio runs each request in a thread of its own; the Upscaler holds one model's networks and is not
made for two calls at once, so runs take :attr:`PageService.lock` one at a time (Gradio's queue
keeps the order; a run that Gradio gave up on still finishes or stops before the next starts).
Plans come from a second Upscaler that never loads a network, as ``seesr upscale --dry-run`` does,
so a plan never waits for a run. Every file the page writes lives under one folder, which
:func:`~seesr.ui.server.serve` removes when the server stops; results older than
:data:`RESULT_MAX_AGE` go earlier.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from PIL import Image

from seesr.api import DryRun, Result, Upscaler
from seesr.errors import Cancelled, SeesrError
from seesr.imaging.convert import resize
from seesr.io.naming import DEFAULT_SINGLE_TAG, output_file
from seesr.io.read import read_sent_image
from seesr.progress import Cancellation, ProgressCallback

logger = logging.getLogger(__name__)

RESULT_MAX_AGE = 3600.0
"""Seconds a result's files are kept for its download."""
SLIDER_PNG_LEVEL = 1
"""zlib level of the slider's PNG files: lossless, since the slider is for comparing details, and
written in a fiftieth of a second for a megapixel (the default level takes ten times as long)."""


@dataclass(frozen=True)
class Upscaled:
    """One image done for the page: the result, and the slider's two PNG files in ``folder`` (the
    input resized to the output's size with bicubic; the output). The file to download is written
    by :meth:`download`, after the slider is shown."""

    result: Result
    name: str
    """The download's stem: the input's, with the single-file tag (``photo`` -> ``photo_seesr``)."""
    folder: Path
    before: Path
    after: Path
    seconds: float
    """Wall time of the :meth:`~seesr.api.Upscaler.upscale` call."""

    def download(self) -> Path:
        """Write the output in the settings' format and quality (``auto``: the input's) and return it."""
        return self.result.save(output_file(self.folder, self.name, self.result.output_format))


@dataclass
class BatchDone:
    """Several images done: what each one gave (in upload order), and one zip of the outputs."""

    done: list[tuple[str, Upscaled, Path]] = field(default_factory=list)
    """(file name, what it gave, its output file) of each image upscaled."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(file name, the one-line reason) of each image that could not be upscaled."""
    archive: Path | None = None


def message(error: BaseException) -> str:
    """The one line a person reads about a failure: seesr's own message, else what happened."""
    if isinstance(error, SeesrError):
        lines = str(error).splitlines()
        return lines[0] if lines else type(error).__name__
    text = " ".join(str(error).split())
    return f"unexpected error: {type(error).__name__}: {text} (the server's log has the details)"


class PageService:
    """One Upscaler serving the page: plans, runs one at a time, cancellation per browser session,
    result files in ``workdir``."""

    def __init__(self, upscaler: Upscaler, workdir: Path) -> None:
        self.upscaler = upscaler
        self.planner = Upscaler(
            upscaler.weights, download=upscaler.download, config_file=upscaler.config_file, **upscaler.defaults
        )
        self.workdir = Path(workdir)
        self.lock = threading.Lock()
        self._asked: dict[str, Cancellation] = {}
        """Per browser session: the run asked for and not started yet (it waits in Gradio's queue)."""
        self._running: dict[str, Cancellation] = {}
        self._runs_lock = threading.Lock()

    # ------------------------------------------------------------------ planning
    def plan(self, image: str | Path, arguments: dict[str, Any]) -> DryRun:
        """The dry-run plan of ``image`` with these settings (SeesrError when either is refused)."""
        return self.planner.dry_run(read_sent_image(image), **arguments)

    # ------------------------------------------------------------------ running
    def upscale(
        self, image: str | Path, arguments: dict[str, Any], session: str, progress: ProgressCallback | None = None
    ) -> Upscaled:
        """Upscale one uploaded image (SeesrError when it or the settings are refused, Cancelled
        when :meth:`cancel` stopped it)."""
        data = read_sent_image(image)
        self.upscaler.settings(arguments)  # a refused setting is said before the run waits its turn
        with self._run(session, progress) as cancellation:
            return self._upscale(data, Path(image).stem, arguments, cancellation)

    def batch(
        self,
        images: list[str | Path],
        arguments: dict[str, Any],
        session: str,
        progress: Callable[[int, str], ProgressCallback] | None = None,
    ) -> BatchDone:
        """Upscale every image in turn; one that is refused is named with its reason and the rest
        are still done. ``progress(index, name)`` gives the callback of each image. The outputs go
        into one zip, each named after its input (``photo.png`` -> ``photo_seesr.png``)."""
        self.upscaler.settings(arguments)
        outcome = BatchDone()
        with self._run(session, None) as cancellation:
            for index, image in enumerate(images):
                name = Path(image).name
                cancellation.callback = progress(index, name) if progress is not None else None
                try:
                    upscaled = self._upscale(read_sent_image(image), Path(image).stem, arguments, cancellation)
                except Cancelled:
                    raise
                except SeesrError as error:
                    outcome.failed.append((name, message(error)))
                else:
                    outcome.done.append((name, upscaled, upscaled.download()))
        if outcome.done:
            outcome.archive = self._archive([download for _, _, download in outcome.done])
        return outcome

    def ask(self, session: str) -> None:
        """A run of this browser session was asked for and may wait in the queue: from now on
        :meth:`cancel` stops it before it starts, or at its next step once it runs."""
        with self._runs_lock:
            self._asked[session] = Cancellation()

    def cancel(self, session: str) -> bool:
        """Stop the run of this browser session (waiting or running); False when there is none."""
        with self._runs_lock:
            runs = [r for r in (self._asked.get(session), self._running.get(session)) if r is not None]
        for cancellation in runs:
            cancellation.cancel()
        return bool(runs)

    @contextmanager
    def _run(self, session: str, progress: ProgressCallback | None) -> Iterator[Cancellation]:
        """A run's turn on the Upscaler, holding :attr:`lock`: cancellable (:meth:`cancel`) from
        the moment it was asked for (:meth:`ask`) until it ends."""
        with self._runs_lock:
            cancellation = self._asked.pop(session, None) or Cancellation()
            cancellation.callback = progress
            self._running[session] = cancellation
        try:
            with self.lock:
                cancellation.check()  # cancelled while it waited
                yield cancellation
        finally:
            with self._runs_lock:
                if self._running.get(session) is cancellation:
                    del self._running[session]

    def _upscale(self, data: bytes, stem: str, arguments: dict[str, Any], cancellation: Cancellation) -> Upscaled:
        self.upscaler.progress = cancellation
        started = time.perf_counter()
        try:
            result = self.upscaler.upscale(data, **arguments)
        finally:
            self.upscaler.progress = None
        seconds = time.perf_counter() - started
        folder = self._result_folder()
        after = _displayable(result.image)
        before = resize(result.source.rgb, after.size) if result.source is not None else after
        for image, path in ((before, folder / "before.png"), (after, folder / "after.png")):
            image.save(path, compress_level=SLIDER_PNG_LEVEL)
        return Upscaled(result, stem + DEFAULT_SINGLE_TAG, folder, folder / "before.png", folder / "after.png", seconds)

    # ------------------------------------------------------------------ files
    def _result_folder(self) -> Path:
        """A fresh folder for one result's files; results past :data:`RESULT_MAX_AGE` are removed."""
        results = self.workdir / "results"
        results.mkdir(parents=True, exist_ok=True)
        expired = time.time() - RESULT_MAX_AGE
        for old in results.iterdir():
            if old.stat().st_mtime < expired:
                shutil.rmtree(old, ignore_errors=True)
        folder = results / uuid.uuid4().hex
        folder.mkdir()
        return folder

    def _archive(self, files: list[Path]) -> Path:
        """One zip of ``files``, each under its own name (a repeated name gets ``_2``, ``_3``, ...)."""
        archive = self._result_folder() / "seesr-results.zip"
        taken: set[str] = set()
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as bundle:
            for path in files:
                name, number = path.name, 1
                while name in taken:
                    number += 1
                    name = f"{path.stem}_{number}{path.suffix}"
                taken.add(name)
                bundle.write(path, name)
        return archive


def _displayable(image: Image.Image) -> Image.Image:
    """The output as a browser shows it: 8-bit RGB, or RGBA when it has alpha."""
    return image.convert("RGBA" if "A" in image.getbands() else "RGB")
