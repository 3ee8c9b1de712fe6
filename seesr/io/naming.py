"""Where results are written, in one place: the command line, folder runs and the Cog runner all
follow these rules, and all of them are checked before any model is loaded.

- Format: an output file's suffix decides it (``.png``, ``.jpg``/``.jpeg``, ``.webp``); an unknown
  suffix, or one that contradicts an explicitly requested format, is a :class:`ConfigError`. A
  folder output uses the requested format (default PNG); ``auto`` is each input's own format
  when it is one seesr writes (by the input's suffix), else PNG.
- Names: an output named after its input is ``<stem><suffix>.<format>``; the suffix defaults to
  ``_seesr`` for one input written beside it and to nothing in an output folder. An output file
  named with ``-o`` is written as named (an explicit suffix with it is a ConfigError). An output
  folder mirrors the inputs' relative paths (``in/a/x.png`` found in ``in/`` -> ``OUT/a/x.png``).
  Several samples of an input are ``<name>_s<seed>.<format>`` (``photo_s42.png``, ``photo_s43.png``).
- Every input gets its own output. Inputs whose names would give the same output
  (``pic.jpg`` and ``pic.png`` -> ``pic.png``) are named after their suffix as well
  (``pic_jpg.png``, ``pic_png.png``); inputs that still collide (``a/pic.png`` and ``b/pic.png``
  named as files, or found in two folders) are a ConfigError listing them. Nothing is resolved by
  skipping.
- An output (or side file) that is one of the inputs is refused, even with ``overwrite``.
- Side files (``NAME_compare.png``) are never overwritten without ``overwrite`` either.
- The output folder is created and checked writable first (leftover temporary files of killed
  runs are removed from it).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Collection, Sequence

from seesr.errors import ConfigError
from seesr.io.batch import Job
from seesr.io.files import remove_stale_temp_files
from seesr.io.inputs import InputFile

SUFFIX_FORMATS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp", ".tif": "tiff", ".tiff": "tiff"}
"""Output file suffixes and the format each one means."""
FORMAT_SUFFIXES = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tiff"}
"""The suffix a folder output gets for each format."""
AUTO = "auto"
"""The output format that follows the input's: its own when seesr writes it, else :data:`AUTO_FALLBACK`."""
AUTO_FALLBACK = "png"
PILLOW_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "TIFF": "tiff"}
"""Pillow's names of the formats seesr writes (for ``auto`` from a decoded input)."""
COMPARE_TAG = "_compare"
"""``--compare`` writes ``<output stem>_compare.png`` beside each output."""
SAMPLE_TAG = "_s"
"""Several samples of one input (``num_samples``) are written as ``<name>_s<seed>.<format>``."""
DEFAULT_SINGLE_TAG = "_seesr"
"""Without ``-o`` one input ``photo.jpg`` is written as ``photo_seesr.png`` beside it."""
DEFAULT_FOLDER = Path("upscaled")
"""Without ``-o`` several inputs are written into this folder."""


def format_of(path: Path, requested: str | None = None) -> str:
    """The output format of a file ``path`` (from its suffix); ConfigError for an unknown suffix or
    one that contradicts ``requested`` (an explicitly asked-for format)."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        named = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise ConfigError(
            f"cannot write {path}: {named} is not an output format; end it in "
            f"{', '.join(SUFFIX_FORMATS)} (or give a folder)"
        )
    fmt = SUFFIX_FORMATS[suffix]
    if requested not in (None, AUTO) and requested != fmt:
        raise ConfigError(
            f"output {path} is {fmt.upper()} by its suffix but output_format={requested!r} was asked for; "
            f"use a {FORMAT_SUFFIXES[requested]} name or drop the format setting"
        )
    return fmt


def output_file(folder: Path, stem: str, fmt: str) -> Path:
    """``folder/stem.<suffix of fmt>``."""
    return folder / f"{stem}{FORMAT_SUFFIXES[fmt]}"


def concrete_format(fmt: str, input_format: str | None) -> str:
    """``fmt``, or for ``auto`` the input's format (``png``, ``jpg``, ``webp``, ``tiff``; None: another) or PNG."""
    return (input_format or AUTO_FALLBACK) if fmt == AUTO else fmt


def _check_suffix(suffix: str) -> None:
    if any(bad in suffix for bad in ("/", "\\", "\0", os.sep)):
        raise ConfigError(f"suffix={suffix!r} is added to file names; it may not hold a path separator or a NUL")


def compare_file(target: Path) -> Path:
    """The ``--compare`` side file of an output (always PNG)."""
    return target.with_name(f"{target.stem}{COMPARE_TAG}.png")


