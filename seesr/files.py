"""Reading the files a user points seesr at, safely: one rule for every file the program reads.

A path is checked before it is opened: it must resolve (a symlink loop or a missing file is one
line), be a regular file (a FIFO would block ``open`` forever, a device such as ``/dev/zero``
never ends, a folder is not a file) and be no larger than the caller's bound. The bytes read are
bounded again, in case the file grows between the check and the read. Every problem is raised as
the caller's :class:`~seesr.errors.SeesrError` subclass with ``what`` naming the file's role, so
the command line prints one line.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from seesr.errors import SeesrError


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def checked_file(path: str | os.PathLike[str], what: str, max_bytes: int, error: type[SeesrError]) -> int:
    """Check that ``path`` is a regular file of at most ``max_bytes`` without opening it; returns
    its size. ``what`` names the file in the message (``"input"``, ``"config file"``)."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except OSError as problem:
        if problem.errno == errno.ELOOP:
            raise error(f"{what} {path} is a symbolic link loop; point it at a file") from None
        raise error(f"cannot read {what} {path}: {problem.strerror or problem}") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what} {path} is {_kind(info.st_mode)}, not a file")
    if info.st_size > max_bytes:
        raise error(f"{what} {path} is {_size(info.st_size)}, over the {_size(max_bytes)} limit for it")
    return info.st_size


def read_bytes(path: str | os.PathLike[str], what: str, max_bytes: int, error: type[SeesrError]) -> bytes:
    """The bytes of a checked regular file (:func:`checked_file`), never more than ``max_bytes``."""
    checked_file(path, what, max_bytes, error)
    try:
        with open(path, "rb", opener=_no_follow_block) as handle:
            data = handle.read(max_bytes + 1)
    except OSError as problem:
        raise error(f"cannot read {what} {path}: {problem.strerror or problem}") from None
    if len(data) > max_bytes:
        raise error(f"{what} {path} is over the {_size(max_bytes)} limit for it")
    return data


def read_text(path: str | os.PathLike[str], what: str, max_bytes: int, error: type[SeesrError]) -> str:
    """A checked regular file (:func:`read_bytes`) decoded as UTF-8; other bytes are one line."""
    data = read_bytes(path, what, max_bytes, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as problem:
        raise error(f"{what} {path} is not UTF-8 text (byte {problem.start})") from None


def _no_follow_block(path: str, flags: int) -> int:
    """Open without blocking on a FIFO that replaced the checked file in the meantime."""
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def _size(size: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}".replace(".0 ", " ")
    return f"{size} bytes"
