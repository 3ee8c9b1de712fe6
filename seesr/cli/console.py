"""What the command line prints besides results: one line per failure (never a traceback), names
escaped so that one file stays one line, and log lines that erase the progress line first."""

from __future__ import annotations

import logging
import os
import sys

from seesr.errors import SeesrError
from seesr.progress import TerminalProgress


def failure_text(error: BaseException) -> str:
    """What a run-level failure says (its first line): on stderr, and in the JSON line of each
    input it left unfinished."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted; finished outputs are kept, run the same command again to do the rest"
    if isinstance(error, SeesrError):
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror or error}{where}"
    return (f"unexpected error: {type(error).__name__}: {' '.join(str(error).split())} "
            "(a bug in seesr; --verbose shows the traceback)")  # fmt: skip


def printable(text: str) -> str:
    """``text`` with what a terminal would not show as written escaped (a newline or an escape
    sequence in a file name, an undecodable byte): one result stays one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def error_line(line: str) -> None:
    """One line on stderr, below an erased progress line."""
    if LOG_HANDLER.display is not None:
        LOG_HANDLER.display.clear()
    print("\n".join(printable(part) for part in line.splitlines()), file=sys.stderr)


class _ClearingHandler(logging.StreamHandler):
    """Log lines on stderr that first erase the progress line (if one is drawn)."""

    display: TerminalProgress | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.display is not None:
            self.display.clear()
        super().emit(record)


LOG_HANDLER = _ClearingHandler(sys.stderr)
LOG_HANDLER.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))


def configure_logging(quiet: bool, verbose: bool) -> None:
    """Warnings by default (``SEESR_LOG_LEVEL`` changes it); ``--quiet``: errors only (Python
    warnings included); ``--verbose``: seesr's debug messages, other libraries' warnings."""
    root = logging.getLogger()
    if LOG_HANDLER not in root.handlers:
        root.addHandler(LOG_HANDLER)
    LOG_HANDLER.stream, LOG_HANDLER.display = sys.stderr, None
    root.setLevel("ERROR" if quiet else "WARNING" if verbose else os.environ.get("SEESR_LOG_LEVEL", "WARNING"))
    logging.getLogger("seesr").setLevel("DEBUG" if verbose else logging.NOTSET)
    logging.captureWarnings(quiet)