def plan_outputs(
    inputs: Sequence[Path | InputFile],
    output: Path | None,
    *,
    folder_input: bool = False,
    requested_format: str | None = None,
    default_format: str = "png",
    suffix: str | None = None,
    compare: bool = False,
    overwrite: bool = False,
    seeds: Sequence[int] | None = None,
) -> tuple[list[Job], Path | None]:
    """One :class:`Job` per input (per sample with ``seeds``) with its distinct output (and side
    file), and the output folder of a folder run (None for a single file). Raises ConfigError for
    every rule above, before any work.

    ``inputs``: files found (:func:`~seesr.io.inputs.find_inputs`; a plain path is a file named
    directly); an output folder mirrors their relative paths. ``folder_input``: an input argument
    was a folder (the output is then a folder too); ``requested_format``: the format asked for
    explicitly (flag, environment, config), or None; ``suffix``: added to the stem of outputs named
    after their input (None: the defaults above); ``seeds``: the seeds of several samples per input,
    each written as ``<name>_s<seed>.<format>`` (None: one output per input, named as above)."""
    if not inputs:
        raise ConfigError("no input images found")
    if suffix is not None:
        _check_suffix(suffix)
    found = [each if isinstance(each, InputFile) else InputFile.named(each) for each in inputs]

    def format_for(source: Path) -> str:
        return concrete_format(requested_format or default_format, SUFFIX_FORMATS.get(source.suffix.lower()))

    single = len(found) == 1 and not folder_input
    first = found[0].path
    if output is None and single:
        tag = DEFAULT_SINGLE_TAG if suffix is None else suffix
        output = output_file(first.parent, first.stem + tag, format_for(first))
    elif output is None:
        output = DEFAULT_FOLDER
    elif single and output.suffix and not output.is_dir() and suffix is not None:
        raise ConfigError(
            f"-o {output} names the output file, so suffix={suffix!r} has nothing to add to; "
            "give a folder with -o, or drop the suffix"
        )
    to_folder = output.is_dir() or not output.suffix or not single
    if to_folder and output.suffix.lower() in SUFFIX_FORMATS and not output.is_dir():
        raise ConfigError(
            f"-o {output} names an image file, but there are {len(found)} inputs"
            f"{' from a folder' if folder_input else ''}; give a folder"
        )
    if to_folder:
        targets = _distinct_names(found, output, [format_for(each.path) for each in found], suffix or "")
    else:
        targets = [output]
        format_of(output, requested_format)
    jobs = [
        Job(each.path, target, each.relative, compare_file(target) if compare else None, seed)
        for each, plain in zip(found, targets)
        for target, seed in _samples(plain, seeds)
    ]  # fmt: skip
    _refuse_clobbering(jobs, [each.path for each in found], overwrite)
    return jobs, (output if to_folder else None)


def sample_file(target: Path, seed: int) -> Path:
    """The output of one of several samples: ``<stem>_s<seed><suffix>`` beside ``target``."""
    return target.with_name(f"{target.stem}{SAMPLE_TAG}{seed}{target.suffix}")


def _samples(target: Path, seeds: Sequence[int] | None) -> list[tuple[Path, int | None]]:
    if seeds is None:
        return [(target, None)]
    return [(sample_file(target, seed), seed) for seed in seeds]


def _distinct_names(inputs: Sequence[InputFile], folder: Path, formats: Sequence[str], suffix: str) -> list[Path]:
    def key(path: Path) -> str:  # case-insensitive file systems make Pic.png and pic.png one file
        return path.relative_to(folder).as_posix().casefold()

    def named(each: InputFile, stem: str, fmt: str) -> Path:
        return output_file(folder.joinpath(*each.relative.parent.parts), stem, fmt)

    plain = [named(each, each.path.stem + suffix, fmt) for each, fmt in zip(inputs, formats)]
    counts: dict[str, int] = {}
    for target in plain:
        counts[key(target)] = counts.get(key(target), 0) + 1
    targets = [
        target if counts[key(target)] == 1
        else named(each, f"{each.path.stem}_{each.path.suffix[1:].lower()}{suffix}", fmt)
        for each, target, fmt in zip(inputs, plain, formats)
    ]  # fmt: skip
    by_name: dict[str, list[Path]] = {}
    for each, target in zip(inputs, targets):
        by_name.setdefault(key(target), []).append(each.path)
    clashes = [", ".join(map(str, sources)) for sources in by_name.values() if len(sources) > 1]
    if clashes:
        raise ConfigError(
            f"these inputs would be written to the same file in {folder}: " + "; ".join(clashes)
            + "; rename them or run them separately"
        )
    return targets


def _refuse_clobbering(jobs: Sequence[Job], inputs: Sequence[Path], overwrite: bool) -> None:
    sources = {_identity(path) for path in inputs}
    written: dict[tuple, Path] = {}
    for job in jobs:
        for path in (job.target, job.compare):
            if path is None:
                continue
            if _identity(path) in sources:
                raise ConfigError(f"output {path} is one of the inputs; choose another output name or folder (-o)")
            if _identity(path) in written:
                raise ConfigError(f"{path} would be written twice ({written[_identity(path)]}); rename the inputs")
            written[_identity(path)] = path
        if job.compare is not None and not overwrite and not job.target.exists() and job.compare.exists():
            raise ConfigError(f"{job.compare} exists; pass --overwrite to replace it, or move it away")


def _identity(path: Path) -> tuple:
    """What makes two paths the same file: device and inode when it exists, else the resolved path."""
    try:
        stat = path.stat()
        return ("inode", stat.st_dev, stat.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))  # never raises, even on a symlink loop


def prepare_folder(folder: Path, names: Collection[str] | None = None) -> None:
    """Create ``folder`` if needed, check that files can be created in it (ConfigError naming the
    reason), and remove temporary files that killed runs left there (with ``names``: of those
    files only, see :func:`~seesr.io.files.remove_stale_temp_files`)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".seesr-write-check.{os.getpid()}-{secrets.token_hex(4)}"
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"cannot write to the output folder {folder}: {error.strerror or error}") from None
    remove_stale_temp_files(folder, names)
