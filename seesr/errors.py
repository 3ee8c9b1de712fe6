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


class InputError(SeesrError, ValueError):
    """The input image cannot be used (unreadable, too small, too large, wrong type)."""


class OutOfMemoryError(SeesrError, MemoryError):
    """A stage ran out of device or host memory and no fallback was allowed."""
