"""Attention for bfloat16 networks on CPUs with AVX512-BF16 but no AMX (AMD EPYC / Ryzen Zen 4+).

There torch's CPU flash-attention kernel does not use the bf16 dot-product instructions and runs
self-attention at about a third of the machine's bf16 matrix-product speed. The kernel here
(``attention_avx512bf16.cpp``, plain C ABI, OpenMP) computes what torch's kernel computes for bf16,
in the same order of roundings (Q K^T in float32, softmax in float32 over blocks of keys,
probabilities rounded to bf16 for the product with V, float32 accumulation), with ``vdpbf16ps``.

:func:`attention_kernel` is the one rule saying where it runs; :func:`set_attention` installs it in
a network's attention layers (diffusers' SDPA processor, whose ``scaled_dot_product_attention``
calls are routed to the kernel when it supports them, else left to torch). The kernel is compiled
once per source and compiler into the user cache (``~/.cache/seesr/kernels``); without a compiler,
or when the build fails, everything stays on torch's SDPA and a warning says why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0
from torch.overrides import TorchFunctionMode

from seesr.errors import ConfigError
from seesr.io.files import user_cache_dir
from seesr.runtime.devices import cpu_bf16_units
from seesr.settings.declare import ATTENTIONS

logger = logging.getLogger(__name__)

KERNEL_SOURCE = Path(__file__).with_name("attention_avx512bf16.cpp")
COMPILE_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp",
                 "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16")  # fmt: skip
HEAD_DIM_MULTIPLE = 64
"""The kernel's head width must be a multiple of this (SD-2's 64, the VAE's 512)."""

_Kernel = Callable[..., int]


def attention_kernel(device: torch.device | str, dtype: torch.dtype, choice: str = "auto") -> Literal["avx512-bf16", "sdpa"]:
    """The attention a network in ``dtype`` on ``device`` runs: ``avx512-bf16`` for bfloat16 on a
    CPU with AVX512-BF16 and no AMX (measured faster there; with AMX torch's kernel uses the tiles)
    once the kernel is built (:func:`load_kernel`), else ``sdpa``. ``choice="sdpa"`` opts out."""
    if choice not in ATTENTIONS:
        raise ConfigError(f"attention must be one of {', '.join(ATTENTIONS)}, got {choice!r}")
    avx512_bf16, amx = cpu_bf16_units()
    wanted = choice == "auto" and torch.device(device).type == "cpu" and dtype == torch.bfloat16
    if wanted and avx512_bf16 and not amx and load_kernel() is not None:
        return "avx512-bf16"
    return "sdpa"


def kernel_cache_dir() -> Path:
    """Where compiled kernels are kept: ``$XDG_CACHE_HOME/seesr/kernels`` (``~/.cache/seesr/kernels``)."""
    return user_cache_dir() / "kernels"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX") or "c++") or shutil.which("g++")


