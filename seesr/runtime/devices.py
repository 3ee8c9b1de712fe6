"""Device rules, in one place: which device runs by default, whether a requested device exists,
and the one dtype rule: which dtype a device runs by default, what a dtype setting means on it, and
which dtype each network takes (its :class:`Precision` is the data, :func:`network_dtype` the rule)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seesr.errors import ConfigError

DEVICE_KINDS = ("cpu", "cuda", "mps")
"""Device types seesr runs on (``cuda`` may carry an index: ``cuda:1``)."""


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_devices() -> list[str]:
    """Names of the devices this machine has, for error messages."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The device to run on: ``None`` -> :func:`default_device`; a name that is not a device of
    this machine is a :class:`ConfigError` listing the ones it has."""
    if name is None or (isinstance(name, str) and name.strip().lower() in ("", "auto")):
        return default_device()
    have = ", ".join(available_devices())
    try:
        device = torch.device(name.strip().lower() if isinstance(name, str) else name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device {name!r} is not a device name; this machine has: {have}") from None
    if device.type not in DEVICE_KINDS:
        raise ConfigError(f"device {name!r} is not supported; this machine has: {have}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but this machine has no usable CUDA GPU; it has: {have}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} does not exist; this machine has: {have}")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device {name!r} asked for, but Apple MPS is not available here; this machine has: {have}")
    return device


def default_dtype(device: str | torch.device, *, cpu_bfloat16: bool = True) -> torch.dtype:
    """float16 on CUDA; bfloat16 on a CPU with native bf16 (AVX512-BF16 or AMX), else float32.
    ``cpu_bfloat16=False`` keeps float32 on every CPU (a pipeline loaded directly: the parity path)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_bfloat16 and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def requested_dtype(name: str, device: torch.device) -> torch.dtype:
    """What a ``dtype`` setting means on ``device``: ``auto`` is :func:`default_dtype`; float16 on the
    CPU becomes bfloat16 (the same size, but with fast CPU kernels and no overflow)."""
    if name == "auto":
        return default_dtype(device)
    if name == "float16" and device.type == "cpu":
        return torch.bfloat16
    return getattr(torch, name)


@dataclass(frozen=True)
class Precision:
    """What one network runs in, the data of :func:`network_dtype`."""

    float16_on: frozenset[str] = frozenset(DEVICE_KINDS)
    """Device types where it runs in float16 when asked (the SD VAE: CUDA only; float16 is slow on CPUs)."""
    bfloat16: bool = True
    fixed: torch.dtype | None = None
    """A dtype it keeps whatever is asked (RAM's tags are thresholded logits: float32, as officially)."""


def network_dtype(device: torch.device, dtype: torch.dtype, precision: Precision = Precision()) -> torch.dtype:
    """The dtype a network with ``precision`` runs in when ``dtype`` is asked for on ``device``:
    float32 where it cannot take the half precision asked for."""
    if precision.fixed is not None:
        return precision.fixed
    if dtype == torch.float16 and device.type not in precision.float16_on:
        return torch.float32
    if dtype == torch.bfloat16 and not precision.bfloat16:
        return torch.float32
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """``float16`` for ``torch.float16``: how reports and the progress line name a dtype."""
    return str(dtype).removeprefix("torch.")


def cpu_bf16_units() -> tuple[bool, bool]:
    """(AVX512-BF16, AMX tiles): the CPU's native bf16 units, as torch's kernels see them."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        avx512_bf16, amx = (check is not None and bool(check()) for check in checks)
    except RuntimeError:
        return False, False
    return avx512_bf16, amx


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX tiles. (oneDNN's ``_is_mkldnn_bf16_supported`` also says yes on plain
    AVX-512, where bf16 is emulated and no faster than float32.)"""
    return torch.backends.mkldnn.is_available() and any(cpu_bf16_units())
