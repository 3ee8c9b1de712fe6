"""Training settings, declared once: the ``seesr train`` flags, ``SEESR_TRAIN_*`` environment names,
YAML keys (``--config``), validation and ``--help`` all come from :class:`TrainSettings`.

Precedence: flags > environment > YAML file > defaults. Light module (no torch): the CLI imports it.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


from seesr.errors import ConfigError
from seesr.models import MODELS
from seesr.presets import config_file_settings

ENV_PREFIX = "SEESR_TRAIN_"


def setting(default: Any, description: str, *, choices: tuple | None = None, minimum: float | None = None) -> Any:
    """A training setting: its default, one line of help, and what values are allowed."""
    return field(default=default, metadata={"help": description, "choices": choices, "minimum": minimum})


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
    crop_size: int = setting(512, "HR crop size in pixels (a multiple of 8 x scale)", minimum=32)
    degradation: str | None = setting(
        None, "how HR crops are degraded: a YAML file of keys to change, or realesrgan (params_realesrgan.yml's "
        "values); default: make_paired_data.py's, with USM sharpening",
    )  # fmt: skip
    null_text_ratio: float = setting(0.5, "probability of training with the empty prompt", minimum=0.0)
    batch_size: int = setting(1, "images per process and micro-batch", minimum=1)
    gradient_accumulation_steps: int = setting(1, "micro-batches per optimizer step", minimum=1)
    mixed_precision: str = setting("no", "autocast precision", choices=("no", "fp16", "bf16"))
    gradient_checkpointing: bool = setting(False, "recompute activations in backward (less memory, slower)")
    lr: float = setting(5e-5, "peak learning rate", minimum=0.0)
    lr_schedule: str = setting(
        "constant", "learning-rate schedule after the warm-up (constant: the official)", choices=("constant", "cosine")
    )
    lr_warmup_steps: int = setting(0, "linear warm-up steps", minimum=0)
    weight_decay: float = setting(1e-2, "AdamW weight decay", minimum=0.0)
    max_grad_norm: float = setting(1.0, "gradient clipping norm over ControlNet + UNet", minimum=0.0)
    use_8bit_adam: bool = setting(False, "bitsandbytes AdamW8bit (needs bitsandbytes)")
    max_steps: int = setting(1000, "optimizer steps to train", minimum=1)
    checkpoint_every: int = setting(500, "save a resumable checkpoint every N steps (and at the end)", minimum=1)
    keep_checkpoints: int = setting(2, "checkpoints kept (older ones are deleted)", minimum=1)
    validate_every: int = setting(0, "upscale the validation images every N steps (0: off)", minimum=0)
    validation_images: int = setting(2, "number of fixed validation images (the first HR images)", minimum=1)
    resume: str | None = setting(None, "'latest' or a checkpoint folder to continue from")
    seed: int = setting(0, "seed of the crops, degradations, noise and timesteps", minimum=0)
    num_workers: int = setting(2, "dataloader worker processes (0: load in the training process)", minimum=0)

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if meta["choices"] and value not in meta["choices"]:
                problems.append(f"{f.name} must be one of {', '.join(meta['choices'])}, got {value!r}")
            if meta["minimum"] is not None and value is not None and value < meta["minimum"]:
                problems.append(f"{f.name} must be >= {meta['minimum']}, got {value!r}")
        if self.null_text_ratio > 1:
            problems.append(f"null_text_ratio must be <= 1, got {self.null_text_ratio}")
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def from_sources(
        cls, flags: dict[str, Any] | None = None, config_file: str | Path | None = None, environ: dict | None = None
    ) -> "TrainSettings":
        """Merge YAML, ``SEESR_TRAIN_*`` and flags (in rising precedence) over the defaults."""
        values: dict[str, Any] = {}
        if config_file is not None:
            loaded = config_file_settings(config_file)
            values.update({k.replace("-", "_"): v for k, v in loaded.items()})
        env = os.environ if environ is None else environ
        for f in fields(cls):
            name = ENV_PREFIX + f.name.upper()
            if name in env:
                values[f.name] = _parse(f, env[name], name)
        values.update({k: v for k, v in (flags or {}).items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown training settings {sorted(unknown)}; see `seesr train --help`")
        for f in fields(cls):
            if f.name in values and values[f.name] is not None and not isinstance(values[f.name], str):
                values[f.name] = _parse(f, values[f.name], f.name)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _kind(f) -> type:
    default = f.default if f.default is not MISSING else None
    return type(default) if default is not None else str


def _parse(f, raw: Any, where: str) -> Any:
    kind = _kind(f)
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where} must be true or false, got {raw!r}")
    try:
        if kind is int and isinstance(raw, float) and not raw.is_integer():
            raise ValueError(raw)
        return kind(raw)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where} must be a {kind.__name__}, got {raw!r}") from error


# ------------------------------------------------------------------------------------------ CLI
def add_train_parser(commands: argparse._SubParsersAction) -> None:
    """The ``seesr train HR_DIR -o OUT`` subcommand, one flag per :class:`TrainSettings` field."""
    parser = commands.add_parser(
        "train",
        help="fine-tune SeeSR on a folder of HR images (or ready LR/HR pairs)",
        description="Fine-tune SeeSR's ControlNet and image attention. Several processes: "
        "`accelerate launch -m seesr.cli train ...`.",
        allow_abbrev=False,
    )
    parser.add_argument("data", type=Path, help="folder of HR images, or of pairs (hr/ or gt/ + lr/ or sr_bicubic/)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="run folder (weights in OUT/seesr/)")
    parser.add_argument("--config", type=Path, help="YAML file of training settings")
    for f in fields(TrainSettings):
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        text = f"{meta['help']} (default: {f.default}; env {ENV_PREFIX}{f.name.upper()})"
        if _kind(f) is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag, dest=f.name, type=_kind(f), choices=meta["choices"], default=None, help=text)


def train_command(args: argparse.Namespace) -> int:
    """Run ``seesr train`` from parsed flags; prints one summary line."""
    from seesr.training.loop import train

    flags = {f.name: getattr(args, f.name) for f in fields(TrainSettings)}
    settings = TrainSettings.from_sources(flags, args.config)
    result = train(args.data, args.output, settings=settings, progress=sys.stderr.isatty())
    if result.is_main_process:
        print(f"trained {result.steps} steps, final loss {result.final_loss:.4f}: weights in {result.weights_dir}")
    return 0
