"""ncnn -> PyTorch: the bundled Real-ESRGAN models ship as ncnn graphs (``.param`` text + ``.bin``
fp16 weights); :func:`convert_ncnn_to_state_dict` turns one into the official state dict (RRDBNet or
SRVGGNetCompact) that spandrel loads."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seesr.errors import WeightsError
from seesr.weights.realesrgan import INSTALL_HINT

NCNN_MAGIC = 7767517
FP16_TAG = 0x01306B47
NUM_FEAT = 64
GROW_CH = 32
CONVS_PER_RDB = 5
RDBS_PER_BLOCK = 3
TAIL_KEYS = ("conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last")

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
