"""Device rules, in one place: which device runs by default, which dtype suits it, whether a
requested device exists, and the peak memory of a block of work on it."""

from __future__ import annotations

import torch

from seesr.errors import ConfigError
from seesr.memory import PeakMemory

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


def default_dtype(device: str | torch.device) -> torch.dtype:
    """float16 on CUDA; bfloat16 on a CPU with native bf16 (AVX512-BF16 or AMX), else float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


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


class PeakTracker:
    """Peak memory of a call on ``device``: CUDA max allocated, or the process's peak RSS on the CPU."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device if device is not None else default_device()
        self.peak: int | None = None

    def __enter__(self) -> "PeakTracker":
        self._inner = PeakMemory(self.device)
        self._inner.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.__exit__(*exc)
        self.peak = int(self._inner.base + self._inner.peak)
