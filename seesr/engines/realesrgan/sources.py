"""Loading a Real-ESRGAN network: a bundled model from the first of its sources
(:mod:`seesr.weights.realesrgan`: the official file, the cached conversion, the package's ncnn model
converted and cached), or a model file (``.pth``, ``.safetensors``, ``.ckpt``) of any architecture
spandrel knows, detected from its keys and shapes (the safetensors header, or the memory-mapped
pickle) before any tensor is read, so a file spandrel cannot use fails without reading it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seesr.engines.realesrgan.ncnn import convert_ncnn_to_state_dict
from seesr.engines.realesrgan.upscaler import RealEsrganUpscaler
from seesr.errors import ConfigError, WeightsError
from seesr.io.files import write_atomically
from seesr.runtime.devices import DEVICE_KINDS, Precision, dtype_name, network_dtype, requested_dtype, resolve_device
from seesr.settings.models import (
    DEFAULT_MODEL, MODEL_ALIASES, MODEL_FILE_MAX_BYTES, REALESRGAN_MODELS, canonical_model, is_model_file,
)  # fmt: skip
from seesr.weights.checkpoints import (
    CHECKPOINT_MAX_BYTES, MODEL_FILE, SAFETENSORS, checked_checkpoint, read_checkpoint, read_shapes,
)  # fmt: skip
from seesr.weights.realesrgan import bundled_files, bundled_ncnn_files

logger = logging.getLogger(__name__)


def save_conversion(state: dict[str, torch.Tensor], target: Path, source: str = "ncnn") -> None:
    """The converted network as a safetensors file, written whole or not at all
    (:func:`~seesr.io.files.write_atomically`; a failure is a :class:`WeightsError`)."""
    from safetensors.torch import save

    target.parent.mkdir(parents=True, exist_ok=True)
    data = save({k: v.contiguous() for k, v in state.items()}, metadata={"source": source})
    write_atomically(target, data, overwrite=True, error=WeightsError)


@dataclass(frozen=True)
class ModelFileHeader:
    """What a model file is, read from its keys and shapes alone (:func:`inspect_model_file`)."""

    path: Path
    architecture: str
    scale: int | None
    """The network's scale when the shapes tell it (spandrel builds the network on the meta device)."""

    @property
    def name(self) -> str:
        """``file.pth (ESRGAN x4)``, as :attr:`RealEsrganUpscaler.name` names a loaded file."""
        return f"{self.path.name} ({self.architecture}{f' x{self.scale}' if self.scale else ''})"


def _unread_state(path: Path, what: str, max_bytes: int) -> dict[str, Any]:
    """The keys of a checkpoint with tensors that have not been read: meta tensors from a
    safetensors header, or the memory-mapped tensors of a pickle (as stored, nesting kept)."""
    if checked_checkpoint(path, what, max_bytes) == SAFETENSORS:
        return {key: torch.empty(shape, device="meta") for key, shape in read_shapes(path, what, max_bytes).items()}
    return read_checkpoint(path, what, max_bytes=max_bytes)


def _architecture(state: dict[str, Any], what: str, source: Path) -> tuple[Any, dict[str, Any]]:
    """The spandrel architecture whose detection matches ``state``'s keys and shapes (no tensor
    data is looked at) and the state as it takes it (unwrapped, common prefixes dropped);
    :class:`WeightsError` for an empty state dict or one no architecture fits."""
    import spandrel

    state = spandrel.canonicalize_state_dict(state)
    tensors = [key for key, value in state.items() if hasattr(value, "shape")]
    if not tensors:
        raise WeightsError(f"{what} {source} holds no tensors (an empty state dict); it is not a model")
    for support in spandrel.MAIN_REGISTRY.architectures("detection"):
        if support.detect(state):
            return support.architecture, state
    shown = ", ".join(tensors[:3]) + (f", ... ({len(tensors)} keys)" if len(tensors) > 3 else "")
    raise WeightsError(
        f"{what} {source} is not a model spandrel can load: no architecture it knows has these keys ({shown}); "
        "give a Real-ESRGAN model or another image-to-image network spandrel supports"
    )


def inspect_model_file(path: str | Path, what: str = MODEL_FILE) -> ModelFileHeader:
    """The architecture and scale of a model file without reading its tensors (``--dry-run``):
    the file is checked (regular, at most :data:`MODEL_FILE_MAX_BYTES`), its keys matched to a
    spandrel architecture, and the network built on the meta device for its scale."""
    path = Path(path)
    architecture, state = _architecture(_unread_state(path, what, MODEL_FILE_MAX_BYTES), what, path)
    try:
        meta = {key: value.to("meta") if isinstance(value, torch.Tensor) else value for key, value in state.items()}
        with torch.device("meta"):
            scale = architecture.load(meta).scale
    except Exception:  # noqa: BLE001 - an architecture that reads tensor values knows its scale only when loaded
        scale = None
    return ModelFileHeader(path, architecture.name, scale)


