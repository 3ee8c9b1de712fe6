"""Reading and writing files safely: one rule for every file the program reads, one for every file
it writes.

Reading: a path is checked before it is opened: it must resolve (a symlink loop or a missing file
is one line), be a regular file (a FIFO would block ``open`` forever, a device such as
``/dev/zero`` never ends, a folder is not a file) and be no larger than the caller's bound. The
bytes read are bounded again, in case the file grows between the check and the read. Every problem
is raised as the caller's :class:`~seesr.errors.SeesrError` subclass with ``what`` naming the
file's role, so the command line prints one line. ``shown`` replaces the path in messages where the
path must not be shown (a server's temporary file); an empty ``shown`` names the file by its role
alone.

Writing: a file is written whole to a hidden temporary name in its folder and renamed into place
(:func:`write_atomically`), so a kill or a full disk leaves the previous file or none, never half a
file; the rename replaces a symbolic link at the name instead of writing through it.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Collection

from seesr.errors import InputError, SeesrError

logger = logging.getLogger(__name__)


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


def checked_file(
    path: str | os.PathLike[str], what: str, max_bytes: int, error: type[SeesrError], *, shown: str | None = None
) -> int:
    """Check that ``path`` is a regular file of at most ``max_bytes`` without opening it; returns
    its size. ``what`` names the file in the message (``"input"``, ``"config file"``)."""
    path = Path(path)
    name = _name(path, what, shown)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(f"{name} does not exist") from None
    except OSError as problem:
        if problem.errno == errno.ELOOP:
            raise error(f"{name} is a symbolic link loop; point it at a file") from None
        raise error(f"cannot read {name}: {problem.strerror or problem}") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{name} is {_kind(info.st_mode)}, not a file")
    if info.st_size > max_bytes:
        size, limit = _size(info.st_size), _size(max_bytes)
        if size == limit:  # rounded to the same words: give the bytes
            size, limit = f"{info.st_size} bytes", f"{max_bytes} bytes"
        raise error(f"{name} is {size}, over the {limit} limit for it")
    return info.st_size


def read_bytes(
    path: str | os.PathLike[str], what: str, max_bytes: int, error: type[SeesrError], *, shown: str | None = None
) -> bytes:
    """The bytes of a checked regular file (:func:`checked_file`), never more than ``max_bytes``."""
    checked_file(path, what, max_bytes, error, shown=shown)
    name = _name(Path(path), what, shown)
    try:
        with open(path, "rb", opener=_no_follow_block) as handle:
            data = handle.read(max_bytes + 1)
    except OSError as problem:
        raise error(f"cannot read {name}: {problem.strerror or problem}") from None
    if len(data) > max_bytes:
        raise error(f"{name} is over the {_size(max_bytes)} limit for it")
    return data


def read_text(
    path: str | os.PathLike[str], what: str, max_bytes: int, error: type[SeesrError], *, shown: str | None = None
) -> str:
    """A checked regular file (:func:`read_bytes`) decoded as UTF-8; other bytes are one line."""
    data = read_bytes(path, what, max_bytes, error, shown=shown)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as problem:
        raise error(f"{_name(Path(path), what, shown)} is not UTF-8 text (byte {problem.start})") from None


def _name(path: Path, what: str, shown: str | None) -> str:
    """How a file is named in messages: its role and its path (or ``shown``)."""
    where = str(path) if shown is None else shown
    return f"{what} {where}" if where else what


def _no_follow_block(path: str, flags: int) -> int:
    """Open without blocking on a FIFO that replaced the checked file in the meantime."""
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def _size(size: int) -> str:
    """A byte count in words (``3 KiB``, ``1.5 GiB``)."""
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}".replace(".0 ", " ")
    return f"{size} bytes"


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/seesr`` (``~/.cache/seesr``): where seesr keeps what it makes for the user
    (weights of an installed package, Real-ESRGAN conversions when the weights folder does not exist,
    compiled kernels)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seesr"


# ------------------------------------------------------------------------------------ writing
_TEMP_FILE = re.compile(r"^\.(.+)\.(\d+)-[0-9a-f]{8}\.tmp$")
"""``.<name>.<pid>-<random>.tmp``: the hidden temporary file :func:`write_atomically` renames into place."""


def temporary_name(path: Path) -> Path:
    """The hidden temporary name beside ``path`` that this process writes before renaming."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def write_atomically(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool, error: type[SeesrError] = InputError
) -> None:
    """Write ``data`` to a hidden temp file in the target folder, fsync, then rename (or link) into place.

    ``overwrite=False`` uses ``os.link``, which fails if the target appeared meanwhile, so an
    existing file is never replaced; file systems without hard links fall back to a check and
    ``os.replace``. The temp file is removed on every error; problems are ``error`` (an output
    file's: :class:`InputError`).
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    except OSError as err:
        raise error(f"cannot write to {path.parent}: {err.strerror or err}") from err
    try:
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            raise error(f"cannot write {path}: {err.strerror or err}") from err
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError as err:
            raise error(f"{path} exists; pass overwrite=True (--overwrite) to replace it") from err
        except OSError:  # no hard links here (FAT, some network shares)
            if path.exists():
                raise error(f"{path} exists; pass overwrite=True (--overwrite) to replace it") from None
            os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def remove_stale_temp_files(folder: Path, names: Collection[str] | None = None) -> list[Path]:
    """Remove the temporary files that writers killed mid-write (or mid-rename) left in ``folder``:
    ours by name, and only those whose process is gone (a live writer's file is kept); with
    ``names``, only those of files so named (on a volume other machines write to, a process id
    from another machine says nothing: each writer cleans up after its own files only)."""
    removed = []
    try:
        candidates = [entry for entry in os.scandir(folder) if entry.name.startswith(".") and entry.is_file()]
    except OSError:
        return removed
    for entry in candidates:
        match = _TEMP_FILE.match(entry.name)
        if match is None or (names is not None and match.group(1) not in names) or _process_alive(int(match.group(2))):
            continue
        try:
            os.unlink(entry.path)
        except OSError as err:
            logger.warning("cannot remove the leftover temporary file %s: %s", entry.path, err.strerror or err)
            continue
        removed.append(Path(entry.path))
        logger.info("removed %s, left by an interrupted run", entry.path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but another user's
        return True
    return True
