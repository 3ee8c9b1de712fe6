"""The official tiled VAE's GroupNorm rules (SeeSR ``utils/vaehook.py``), to compare against it.

Officially every tile contributes the statistics of its whole padded window, and the tiles'
means and variances are averaged, count-weighted (the spread of the per-tile means is dropped).
Plugged into :func:`seesr.engines.seesr.vae_tiling._run_windows`, the lock-step machinery then reproduces the
official tiled results.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seesr.engines.seesr.vae_tiling import GroupStats, _WindowPass, group_stats


class OfficialWindowPass(_WindowPass):
    """A window that contributes the statistics of the whole window, and so may not be trimmed."""

    def local_stats(self, norm: nn.GroupNorm) -> GroupStats:
        return group_stats(self.h, norm.num_groups)

    def _trim(self, margin: int) -> None:
        """Statistics of the whole window need all of it."""


def pool_like_official(parts: Sequence[GroupStats]) -> tuple[torch.Tensor, torch.Tensor]:
    """Count-weighted mean of the per-tile means and of the per-tile variances."""
    counts = torch.tensor([float(n) for _, _, n in parts], dtype=torch.float32)
    weights = (counts / counts.sum()).to(parts[0][0].device)
    mean = (torch.stack([m for m, _, _ in parts]) * weights[:, None, None]).sum(0)
    var = (torch.stack([v for _, v, _ in parts]) * weights[:, None, None]).sum(0)
    return mean, var


OFFICIAL_RULES = dict(window_pass=OfficialWindowPass, pool=pool_like_official)
"""Keyword arguments of :func:`seesr.engines.seesr.vae_tiling._run_windows` for the official statistics."""
