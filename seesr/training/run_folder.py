"""The run folder OUT of ``seesr train``: what training writes there, and how it writes it.

Layout: ``seesr/unet`` and ``seesr/controlnet`` (the exported weights, official layout), links to
the base sd-turbo and RAM files (:data:`BASE_LINKS`, so OUT is a weights folder),
``checkpoints/checkpoint-N`` (accelerate state), ``history.jsonl`` (one line per step),
``tags.json`` (the tag cache) and ``validation/step-N``.

The rules, so that no kill, full disk or mistyped ``-o`` loses weights or checkpoints:

- Nothing training writes is, holds or lies inside anything it reads (the data folder, the base
  weights, the degradation file), compared after resolving symbolic links, and no folder or file
  it writes inside OUT is a symbolic link (which would carry the write to the linked source):
  :func:`check_run_folder`, before any work.
- Every state file is written whole under a temporary name and renamed into place
  (:func:`~seesr.io.files.write_atomically`). A checkpoint is saved into ``checkpoint-N.partial``, its
  files and sizes listed in :data:`MANIFEST`, then renamed to ``checkpoint-N``; the exported
  weights are saved into a hidden staging folder and each file renamed into place.
- ``--resume latest`` takes the newest complete checkpoint (every file of its manifest present
  with its size) and names the ones it skipped; names other than ``checkpoint-N`` (``.bak``
  copies) are ignored.
- History lines are appended whole, one per step, only with finite numbers; a run that starts at
  step S first drops every line after S (and repeated or damaged lines), so a resume never
  repeats a step.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from seesr.errors import ConfigError, SeesrError, WeightsError
from seesr.io.files import checked_file, read_text, remove_stale_temp_files, write_atomically

if TYPE_CHECKING:
    from seesr.weights import WeightPaths

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
HISTORY_FILE = "history.jsonl"
TAGS_FILE = "tags.json"
VALIDATION = "validation"
EXPORTED = ("seesr/unet", "seesr/controlnet")
"""The exported networks (official layout), each a diffusers folder."""
BASE_LINKS = {
    "sd_turbo": "sd-turbo",
    "sd2_base": "sd-2-base",
    "ram_checkpoint": "ram_swin_large_14m.pth",
    "dape_checkpoint": "DAPE.pth",
    "ram_tag_list": "ram/ram_tag_list.txt",
    "ram_tag_list_chinese": "ram/ram_tag_list_chinese.txt",
    "ram_thresholds": "ram/ram_tag_list_threshold.txt",
    "ram_configs": "ram/configs",
}
"""Base weights linked into OUT (WeightPaths field -> place in a weights directory)."""
WRITTEN = (*EXPORTED, CHECKPOINTS, VALIDATION, HISTORY_FILE, TAGS_FILE)
"""Everything training writes under OUT besides the links."""
MANIFEST = "seesr-checkpoint.json"
"""A complete checkpoint's list of files and sizes, written last before the rename."""
PARTIAL = ".partial"
"""Suffix of a checkpoint being saved (``checkpoint-N.partial``)."""
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)(\.partial)?$")
MANIFEST_MAX_BYTES = 1 << 20
HISTORY_MAX_BYTES = 256 << 20
"""About four million steps of history."""
CHECKPOINT_FILE_MAX_BYTES = 1 << 40
"""Larger than any optimizer state; the manifest's own size is checked exactly."""


# ------------------------------------------------------------------------- what may be written
@dataclass(frozen=True)
class Read:
    """A file or folder training reads, and what it is (for the message)."""

    path: Path
    role: str


def reads_of(data: Path, paths: WeightPaths, degradation: str | Path | None) -> list[Read]:
    """Everything a run reads: the data folder, every base weights folder and file, the degradation file."""
    reads = [Read(Path(data), "the training data")]
    for name in ("sd_turbo", "seesr", "sd2_base", "ram_configs"):
        if getattr(paths, name) is not None:
            reads.append(Read(Path(getattr(paths, name)), "the base weights"))
    reads += [Read(path, "the base weights") for path in paths.files().values()]
    if degradation is not None:
        reads.append(Read(Path(degradation), "the degradation file"))
    return reads


