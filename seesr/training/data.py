"""Training samples: HR crops, their Real-ESRGAN-degraded LR, RAM input and prompt.

Two kinds of data folder: HR images only (the LR is made on the fly by :mod:`.degradation`), or ready
pairs (``hr/`` or ``gt/`` next to ``lr/`` or ``sr_bicubic/``, matched by file stem). A sample is a
pure function of (data, settings, seed, index): crop, flip, degradation and the empty-prompt draw all
come from ``numpy.random.default_rng([seed, stream, index])``, so any worker count, any process count
and a resumed run see the same samples.

Prompts are the HR image's RAM tags (``f"{tags},"`` as the official ``make_tags.py`` writes them),
computed once per whole image with our tagger (RAM + DAPE, the one inference uses; the official
script tags each 512 crop with plain RAM) and cached in ``OUT/tags.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from seesr.errors import ConfigError, InputError
from seesr.io.files import read_text, write_atomically
from seesr.io.inputs import find_inputs
from seesr.io.read import read_image
from seesr.engines.seesr.models.tagger import IMAGENET_MEAN, IMAGENET_STD, RAM_IMAGE_SIZE
from seesr.training.degradation import DegradationConfig, degrade, reflect_pad

logger = logging.getLogger(__name__)

HR_FOLDERS = ("hr", "gt")
LR_FOLDERS = ("lr", "sr_bicubic")
TRAIN_STREAM, VALIDATION_STREAM = 0, 1
"""Random streams: training samples and the fixed validation samples never share draws."""
TAGS_MAX_BYTES = 256 << 20
"""A tags cache holds a few hundred bytes per image: room for about a million images."""


@dataclass(frozen=True)
class DataFolder:
    """The images of a data folder: HR paths, and the matching LR paths for a folder of pairs."""

    hr: list[Path]
    lr: list[Path] | None = None

    @classmethod
    def open(cls, folder: str | Path) -> "DataFolder":
        """HR images directly in ``folder``, or pairs in its ``hr``/``gt`` and ``lr``/``sr_bicubic``."""
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"training data folder not found: {folder}")
        hr_dir = next((folder / n for n in HR_FOLDERS if (folder / n).is_dir()), None)
        lr_dir = next((folder / n for n in LR_FOLDERS if (folder / n).is_dir()), None)
        if hr_dir is not None and lr_dir is not None:
            lr_by_stem = {found.path.stem: found.path for found in find_inputs([str(lr_dir)])[0]}
            hr = [found.path for found in find_inputs([str(hr_dir)])[0] if found.path.stem in lr_by_stem]
            if not hr:
                raise InputError(f"no HR image in {hr_dir} has an LR image of the same name in {lr_dir}")
            return cls(hr=hr, lr=[lr_by_stem[p.stem] for p in hr])
        hr = [found.path for found in find_inputs([str(folder)])[0]]
        if not hr:
            raise InputError(f"no images in {folder}: put HR images there, or pairs in hr/ and lr/")
        return cls(hr=hr)


def read_rgb(path: Path) -> torch.Tensor:
    """An image file as (3, H, W) float32 in [0, 1] through our loader (any input format)."""
    array = np.asarray(read_image(path).rgb, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def ram_input(condition: torch.Tensor) -> torch.Tensor:
    """The official training RAM input: bicubic to 384, clamp, ImageNet normalisation."""
    x = F.interpolate(condition.unsqueeze(0), size=(RAM_IMAGE_SIZE,) * 2, mode="bicubic", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x.clamp(0, 1) - mean) / std)[0]


def read_tags(cache_file: Path) -> dict[str, dict[str, str]]:
    """The entries of a tags cache (image path -> ``stamp``, ``tags``); none when it is absent. A
    damaged cache (not JSON, not a mapping, entries of another shape) loses its damaged entries,
    which are computed again (one warning); a cache that is not a regular file of bounded size (a
    FIFO, a folder) is a :class:`ConfigError`."""
    if not (cache_file.exists() or cache_file.is_symlink()):
        return {}
    text = read_text(cache_file, "tags file", TAGS_MAX_BYTES, ConfigError)
    try:
        cache = json.loads(text)
    except ValueError:
        cache = None
    entries = cache if isinstance(cache, dict) else {}
    valid = {k: v for k, v in entries.items()
             if isinstance(v, dict) and isinstance(v.get("stamp"), str) and isinstance(v.get("tags"), str)}  # fmt: skip
    if not isinstance(cache, dict) or len(valid) < len(cache):
        damage = f"{len(cache) - len(valid)} damaged entries" if isinstance(cache, dict) else "not a JSON mapping"
        logger.warning("%s is damaged (%s); those tags are computed again", cache_file, damage)
    return valid


def compute_tags(data: DataFolder, tagger, cache_file: Path) -> dict[str, str]:
    """RAM tags of every HR image (whole image), reusing ``cache_file`` entries of unchanged files;
    the cache is rewritten whole (temporary file, then rename)."""
    from seesr.imaging.convert import pil_to_tensor

    cache = read_tags(cache_file)
    tags: dict[str, str] = {}
    for path in data.hr:
        stat = path.stat()
        key, stamp = str(path.resolve()), f"{stat.st_size}:{stat.st_mtime_ns}"
        entry = cache.get(key)
        if entry is None or entry.get("stamp") != stamp:
            pixels = pil_to_tensor(read_image(path).rgb).to(tagger.device, tagger.dtype)
            entry = {"stamp": stamp, "tags": tagger.tag(pixels).tags[0]}
            logger.info("tags of %s: %s", path.name, entry["tags"])
        tags[key] = cache[key] = entry
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(cache_file, json.dumps(cache, indent=1).encode(), overwrite=True, error=ConfigError)
    return {key: entry["tags"] for key, entry in tags.items()}


class TrainingSamples(Dataset):
    """Sample ``index`` -> ``index``, ``hr`` (3, S, S) and ``condition`` (the LR bicubic-upscaled to S) in
    [0, 1], ``ram`` (3, 384, 384) normalised, and ``prompt`` (tags, or "" with ``null_text_ratio``).

    Images are visited in a new random order each pass over the folder."""

    def __init__(
        self,
        data: DataFolder,
        tags: dict[str, str],
        *,
        crop_size: int,
        null_text_ratio: float,
        seed: int,
        degradation: DegradationConfig | None = None,
    ) -> None:
        self.data = data
        self.tags = tags
        self.crop_size = crop_size
        self.null_text_ratio = null_text_ratio
        self.seed = seed
        self.degradation = degradation or DegradationConfig.load()
        if data.lr is None and crop_size % (8 * self.degradation.scale):
            raise InputError(f"crop_size must be a multiple of {8 * self.degradation.scale}, got {crop_size}")

    def __len__(self) -> int:
        return len(self.data.hr)

    def image_index(self, index: int) -> int:
        """Which image sample ``index`` uses: a fresh permutation of the folder on every pass."""
        n = len(self.data.hr)
        return int(np.random.default_rng([self.seed, TRAIN_STREAM, 2**32 + index // n]).permutation(n)[index % n])

    def __getitem__(self, index: int) -> dict:
        sample = self.sample(self.image_index(index), np.random.default_rng([self.seed, TRAIN_STREAM, index]))
        return {**sample, "index": index}

    def validation_sample(self, k: int) -> dict:
        """The k-th fixed validation sample: image k, its own random stream, never the empty prompt."""
        rng = np.random.default_rng([self.seed, VALIDATION_STREAM, k])
        return self.sample(k % len(self.data.hr), rng, prompt_drop=False)

    def sample(self, image: int, rng: np.random.Generator, prompt_drop: bool = True) -> dict:
        hr_path = self.data.hr[image]
        hr = read_rgb(hr_path)
        if self.data.lr is None:
            crop = random_crop(pad_to(hr, self.crop_size), self.crop_size, rng)
            degraded = degrade(crop.unsqueeze(0), self.degradation, rng)
            hr_crop, lr = degraded.hr[0], degraded.lr[0]
        else:
            hr_crop, lr = paired_crop(hr, read_rgb(self.data.lr[image]), self.crop_size, rng)
        condition = F.interpolate(lr.unsqueeze(0), size=hr_crop.shape[-2:], mode="bicubic", align_corners=False)[0]
        condition = condition.clamp(0, 1)
        tags = self.tags.get(str(hr_path.resolve()), "")
        drop = prompt_drop and rng.uniform() < self.null_text_ratio
        return {
            "hr": hr_crop,
            "condition": condition,
            "lr": lr,
            "ram": ram_input(condition),
            "prompt": "" if drop else f"{tags},",
        }


def pad_to(image: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect-pad an image smaller than ``size`` at the bottom and right (basicsr pads small
    training images the same way)."""
    h, w = image.shape[-2:]
    return reflect_pad(image.unsqueeze(0), 0, max(0, size - w), 0, max(0, size - h))[0]