def _describe(state: dict[str, Any], source: Path, scale: int | None = None) -> Any:
    """The spandrel descriptor of ``state``; :class:`WeightsError` unless it is an RGB image-to-image
    network (of scale ``scale`` when given)."""
    import spandrel

    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    # spandrel raises UnsupportedModelError when no architecture fits (found before, by _architecture);
    # an architecture whose detection matched raises what its loader does on odd shapes (KeyError,
    # RuntimeError, ...), which is the same verdict for the user: not a model it can load
    except Exception as error:  # noqa: BLE001
        reason = " ".join(str(error).split()) or type(error).__name__
        raise WeightsError(f"{source} is not a model spandrel can load: {reason}") from error
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise WeightsError(f"{source} holds a {type(descriptor).__name__}, not an image-to-image network")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise WeightsError(
            f"{source}: expected an RGB network, got {descriptor.input_channels}->{descriptor.output_channels} channels"
        )
    if scale is not None and descriptor.scale != scale:
        raise WeightsError(f"{source}: expected a x{scale} network, got x{descriptor.scale}")
    return descriptor


def _load_file(
    path: Path, scale: int | None = None, what: str = "Real-ESRGAN weights", max_bytes: int = CHECKPOINT_MAX_BYTES
) -> Any:
    """Load a checkpoint whose architecture was first detected from its unread keys and shapes."""
    state = _unread_state(path, what, max_bytes)
    _architecture(state, what, path)
    if any(getattr(value, "is_meta", False) for value in state.values()):  # a safetensors header: read it now
        state = read_checkpoint(path, what, max_bytes=max_bytes)
    return _describe(state, path, scale)


def _resolve_bundled(name: str, weights_dir: Path | None) -> tuple[Any, Path]:
    """The official file in the weights folder, else the cached conversion, else convert and cache."""
    spec = REALESRGAN_MODELS[name]
    files = bundled_files(name, weights_dir)
    official, cache = files.official, files.cache
    if official.is_file():
        return _load_file(official, spec.network_scale), official
    if cache.is_file():
        try:
            return _load_file(cache, spec.network_scale), cache
        except WeightsError as error:  # damaged or foreign cache: convert again and replace it
            logger.warning("rebuilding the Real-ESRGAN cache %s: %s", cache, str(error).splitlines()[0])
    param, binary = bundled_ncnn_files(name)
    state = convert_ncnn_to_state_dict(param, binary)
    descriptor = _describe(state, binary, spec.network_scale)
    try:
        save_conversion(state, cache, source=f"ncnn {spec.ncnn_name}")
    except OSError:  # read-only folder: use the conversion without caching it
        return descriptor, binary
    return descriptor, cache


def planned_precision(device: torch.device, fp32: bool = False) -> torch.dtype:
    """The ``fp32`` setting on ``device`` (:func:`~seesr.runtime.devices.requested_dtype`): float32
    when set, else the default (float16 on CUDA, bfloat16 on a CPU with native bf16: >= 45 dB PSNR
    against float32 for x4plus, else float32)."""
    return requested_dtype("float32" if fp32 else "auto", device)


def precision_of(descriptor: Any) -> Precision:
    """What a spandrel network runs in (its descriptor says whether it supports half and bfloat16)."""
    return Precision(frozenset(DEVICE_KINDS) if descriptor.supports_half else frozenset(), descriptor.supports_bfloat16)


def default_precision(device: torch.device, descriptor: Any, fp32: bool = False) -> torch.dtype:
    """:func:`planned_precision`, limited to what the network supports (the one dtype rule,
    :func:`~seesr.runtime.devices.network_dtype`)."""
    return network_dtype(device, planned_precision(device, fp32), precision_of(descriptor))


def load_realesrgan(
    weights_dir: str | Path | None = None,
    path: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    *,
    model: str = DEFAULT_MODEL,
    fp32: bool = False,
) -> "RealEsrganUpscaler":
    """Load a Real-ESRGAN model.

    ``model``: a bundled model's name or alias (:data:`REALESRGAN_MODELS`), or a model file
    (``.pth``/``.safetensors``/``.ckpt``) of any architecture spandrel loads (``path`` is the same).
    A bundled model comes from the first source that exists: its official file in ``weights_dir``
    (``RealESRGAN_x4plus.pth``, ...); the cached conversion ``<official>_from_ncnn.safetensors``
    there (in :func:`~seesr.io.files.user_cache_dir` when ``weights_dir`` does not exist), rebuilt when unusable;
    the package's ncnn files, converted and cached. ``weights_dir`` defaults to
    :func:`seesr.weights.default_weights_dir`; ``device`` to CUDA when available; ``dtype`` to
    :func:`default_precision`.
    """
    if path is None and is_model_file(model):
        path = model
    device = resolve_device(device)
    if path is not None:
        path = Path(path)
        descriptor, source, scale = _load_file(path, what=MODEL_FILE, max_bytes=MODEL_FILE_MAX_BYTES), path, None
        name = f"{path.name} ({descriptor.architecture.name} x{descriptor.scale})"
    else:
        name = canonical_model(model)
        if name not in REALESRGAN_MODELS:
            choices = ", ".join([*REALESRGAN_MODELS, *MODEL_ALIASES])
            raise ConfigError(f"unknown Real-ESRGAN model {model!r}: use one of {choices}, or a model file")
        descriptor, source = _resolve_bundled(name, Path(weights_dir) if weights_dir is not None else None)
        scale = REALESRGAN_MODELS[name].scale
    if dtype is None:
        dtype = default_precision(device, descriptor, fp32)
    elif network_dtype(device, dtype, precision_of(descriptor)) != dtype:
        raise ConfigError(f"{descriptor.architecture.name} does not support {dtype_name(dtype)}; use float32")
    return RealEsrganUpscaler(descriptor, device=device, dtype=dtype, source=source, name=name, scale=scale)