def _places(path: Path) -> set[Path]:
    """Where ``path`` is, resolved: itself through every link, and its name in its resolved folder
    (a weights folder of links to files elsewhere is still that folder)."""
    path = Path(os.path.abspath(path))
    return {path.resolve(), path.parent.resolve() / path.name}


def check_run_folder(output: Path, reads: Iterable[Read]) -> None:
    """Refuse (one :class:`ConfigError` line) a run folder whose writes would land in what the run
    reads, or go through a symbolic link inside it. Nothing is created."""
    output = Path(output)
    for rel in (*WRITTEN, *{str(Path(place).parent) for place in BASE_LINKS.values()} - {"."}):
        where = output
        for part in Path(rel).parts:
            where = where / part
            if where.is_symlink():
                raise ConfigError(
                    f"{where} is a symbolic link (to {os.readlink(where)}); training writes only into real files "
                    f"and folders of {output}, never through a link: remove the link or choose another -o folder"
                )
    root = output.resolve()
    written = [root / rel for rel in WRITTEN]
    for read in reads:
        for place in _places(read.path):
            for target in written:
                if target == place or target.is_relative_to(place) or place.is_relative_to(target):
                    raise ConfigError(
                        f"-o {output}: training would write {target}, which is or holds {read.role} ({read.path}); "
                        f"choose an output folder outside what training reads"
                    )


def remove_leftovers(output: Path) -> None:
    """Temporary files, staging folders and unfinished checkpoints of a killed run (main process,
    before training, after :func:`find_checkpoint` has named them)."""
    for folder in (output, output / "seesr", *(output / rel for rel in EXPORTED)):
        remove_stale_temp_files(folder)
    for leftover in [*(output / "seesr").glob(".export-*"), *(output / CHECKPOINTS).glob(f"checkpoint-*{PARTIAL}")]:
        _remove(leftover)


def _remove(path: Path) -> None:
    """A file, a link (never what it points to) or a folder tree."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


# ------------------------------------------------------------------------------- checkpoints
def checkpoint_step(folder: Path) -> int:
    """N of ``checkpoint-N`` (or ``checkpoint-N.partial``)."""
    match = _CHECKPOINT.match(folder.name)
    if match is None:
        raise ConfigError(f"{folder} is not named checkpoint-N")
    return int(match.group(1))


def _checkpoint_entries(output: Path) -> list[Path]:
    """``checkpoint-N`` and ``checkpoint-N.partial`` in OUT/checkpoints, newest first (a finished
    checkpoint before a partial one of the same step); other names are ignored."""
    folder = output / CHECKPOINTS
    found = [p for p in folder.iterdir() if _CHECKPOINT.match(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: (checkpoint_step(p), not p.name.endswith(PARTIAL)), reverse=True)


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a complete checkpoint (None when it is): a partial save, a missing or
    damaged manifest, or a file missing, of another size or not a regular file."""
    if folder.name.endswith(PARTIAL):
        return "its save did not finish"
    if folder.is_symlink() or not folder.is_dir():
        return "it is not a folder"
    if not (folder / MANIFEST).exists():
        return f"it has no {MANIFEST} (its save did not finish, or another program wrote it)"
    try:
        manifest = json.loads(read_text(folder / MANIFEST, "checkpoint manifest", MANIFEST_MAX_BYTES, WeightsError))
        files = manifest["files"]
        if not (isinstance(files, dict) and files and all(isinstance(v, int) for v in files.values())):
            raise ValueError(files)
    except WeightsError as error:
        return str(error)
    except (ValueError, KeyError, TypeError):
        return f"its {MANIFEST} is damaged"
    for name, size in sorted(files.items()):
        if Path(name).name != name or name in (".", ".."):
            return f"its {MANIFEST} names {name!r}, not a file of the checkpoint"
        try:
            found = checked_file(folder / name, "checkpoint file", max(size, 0), WeightsError)
        except WeightsError as error:
            return str(error)
        if found != size:
            return f"{name} is {found} bytes, not the {size} its {MANIFEST} lists (truncated)"
    return None