def _build(compiler: str, target: Path) -> None:
    """Compile the kernel to ``target`` (atomically: a concurrent build never leaves half a file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=target.parent, suffix=".so.tmp")
    os.close(handle)
    try:
        subprocess.run([compiler, *COMPILE_FLAGS, str(KERNEL_SOURCE), "-o", temp], check=True, capture_output=True,
                       text=True, timeout=300)  # fmt: skip
        os.replace(temp, target)
    finally:
        Path(temp).unlink(missing_ok=True)


@functools.cache
def load_kernel() -> _Kernel | None:
    """The compiled kernel (built into :func:`kernel_cache_dir` on first use, once per process), or
    None with a warning when no compiler is found or the build or load fails."""
    compiler = _compiler()
    if compiler is None:
        logger.warning("no C++ compiler (c++ or $CXX): bfloat16 attention stays on torch's slower CPU kernel")
        return None
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([KERNEL_SOURCE.read_text(), version, *COMPILE_FLAGS]).encode()).hexdigest()[:16]
    target = kernel_cache_dir() / f"attention_avx512bf16-{key}.so"
    try:
        if not target.is_file():
            logger.info("building the AVX512-BF16 attention kernel into %s (once)", target)
            _build(compiler, target)
        kernel = ctypes.CDLL(str(target)).seesr_attention_bf16
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", None) or str(error)
        logger.warning("building the AVX512-BF16 attention kernel failed, attention stays on torch's: %s",
                       detail.strip()[:500])  # fmt: skip
        return None
    strides = ctypes.c_int64 * 3
    kernel.restype = ctypes.c_int
    kernel.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 5 + [ctypes.c_float] + [strides] * 4
    return kernel


def kernel_supports(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Any = None,
                    dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, **rest: Any) -> bool:  # fmt: skip
    """Whether an SDPA call is one the kernel computes: bf16 CPU tensors (batch, heads, length,
    head_dim) with contiguous rows, head_dim a multiple of 64, no mask, dropout or causal mask."""
    tensors = (query, key, value)
    return (
        not rest and attn_mask is None and dropout_p == 0.0 and not is_causal
        and all(isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dtype == torch.bfloat16 and t.dim() == 4
                and t.stride(-1) == 1 and not t.requires_grad for t in tensors)
        and query.shape[-1] % HEAD_DIM_MULTIPLE == 0 and query.shape[-1] == key.shape[-1] == value.shape[-1]
        and query.shape[:2] == key.shape[:2] == value.shape[:2] and key.shape[2] == value.shape[2] > 0
        and query.shape[2] > 0
    )  # fmt: skip


@torch.library.custom_op("seesr::attention_avx512bf16", mutates_args=())
def avx512_bf16_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(scale Q K^T) V by the kernel, for tensors :func:`kernel_supports` (an operator of its
    own, so that profiles and FLOP counts see it). The result is (batch, heads, length, head_dim),
    laid out (batch, length, heads, head_dim) as the processors reshape it next."""
    kernel = load_kernel()
    if kernel is None:
        raise RuntimeError("the AVX512-BF16 attention kernel is not available")
    batch, heads, length, head_dim = query.shape
    out = torch.empty(batch, length, heads, head_dim, dtype=query.dtype).transpose(1, 2)
    strides = ctypes.c_int64 * 3
    status = kernel(
        query.data_ptr(), key.data_ptr(), value.data_ptr(), out.data_ptr(), batch, heads, length, key.shape[2],
        head_dim, scale, *(strides(*t.stride()[:3]) for t in (query, key, value, out)),
    )  # fmt: skip
    if status != 0:
        raise MemoryError("the AVX512-BF16 attention kernel could not allocate its buffers")
    return out


@avx512_bf16_attention.register_fake
def _(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
    batch, heads, length, head_dim = query.shape
    return query.new_empty(batch, length, heads, head_dim).transpose(1, 2)


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any,
                                 **kwargs: Any) -> torch.Tensor:  # fmt: skip
    """``F.scaled_dot_product_attention``, by the kernel when it supports the call and is built."""
    if not args and kernel_supports(query, key, value, **kwargs) and load_kernel() is not None:
        scale = kwargs.get("scale")
        return avx512_bf16_attention(query, key, value, query.shape[-1] ** -0.5 if scale is None else scale)
    return F.scaled_dot_product_attention(query, key, value, *args, **kwargs)


class _RouteToKernel(TorchFunctionMode):
    """Sends ``F.scaled_dot_product_attention`` calls to :func:`scaled_dot_product_attention`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            return scaled_dot_product_attention(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


class Avx512Bf16AttnProcessor(AttnProcessor2_0):
    """diffusers' SDPA processor with its attention computed by the AVX512-BF16 kernel (calls the
    kernel does not support go to torch's SDPA as before)."""

    @functools.wraps(AttnProcessor2_0.__call__)  # its signature: diffusers passes the keywords it names
    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with _RouteToKernel():
            return super().__call__(*args, **kwargs)


def set_attention(models: Iterable[torch.nn.Module | None], device: torch.device | str, dtype: torch.dtype,
                  choice: str = "auto") -> str:  # fmt: skip
    """Give every attention layer of ``models`` the processor :func:`attention_kernel` picks for
    ``device``/``dtype``/``choice`` (diffusers' SDPA processor or :class:`Avx512Bf16AttnProcessor`);
    returns the pick."""
    kind = attention_kernel(device, dtype, choice)
    processor = Avx512Bf16AttnProcessor if kind == "avx512-bf16" else AttnProcessor2_0
    for model in models:
        for module in model.modules() if model is not None else ():
            if hasattr(module, "set_processor") and isinstance(getattr(module, "processor", None), AttnProcessor2_0):
                if type(module.processor) is not processor:
                    module.set_processor(processor())
    return kind


def sdpa_for(attn: torch.nn.Module) -> Callable[..., torch.Tensor]:
    """The ``scaled_dot_product_attention`` an attention layer's processor uses (for code that
    computes the layer's attention itself, like the tiled VAE)."""
    return scaled_dot_product_attention if isinstance(attn.processor, Avx512Bf16AttnProcessor) else F.scaled_dot_product_attention
