"""Settings, presets as data, and where settings come from.

Precedence, highest first: explicit arguments (API keyword / CLI flag / Cog input) -> ``SEESR_*``
environment variables -> a YAML config file -> the preset -> defaults. Validation reports every
bad value at once, each with its allowed range.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import torch

from seesr.colorfix import COLOR_FIX_METHODS
from seesr.defaults import DEFAULT_NEGATIVE_PROMPT, DEFAULT_POSITIVE_PROMPT, DEFAULT_PROCESS_SIZE
from seesr.devices import default_dtype
from seesr.errors import ConfigError
from seesr.kds import KdsConfig
from seesr.planner import RunPlan

PRESET_NAMES = ("speed", "balanced", "quality", "memory")
ENGINES = ("seesr", "realesrgan")
DTYPES = ("auto", "float32", "float16", "bfloat16")
OUTPUT_FORMATS = ("png", "jpg", "webp")

PRESETS: dict[str, dict[str, Any]] = {
    "speed": {"steps": 1},
    "balanced": {"steps": 2},
    "quality": {"steps": 4, "latent_tile": 64, "latent_overlap": 16, "kds_particles": 4},
    "memory": {
        "steps": 2,
        "latent_tile": 48,
        "latent_overlap": 16,
        "tile_batch_size": 1,
        "vae_encoder_tile": 512,
        "vae_decoder_tile": 64,
        "dtype": "float16",
        "offload": True,
    },
}
"""What each preset changes from the defaults. The tile sizes are in latent pixels (denoiser, VAE
decoder) and image pixels (VAE encoder); the official defaults are 96/32 (turbo script) and
320/4 (Cog demo) for the latent tiles."""


@dataclass(frozen=True)
class Settings:
    """Every user-facing setting, with the same names in the API, the CLI and Cog."""

    preset: str = "balanced"
    engine: str = "seesr"
    scale: float = 4.0
    steps: int = 2
    seed: int | None = None
    prompt: str = ""
    positive_prompt: str = DEFAULT_POSITIVE_PROMPT
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    guidance_scale: float = 1.0
    conditioning_scale: float = 1.0
    color_fix: str = "wavelet"
    process_size: int = DEFAULT_PROCESS_SIZE
    device: str | None = None
    dtype: str = "auto"
    latent_tile: int | None = None
    latent_overlap: int | None = None
    tile_batch_size: int | None = None
    vae_encoder_tile: int | None = None
    vae_decoder_tile: int | None = None
    offload: bool | None = None
    compile: bool = False
    kds_particles: int = 1
    kds_bandwidth: float | None = None
    kds_patch: int = 4
    kds_strength: float = 1.0
    denoise: float = 0.0
    no_fallback: bool = False
    output_format: str = "png"

    def plan_overrides(self) -> dict[str, Any]:
        """The tiling settings the user (or preset) fixed; the planner chooses the rest."""
        names = ("latent_tile", "latent_overlap", "tile_batch_size", "vae_encoder_tile", "vae_decoder_tile", "offload")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def full_plan(self) -> RunPlan:
        """A RunPlan from the fixed values and RunPlan's defaults (when no planner is used)."""
        return RunPlan(**self.plan_overrides())

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        """``auto``: float16 on CUDA, bfloat16 on a CPU with native bf16, float32 elsewhere. float16
        on the CPU becomes bfloat16 (same size, but with fast CPU kernels and no overflow)."""
        if self.dtype == "auto":
            return default_dtype(device)
        if self.dtype == "float16" and device.type == "cpu":
            return torch.bfloat16
        return getattr(torch, self.dtype)

    def kds_config(self) -> KdsConfig | None:
        """Kernel Density Steering settings, None with a single particle (plain sampling)."""
        if self.kds_particles <= 1:
            return None
        return KdsConfig(
            particles=self.kds_particles, bandwidth=self.kds_bandwidth, patch=self.kds_patch, strength=self.kds_strength
        )

    def batch_multiplier(self) -> int:
        """How many latents go through the denoiser at once per tile: x2 with guidance, x particles."""
        return (2 if self.guidance_scale > 1.0 else 1) * self.kds_particles