def complete_checkpoints(output: Path) -> list[Path]:
    """The complete checkpoints of OUT, oldest first."""
    return [p for p in reversed(_checkpoint_entries(output)) if checkpoint_problem(p) is None]


def find_checkpoint(output: Path, resume: str, *, announce: bool = True) -> Path:
    """``latest``: the newest complete checkpoint of OUT (one warning names those skipped); else the
    folder named, which must be complete. ``announce``: log the skipped ones (main process)."""
    if resume != "latest":
        folder = Path(resume)
        if not (folder.is_dir() and _CHECKPOINT.match(folder.name)):
            raise ConfigError(f"resume: {folder} is not a checkpoint folder (OUT/checkpoints/checkpoint-N)")
        problem = checkpoint_problem(folder)
        if problem is not None:
            raise WeightsError(f"checkpoint {folder} cannot be resumed: {problem}; resume from another one "
                               f"(--resume latest takes the newest complete one)")  # fmt: skip
        return folder
    skipped = []
    for folder in _checkpoint_entries(output):
        problem = checkpoint_problem(folder)
        if problem is None:
            if skipped and announce:
                logger.warning("resume latest: using %s; skipped %s", folder.name, "; ".join(skipped))
            return folder
        skipped.append(f"{folder.name} ({problem})")
    found = f" (skipped {'; '.join(skipped)})" if skipped else ""
    raise ConfigError(
        f"resume latest: no complete checkpoint in {output / CHECKPOINTS}{found}; train without --resume first"
    )


def save_checkpoint(accelerator: Any, output: Path, step: int, keep: int) -> Path:
    """The accelerate state of ``step`` as ``OUT/checkpoints/checkpoint-N``, complete or absent:
    saved into ``checkpoint-N.partial`` (removed again on any error), listed in its manifest,
    renamed; then all but the ``keep`` newest complete checkpoints up to this step are deleted."""
    folder = output / CHECKPOINTS / f"checkpoint-{step}"
    partial = folder.with_name(folder.name + PARTIAL)
    if accelerator.is_main_process:
        folder.parent.mkdir(parents=True, exist_ok=True)
        _remove(partial)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(partial))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            files = {p.name: p.stat().st_size for p in sorted(partial.iterdir()) if p.is_file()}
            listing = json.dumps({"step": step, "files": files}, indent=1).encode()
            write_atomically(partial / MANIFEST, listing, overwrite=True, error=WeightsError)
            if folder.exists() or folder.is_symlink():  # a damaged checkpoint of this step, from an earlier try
                replaced = folder.with_name(folder.name + ".replaced")
                _remove(replaced)
                folder.rename(replaced)
                partial.rename(folder)
                _remove(replaced)
            else:
                partial.rename(folder)
            older = [p for p in complete_checkpoints(output) if checkpoint_step(p) < step]
            for old in older[: max(0, len(older) - (keep - 1))]:
                _remove(old)
    except BaseException as error:
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        if isinstance(error, Exception) and not isinstance(error, SeesrError):  # a full disk, a read-only folder
            kept = complete_checkpoints(output)
            raise WeightsError(
                f"cannot save {folder.name} in {folder.parent}: {_first_line(error)}; "
                f"{kept[-1].name + ' is kept' if kept else 'no checkpoint was kept'} (is the disk full?)"
            ) from None
        raise
    accelerator.wait_for_everyone()
    return folder


