"""Which files a run reads: image files named, images inside folders, and glob matches.

Light (no torch): the command line, folder runs and training data all find their images here.
"""

from __future__ import annotations

import glob
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"})
"""Suffixes of the files in a folder that are taken as images (files named directly are always tried)."""


def find_inputs(patterns: list[str]) -> tuple[list[Path], list[Path]]:
    """(images, skipped): files named, images inside folders (sorted), and glob matches, without
    duplicates; ``skipped`` are the files in those folders that are not images seesr reads (by
    suffix; hidden files are not counted)."""
    found: list[Path] = []
    skipped: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            found += [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            skipped += [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        elif any(ch in pattern for ch in "*?["):
            found += sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        else:
            found.append(path)
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path, None)
    return list(unique), skipped