FIELD_TYPES = {f.name: f.type for f in fields(Settings)}
RANGES: dict[str, tuple[float, float]] = {
    "scale": (1.0, 8.0),
    "steps": (1, 8),
    "seed": (0, 2**63 - 1),
    "guidance_scale": (1.0, 20.0),
    "conditioning_scale": (0.0, 2.0),
    "process_size": (0, 4096),
    "latent_tile": (8, 1024),
    "latent_overlap": (0, 512),
    "tile_batch_size": (1, 64),
    "vae_encoder_tile": (64, 8192),
    "vae_decoder_tile": (8, 1024),
    "kds_particles": (1, 16),
    "kds_bandwidth": (1e-6, 1e6),
    "kds_patch": (1, 64),
    "kds_strength": (0.0, 1.0),
    "denoise": (0.0, 30.0),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "preset": PRESET_NAMES,
    "engine": ENGINES,
    "color_fix": COLOR_FIX_METHODS,
    "dtype": DTYPES,
    "output_format": OUTPUT_FORMATS,
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _convert(name: str, value: Any) -> Any:
    """Coerce strings (environment, YAML, CLI) to the field's type; raise ValueError if impossible."""
    kind = FIELD_TYPES[name]
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null") and "None" in kind):
        if "None" not in kind:
            raise ValueError("may not be empty")
        return None
    if kind.startswith("bool"):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError("must be true or false")
    if kind.startswith("int"):
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be an integer")
        return int(value)
    if kind.startswith("float"):
        if isinstance(value, bool):
            raise ValueError("must be a number")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        return number
    return str(value)


def _validate(values: Mapping[str, Any]) -> list[str]:
    problems = []
    for name, value in values.items():
        if value is None:
            continue
        if name in RANGES:
            low, high = RANGES[name]
            if not low <= value <= high:
                problems.append(f"{name}={value!r} (allowed: {low} to {high})")
        if name in CHOICES and value not in CHOICES[name]:
            problems.append(f"{name}={value!r} (allowed: {', '.join(CHOICES[name])})")
    tile, overlap = values.get("latent_tile"), values.get("latent_overlap")
    if tile is not None and overlap is not None and overlap >= tile:
        problems.append(f"latent_overlap={overlap} (must be smaller than latent_tile={tile})")
    return problems


def environment_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``SEESR_<NAME>`` variables that name a setting (``SEESR_STEPS=1`` -> steps)."""
    environ = os.environ if environ is None else environ
    return {name: environ[f"SEESR_{name.upper()}"] for name in FIELD_TYPES if f"SEESR_{name.upper()}" in environ}


CONFIG_FILE_MAX_BYTES = 1 << 20
"""A settings file is a few lines; anything larger is refused before parsing."""


def config_file_settings(path: str | Path | None) -> dict[str, Any]:
    """Settings from a YAML file (a mapping of setting names to values). Anything that is not a small
    UTF-8 file of plain values (a folder, binary data, YAML anchors/aliases, which can expand into
    billions of values) is a ConfigError."""
    if path is None:
        return {}
    import yaml

    path = Path(path)
    try:
        if path.stat().st_size > CONFIG_FILE_MAX_BYTES:
            raise ConfigError(
                f"config file {path} is over {CONFIG_FILE_MAX_BYTES // 1024} KiB; it should hold a few settings"
            )
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; give a YAML file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {error.start}); give a YAML file") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise ConfigError(f"config file {path} uses YAML aliases (*name); write each value out")
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of setting names to values")
    return data


def resolve_settings(
    arguments: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Settings:
    """Merge arguments > environment > config file > preset > defaults, and validate everything.

    ``None`` in ``arguments`` means "not given". Unknown names and bad values are reported together
    in one :class:`ConfigError`."""
    layers = [
        ("argument", {k: v for k, v in (arguments or {}).items() if v is not None}),
        ("environment", environment_settings(environ)),
        ("config file", config_file_settings(config_file)),
    ]
    problems = [f"unknown setting {name!r} ({where})" for where, layer in layers for name in layer if name not in FIELD_TYPES]
    converted: list[dict[str, Any]] = []
    for where, layer in layers:
        values = {}
        for name, value in layer.items():
            if name not in FIELD_TYPES:
                continue
            try:
                values[name] = _convert(name, value)
            except (TypeError, ValueError) as error:
                problems.append(f"{name}={value!r} ({where}: {error})")
        converted.append(values)
    preset = next((layer["preset"] for layer in converted if "preset" in layer), Settings.preset)
    if preset not in PRESETS:
        problems.append(f"preset={preset!r} (allowed: {', '.join(PRESET_NAMES)})")
        preset = Settings.preset
    merged: dict[str, Any] = dict(PRESETS[preset], preset=preset)
    for layer in reversed(converted):
        merged.update(layer)
    problems += _validate(merged)
    if problems:
        raise ConfigError("invalid settings: " + "; ".join(problems))
    return dataclasses.replace(Settings(), **merged)
