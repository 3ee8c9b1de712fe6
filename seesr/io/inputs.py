"""Which files a run reads: image files named, images inside folders (their sub-folders too with
``recursive``), and glob matches, each with its path relative to the input it was found through.

Light (no torch): the command line, folder runs and training data all find their images here.
A walk never leaves the folder it was given: a symbolic link that leads outside it, or back into a
folder the walk is already in (a loop), is a :class:`~seesr.errors.ConfigError` naming the link.
"""

from __future__ import annotations

import errno
import glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from seesr.errors import ConfigError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"})
"""Suffixes of the files in a folder that are taken as images (files named directly are always tried)."""
GLOB_CHARACTERS = "*?["


@dataclass(frozen=True)
class InputFile:
    """One input file and its path relative to the input it was found through (see :attr:`relative`)."""

    path: Path
    relative: PurePosixPath
    """The one definition of an input's relative path: a file named directly: its name; a file found
    in a folder: its path below that folder (``a/x.png`` for ``in/a/x.png`` of ``in/``); a glob match:
    its path below the glob's first folder with a wildcard (``a/x.png`` for ``in/*/x.png``). An
    output folder mirrors it, run logs and messages name the file by it, and it is stable across
    runs and machines (sharding hashes it)."""

    @classmethod
    def named(cls, path: Path) -> InputFile:
        """A file named directly: its relative path is its name."""
        return cls(path, PurePosixPath(path.name))


def find_inputs(
    patterns: Iterable[str], *, recursive: bool = False, exclude: Iterable[Path] = ()
) -> tuple[list[InputFile], list[Path]]:
    """(images, skipped): files named, images inside folders (sorted; sub-folders too when
    ``recursive``, but not the folders in ``exclude``, such as the output folder), and glob
    matches, without duplicates; ``skipped`` are the files in those folders that are not images
    seesr reads (by suffix; hidden files and folders are not counted). ConfigError for a symbolic
    link in a folder that loops or leads outside it, or a folder that cannot be listed."""
    found: list[InputFile] = []
    skipped: list[Path] = []
    left_out = {_real(path) for path in exclude}
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            images, others = _walk(path, recursive, left_out)
            found += images
            skipped += others
        elif any(ch in pattern for ch in GLOB_CHARACTERS):
            root = _glob_root(pattern)
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            found += [InputFile(p, PurePosixPath(p.relative_to(root).as_posix())) for p in matches]
        else:
            found.append(InputFile.named(path))
    unique: dict[Path, InputFile] = {}
    for each in found:
        unique.setdefault(each.path, each)
    return list(unique.values()), skipped


def _real(path: Path) -> str:
    return os.path.realpath(path)


def _glob_root(pattern: str) -> Path:
    """The folder a glob's matches are relative to: its parts before the first with a wildcard."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if any(ch in part for ch in GLOB_CHARACTERS)), len(parts))
    return Path(*parts[:fixed]) if fixed else Path()


def _walk(root: Path, recursive: bool, left_out: set[str]) -> tuple[list[InputFile], list[Path]]:
    """The images (sorted by relative path) and other files in ``root``, and with ``recursive`` in
    its sub-folders; links are followed only inside ``root`` and never round a loop."""
    real_root = _real(root)
    found: list[InputFile] = []
    skipped: list[Path] = []
    pending: list[tuple[Path, PurePosixPath, tuple[str, ...]]] = [(root, PurePosixPath(), (real_root,))]
    while pending:
        folder, below, chain = pending.pop()
        try:
            entries = sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))
        except OSError as error:
            raise ConfigError(f"cannot list the input folder {folder}: {error.strerror or error}") from None
        for entry in entries:
            real = _checked_link(entry, root, real_root) if entry.is_symlink() else _real(entry)
            if entry.is_dir():
                if not recursive or real in left_out:
                    continue
                if real in chain:
                    raise ConfigError(
                        f"{entry} is a symbolic link loop (it leads back to {Path(real)}); remove it, or name "
                        "the folders to upscale"
                    )
                pending.append((entry, below / entry.name, (*chain, real)))
            elif entry.is_file():
                if entry.suffix.lower() in IMAGE_SUFFIXES:
                    found.append(InputFile(entry, below / entry.name))
                else:
                    skipped.append(entry)
    return sorted(found, key=lambda each: each.relative.parts), skipped


def _checked_link(link: Path, root: Path, real_root: str) -> str:
    """Where a symbolic link inside an input folder leads; ConfigError when it loops or leaves the folder."""
    try:
        target = Path(link).resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop so
        target = None
    except OSError as error:
        if error.errno != errno.ELOOP:  # a dangling link: not an input, nothing to refuse
            return _real(link)
        target = None
    if target is None:
        raise ConfigError(f"{link} is a symbolic link loop; remove it, or name the files to upscale")
    if os.path.commonpath([real_root, str(target)]) != real_root:
        raise ConfigError(
            f"{link} is a symbolic link that leads outside the input folder {root} (to {target}); "
            "name that place as an input of its own, or remove the link"
        )
    return str(target)
