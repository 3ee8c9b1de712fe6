"""One checkpoint reader and one key reporter, used by every network seesr loads.

Reading: a file is first checked to be a regular file of bounded size (:mod:`seesr.io.files`), then
read by its format, told from its first bytes and never from its suffix (``.SAFETENSORS``, a renamed
file): safetensors (the header is checked before any tensor is read, so a truncated file fails at
once) or a weights-only pickle (``.pth``/``.bin``; a pickle holding anything but tensors is refused
as unsafe, never re-tried with ``weights_only=False``). A file that cannot be read is a
:class:`WeightsError` naming it and the fix.

Keys: a key the model needs that is missing or has the wrong shape is a :class:`WeightsError`
naming the file and the keys; keys the model does not use are one warning line (count and the
first few names) and loading goes on, as the official loaders (``strict=False``) do.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from seesr.errors import SeesrError, WeightsError
from seesr.io.files import checked_file
from seesr.weights.locate import default_weights_dir, hf_cache_dir

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

FIX_HINT = "run `seesr weights verify`, then download it again (`seesr weights download --force`) or replace it"
"""What to do about a damaged file in a place `seesr weights download` fills (:func:`fix_hint`)."""
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
TRANSFORMERS_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
CHECKPOINT_MAX_BYTES = 8 * 2**30
"""Largest weights file read (the largest in the manifest, RAM's Swin-L, is 5.6 GB)."""
MODEL_FILE = "model file"
"""How a file the user gives with ``--model`` is named in messages (the fixes differ from a weights file's)."""
SAFETENSORS = "safetensors"
PICKLE = "pickle"
_LISTED_IN_ERRORS = 12
_LISTED_IN_WARNINGS = 5

Shape = tuple[int, ...]


# --------------------------------------------------------------------------- reading
def fix_hint(path: str | Path | None) -> str:
    """What to do about a damaged weights file: download it again when it lies where
    `seesr weights download` puts files (the default weights folder, the Hugging Face cache); a file
    of the user's own (another folder, a fine-tuned run) seesr cannot fetch again."""
    if path is None:
        return FIX_HINT
    found = Path(path).resolve()
    if any(found.is_relative_to(place.resolve()) for place in (default_weights_dir(), hf_cache_dir())):
        return FIX_HINT
    return (f"{path} is a file of your own (seesr downloads only into {default_weights_dir()}): replace it with an "
            "intact copy, or give --weights a folder that has one")  # fmt: skip


def _unreadable(what: str, path: Path, reason: str) -> WeightsError:
    fix = "give a model file spandrel can load" if what == MODEL_FILE else fix_hint(path)
    return WeightsError(f"{what} {path} cannot be read: {reason}; {fix}")


_REFUSED_OBJECTS = re.compile(r"\bGLOBAL\s+[\w.]+|unrecognized function|allowlisted|\bis blocked\b", re.IGNORECASE)
"""What torch's weights-only unpickler says, in its versions' wordings, when a pickle names a Python
object or function ("Unsupported global: GLOBAL x", "unsupported GLOBAL posix.system whose module
posix is blocked", "reduce for unrecognized function", "classes allowlisted via add_safe_globals")."""


def unsafe_pickle_reason(error: Exception) -> str:
    """Why torch refused a file, in our words (torch's own text advises ``weights_only=False``)."""
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) and _REFUSED_OBJECTS.search(text):
        return ("refused as unsafe: it holds Python objects, not only tensors, and nothing in it was run "
                "(a weights file must hold only tensors)")
    if isinstance(error, EOFError) or "EOF" in text or "central directory" in text or "truncated" in text:
        return "the file is truncated"
    return "it is not a PyTorch checkpoint (truncated or another kind of file)"


def checked_checkpoint(path: str | Path, what: str, max_bytes: int = CHECKPOINT_MAX_BYTES) -> str:
    """Check that ``path`` is a regular file of at most ``max_bytes`` (a folder, a FIFO or a device
    is named as what it is) and return its format, :data:`SAFETENSORS` or :data:`PICKLE`, from its
    first bytes: a safetensors file starts with the 8-byte length of its JSON header, then ``{``."""
    path = Path(path)
    if not os.path.lexists(path) and what != MODEL_FILE:
        raise WeightsError(f"{what} not found: {path}; run `seesr weights download`")
    size = checked_file(path, what, max_bytes, WeightsError)
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError as error:
        raise _unreadable(what, path, error.strerror or str(error)) from None
    if len(head) == 9 and head[8:] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= size - 8:
        return SAFETENSORS
    return PICKLE


