"""Private helpers shared by the modules of :mod:`seesr.weights` (finding a manifest file on disk or
in the Hugging Face cache, and the messages naming what is missing and where it was looked for).
Import the public functions from the package; these may change with it."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

from seesr.errors import MissingWeightsError
from seesr.weights.locate import (
    DOWNLOAD_COMMAND, EXPLICIT, FOLDERS, HF_CACHE, LEGACY_NAMES, MISSING, WEIGHTS_DIR, hf_cache_dir, offline_mode,
)  # fmt: skip
from seesr.weights.manifest import ManifestEntry, load_manifest

logger = logging.getLogger("seesr.weights")

CHUNK_BYTES = 1 << 20
"""Bytes read or written at a time (hashing, downloads)."""


def looked_in(entry: ManifestEntry, weights_dir: Path) -> str:
    place = str(weights_dir / entry.name)
    hub = entry.hub_sources()
    if hub:
        place += " and the Hugging Face cache (" + ", ".join(f"{s.hf_repo}: {s.hf_filename}" for s in hub) + ")"
    if not weights_dir.is_dir():
        place += f" (the weights directory {weights_dir} does not exist)"
    return place


def from_hf_cache(entry: ManifestEntry) -> Path | None:
    """The file in the local Hugging Face cache, from the first hub source that has it."""
    for source in entry.hub_sources():
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(
                source.hf_repo, source.hf_filename, cache_dir=hf_cache_dir(), revision=source.revision,
                repo_type=source.repo_type,
            )
        except Exception as error:  # a malformed cache must not stop the other locations
            logger.debug("Hugging Face cache lookup of %s failed: %s", entry.name, error)
            continue
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def local_file(path: Path) -> Path | None:
    """``path`` if it is a file, else its legacy ``.bin`` sibling (:data:`LEGACY_NAMES`) if that is, else None."""
    if path.is_file():
        return path
    legacy = LEGACY_NAMES.get(path.name)
    if legacy is not None and (path.parent / legacy).is_file():
        return path.parent / legacy
    return None


def locate_entry(
    entry: ManifestEntry, weights_dir: Path, explicit: Mapping[str, str | Path] | None = None
) -> tuple[str, Path | None]:
    """(location, path) of ``entry``: ``explicit[entry.name]`` if given (MISSING if it does not exist),
    else the weights directory, else the Hugging Face cache."""
    if explicit and explicit.get(entry.name) is not None:
        given = Path(explicit[entry.name])
        return (EXPLICIT, given) if given.is_file() else (MISSING, None)
    local = local_file(weights_dir / entry.name)
    if local is not None:
        return WEIGHTS_DIR, local
    cached = from_hf_cache(entry)
    if cached is not None:
        return HF_CACHE, cached
    return MISSING, None


def file_size(path: Path | None) -> int | None:
    try:
        return path.stat().st_size if path is not None else None
    except OSError:
        return None


def warn_size(entry: ManifestEntry, path: Path) -> None:
    size = file_size(path)
    if entry.size is not None and size is not None and size != entry.size:
        logger.warning("%s: %s has %d bytes, the manifest says %d (run `seesr weights verify`)",
                       entry.name, path, size, entry.size)


def folder_of(name: str) -> str | None:
    for folder in FOLDERS.values():
        if name.startswith(folder + "/"):
            return folder
    return None


def whole_folder(folder: str, members: Sequence[ManifestEntry], weights_dir: Path) -> tuple[str, Path] | None:
    """(location, root) of the first place holding every file of ``folder``, else None."""
    required = list(members)
    root = weights_dir / folder
    if all(local_file(weights_dir / e.name) is not None for e in required):
        return WEIGHTS_DIR, root
    roots = set()
    for entry in required:
        cached = from_hf_cache(entry)
        if cached is None:
            return None
        roots.add(cached.parents[len(Path(entry.name).relative_to(folder).parts) - 1])
    return (HF_CACHE, roots.pop()) if len(roots) == 1 else None


def where_lines(missing: Sequence[tuple[str, str]]) -> str:
    lines = [f"  {name}: looked in {where}" for name, where in missing]
    if any("Hugging Face cache" in where for _, where in missing):
        lines.append(f"  (Hugging Face cache: {hf_cache_dir()})")
    return "\n".join(lines)


OFFLINE_TRIED = "no download was tried: HF_HUB_OFFLINE is set"
"""What an offline run did to get missing weights (:attr:`MissingWeightsError.tried`)."""


def offline_error(missing: Sequence[tuple[str, str]], weights_dir: Path) -> MissingWeightsError:
    return MissingWeightsError(
        "HF_HUB_OFFLINE is set (offline mode), so seesr did not download anything, and these weights are missing:\n"
        + where_lines(missing)
        + f"\nUnset HF_HUB_OFFLINE and run `{DOWNLOAD_COMMAND}` (it downloads into {weights_dir}), "
        "or copy the files to the places listed.",
        [name for name, _ in missing],
        tried=OFFLINE_TRIED,
    )


MISSING_NAMED = 3
"""Up to this many missing files are named one by one (:func:`missing_summary`); more are counted by group."""


def missing_summary(names: Sequence[str]) -> str:
    """Missing files in a few words: named when few (``DAPE.pth, ram/ram_tag_list.txt``), else counted
    per manifest group (``20 files (sd-turbo 11, seesr 5, ram 4)``)."""
    if len(names) <= MISSING_NAMED:
        return ", ".join(names)
    known = {entry.name: entry.group for entry in load_manifest().entries}
    groups: dict[str, int] = {}
    for name in names:
        group = known.get(name, name.split("/")[0])
        groups[group] = groups.get(group, 0) + 1
    return f"{len(names)} files ({', '.join(f'{group} {count}' for group, count in groups.items())})"


def missing_error(missing: Sequence[tuple[str, str]], weights_dir: Path) -> MissingWeightsError:
    tail = f"\nTo get them, run `{DOWNLOAD_COMMAND}` (downloads into {weights_dir}), or see weights/README.md."
    if offline_mode():
        tail += " Downloads are disabled while HF_HUB_OFFLINE is set."
    return MissingWeightsError("SeeSR weights not found:\n" + where_lines(missing) + tail, [name for name, _ in missing])