def load_checkpoint(accelerator: Any, folder: Path) -> int:
    """Restore a complete checkpoint; returns its step. A file that is not what accelerate wrote (a
    pickle holding code, a truncated tensor file) or state of another model is one
    :class:`WeightsError` line naming the file; nothing in a checkpoint is ever unpickled beyond
    plain tensors and numbers."""
    try:
        accelerator.load_state(str(folder))
    except (SeesrError, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001 - explained from our own reading of the files
        raise WeightsError(f"checkpoint {folder} cannot be resumed: {_unusable_file(folder) or _mismatch(error)}; "
                           f"resume from another one (--resume OUT/checkpoints/checkpoint-N)") from None  # fmt: skip
    return checkpoint_step(folder)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _mismatch(error: BaseException) -> str:
    return f"it does not fit this model and optimizer ({_first_line(error)})"


def _unusable_file(folder: Path) -> str | None:
    """The first network or optimizer file of ``folder`` that cannot be read as plain tensors, and why."""
    import torch
    from safetensors import safe_open

    from seesr.weights.checkpoints import unsafe_pickle_reason

    for path in sorted(folder.glob("model*.safetensors")):
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                handle.keys()
        except Exception as error:  # noqa: BLE001 - SafetensorError, OSError: an unusable file
            return f"{path.name} is not a complete safetensors file ({_first_line(error)})"
    for path in sorted([*folder.glob("optimizer*.bin"), *folder.glob("scheduler*.bin")]):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - every unpickling failure means an unusable file
            return f"{path.name}: {unsafe_pickle_reason(error)}"
    return None


# ------------------------------------------------------------------------------- exported weights
def export_weights(unet: Any, controlnet: Any, output: Path, paths: WeightPaths) -> None:
    """OUT/seesr/{unet,controlnet} (safetensors + config) plus links to the base sd-turbo and RAM
    files, so that OUT is a weights directory ``seesr upscale --weights OUT`` reads unchanged. Each
    network is saved into a staging folder first and its files renamed into place one by one."""
    (output / "seesr").mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".export-", dir=output / "seesr") as staging:
            for rel, model in zip(EXPORTED, (unet, controlnet)):
                model.save_pretrained(Path(staging) / Path(rel).name, safe_serialization=True)
            for rel in EXPORTED:
                (output / rel).mkdir(exist_ok=True)
                for saved in sorted((Path(staging) / Path(rel).name).iterdir()):
                    os.replace(saved, output / rel / saved.name)
    except Exception as error:  # noqa: BLE001 - a full disk or a read-only folder, however the writer says it
        raise WeightsError(f"cannot export the weights to {output / 'seesr'}: {_first_line(error)} "
                           f"(is the disk full?); the checkpoints are complete") from None  # fmt: skip
    for name, place in BASE_LINKS.items():
        target, link = getattr(paths, name), output / place
        if target is None or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(target).resolve(), target_is_directory=Path(target).is_dir())


# ------------------------------------------------------------------------------------ history
def _no_constant(name: str) -> None:
    raise ValueError(f"{name} in a history line")


def restart_history(output: Path, start_step: int) -> None:
    """Keep the history of steps 1..``start_step`` (the first line of each, in order); drop the
    rest: steps of an interrupted run past its checkpoint, repeats, damaged lines."""
    path = output / HISTORY_FILE
    if not (path.exists() or path.is_symlink()):
        return
    checked_file(path, "training history", HISTORY_MAX_BYTES, ConfigError)
    kept, seen, dropped = [], set(), 0
    with open(path, "rb") as history:
        for line in history:
            try:
                step = json.loads(line, parse_constant=_no_constant)["step"]
            except (ValueError, KeyError, TypeError):
                step = None
            if not isinstance(step, int) or not 1 <= step <= start_step or step in seen:
                dropped += 1
                continue
            seen.add(step)
            kept.append(line if line.endswith(b"\n") else line + b"\n")
    if dropped:
        write_atomically(path, b"".join(kept), overwrite=True, error=ConfigError)
        logger.info("%s: kept steps up to %d, dropped %d line(s) of steps that run again", path, start_step, dropped)


def append_history(output: Path, entry: dict[str, Any]) -> None:
    """One step's line, written whole in one call (finite numbers only; never through a link)."""
    line = (json.dumps(entry, allow_nan=False) + "\n").encode()
    fd = os.open(output / HISTORY_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
