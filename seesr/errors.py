"""The error hierarchy: every failure a user can act on is a ``SeesrError`` subclass.

Messages say what went wrong *and* what to do about it.
"""

from __future__ import annotations


class SeesrError(Exception):
    """Base class of every error seesr raises on purpose."""


class ConfigError(SeesrError, ValueError):
    """A setting is out of range or inconsistent with another one."""


class WeightsError(SeesrError, FileNotFoundError):
    """Model weights are missing, incomplete or do not match the expected architecture."""


class MissingWeightsError(WeightsError):
    """Weights are absent (not placed, not downloadable now): the only weights fault the Real-ESRGAN
    fallback may cover. Files present but unusable raise a plain :class:`WeightsError`.

    ``missing``: the manifest names (or paths) of the absent files; ``tried``: what was done to get
    them, in a few words (``a download was tried from 4 sources (...): none could be reached``), or
    None when no download was asked for."""

    def __init__(self, message: str, missing: "list[str] | tuple[str, ...]" = (), tried: str | None = None) -> None:
        super().__init__(message)
        self.missing = tuple(missing)
        self.tried = tried


class InputError(SeesrError, ValueError):
    """The input image cannot be used (unreadable, too small, too large, wrong type)."""


class OutOfMemoryError(SeesrError, MemoryError):
    """A stage ran out of device or host memory and no fallback was allowed."""


class Cancelled(SeesrError):
    """The caller stopped a run (:class:`seesr.progress.Cancellation`); nothing was produced, and
    the Upscaler serves the next image as if this one had not started."""