def random_crop(image: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    h, w = image.shape[-2:]
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return image[:, top : top + size, left : left + size]


def paired_crop(
    hr: torch.Tensor, lr: torch.Tensor, size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned crops of an HR image and its LR (which may already be upscaled to the HR size)."""
    scale = hr.shape[-1] / lr.shape[-1]
    lr_size = round(size / scale)
    if lr_size * scale != size or min(hr.shape[-2:]) < size:
        raise InputError(f"crop_size {size} must fit the HR images and be a multiple of the LR scale {scale:g}")
    h, w = lr.shape[-2:]
    top, left = int(rng.integers(0, h - lr_size + 1)), int(rng.integers(0, w - lr_size + 1))
    hr_top, hr_left = round(top * scale), round(left * scale)
    return hr[:, hr_top : hr_top + size, hr_left : hr_left + size], lr[:, top : top + lr_size, left : left + lr_size]


class StepSampler(Sampler[int]):
    """Sample indices of one process, from optimizer step ``start_step`` to ``max_steps``.

    Step s, micro-batch m, process p, batch slot b uses sample ((s * accumulation + m) * processes + p)
    * batch_size + b: no sample repeats within a run and a resumed run continues the same sequence."""

    def __init__(self, start_step: int, max_steps: int, batch_size: int, accumulation: int, processes: int, rank: int):
        self.start, self.stop = start_step * accumulation, max_steps * accumulation
        self.batch_size, self.processes, self.rank = batch_size, processes, rank

    def __iter__(self) -> Iterator[int]:
        for micro in range(self.start, self.stop):
            first = (micro * self.processes + self.rank) * self.batch_size
            yield from range(first, first + self.batch_size)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.batch_size
