"""What an upscale is doing, as events, and the one-line terminal display of them.

The library never prints: :class:`~seesr.api.Upscaler` (``progress=callback``), the SeeSR pipeline
(``pipe.progress``) and the Real-ESRGAN network (``network.progress``) send :data:`ProgressEvent`
values to a callback. The command line draws them with :class:`TerminalProgress` when stderr is a
terminal. Light module (no torch).
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TextIO, TypeVar

from seesr.errors import Cancelled

logger = logging.getLogger(__name__)

RECORD_FIELDS = ("size", "engine", "model", "seed", "seconds", "tags", "fallback_reason", "fidelity")
"""What a result reports to a machine (:meth:`seesr.api.Result.record`; ``seesr upscale --json``
adds ``input``, ``output`` and ``status``)."""


@dataclass(frozen=True)
class RunStart:
    """An engine starts on an image: the first line of the display.

    ``steps``: denoising steps (SeeSR only); ``tiles``: the tile plan in words; ``retry``: why this
    is a second try with the same engine (out of memory with larger tiles), else None. A switch
    to Real-ESRGAN is not a retry: its reason is the result's ``fallback_reason``."""

    engine: str
    model: str
    device: str
    dtype: str
    steps: int | None
    tiles: str
    retry: str | None = None

    def describe(self) -> str:
        steps = f", {self.steps} step{'s' if self.steps != 1 else ''}" if self.steps is not None else ""
        return f"engine {self.engine}, model {self.model}, {self.device} {self.dtype}{steps}; {self.tiles}"


@dataclass(frozen=True)
class StageProgress:
    """``done`` of ``total`` units of a stage (denoise: steps x tiles; realesrgan: tiles); a stage
    that runs as a whole starts with ``total`` 0."""

    stage: str
    done: int
    total: int


ProgressEvent = RunStart | StageProgress
ProgressCallback = Callable[[ProgressEvent], None]
Output = TypeVar("Output")


class StageCounter:
    """Counts the units of one stage and reports each step (``callback`` None: counts silently)."""

    def __init__(self, callback: ProgressCallback | None, stage: str, total: int = 0) -> None:
        self.callback, self.stage, self.total, self.done = callback, stage, total, 0
        self._emit()

    def update(self, units: int = 1) -> None:
        self.done += units
        self._emit()

    def _emit(self) -> None:
        if self.callback is not None:
            self.callback(StageProgress(self.stage, self.done, self.total))


StageHook = Callable[[str], AbstractContextManager[object]]
"""Called with a stage's name as it starts; the context manager it returns is held while the stage
runs (an out-of-memory injector raises from the call, a benchmark clock times the stage)."""


class StageTracker:
    """Passes events on, remembers the stage running (to say where memory ran out), and holds the
    stage hook every stage of a run starts under (None: none)."""

    def __init__(self, callback: ProgressCallback | None = None, stage_hook: StageHook | None = None) -> None:
        self.callback = callback
        self.stage_hook = stage_hook
        self.stage: str | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if isinstance(event, StageProgress):
            self.stage = event.stage
        else:
            logger.info("%s%s", f"{event.retry}; retrying: " if event.retry else "", event.describe())
        if self.callback is not None:
            self.callback(event)


class Cancellation:
    """Stops a run from another thread at its next progress event: between stages, denoising steps
    and tiles, and Real-ESRGAN tiles. It is a progress callback (passing each event on to
    ``callback``): give it to the run, and after :meth:`cancel` the next event raises
    :class:`~seesr.errors.Cancelled`, which no fallback catches, so the run ends there."""

    def __init__(self, callback: ProgressCallback | None = None) -> None:
        self.callback = callback
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Ask the run to stop at its next event (from any thread)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self) -> None:
        """Raise :class:`~seesr.errors.Cancelled` if :meth:`cancel` was called."""
        if self._cancelled.is_set():
            raise Cancelled("cancelled; nothing was produced")

    def __call__(self, event: ProgressEvent) -> None:
        self.check()
        if self.callback is not None:
            self.callback(event)


STAGE_NAMES = {
    "start": "starting",
    "load": "loading the networks",
    "tag": "tagging (RAM)",
    "text": "encoding the prompt",
    "encode": "VAE encode",
    "denoise": "denoising",
    "decode": "VAE decode",
    "colorfix": "colour fix",
    "realesrgan": "Real-ESRGAN",
}
"""How the display names each stage."""


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds + 0.5), 60)
    return f"{minutes}:{seconds:02d}"


