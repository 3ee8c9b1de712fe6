"""Training settings, declared once: the ``seesr train`` flags, ``SEESR_TRAIN_*`` environment names,
YAML keys (``--config``), validation and ``--help`` all come from :class:`TrainSettings`.

Precedence: flags > environment > YAML file > defaults. Light module (no torch): the command
(:mod:`seesr.cli.train`) imports it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from seesr.errors import ConfigError
from seesr.settings.models import MODELS
from seesr.settings.config_file import config_file_settings
from seesr.settings.fields import field_kind, parse_value, problem, setting, setting_of

ENV_PREFIX = "SEESR_TRAIN_"
MANY_STEPS = 10**7
"""Upper bound of every step count (far beyond any real fine-tuning run)."""


@dataclass
class TrainSettings:
    """Everything ``seesr train`` / :func:`seesr.train` can be told; defaults follow the official
    ``train_seesr.py`` where it has one (lr 5e-5 constant, AdamW, clip 1.0, null_text_ratio 0.5,
    512 crops) and its data ``utils_data/make_paired_data.py`` (the degradation)."""

    weights: str | None = setting(None, "base weights directory (default: weights/ or $SEESR_WEIGHTS)")
    model: str = setting(
        "seesr-turbo", "model to fine-tune: seesr-turbo (on sd-turbo) or seesr (on SD-2-base: weights/sd-2-base/)",
        choices=tuple(MODELS),
    )  # fmt: skip
    from_base: bool = setting(
        False, "train from the model's base alone, as train_seesr.py does from SD-2-base: new image attention in "
        "the base UNet, the ControlNet initialised from that UNet (needs the base's unet/ folder)",
    )  # fmt: skip
    crop_size: int = setting(512, "HR crop size in pixels (a multiple of 8 x scale)", range=(32, 2048))
    degradation: str | None = setting(
        None, "how HR crops are degraded: a YAML file of keys to change, or realesrgan (params_realesrgan.yml's "
        "values); default: make_paired_data.py's, with USM sharpening",
    )  # fmt: skip
    null_text_ratio: float = setting(0.5, "probability of training with the empty prompt", range=(0.0, 1.0))
    batch_size: int = setting(1, "images per process and micro-batch", range=(1, 256))
    gradient_accumulation_steps: int = setting(1, "micro-batches per optimizer step", range=(1, 1024))
    mixed_precision: str = setting("no", "autocast precision", choices=("no", "fp16", "bf16"))
    gradient_checkpointing: bool = setting(False, "recompute activations in backward (less memory, slower)")
    lr: float = setting(5e-5, "peak learning rate", range=(0.0, 0.1))
    lr_schedule: str = setting(
        "constant", "learning-rate schedule after the warm-up (constant: the official)", choices=("constant", "cosine")
    )
    lr_warmup_steps: int = setting(0, "linear warm-up steps", range=(0, MANY_STEPS))
    weight_decay: float = setting(1e-2, "AdamW weight decay", range=(0.0, 1.0))
    max_grad_norm: float = setting(1.0, "gradient clipping norm over ControlNet + UNet", range=(0.0, 1e4))
    use_8bit_adam: bool = setting(False, "bitsandbytes AdamW8bit (needs bitsandbytes)")
    max_steps: int = setting(1000, "optimizer steps to train", range=(1, MANY_STEPS))
    checkpoint_every: int = setting(
        500, "save a resumable checkpoint every N steps (and at the end)", range=(1, MANY_STEPS)
    )
    keep_checkpoints: int = setting(2, "checkpoints kept (older ones are deleted)", range=(1, 1000))
    validate_every: int = setting(0, "upscale the validation images every N steps (0: off)", range=(0, MANY_STEPS))
    validation_images: int = setting(2, "number of fixed validation images (the first HR images)", range=(1, 100))
    resume: str | None = setting(None, "'latest' or a checkpoint folder to continue from")
    seed: int = setting(0, "seed of the crops, degradations, noise and timesteps", range=(0, 2**63 - 1))
    num_workers: int = setting(2, "dataloader worker processes (0: load in the training process)", range=(0, 64))

    def __post_init__(self) -> None:
        values, problems = _checked({f.name: (None, getattr(self, f.name)) for f in fields(self)})
        if problems:
            raise ConfigError("invalid training settings: " + "; ".join(problems))
        for name, value in values.items():
            setattr(self, name, value)

    @classmethod
    def from_sources(
        cls, flags: dict[str, Any] | None = None, config_file: str | Path | None = None, environ: dict | None = None
    ) -> "TrainSettings":
        """Merge YAML, ``SEESR_TRAIN_*`` and flags (in rising precedence) over the defaults; every
        unknown name and bad value is reported at once, with where it came from."""
        given: dict[str, tuple[str, Any]] = {}
        if config_file is not None:
            given.update((k.replace("-", "_"), ("config file", v)) for k, v in config_file_settings(config_file).items())
        env = os.environ if environ is None else environ
        for f in fields(cls):
            if ENV_PREFIX + f.name.upper() in env:
                given[f.name] = (ENV_PREFIX + f.name.upper(), env[ENV_PREFIX + f.name.upper()])
        given.update((k, ("argument", v)) for k, v in (flags or {}).items() if v is not None)
        values, problems = _checked(given)
        if problems:
            raise ConfigError("invalid training settings: " + "; ".join(problems) + "; see `seesr train --help`")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DECLARED = {f.name: f for f in fields(TrainSettings)}
"""The declaration, by name."""


def _checked(given: Mapping[str, tuple[str | None, Any]]) -> tuple[dict[str, Any], list[str]]:
    """``name -> (where, raw value)`` converted by the one settings rule (:func:`parse_value`) and
    held to each field's choices and range: (values, problems)."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, (where, raw) in given.items():
        declared = DECLARED.get(name)
        if declared is None:
            problems.append(f"unknown setting {name!r}" + (f" ({where})" if where else ""))
            continue
        try:
            value = parse_value(raw, *field_kind(declared))
        except (TypeError, ValueError) as error:
            problems.append(f"{name}={raw!r} ({where + ': ' if where else ''}{error})")
            continue
        line = problem(where if where and where.startswith(ENV_PREFIX) else name, value, setting_of(declared))
        if line is not None:
            problems.append(line)
        else:
            values[name] = value
    return values, problems