def _load_pickle(path: Path, what: str) -> Mapping[str, Any]:
    import torch

    try:
        if str(path).endswith(".safetensors"):  # torch.load would take a path so named for safetensors
            with open(path, "rb") as handle:
                obj = torch.load(handle, map_location="cpu", weights_only=True)
        else:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:  # the legacy (non-zip) format cannot be memory-mapped
                if "mmap" not in str(error):
                    raise
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - every unpickling failure means an unusable file
        raise _unreadable(what, path, unsafe_pickle_reason(error)) from None
    if not isinstance(obj, Mapping):
        raise _unreadable(what, path, f"it holds a {type(obj).__name__}, not a state dict")
    return obj


def read_checkpoint(
    path: str | Path,
    what: str,
    *,
    select: str | None = None,
    dtype: torch.dtype | None = None,
    max_bytes: int = CHECKPOINT_MAX_BYTES,
) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file or a weights-only pickle (all, or those whose key contains
    ``select``), the format told by :func:`checked_checkpoint`. Nested pickles (``{"model": {...}}``)
    are returned as stored. ``dtype``: floating-point tensors are cast to it one at a time as they
    are read, so a float32 file loaded in half precision never holds the whole file in float32."""

    def cast(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor

    path = Path(path)
    if checked_checkpoint(path, what, max_bytes) == SAFETENSORS:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: cast(f.get_tensor(k)) for k in f.keys() if select is None or select in k}
        except MemoryError:
            raise
        except Exception as error:  # noqa: BLE001 - SafetensorError, OSError: an unusable file
            raise _unreadable(what, path, f"not a complete safetensors file ({str(error).splitlines()[0]})") from None
    state = _load_pickle(path, what)  # memory-mapped: a cast tensor is the only copy in memory
    return {k: cast(v) if hasattr(v, "is_floating_point") else v for k, v in state.items() if select is None or select in k}


def read_shapes(path: str | Path, what: str, max_bytes: int = CHECKPOINT_MAX_BYTES) -> dict[str, Shape]:
    """Key -> shape of a checkpoint without reading its tensors: the header of a safetensors file,
    the memory-mapped pickle of a PyTorch file (nested state dicts are returned under their keys,
    ``"params_ema.conv_first.weight"``)."""
    path = Path(path)
    if checked_checkpoint(path, what, max_bytes) == SAFETENSORS:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as error:  # noqa: BLE001
            raise _unreadable(what, path, f"not a complete safetensors file ({str(error).splitlines()[0]})") from None
    return dict(_shapes(_load_pickle(path, what)))


def _shapes(state: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Shape]]:
    for key, value in state.items():
        if isinstance(value, Mapping):
            yield from _shapes(value, f"{prefix}{key}.")
        elif hasattr(value, "shape"):
            yield f"{prefix}{key}", tuple(value.shape)


def model_file(folder: str | Path, names: Iterable[str] = DIFFUSERS_WEIGHTS) -> Path:
    """The weights file of a diffusers/transformers folder: the first of ``names`` that exists."""
    folder = Path(folder)
    names = tuple(names)
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise WeightsError(f"no {' or '.join(names)} in {folder}; run `seesr weights download` or check the model path")


# --------------------------------------------------------------------------- keys
def _listed(keys: Iterable[str], limit: int) -> str:
    keys = list(keys)
    more = f", ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_keys(
    source: str,
    missing: Iterable[str],
    unexpected: Iterable[str],
    allowed_missing: Iterable[str] = (),
    *,
    mismatched: Iterable[str] = (),
    hint: str | Callable[[list[str]], str] = "",
    path: str | Path | None = None,
) -> None:
    """Report how a checkpoint's keys fit a model: missing or mis-shaped keys (other than
    ``allowed_missing``) raise :class:`WeightsError`; unexpected keys are one warning line.
    ``hint``: appended to the error (a callable gets the missing keys); ``path``: the file, for
    what to do (:func:`fix_hint`)."""
    missing = sorted(set(missing) - set(allowed_missing))
    unexpected = sorted(set(unexpected))
    mismatched = list(mismatched)
    if unexpected:
        logger.warning("%s: %d unexpected key(s) not used by the model, ignored: %s",
                       source, len(unexpected), _listed(unexpected, _LISTED_IN_WARNINGS))
    groups = {"missing keys": missing, "shape mismatches": mismatched}
    problems = [f"{label} ({len(keys)}): {_listed(keys, _LISTED_IN_ERRORS)}" for label, keys in groups.items() if keys]
    if problems:
        hint = hint(missing) if callable(hint) else hint
        raise WeightsError(
            f"{source} does not fit the model: {'; '.join(problems)}{hint}. The file is incomplete or for "
            f"another model: {fix_hint(path)}"
        )


def compare_shapes(expected: Mapping[str, Shape], found: Mapping[str, Shape]) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, mismatched) keys of ``found`` against ``expected``. A prefix every key of
    ``found`` shares (``text_model.``) is dropped when the model's keys do not carry it."""
    heads = {k.split(".", 1)[0] for k in found}
    if len(heads) == 1 and not expected.keys() & found.keys():
        head = heads.pop() + "."
        found = {k[len(head):]: v for k, v in found.items()}
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    mismatched = [f"{k} (file {tuple(found[k])}, model {tuple(expected[k])})"
                  for k in sorted(expected.keys() & found.keys()) if tuple(found[k]) != tuple(expected[k])]
    return missing, unexpected, mismatched


