"""Peak memory of a block of code: CUDA max allocated, or sampled process RSS on the CPU."""

from __future__ import annotations

import ctypes
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


class PeakMemory:
    """Peak memory above a baseline while the context is open (RSS sampling or CUDA stats)."""

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
