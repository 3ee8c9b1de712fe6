"""Memory rules, in one place: the memory a run may still use, the peak of a block of code, handing
memory back between stages and rungs, and telling an out-of-memory error from any other error."""

from __future__ import annotations

import ctypes
import gc
import sys
import threading
import time

import psutil
import torch

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 << 20
"""Blocks above this get their own mapping, returned to the OS when freed: glibc's own ceiling for
its moving threshold on 64-bit systems, fixed here so that it cannot start lower."""
TRIM_THRESHOLD_BYTES = 1 << 30
"""Free memory at the heap's top that glibc keeps instead of trimming at once."""


def keep_heap_within_stage() -> None:
    """Stop glibc from trimming the heap's top whenever a tensor is freed (``mallopt``; elsewhere
    nothing): the next activation then reuses those pages instead of faulting in fresh zeroed
    ones, which is slow on virtual machines. The pages go back to the OS at the end of each stage
    (:func:`trim_host_heap`)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
        except (OSError, AttributeError):
            pass


def trim_host_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``; elsewhere nothing).

    Freed tensors of one stage stay in the process's heap otherwise, so the next stage's peak RSS
    starts from everything the earlier stages ever held."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def free_memory_bytes(device: torch.device) -> int:
    """Memory this process could still allocate on ``device``: CUDA free memory, else available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return int(psutil.virtual_memory().available)


def release_memory() -> None:
    """Drop unreachable tensors and return cached device memory (between rungs, after a call)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA OOM, host allocation failures and MemoryError."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "out of memory" in message or "can't allocate memory" in message or "failed to allocate" in message
    )


class PeakMemory:
    """Peak memory while the context is open (CUDA max allocated, or sampled process RSS on the CPU):
    ``peak`` above the memory in use when it opened (``base``), ``total`` the whole."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.process = psutil.Process()
        self.base = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss - self.base)
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
            return
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss - self.base)

    @property
    def total(self) -> int:
        """The peak including what was in use when the context opened."""
        return int(self.base + self.peak)