# --------------------------------------------------------------------------- diffusers / transformers folders
def _expected_shapes(cls: type, folder: Path) -> dict[str, Shape]:
    """Key -> shape of ``cls`` built from ``folder``'s config on the meta device (no memory used)."""
    import torch

    with torch.device("meta"):
        if hasattr(cls, "config_class") and hasattr(cls.config_class, "from_pretrained"):  # transformers
            model = cls(cls.config_class.from_pretrained(folder))
        else:  # diffusers
            model = cls.from_config(cls.load_config(folder))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@contextmanager
def _quiet_library_loggers() -> Iterator[None]:
    """diffusers/transformers log their own multi-line key reports and draw their own "Loading
    weights" bars; ours are what the user sees (the key report, the command's progress line)."""
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    levels = [lg.level for lg in loggers]
    bars = [module for module in map(sys.modules.get, ("diffusers.utils.logging", "transformers.utils.logging"))
            if module is not None and module.is_progress_bar_enabled()]  # fmt: skip
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    for module in bars:
        module.disable_progress_bar()
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        for module in bars:
            module.enable_progress_bar()


def load_pretrained(
    cls: type,
    folder: str | Path,
    what: str,
    *,
    loader: Callable[..., Any] | None = None,
    hint: str | Callable[[list[str]], str] = "",
    **kwargs: Any,
) -> tuple[Any, dict[str, Any]]:
    """(model, loading info) of ``cls.from_pretrained(folder)`` (diffusers or transformers; ``loader``
    replaces that call) with this module's rules: an unreadable file or a missing / mis-shaped key
    is a :class:`WeightsError` naming the file, an unexpected key one warning line."""
    import torch

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{what}: no config.json in {folder}; run `seesr weights download`")
    names = TRANSFORMERS_WEIGHTS if hasattr(cls, "config_class") else DIFFUSERS_WEIGHTS
    path = model_file(folder, names)
    source = f"{what} ({path})"
    try:
        with _quiet_library_loggers():
            model, info = (loader or cls.from_pretrained)(folder, output_loading_info=True, **kwargs)
    except (SeesrError, MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as error:  # noqa: BLE001 - explain in our words, from our own reading of the file
        missing, unexpected, mismatched = compare_shapes(_expected_shapes(cls, folder), read_shapes(path, what))
        check_keys(source, missing, unexpected, mismatched=mismatched, hint=hint, path=path)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsError(f"{source} cannot be loaded ({reason}); {fix_hint(path)}") from None
    mismatched = [f"{k} (file {tuple(a)}, model {tuple(b)})" for k, a, b in info.get("mismatched_keys", [])]
    check_keys(source, info["missing_keys"], info["unexpected_keys"], mismatched=mismatched, hint=hint, path=path)
    return model, info
