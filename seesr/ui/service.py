"""What the web page does, without the page: one :class:`~seesr.api.Upscaler` serving every request in
turn, plans, cancellation, and the files a person downloads.

Every run is :meth:`~seesr.api.Upscaler.upscale_samples`: one image with ``num_samples`` 1 (the
default) and several, seeds ``seed``, ``seed + 1``, ..., otherwise; every file a person downloads
is written by :meth:`~seesr.api.Result.save` (format, quality, metadata) and named as the command
line names it (:mod:`seesr.io.naming`).

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
from seesr.io.naming import DEFAULT_SINGLE_TAG, output_file, sample_file
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
    """One image done for the page: its samples, and the PNG files shown in ``folder`` (the input
    resized to the output's size with bicubic; each sample's output). The files to download are
    written by :meth:`files` and :meth:`download`, after the result is shown."""

    samples: list[Result]
    """The results, with the seeds ``seed``, ``seed + 1``, ...: one when Real-ESRGAN stood in, whose
    every sample would be the same image."""
    name: str
    """The downloads' stem: the input's, with the single-file tag (``photo`` -> ``photo_seesr``)."""
    folder: Path
    before: Path
    afters: list[Path]
    """Each sample's output as a lossless PNG, in the order of :attr:`samples`."""
    seconds: float
    """Wall time of the :meth:`~seesr.api.Upscaler.upscale_samples` call."""

    @property
    def result(self) -> Result:
        """The first sample (the one the slider shows first and ``/upscale`` returns)."""
        return self.samples[0]

    @property
    def after(self) -> Path:
        return self.afters[0]

    @property
    def seeds(self) -> list[int | None]:
        return [sample.seed for sample in self.samples]

    def file(self, index: int = 0) -> Path:
        """Write sample ``index`` in the settings' format and quality (``auto``: the input's) and
        return it: ``NAME.EXT``, or ``NAME_s<seed>.EXT`` when there are several samples."""
        result = self.samples[index]
        target = output_file(self.folder, self.name, result.output_format)
        return result.save(target if len(self.samples) == 1 else sample_file(target, result.seed))

    def files(self) -> list[Path]:
        """Every sample's file (:meth:`file`)."""
        return [self.file(index) for index in range(len(self.samples))]

    def download(self) -> Path:
        """What the Download button gives: the one output file, or a zip (``NAME.zip``) of all samples."""
        files = self.files()
        return files[0] if len(files) == 1 else zip_files(files, self.folder / f"{self.name}.zip")


@dataclass
class BatchDone:
    """Several images done: what each one gave (in upload order), and one zip of the outputs."""

    done: list[tuple[str, Upscaled, list[Path]]] = field(default_factory=list)
    """(file name, what it gave, its output files: one per sample) of each image upscaled."""
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
        are still done. ``progress(index, name)`` gives the callback of each image. Every sample of
        every image goes into one zip, named after its input as :meth:`Upscaled.file` says
        (``photo.png`` -> ``photo_seesr.png``, or ``photo_seesr_s42.png``, ``photo_seesr_s43.png``)."""
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
                    outcome.done.append((name, upscaled, upscaled.files()))
        if outcome.done:
            files = [path for _, _, written in outcome.done for path in written]
            outcome.archive = zip_files(files, self._result_folder() / "seesr-results.zip")
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
            results = self.upscaler.upscale_samples(data, **arguments)
        finally:
            self.upscaler.progress = None
        seconds = time.perf_counter() - started
        if results[0].seed is None:  # Real-ESRGAN stood in: every sample is its one image
            results = results[:1]
        folder = self._result_folder()
        shown = [_displayable(result.image) for result in results]
        source = results[0].source
        before = resize(source.rgb, shown[0].size) if source is not None else shown[0]
        paths = [folder / "before.png", *(folder / f"after-{index}.png" for index in range(len(shown)))]
        for image, path in zip((before, *shown), paths):
            image.save(path, compress_level=SLIDER_PNG_LEVEL)
        return Upscaled(results, stem + DEFAULT_SINGLE_TAG, folder, paths[0], paths[1:], seconds)

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

def zip_files(files: list[Path], archive: Path) -> Path:
    """One zip ``archive`` of ``files``, each under its own name (a repeated name gets ``_2``, ``_3``, ...)."""
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
