"""Where weights are: the weights-directory layout, the weights directory, the Hugging Face cache,
and the messages naming what is missing and where it was looked for."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

from seesr.errors import MissingWeightsError
from seesr.weights.manifest import ManifestEntry

logger = logging.getLogger("seesr.weights")

REPO_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
"""The checkout's ``weights/`` folder (absent when seesr is installed from a wheel)."""
DOWNLOAD_COMMAND = "seesr weights download"
DOWNLOAD_HINT = f"run `{DOWNLOAD_COMMAND}` (or see weights/README.md for where each file comes from)"

# Where each Status/VerifyResult was found.
EXPLICIT, WEIGHTS_DIR, HF_CACHE, MISSING = "explicit", "weights_dir", "hf_cache", "missing"
FOLDERS = {"sd_turbo": "sd-turbo", "seesr": "seesr", "sd2_base": "sd-2-base"}
"""WeightPaths folder fields -> their folder in the weights directory (= manifest path prefix)."""
OPTIONAL_FOLDERS = {"sd2_base"}
"""Folders only one model needs (SD-2-base: the non-turbo SeeSR): used when present, else None."""
OPTIONAL = {"dape_checkpoint", "ram_tag_list_chinese", "ram_configs", *OPTIONAL_FOLDERS}
"""WeightPaths fields that may be None."""
FILES = {
    "ram_checkpoint": "ram_swin_large_14m.pth",
    "dape_checkpoint": "DAPE.pth",
    "ram_tag_list": "ram/ram_tag_list.txt",
    "ram_tag_list_chinese": "ram/ram_tag_list_chinese.txt",
    "ram_thresholds": "ram/ram_tag_list_threshold.txt",
}
"""WeightPaths file fields -> manifest entry names."""
RAM_CONFIGS = "ram/configs"
LEGACY_NAMES = {
    "diffusion_pytorch_model.safetensors": "diffusion_pytorch_model.bin",
    "model.safetensors": "pytorch_model.bin",
}
"""A local folder may hold the pickle ``.bin`` weights instead of safetensors (the loaders read both)."""


def default_weights_dir() -> Path:
    """``$SEESR_WEIGHTS`` if set, else the checkout's ``weights/`` folder, else (an installed
    package) ``$XDG_CACHE_HOME/seesr/weights`` (``~/.cache/seesr/weights``)."""
    if "SEESR_WEIGHTS" in os.environ:
        return Path(os.environ["SEESR_WEIGHTS"])
    if REPO_WEIGHTS_DIR.is_dir():
        return REPO_WEIGHTS_DIR
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "seesr" / "weights"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (``HF_HUB_CACHE``,
    ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME``/hub), else huggingface_hub's default."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.path.expanduser(os.environ[var])))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.path.expanduser(os.environ["HF_HOME"]))) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def offline_mode() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value, read at call time."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(var)
        if value is not None and value.strip():
            if value.strip().upper() in {"1", "ON", "YES", "TRUE"}:
                return True
    return False


def _looked_in(entry: ManifestEntry, weights_dir: Path) -> str:
    place = str(weights_dir / entry.name)
    hub = entry.hub_sources()
    if hub:
        place += " and the Hugging Face cache (" + ", ".join(f"{s.hf_repo}: {s.hf_filename}" for s in hub) + ")"
    if not weights_dir.is_dir():
        place += f" (the weights directory {weights_dir} does not exist)"
    return place


def _from_hf_cache(entry: ManifestEntry) -> Path | None:
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


def _local_file(path: Path) -> Path | None:
    """``path`` if it is a file, else its legacy ``.bin`` sibling (:data:`LEGACY_NAMES`) if that is, else None."""
    if path.is_file():
        return path
    legacy = LEGACY_NAMES.get(path.name)
    if legacy is not None and (path.parent / legacy).is_file():
        return path.parent / legacy
    return None


def _locate(
    entry: ManifestEntry, weights_dir: Path, explicit: Mapping[str, str | Path] | None = None
) -> tuple[str, Path | None]:
    """(location, path) of ``entry``: ``explicit[entry.name]`` if given (MISSING if it does not exist),
    else the weights directory, else the Hugging Face cache."""
    if explicit and explicit.get(entry.name) is not None:
        given = Path(explicit[entry.name])
        return (EXPLICIT, given) if given.is_file() else (MISSING, None)
    local = _local_file(weights_dir / entry.name)
    if local is not None:
        return WEIGHTS_DIR, local
    cached = _from_hf_cache(entry)
    if cached is not None:
        return HF_CACHE, cached
    return MISSING, None


def _size(path: Path | None) -> int | None:
    try:
        return path.stat().st_size if path is not None else None
    except OSError:
        return None


def _warn_size(entry: ManifestEntry, path: Path) -> None:
    size = _size(path)
    if entry.size is not None and size is not None and size != entry.size:
        logger.warning("%s: %s has %d bytes, the manifest says %d (run `seesr weights verify`)",
                       entry.name, path, size, entry.size)


def _folder_of(name: str) -> str | None:
    for folder in FOLDERS.values():
        if name.startswith(folder + "/"):
            return folder
    return None


def _whole_folder(folder: str, members: Sequence[ManifestEntry], weights_dir: Path) -> tuple[str, Path] | None:
    """(location, root) of the first place holding every file of ``folder``, else None."""
    required = list(members)
    root = weights_dir / folder
    if all(_local_file(weights_dir / e.name) is not None for e in required):
        return WEIGHTS_DIR, root
    roots = set()
    for entry in required:
        cached = _from_hf_cache(entry)
        if cached is None:
            return None
        roots.add(cached.parents[len(Path(entry.name).relative_to(folder).parts) - 1])
    return (HF_CACHE, roots.pop()) if len(roots) == 1 else None


def _where_lines(missing: Sequence[tuple[str, str]]) -> str:
    lines = [f"  {name}: looked in {where}" for name, where in missing]
    if any("Hugging Face cache" in where for _, where in missing):
        lines.append(f"  (Hugging Face cache: {hf_cache_dir()})")
    return "\n".join(lines)


def _offline_error(missing: Sequence[tuple[str, str]], weights_dir: Path) -> MissingWeightsError:
    return MissingWeightsError(
        "HF_HUB_OFFLINE is set (offline mode), so seesr did not download anything, and these weights are missing:\n"
        + _where_lines(missing)
        + f"\nUnset HF_HUB_OFFLINE and run `{DOWNLOAD_COMMAND}` (it downloads into {weights_dir}), "
        "or copy the files to the places listed.",
        [name for name, _ in missing],
    )


def _missing_error(missing: Sequence[tuple[str, str]], weights_dir: Path) -> MissingWeightsError:
    tail = f"\nTo get them, run `{DOWNLOAD_COMMAND}` (downloads into {weights_dir}), or see weights/README.md."
    if offline_mode():
        tail += " Downloads are disabled while HF_HUB_OFFLINE is set."
    return MissingWeightsError("SeeSR weights not found:\n" + _where_lines(missing) + tail, [name for name, _ in missing])