def progress_text(event: StageProgress, steps: int | None, elapsed: float, stage_elapsed: float) -> str:
    """What a display says about one event: the stage, the denoising step and tile (or done/total),
    the image's elapsed time and the stage's ETA (``denoising  step 1/2, tile 3/4  0:05  ETA 0:03``).
    ``steps``: the run's denoising steps (from its :class:`RunStart`); ``elapsed``: seconds since the
    image started; ``stage_elapsed``: since this stage started. The terminal line and the web page
    both say it this way."""
    parts = [STAGE_NAMES.get(event.stage, event.stage)]
    if event.total:
        per_step = event.total // steps if event.stage == "denoise" and steps else 0
        if per_step and per_step * steps == event.total:
            step = max(event.done - 1, 0) // per_step + 1
            tile = event.done - (step - 1) * per_step
            parts.append(f"step {step}/{steps}, tile {tile}/{per_step}")
        else:
            parts.append(f"{event.done}/{event.total}")
    parts.append(_clock(elapsed))
    if event.total and event.done:
        parts.append(f"ETA {_clock(stage_elapsed / event.done * (event.total - event.done))}")
    return "  ".join(parts)


class ProgressTimes:
    """What a progress display remembers between events: the run's denoising steps, the stage
    running, and when it and the image started. The terminal line and the web page keep one each."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.steps: int | None = None
        self.stage: str | None = None
        self.stage_started = 0.0
        self.image_started = 0.0

    def start_image(self) -> None:
        """A new image starts: its clock from now, no stage yet."""
        self.image_started, self.stage = self.clock(), None

    def observe(self, event: ProgressEvent) -> bool:
        """Take in an event; True when it starts a new stage."""
        if isinstance(event, RunStart):
            self.steps = event.steps
            return False
        if event.stage == self.stage:
            return False
        self.stage, self.stage_started = event.stage, self.clock()
        return True

    def text(self, event: StageProgress) -> str:
        """The words for ``event`` (:func:`progress_text`) at this moment."""
        now = self.clock()
        return progress_text(event, self.steps, now - self.image_started, now - self.stage_started)


class TerminalProgress:
    """One updating line on a terminal per image: ``[i/n] name: stage  count  elapsed  ETA``,
    preceded by the engine line (:meth:`RunStart.describe`) whenever that changes. The line is
    cleared before anything else is printed (:meth:`clear`)."""

    MIN_INTERVAL = 0.1
    """Seconds between redraws of the same stage."""

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.prefix = ""
        self.times = ProgressTimes(clock)
        self._last_start: str | None = None
        self._drawn = 0.0
        self._shown = False

    def image(self, index: int, count: int, name: str) -> None:
        """A new image starts (``index`` from 1)."""
        self.prefix = f"[{index}/{count}] {name}" if count > 1 else name
        self.times.start_image()

    def __call__(self, event: ProgressEvent) -> None:
        new_stage = self.times.observe(event)
        if isinstance(event, RunStart):
            line = event.describe() if event.retry is None else f"{event.retry}; retrying: {event.describe()}"
            if line != self._last_start:
                self._last_start = line
                self.say(line)
            return
        now = self.clock()
        if not new_stage and (not event.total or (now - self._drawn < self.MIN_INTERVAL and event.done < event.total)):
            return  # nothing new: the stage's start again, or too soon after the last redraw
        width = shutil.get_terminal_size((80, 24)).columns - 1
        self.stream.write("\r\x1b[K" + f"{self.prefix}: {self.times.text(event)}"[:width])
        self.stream.flush()
        self._drawn, self._shown = now, True

    def clear(self) -> None:
        """Erase the progress line (before a result or error line is printed)."""
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False

    def say(self, line: str) -> None:
        """A line of its own above the progress line."""
        self.clear()
        print(line, file=self.stream, flush=True)


class LogProgress:
    """Progress as whole lines for a log that is read later, not redrawn (a Cog prediction's
    ``logs``, a batch job's output): the words of :func:`progress_text` when a stage starts, and
    within a stage at most one line every :attr:`INTERVAL` seconds. The engine line is not
    written here: :class:`StageTracker` logs it."""

    INTERVAL = 5.0
    """Seconds between two lines of the same stage."""

    def __init__(self, write: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.write = write
        self.times = ProgressTimes(clock)
        self.prefix = ""
        self._written: float | None = None

    def image(self, label: str = "") -> None:
        """A new image starts; its lines begin with ``label: `` (none: no prefix)."""
        self.prefix = f"{label}: " if label else ""
        self.times.start_image()

    def __call__(self, event: ProgressEvent) -> None:
        new_stage = self.times.observe(event)
        if isinstance(event, RunStart):
            return
        now = self.times.clock()
        if not new_stage and self._written is not None and now - self._written < self.INTERVAL:
            return
        self.write(self.prefix + self.times.text(event))
        self._written = now
